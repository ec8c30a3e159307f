"""Optimizer parameter groups: layer-wise learning rates, and no weight decay on biases and norms."""

from __future__ import annotations

import logging

from torch import nn

from hf_transfer.strategies.base import layerwise_lr_scales  # noqa: F401  (its old home; strategies own it)

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
                out.append({"params": params, "weight_decay": wd, "lr": base_lr, "lr_scale": 1.0, "name": "other" + suffix})
    return out
