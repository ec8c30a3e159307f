"""`full` fine-tuning and the `scratch` baseline."""

from __future__ import annotations

from hf_transfer.strategies.base import Strategy, StrategyConfig, register_strategy


@register_strategy("full", StrategyConfig)
class FullFineTuning(Strategy):
    """Every parameter trains (optionally with layer-wise learning rates)."""


@register_strategy("scratch", StrategyConfig)
class Scratch(Strategy):
    """The same architecture from random initialisation, trained fully.

    The baseline every transfer claim is measured against: if `full` does not beat it, the
    pretrained knowledge did not transfer (negative transfer).
    """

    from_scratch = True
