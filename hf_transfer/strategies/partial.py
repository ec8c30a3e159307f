"""`partial`: fine-tune the top blocks, keep the lower ones frozen.

The top `trainable_layers` blocks train, together with every group above them (final norm,
pooler: the "top" groups) and the head; the stem and the lower blocks keep their pretrained
values. Low layers hold generic features (edges, textures, word pieces), high layers task-specific
ones, so with a few hundred to a few thousand examples from a similar domain only the high layers
need to move. `trainable_layers: 0` is the same as `freeze` (head only).
"""

from __future__ import annotations

from dataclasses import dataclass

from hf_transfer.errors import ConfigError
from hf_transfer.strategies._groups import GroupFreezing, check_fraction, check_non_negative, num_blocks, top_blocks
from hf_transfer.strategies.base import StrategyConfig, register_strategy


@dataclass
class PartialConfig(StrategyConfig):
    """Settings of `partial` (fine-tune the top blocks only).

    Attributes:
        name: `partial`.
        trainable_layers: How many blocks, counted from the top, train (with the final norm /
            pooler and the head above them). 0 trains the head only. More than the model's
            number of blocks is an error (`hf-transfer layers MODEL` lists the blocks).
        trainable_fraction: When set (0 < f <= 1), overrides `trainable_layers`: the top
            `ceil(f * number of blocks)` blocks train, e.g. 0.5 for the top half whatever the depth.
    """

    name: str = "partial"
    trainable_layers: int = 2
    trainable_fraction: float | None = None

    def __post_init__(self) -> None:
        check_non_negative(self.trainable_layers, "trainable_layers")
        check_fraction(self.trainable_fraction, "trainable_fraction")


@register_strategy("partial", PartialConfig)
class PartialFineTuning(GroupFreezing):
    """Train the top `trainable_layers` blocks, the groups above them and the head."""

    def trainable_blocks(self, groups: list) -> int:
        """The number of top blocks that train on this model."""
        return top_blocks(groups, self.config.trainable_layers, self.config.trainable_fraction)

    def validate(self, groups: list) -> None:
        total = num_blocks(groups)
        k = self.trainable_blocks(groups)
        if k > total:
            raise ConfigError(
                f"strategy.trainable_layers={k}, but this model has only {total} blocks. Use a value "
                f"from 0 (head only) to {total} (every block; the embeddings/stem stay frozen), or "
                "strategy.name=full to train everything."
            )
        if k == 0:
            super().validate(groups)

    def depth_at(self, epoch: int, groups: list) -> int:
        return self.trainable_blocks(groups)
