"""Optimizer parameter groups: layer-wise learning rates, and no weight decay on biases and norms."""

from __future__ import annotations

import logging

import torch
from torch import nn

logger = logging.getLogger(__name__)


def _no_decay(name: str, param: nn.Parameter) -> bool:
    # nanoGPT's rule: decay only matrices. Biases and norm scales are 1-D; decaying them pulls
    # normalisation towards zero for no regularisation benefit.
    lowered = name.lower()
    return param.ndim < 2 or "norm" in lowered or lowered.endswith(".bias")


def build_param_groups(
    model: nn.Module,
    groups: list,
    scales: list[float],
    base_lr: float,
    weight_decay: float,
) -> list[dict]:
    """Optimizer parameter groups, two per layer group (with and without weight decay).

    Every parameter is placed, frozen or not, so that parameters unfrozen later (gradual
    unfreezing) train at their own group's learning rate with no new optimizer: AdamW skips
    parameters whose gradient is None. Each dict carries `name` and `lr_scale` for logs and tests.
    """
    named = dict(model.named_parameters())
    placed: set[str] = set()
    out: list[dict] = []
    for group, scale in zip(groups, scales):
        decay, no_decay = [], []
        for pname in group.param_names:
            if pname not in named or pname in placed:
                continue
            placed.add(pname)
            (no_decay if _no_decay(pname, named[pname]) else decay).append(named[pname])
        for params, wd, suffix in ((decay, weight_decay, ""), (no_decay, 0.0, ".no_decay")):
            if params:
                out.append(
                    {
                        "params": params,
                        "weight_decay": wd,
                        "lr": base_lr * scale,
                        "lr_scale": scale,
                        "name": group.name + suffix,
                    }
                )
    rest = [n for n in named if n not in placed]
    if rest:
        logger.warning("Parameters outside every layer group train at the base LR: %s", ", ".join(rest[:8]))
        decay = [named[n] for n in rest if not _no_decay(n, named[n])]
        no_decay = [named[n] for n in rest if _no_decay(n, named[n])]
        for params, wd, suffix in ((decay, weight_decay, ""), (no_decay, 0.0, ".no_decay")):
            if params:
                out.append(
                    {"params": params, "weight_decay": wd, "lr": base_lr, "lr_scale": 1.0, "name": "other" + suffix}
                )
    return out


def layerwise_lr_scales(groups: list, decay: float = 1.0, head_multiplier: float = 1.0) -> list[float]:
    """Learning-rate scale per layer group, bottom to top.

    Group at depth d below the top gets `decay ** d` (timm's layer decay): the head and the final
    norm/pooler ("top" groups) are depth 0, the last block depth 1, ..., the stem deepest. The
    head is further multiplied by `head_multiplier`.

    Args:
        groups: Layer groups from `layer_groups(model)`, ordered bottom to top.
        decay: Per-depth factor (1.0 = same LR everywhere).
        head_multiplier: Extra factor for the head group.

    Returns:
        One scale per group.
    """
    scales = []
    n_deep = 0
    for g in reversed(groups):
        if g.kind in ("head", "top"):
            depth = 0
        else:
            n_deep += 1
            depth = n_deep
        scale = decay**depth
        if g.kind == "head":
            scale *= head_multiplier
        scales.append(scale)
    return list(reversed(scales))


def new_adamw(param_groups: list[dict], lr: float, implementation: str = "auto") -> torch.optim.AdamW:
    """AdamW over `param_groups`: `fused` (one kernel for every tensor; what the transformers
    Trainer uses by default since torch 2.8), `foreach`, `for-loop` (one tensor at a time) or
    `default` (torch's own choice: foreach on CUDA, for-loop on CPU).

    `auto` picks `fused` where torch has it for every parameter's device and dtype (CPU, CUDA, ...;
    floating point), else torch's own default. The three give the same updates up to float
    rounding (tests/test_fast_step.py); `fused` is the fastest of them on CPU
    (docs/benchmarks/trainer_speed.md). The engine asks for `default` under DeepSpeed and FSDP,
    which manage the optimizer's tensors themselves.
    """
    kwargs: dict = {}
    if implementation == "auto":
        try:
            from torch.optim.optimizer import _get_fused_kernels_supported_devices

            devices = set(_get_fused_kernels_supported_devices())
        except ImportError:  # a torch that does not say: CUDA only
            devices = {"cuda"}
        params = [p for g in param_groups for p in g["params"]]
        if params and all(p.device.type in devices and torch.is_floating_point(p) for p in params):
            kwargs["fused"] = True
    elif implementation == "default":
        pass
    elif implementation == "fused":
        kwargs["fused"] = True
    elif implementation == "foreach":
        kwargs["foreach"] = True
    elif implementation == "for-loop":
        kwargs["foreach"] = False
    else:
        raise ValueError(
            f"AdamW implementation must be auto, default, fused, foreach or for-loop, got {implementation!r}"
        )
    return torch.optim.AdamW(param_groups, lr=lr, **kwargs)
