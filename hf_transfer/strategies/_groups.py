"""Shared layer-group operations: which groups train at a given unfreezing depth.

Every freezing strategy (`freeze`, `partial`, `gradual_unfreeze`, `lp_ft`) is the same operation,
"train the groups above a cut", with the cut chosen differently (fixed, or a function of the
epoch). The cut is a *depth* counted in units from the output side:

* depth 0: the head only (linear probe);
* depth k (1 <= k <= number of blocks): every group from the k-th block from the top upward, so
  the top k blocks, the "top" groups above them (final norm, pooler) and the head;
* depth `ALL` (None), or any depth above the number of blocks: every group, the stem included.

For Whisper's two towers "every group above the k-th block from the top" also takes the decoder
stem and encoder top once k reaches into the encoder, which is what "everything above the cut"
means for a sequential model.

Parameters the model itself keeps frozen when it is built (Whisper's sinusoidal
`embed_positions`) are never unfrozen by these strategies: `GroupFreezing.apply` records them
before it changes anything.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

from hf_transfer.errors import ConfigError, ModelError
from hf_transfer.strategies.base import Strategy

logger = logging.getLogger(__name__)

#: Depth meaning "every group trains".
ALL = None


def num_blocks(groups: list) -> int:
    """Number of block groups."""
    return sum(1 for g in groups if g.kind == "block")


def top_blocks(groups: list, trainable_layers: int | None, trainable_fraction: float | None = None) -> int:
    """How many blocks, counted from the top, train: `trainable_layers` (None: every block), or
    with a `trainable_fraction` f the top `ceil(f * blocks)` (at least 1). Used by `partial` and
    `contrastive`."""
    if trainable_fraction is not None:
        return max(1, math.ceil(trainable_fraction * num_blocks(groups)))
    return num_blocks(groups) if trainable_layers is None else trainable_layers


def has_head(groups: list) -> bool:
    return any(g.kind == "head" for g in groups)


def groups_at_depth(groups: list, depth: int | None) -> list:
    """The groups that train at unfreezing `depth` (see the module docstring), in model order."""
    if depth is None:
        return list(groups)
    if depth < 0:
        raise ValueError(f"depth must be >= 0 or None, got {depth}")
    if depth == 0:
        return [g for g in groups if g.kind == "head"]
    block_idx = [i for i, g in enumerate(groups) if g.kind == "block"]
    if depth > len(block_idx):
        return list(groups)
    cut = block_idx[-depth]
    # Everything from the cut upward; a stem group below the cut never trains, a head always does.
    return [g for i, g in enumerate(groups) if i >= cut or g.kind == "head"]


def set_trainable(
    model: nn.Module,
    groups: Iterable,
    predicate: Callable[[Any], bool],
    keep_frozen: frozenset[int] = frozenset(),
) -> bool:
    """Make exactly the parameters of the groups where `predicate(group)` holds trainable.

    Every other parameter of `model` is frozen, including any that no group holds. Parameters
    whose `id` is in `keep_frozen` stay frozen whatever the predicate says.

    Returns:
        True when some parameter's `requires_grad` changed.
    """
    wanted: set[int] = set()
    for g in groups:
        if predicate(g):
            wanted.update(id(p) for p in g.parameters())
    changed = False
    for p in model.parameters():
        flag = id(p) in wanted and id(p) not in keep_frozen
        if p.requires_grad != flag:
            p.requires_grad_(flag)
            changed = True
    return changed


def freeze_all_but(
    model: nn.Module, groups: list, depth: int | None, keep_frozen: frozenset[int] = frozenset()
) -> bool:
    """Train only the groups at unfreezing `depth` (`groups_at_depth`). True if anything changed."""
    selected = {id(g) for g in groups_at_depth(groups, depth)}
    return set_trainable(model, groups, lambda g: id(g) in selected, keep_frozen)


def trainable_group_names(groups: list) -> list[str]:
    """Names of the groups with at least one trainable parameter."""
    return [g.name for g in groups if any(p.requires_grad for p in g.parameters())]


class GroupFreezing(Strategy):
    """Base of the strategies whose trainable set is "the groups above a cut" (see module doc).

    Subclasses implement `depth_at(epoch, groups)`: the unfreezing depth in force during `epoch`,
    derived from the epoch alone, so `on_epoch_start` is idempotent and a resumed run that replays
    `on_epoch_start(0..epoch)` reaches exactly the uninterrupted run's freezing.
    """

    #: Whether the strategy needs a head group to have anything to train at depth 0.
    needs_head: bool = True

    def __init__(self, config):
        super().__init__(config)
        self._keep_frozen: frozenset[int] = frozenset()
        self._groups: list | None = None
        self.epoch = 0
        self.depth: int | None = 0

    def depth_at(self, epoch: int, groups: list) -> int | None:
        raise NotImplementedError

    def validate(self, groups: list) -> None:
        """Raise a clear error when the settings do not fit this model."""
        if self.needs_head and not has_head(groups):
            raise ModelError(
                f"strategy '{self.name}' trains the task head first, but this model has no separate "
                "head group (a bare backbone, or an output layer tied to the input embeddings). "
                "Use strategy.name=partial or full."
            )

    def apply(self, model: nn.Module, groups: list) -> nn.Module:
        # Parameters the architecture itself freezes (Whisper's sinusoidal positions) stay frozen.
        self._keep_frozen = frozenset(id(p) for p in model.parameters() if not p.requires_grad)
        self._groups = groups
        self.validate(groups)
        self._set_epoch(0, model, groups)
        logger.info("Strategy %s: trainable groups at epoch 0: %s", self.name, ", ".join(trainable_group_names(groups)))
        return model

    def _set_epoch(self, epoch: int, model: nn.Module, groups: list) -> bool:
        self.epoch = epoch
        self.depth = self.depth_at(epoch, groups)
        return freeze_all_but(model, groups, self.depth, self._keep_frozen)

    def describe(self, model: nn.Module) -> dict[str, Any]:
        info = super().describe(model)
        if self._groups is not None:
            info["trainable_groups"] = trainable_group_names(self._groups)
        return info


def check_non_negative(value: int, key: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"strategy.{key} must be an integer >= 0, got {value!r}.")


def check_positive(value: int, key: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"strategy.{key} must be an integer >= 1, got {value!r}.")


def check_fraction(value: float | None, key: str) -> None:
    if value is not None and not 0.0 < value <= 1.0:
        raise ConfigError(f"strategy.{key} must be in (0, 1], got {value!r}.")
