"""Pooling conventions: how a checkpoint's token states become one vector (sentence-transformers
folders read exactly as sentence-transformers pools them; the trained-pooler rule; masked token and
map pooling)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from hf_transfer.errors import ConfigError
from hf_transfer.models.anatomy import backbone_of, unwrap_model

#: sentence-transformers' pooling mode names -> ours.
_ST_MODES = {
    "mean": "mean",
    "cls": "cls",
    "max": "max",
    "lasttoken": "last_token",
    "mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "weightedmean": "weightedmean",
}
_ST_LEGACY = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


def read_sentence_transformers(folder: str | Path | None) -> dict | None:
    """The pooling a sentence-transformers folder declares, or None when `folder` is not one.

    Returns:
        `{"modes": (...), "normalize": bool, "include_prompt": bool, "error": str | None,
        "dense": bool}`; `error` says why the pooling config could not be read (then `modes` is
        the masked-mean fallback).
    """
    if not folder:
        return None
    path = Path(folder)
    modules_file = path / "modules.json"
    if not modules_file.is_file():
        return None
    out = {"modes": ("mean",), "normalize": False, "include_prompt": True, "error": None, "dense": False}
    try:
        entries = json.loads(modules_file.read_text())
        types = [str(e.get("type", "")) for e in entries]
        pooling = next((e for e in entries if str(e.get("type", "")).endswith("Pooling")), None)
    except (ValueError, AttributeError, TypeError) as e:
        out["error"] = f"modules.json is unreadable ({e})"
        return out
    out["normalize"] = any(t.endswith("Normalize") for t in types)
    out["dense"] = any(t.endswith("Dense") for t in types)
    if pooling is None:
        out["error"] = "modules.json lists no Pooling module"
        return out
    config_file = path / str(pooling.get("path", "1_Pooling")) / "config.json"
    try:
        config = json.loads(config_file.read_text())
        mode = config.get("pooling_mode")
        if mode is None:
            mode = tuple(m for k, m in _ST_LEGACY.items() if config.get(k)) or ("mean",)
        modes = (mode,) if isinstance(mode, str) else tuple(mode)
        unknown = [m for m in modes if m not in _ST_MODES]
        if unknown or not modes:
            raise ValueError(f"unknown pooling mode(s) {unknown}")
    except (OSError, ValueError, AttributeError, TypeError) as e:
        out["error"] = f"{config_file} is unreadable ({e})"
        return out
    out["modes"] = tuple(_ST_MODES[m] for m in modes)
    out["include_prompt"] = bool(config.get("include_prompt", True))
    return out


def has_trained_pooler(model: nn.Module, name_or_path: str | None = None) -> bool:
    """The rule in the module docstring: a `*ForSequenceClassification` checkpoint whose pooler
    weights were loaded (not newly initialised), and not one of our own feature-extraction runs."""
    base = unwrap_model(model)
    archs = getattr(getattr(base, "config", None), "architectures", None) or []
    if not any(str(a).endswith("ForSequenceClassification") for a in archs):
        return False
    pooler = getattr(backbone_of(base), "pooler", None)
    if not isinstance(pooler, nn.Module) or not any(True for _ in pooler.parameters()):
        return False
    if name_or_path and any(
        (Path(name_or_path) / f).is_file() for f in ("feature_classifier.json", "config_setfit.json")
    ):
        return False  # the head was fitted on features, the pooler never trained
    new = getattr(base, "hf_transfer_new_weights", None) or []
    return not any(".pooler." in f".{n}" for n in new)


def _first_real(mask: torch.Tensor) -> torch.Tensor:
    return mask.to(torch.int).argmax(dim=1)


def pool_tokens(x: torch.Tensor, mode: str, mask: torch.Tensor | None) -> torch.Tensor:
    """One vector per example from (B, T, d) token states, as sentence-transformers pools them."""
    if mask is None or mask.shape[:2] != x.shape[:2]:
        mask = torch.ones(x.shape[:2], dtype=torch.long, device=x.device)
    m = mask.unsqueeze(-1).to(x.dtype)
    if mode == "cls":
        return x.gather(1, _first_real(mask).view(-1, 1, 1).expand(-1, 1, x.shape[-1])).squeeze(1)
    if mode == "max":
        return x.masked_fill(m == 0, float("-inf")).max(dim=1).values
    if mode in ("mean", "mean_sqrt_len_tokens"):
        count = m.sum(dim=1).clamp(min=1e-9)
        return (x * m).sum(dim=1) / (count if mode == "mean" else count.sqrt())
    if mode == "weightedmean":
        w = torch.arange(1, x.shape[1] + 1, device=x.device, dtype=x.dtype).view(1, -1, 1)
        w = m * (w - _first_real(mask).view(-1, 1, 1).to(x.dtype))
        return (x * w).sum(dim=1) / w.sum(dim=1).clamp(min=1e-9)
    if mode == "last_token":
        values, idx = mask.flip(1).max(1)
        idx = torch.where(values == 0, x.shape[1] - 1, idx)
        pos = (x.shape[1] - idx - 1).view(-1, 1, 1).expand(-1, 1, x.shape[-1])
        return (x * m).gather(1, pos).squeeze(1)
    raise ConfigError(f"Unknown token pooling {mode!r}.")


def pool_map(x: torch.Tensor, mode: str) -> torch.Tensor:
    """One vector per example from a (B, C, H, W) feature map."""
    if mode in ("mean", "auto"):
        return x.flatten(2).mean(-1)
    if mode == "max":
        return x.flatten(2).amax(-1)
    raise ConfigError(f"pooling={mode!r} does not apply to a convolutional feature map; use mean or max.")
