"""The offline demo: real pretrained MiniLM on real tweets, against the scratch baseline.

    python -m hf_transfer.demo            # or: make demo

Both runs use the shipped config `minilm/tweets_full` and differ only in `strategy.name`
(and the scratch baseline's own, larger learning rate and twice the epochs: a fair chance
from random init).
"""

from __future__ import annotations

import argparse
import sys

from hf_transfer.cli import resolve_config_path
from hf_transfer.config import load_config
from hf_transfer.errors import HFTransferError
from hf_transfer.run import train


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", default="runs/demo")
    p.add_argument("overrides", nargs="*", help="extra a.b=value overrides for both runs")
    args = p.parse_args(argv)
    path = resolve_config_path("minilm/tweets_full")
    runs = {
        "pretrained MiniLM (full fine-tuning)": ["strategy.name=full", f"output_dir={args.output_dir}/full"],
        "same architecture from scratch": [
            "strategy.name=scratch",
            "training.learning_rate=3e-4",
            "training.epochs=8",
            f"output_dir={args.output_dir}/scratch",
        ],
    }
    results = {}
    try:
        for title, overrides in runs.items():
            print(f"\n=== {title} ===", flush=True)
            # The demo owns its folders: a second `make demo` replaces the first one's runs.
            results[title] = train(load_config(path, overrides + args.overrides), overwrite=True)
    except HFTransferError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\nTweets, positive vs negative: 256 training examples, held-out eval split")
    print(f"{'run':40s} {'accuracy':>9s} {'macro-F1':>9s} {'time (s)':>9s}")
    for title, m in results.items():
        print(f"{title:40s} {m['eval_accuracy']:9.3f} {m['eval_f1']:9.3f} {m['train_runtime']:9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
