"""The on-disk cache of frozen features: one safetensors file (features, labels, metadata) per
(checkpoint, data split, preprocessing, feature spec), named by a hash of all of them.

The folder is `cache_dir` when given, else `$HF_TRANSFER_CACHE/features`, else
`~/.cache/hf_transfer/features`. Files are written aside and renamed into place, so a crash never
leaves half a file; an unreadable file is ignored (recomputed), never fatal.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

#: Bump when the cache layout or the extraction changes: old entries are then never read.
FEATURE_FORMAT = 2
# data.* settings that select rows: the split's datasets fingerprint already covers them.
DATA_SELECTION_KEYS = frozenset(
    {
        "train",
        "eval",
        "test",
        "filter",
        "max_train_samples",
        "max_eval_samples",
        "samples_per_class",
        "eval_samples_per_class",
        "eval_fraction",
        "group_by_length",
        "augmentation",
        "train_indices",
    }
)


def cache_root(setting: str | None = None) -> Path:
    """The feature cache folder: `setting`, else `$HF_TRANSFER_CACHE/features`, else `~/.cache/...`."""
    if setting:
        return Path(setting).expanduser()
    env = os.environ.get("HF_TRANSFER_CACHE")
    if env:
        return Path(env).expanduser() / "features"
    return Path.home() / ".cache" / "hf_transfer" / "features"


def state_digest(model: nn.Module, skip_top: set[str] = frozenset()) -> str:
    """SHA-256 of every tensor in `model.state_dict()` (names, shapes, dtypes, bytes), skipping
    top-level modules in `skip_top` (the randomly initialised head). About 1 s per GB."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        if name.split(".")[0] in skip_top:
            continue
        t = t.detach().reshape(-1).contiguous().cpu()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


#: `tokenizer.json` entries that record the last call's truncation/padding, not the tokenizer
#: (they change once the tokenizer has been used; `data.max_length` is in the key anyway).
_TOKENIZER_CALL_STATE = ("truncation", "padding")


def processor_digest(task) -> str:
    """SHA-256 of the files the task's processor saves (tokenizer / image / audio settings)."""
    h = hashlib.sha256()
    with tempfile.TemporaryDirectory() as tmp:
        task.save_processor(tmp)
        for path in sorted(Path(tmp).rglob("*")):
            if path.is_file():
                h.update(path.relative_to(tmp).as_posix().encode())
                data = path.read_bytes()
                if path.name == "tokenizer.json":
                    d = json.loads(data)
                    for key in _TOKENIZER_CALL_STATE:
                        d.pop(key, None)
                    data = json.dumps(d, sort_keys=True).encode()
                h.update(data)
    return h.hexdigest()


def model_config_dict(model: nn.Module) -> dict:
    """The model's config without the label and bookkeeping entries (they do not change features)."""
    config = getattr(model, "config", None)
    if config is None:
        return {}
    d = config.to_dict()
    for k in ("id2label", "label2id", "num_labels", "_name_or_path", "transformers_version", "architectures"):
        d.pop(k, None)
    return d


def data_settings(data) -> dict:
    """Every `data.*` setting (a `DataConfig`, or None) that is not row selection (tokenisation
    length, image size, audio window...): what the preprocessing depends on."""
    if data is None or not dataclasses.is_dataclass(data):
        return {}
    return {k: v for k, v in dataclasses.asdict(data).items() if k not in DATA_SELECTION_KEYS}


def feature_key(parts: dict) -> str:
    """The cache file stem for `parts` (a JSON-able mapping of everything the features depend on)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def load_cached(path: Path) -> tuple[torch.Tensor, torch.Tensor | None, dict] | None:
    """`(features, labels or None, meta)` from a cache file, or None when absent or unreadable."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("meta", "{}"))
            labels = f.get_tensor("labels") if "labels" in f.keys() else None
            return f.get_tensor("features"), labels, meta
    except Exception as e:  # a truncated or foreign file: recompute rather than fail the run
        logger.warning("Ignoring unreadable feature cache file %s (%s).", path, e)
        return None


def save_cached(path: Path, features: torch.Tensor, labels: torch.Tensor | None, meta: dict) -> None:
    """Write a cache file atomically (aside, then renamed), so a crash never leaves half a file."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tensors = {"features": features.contiguous()}
    if labels is not None:
        tensors["labels"] = labels.contiguous()
    save_file(tensors, str(tmp), metadata={"meta": json.dumps(meta, default=str)})
    os.replace(tmp, path)
