"""Training budgets that fit the data: learning rate, number of optimizer steps, warm-up.

With 64 examples, 3 epochs at batch 16 is 12 optimizer steps, and no strategy learns anything
useful from that; a LoRA adapter, a new head alone and a full network also need learning rates
an order of magnitude apart. So when the config leaves them unset:

* **learning rate** (`training.learning_rate` unset): the strategy's own default
  (`DEFAULT_LEARNING_RATES`, or a strategy class's `default_learning_rate`; `auto` uses the
  default of the strategy it chose), times `CONV_LR_MULTIPLIER` when the strategy trains the
  backbone (`CONV_SCALED`) of a convolutional network (`models.families.CONV_FAMILIES`):
  batch-normalised CNNs are fine-tuned with steps about ten times a transformer's (EfficientNet-
  Lite0 `full` on 200 images, 52 steps: chance accuracy at 5e-5, 0.70-0.80 at 5e-4);
* **epochs** (`training.epochs` unset): 3, raised to whole epochs until the run has at least
  `training.min_steps` optimizer steps (unset: 50, or 4 per class when that is more). An explicit
  `training.epochs` or `training.max_steps` is taken as given (`min_steps` then applies only when
  it is set explicitly too);
* **warm-up**: `training.warmup_ratio` of the final number of steps.

When the epochs are raised, evaluation and epoch checkpoints happen every `k` epochs (k = raised
epochs / 3, rounded up, and always after the last one), so a small data set is not evaluated
after every one of its many short epochs. `Budget.as_dict()` goes into `metrics.json` under
`budget`, each value beside where it came from.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

#: Epochs when `training.epochs` is not set (then raised to reach `training.min_steps`).
DEFAULT_EPOCHS = 3.0
#: Optimizer steps a run gets at least when `training.epochs` and `training.min_steps` are unset.
DEFAULT_MIN_STEPS = 50
#: ... and at least this many per class (with many classes and few examples each, a head that
#: starts from a probe still needs the body to move: 24 classes x 8 examples, MiniLM `full`,
#: 0.420 after 50 steps, 0.459 after 100, frozen features 0.446).
DEFAULT_MIN_STEPS_PER_CLASS = 4
#: AdamW learning rate per strategy when `training.learning_rate` is not set. Full networks move
#: little from pretrained weights; top blocks a bit more; a freshly initialised head alone, a
#: LoRA/IA3/adapter bottleneck and random initialisation need much larger steps.
DEFAULT_LEARNING_RATES: dict[str, float] = {
    "full": 5e-5,
    "partial": 1e-4,
    "gradual_unfreeze": 1e-4,
    "lp_ft": 5e-5,
    "freeze": 3e-3,
    "lora": 1e-3,
    "adapter": 1e-3,
    "ia3": 3e-3,
    "scratch": 3e-4,
    "contrastive": 5e-5,
}
#: For a strategy neither in the table nor declaring `default_learning_rate`.
FALLBACK_LEARNING_RATE = 5e-5
#: Strategies whose default rate moves the backbone's own weights: scaled for convolutional networks.
CONV_SCALED = frozenset({"full", "partial", "gradual_unfreeze", "lp_ft", "scratch"})
CONV_LR_MULTIPLIER = 10.0


def default_learning_rate(strategy, model=None) -> tuple[float, str]:
    """The learning rate a strategy trains with when `training.learning_rate` is unset, and why.

    Args:
        strategy: The strategy (`auto`: the one it chose).
        model: The model it trains (or its `config.model_type`), for the convolutional scaling.
    """
    from hf_transfer.models.families import is_convolutional, model_type_of

    chosen = getattr(strategy, "delegate", None)  # `auto`: the strategy it picked
    if chosen is not None and chosen is not strategy:
        lr, why = default_learning_rate(chosen, model)
        return lr, f"{why} (chosen by auto)"
    own = getattr(type(strategy), "default_learning_rate", None)
    if isinstance(own, (int, float)) and not isinstance(own, bool):
        lr, why = float(own), f"default of strategy {strategy.name}"
    elif strategy.name in DEFAULT_LEARNING_RATES:
        lr, why = DEFAULT_LEARNING_RATES[strategy.name], f"default of strategy {strategy.name}"
    else:
        return FALLBACK_LEARNING_RATE, f"general default (strategy {strategy.name} declares none)"
    if strategy.name in CONV_SCALED and is_convolutional(model):
        return lr * CONV_LR_MULTIPLIER, (
            f"{why} x {CONV_LR_MULTIPLIER:g} for a convolutional network ({model_type_of(model)})"
        )
    return lr, why


def resolve_learning_rate(training, strategy, model=None) -> tuple[float, str]:
    """`training.learning_rate` when set, else the strategy's default for `model`; with the reason."""
    if training.learning_rate is not None:
        return float(training.learning_rate), "training.learning_rate"
    return default_learning_rate(strategy, model)


