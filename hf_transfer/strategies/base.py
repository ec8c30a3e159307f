"""Strategy base classes and the registry every strategy adds itself to.

A strategy is a small operation on the model's ordered layer groups (see
`hf_transfer.models.layer_groups`): which groups train, with which learning-rate scale, and how
that changes across epochs. Each strategy has its own typed settings dataclass, so a typo in
`strategy.<key>` is caught by the config loader, not silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from hf_transfer.config import StrategyConfig
from hf_transfer.engine.optim import layerwise_lr_scales  # noqa: F401  (the strategies' default lr_scales)
from hf_transfer.registry import available_strategies, register_strategy, strategy_class
from hf_transfer.registry import strategy_settings_class as strategy_config_class

__all__ = [
    "RunContext",
    "Strategy",
    "available_strategies",
    "build_strategy",
    "register_strategy",
    "strategy_class",
    "strategy_config_class",
]


@dataclass
class RunContext:
    """What a strategy may look at before and after the model is built.

    Attributes:
        cfg: The run's config.
        task: The recipe's task (processor loaded).
        splits: The loaded splits.
        output_dir: The run folder.
    """

    cfg: Any
    task: Any
    splits: Any
    output_dir: Path


def build_strategy(config: StrategyConfig) -> Strategy:
    """Instantiate the strategy that `config.name` names."""
    return strategy_class(config.name)(config)


class Strategy:
    """Base strategy: everything trains, one learning rate (the `full` behaviour).

    Subclasses override the hooks below. The engine calls, in order: `apply` once after the
    model is built; `param_groups` once to build the optimizer (every parameter that may ever
    train is in some group from the start, so unfreezing later needs no new optimizer);
    `on_epoch_start` at the start of every epoch.
    """

    name: ClassVar[str] = "base"
    config_cls: ClassVar[type[StrategyConfig]] = StrategyConfig
    #: Build the model from the checkpoint's config with random weights instead of loading them.
    from_scratch: ClassVar[bool] = False
    #: The engine trains nothing: `fit(ctx, model, groups)` fits the strategy's own estimator
    #: (e.g. on cached features) and returns the run's metrics.
    trains_with_engine: ClassVar[bool] = True
    #: What trains changes between epochs (`on_epoch_start`): DDP must then wrap every parameter
    #: that will ever train, and the frozen-prefix cache cannot be used.
    changes_trainable_set: ClassVar[bool] = False
    #: `training.mixed_precision` when the user leaves it unset (`engine.distributed.resolve_mixed_precision`).
    default_mixed_precision: ClassVar[str] = "no"

    def __init__(self, config: StrategyConfig):
        self.config = config

    def prepare(self, ctx) -> None:
        """Look at the run (data sizes, task) before the model is built. `ctx` is a `RunContext`."""

    def apply(self, model: nn.Module, groups: list) -> nn.Module:
        """Freeze or wrap the model before training. Returns the model to train.

        The base trains what the model trains: parameters a model keeps fixed by design (such as
        Whisper's sinusoidal position table) stay fixed.
        """
        return model

    def lr_scales(self, groups: list) -> list[float]:
        """Learning-rate multiplier per layer group (bottom to top; head last)."""
        return layerwise_lr_scales(groups, self.config.layer_lr_decay, self.config.head_lr_multiplier)

    def fit(self, ctx, model: nn.Module, groups: list) -> dict[str, Any]:
        """Train without the engine (only when `trains_with_engine` is False); returns the metrics.

        The run folder's model is written here too; `metrics["_model"]` may hand back the model
        that `describe` should count.
        """
        raise NotImplementedError(f"strategy {self.name} trains with the engine")

    def init_head(self, ctx, model: nn.Module) -> dict[str, Any]:
        """Initialise the new head before `apply` (`strategy.head_init`, `strategies.head_init`).

        Returns the record that goes to `metrics.json` (empty for strategies that do not train a head).
        """
        from hf_transfer.strategies.head_init import initialise_head

        return initialise_head(self, ctx, model)

    def on_epoch_start(self, epoch: int, model: nn.Module, groups: list) -> bool:
        """Change what trains at the start of `epoch` (0-based). True if anything changed.

        Label sets: the head started from a probe is fitted again on the trained body
        (`head_init.refit_target_head`); an override calls `self.refit_head(epoch, model)`."""
        return self.refit_head(epoch, model)

    def on_budget(self, budget) -> None:
        """The run's budget (`engine.budget.resolve_budget`), once the trainer has resolved it.

        A label-set head that is fitted again at the last epoch (`refit_head`) is
        evaluated only after it: the heads of earlier epochs are replaced, so a checkpoint of
        theirs is no candidate for the best model (a 20-row eval split picked one on the
        benchmark, 0.48 macro F1 against 0.55-0.56 for the refitted model of the other seeds)."""
        self.budget = budget
        if getattr(self, "_target_head_ctx", None) is not None and budget.epochs > 1:
            budget.epochs_per_eval = budget.epochs
            budget.sources["epochs_per_eval"] = (
                "the last epoch only: the head is fitted again on the trained body "
                "at its start (strategies.head_init.refit_target_head)"
            )

    def refit_head(self, epoch: int, model: nn.Module) -> bool:
        """`strategies.head_init.refit_target_head` (a no-op unless the head of a label-set target
        started from a probe). True when it changed what trains."""
        if getattr(self, "_target_head_ctx", None) is None:
            return False
        from hf_transfer.strategies.head_init import refit_target_head

        return refit_target_head(self, epoch, model)

    def save_model(self, model: nn.Module, out_dir) -> None:
        """Write the final model so plain transformers loads it (safetensors)."""
        model.save_pretrained(out_dir)

    @classmethod
    def summary(cls) -> str:
        """The first line of the strategy's docstring: the model card's one-line description."""
        doc = (cls.__doc__ or "").strip().splitlines()
        return doc[0].rstrip(".") + "." if doc else ""

    def describe(self, model: nn.Module) -> dict[str, Any]:
        """Facts for the log, `metrics.json` and the model card."""
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        info = {
            "strategy": self.name,
            "trainable_parameters": trainable,
            "frozen_parameters": total - trainable,
        }
        if getattr(self, "_head_refits", 0):
            info.update(head_refits=self._head_refits, head_refit_epoch=self._head_refit_epoch)
        return info

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to continue the same schedule."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
