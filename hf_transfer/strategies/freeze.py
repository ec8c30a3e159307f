"""`freeze`: a linear probe. The pretrained backbone is frozen; only the new head trains."""

from __future__ import annotations

from dataclasses import dataclass

from hf_transfer.strategies._groups import GroupFreezing
from hf_transfer.strategies.base import StrategyConfig, register_strategy


@dataclass
class FreezeConfig(StrategyConfig):
    """Settings of `freeze` (linear probe).

    Only the head group trains; every backbone parameter (stem, blocks, final norm, pooler) keeps
    its pretrained value. `head_lr_multiplier` scales the head's learning rate; `layer_lr_decay`
    has no effect because nothing below the head trains.

    Attributes:
        name: `freeze`.
    """

    name: str = "freeze"


@register_strategy("freeze", FreezeConfig)
class Freeze(GroupFreezing):
    """Train the head group only (Lightning Flash's `freeze`, fastai's `freeze()`)."""

    def depth_at(self, epoch: int, groups: list) -> int:
        return 0