@dataclass
class Budget:
    """How long and how fast a run trains, and where each number came from.

    Attributes:
        learning_rate: Base AdamW learning rate.
        total_steps: Optimizer steps.
        epochs: Passes over the training data (the last one may be partial with `max_steps`).
        steps_per_epoch: Optimizer steps per epoch in this process.
        warmup_steps: Steps of linear warm-up.
        epochs_per_eval: Evaluate (and write epoch checkpoints) every this many epochs.
        sources: Why each value is what it is.
    """

    learning_rate: float
    total_steps: int
    epochs: int
    steps_per_epoch: int
    warmup_steps: int
    epochs_per_eval: int = 1
    sources: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def resolve_budget(training, strategy, steps_per_epoch: int, model=None, num_classes: int | None = None) -> Budget:
    """The run's budget from the `training` settings and the data (`steps_per_epoch`).

    Args:
        training: `TrainConfig.training`.
        strategy: The strategy (for its default learning rate).
        steps_per_epoch: Optimizer steps in one pass over this process's share of the data.
        model: The model trained (or its `config.model_type`): convolutional networks get larger
            default rates.
        num_classes: Labels of a classification task: the default minimum of steps is at least
            `DEFAULT_MIN_STEPS_PER_CLASS` per class (a strategy with its own minimum keeps it).
    """
    lr, lr_source = resolve_learning_rate(training, strategy, model)
    spe = max(1, int(steps_per_epoch))
    sources = {"learning_rate": lr_source}
    epochs_per_eval = 1
    if training.max_steps:
        total = int(training.max_steps)
        sources["total_steps"] = "training.max_steps"
    else:
        # A strategy may bring its own defaults (`contrastive`: one pass over its sampled pairs,
        # whose number already fits the data).
        default_epochs = float(getattr(strategy, "default_epochs", None) or DEFAULT_EPOCHS)
        default_min = getattr(strategy, "default_min_steps", None)
        per_class = (
            default_min is None and num_classes and DEFAULT_MIN_STEPS_PER_CLASS * num_classes > DEFAULT_MIN_STEPS
        )
        default_min = DEFAULT_MIN_STEPS if default_min is None else int(default_min)
        if per_class:
            default_min = DEFAULT_MIN_STEPS_PER_CLASS * int(num_classes)
        epochs = training.epochs if training.epochs is not None else default_epochs
        total = max(1, math.ceil(epochs * spe))
        sources["total_steps"] = (
            f"training.epochs={epochs:g}" if training.epochs is not None else f"default {default_epochs:g} epochs"
        )
        min_steps = training.min_steps
        if min_steps is None:
            min_steps = default_min if training.epochs is None else 0
            min_source = (
                f"default min_steps={default_min} ({DEFAULT_MIN_STEPS_PER_CLASS} per class)"
                if per_class
                else f"default min_steps={default_min}"
            )
        else:
            min_source = f"training.min_steps={min_steps}"
        if min_steps and total < min_steps:
            raised = math.ceil(min_steps / spe)
            sources["total_steps"] += f" gave {total} steps (< {min_source}): raised to {raised} epochs of {spe} steps"
            epochs_per_eval = max(1, math.ceil(raised / max(1.0, epochs)))
            total = raised * spe
    n_epochs = math.ceil(total / spe)
    warmup = int(training.warmup_ratio * total)
    sources["warmup_steps"] = f"training.warmup_ratio={training.warmup_ratio:g} of {total} steps"
    budget = Budget(
        learning_rate=lr,
        total_steps=total,
        epochs=n_epochs,
        steps_per_epoch=spe,
        warmup_steps=warmup,
        epochs_per_eval=epochs_per_eval,
        sources=sources,
    )
    if hasattr(strategy, "on_budget"):  # the strategy learns its schedule (e.g. which epoch is the last)
        strategy.on_budget(budget)
    return budget
