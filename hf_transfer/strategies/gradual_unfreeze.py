"""`gradual_unfreeze`: train the head first, then unfreeze blocks top down as epochs pass.

ULMFiT's gradual unfreezing (Howard & Ruder 2018), fastai's `fine_tune`, Lightning Flash's
`freeze_unfreeze` / `unfreeze_milestones`. During epoch 0 only the head trains, so the new, random
head settles before its large gradients reach the pretrained blocks. Then each *unfreezing step*
adds `blocks_per_step` more blocks, from the top down (the final norm / pooler come with the top
block). Once every block trains, the next step unfreezes the rest (the embeddings / stem): the
model is then fully fine-tuned.

When steps happen:

* every `unfreeze_every` epochs (default 1: epoch 1 unfreezes the first blocks, epoch 2 the next);
* or, when `milestones` is given, at the start of each listed epoch (0-based), e.g. `[2, 5]`.

The trainable set in force at epoch `e` depends on `e` alone, so `on_epoch_start` is idempotent
and a resumed run reaches the same freezing. Every parameter is in the optimizer from the start
with its group's learning rate (`layer_lr_decay`, `head_lr_multiplier` apply), so unfreezing needs
no new optimizer; AdamW skips a parameter while its gradient is None. Under DDP the engine wraps
the model with every parameter trainable and `find_unused_parameters` (`changes_trainable_set`),
so blocks unfrozen later are all-reduced too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from hf_transfer.errors import ConfigError
from hf_transfer.strategies._groups import ALL, GroupFreezing, check_non_negative, check_positive, num_blocks
from hf_transfer.strategies.base import StrategyConfig, register_strategy

logger = logging.getLogger(__name__)


@dataclass
class GradualUnfreezeConfig(StrategyConfig):
    """Settings of `gradual_unfreeze`.

    Attributes:
        name: `gradual_unfreeze`.
        blocks_per_step: How many more blocks each unfreezing step adds, top down.
        unfreeze_every: Epochs between unfreezing steps (used when `milestones` is empty).
        milestones: Epochs (0-based) at whose start an unfreezing step happens, instead of
            every `unfreeze_every` epochs (Lightning Flash's `unfreeze_milestones`).
    """

    name: str = "gradual_unfreeze"
    blocks_per_step: int = 1
    unfreeze_every: int = 1
    milestones: list[int] | None = None

    def __post_init__(self) -> None:
        check_positive(self.blocks_per_step, "blocks_per_step")
        check_positive(self.unfreeze_every, "unfreeze_every")
        if self.milestones:
            for m in self.milestones:
                check_non_negative(m, "milestones[]")
            if list(self.milestones) != sorted(set(self.milestones)):
                raise ConfigError(f"strategy.milestones must be strictly increasing epochs, got {self.milestones!r}.")


@register_strategy("gradual_unfreeze", GradualUnfreezeConfig)
class GradualUnfreeze(GroupFreezing):
    """Head first, then `blocks_per_step` more blocks per step, top down, then everything."""

    changes_trainable_set = True

    def steps_at(self, epoch: int) -> int:
        """Unfreezing steps that have happened by the start of `epoch`."""
        c = self.config
        if c.milestones:
            return sum(1 for m in c.milestones if m <= epoch)
        return epoch // c.unfreeze_every

    def depth_at(self, epoch: int, groups: list) -> int | None:
        depth = self.steps_at(epoch) * self.config.blocks_per_step
        return ALL if depth > num_blocks(groups) else depth

    def on_epoch_start(self, epoch: int, model, groups: list) -> bool:
        changed = self._set_epoch(epoch, model, groups)
        changed = self.refit_head(epoch, model) or changed
        if changed:
            what = "every group" if self.depth is ALL else f"the top {self.depth} blocks and the head"
            logger.info("gradual_unfreeze: epoch %d trains %s.", epoch, what)
        return changed

    def describe(self, model) -> dict[str, Any]:
        info = super().describe(model)
        info["unfrozen_blocks"] = "all" if self.depth is ALL else self.depth
        return info

    def _schedule(self) -> dict[str, Any]:
        c = self.config
        return {
            "blocks_per_step": c.blocks_per_step,
            "unfreeze_every": c.unfreeze_every,
            "milestones": list(c.milestones or []),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "depth": self.depth, "schedule": self._schedule()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        saved = state.get("schedule")
        if saved is not None and saved != self._schedule():
            logger.warning(
                "gradual_unfreeze: the checkpoint was trained with schedule %s, this run uses %s; "
                "the freezing follows this run's settings from the resumed epoch on.",
                saved,
                self._schedule(),
            )
        self.epoch = int(state.get("epoch", 0))
        self.depth = state.get("depth", self.depth)
