"""`bitfit`: train the bias terms and the new head only (Ben Zaken et al., 2022, "BitFit").

A strategy is a class registered with `@register_strategy(name, settings_cls)`. Its settings
dataclass extends `StrategyConfig`, so `strategy.<key>` in a config is type-checked and a typo
gets a did-you-mean. `apply` freezes or wraps the model before training.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from hf_transfer.strategies import Strategy, StrategyConfig, register_strategy


@dataclass
class BitFitConfig(StrategyConfig):
    """Settings of `bitfit`.

    Attributes:
        name: `bitfit`.
        train_layer_norm: Also train the LayerNorm weights (not only their biases).
    """

    name: str = "bitfit"
    train_layer_norm: bool = False


@register_strategy("bitfit", BitFitConfig)
class BitFit(Strategy):
    """Train every bias term and the new head; every other weight stays pretrained."""

    #: Few parameters train, so a larger step than full fine-tuning (the paper's range: 1e-4 to 1e-3).
    default_learning_rate = 1e-3

    def apply(self, model: nn.Module, groups: list) -> nn.Module:
        head = {id(p) for g in groups if g.kind == "head" for p in g.parameters()}
        for name, param in model.named_parameters():
            is_norm_weight = self.config.train_layer_norm and "LayerNorm.weight" in name
            param.requires_grad = id(param) in head or name.endswith(".bias") or is_norm_weight
        return model
