"""`auto`: pick a transfer strategy from the target data size and a measured source similarity.

The rule is the classic data-size x similarity table (target = the labelled training examples
after the eval carve-out and `data.max_train_samples`; similarity = how close the pretrained
checkpoint's domain is to the target task):

| training examples          | similarity | choice                                                   |
| -------------------------- | ---------- | -------------------------------------------------------- |
| small, < 100               | high       | `contrastive` (text, one class per example, 2+ examples each), else `partial`, top 2 blocks; `feature_extraction` (else `freeze`) when the measured separability is >= 0.9 |
| small, < 100               | low        | `contrastive` (as above), else `partial`, top 2 blocks (light fine-tuning) |
| any size, <= 16 a class    | any        | `contrastive` (text, one class per example, 2+ examples each); otherwise the row for the size |
| medium, 100 .. 10,000      | high       | `partial`, top half of the blocks                        |
| medium, 100 .. 10,000      | low        | `full`                                                   |
| large, > 10,000            | high       | `full`                                                   |
| large, > 10,000            | low        | `full`, with a note recommending a `scratch` comparison  |

How similarity is measured (`strategy.similarity: measure`, the default), in `prepare`: the
pretrained model is built with its new head, and up to `measure_examples` training examples
(seeded sample) go through the frozen backbone. The features are `models.features`' (the
checkpoint's own pooling convention and `strategy.layers`, the same features `feature_extraction`
then uses, read from its cache when the sample is the whole training split), on Accelerate's
device. A logistic regression on standardised features is scored by stratified k-fold
cross-validation (k = min(5, smallest class count)), so every score is on held-out examples. Its
balanced accuracy `b` against chance `1/K` (K classes) gives the
normalised separability `s = clip((b - 1/K) / (1 - 1/K), 0, 1)`: 0 = the frozen features carry
nothing about the labels, 1 = perfectly separable. `s >= similarity_threshold` (default 0.5, i.e.
balanced accuracy halfway from chance to perfect; 0.75 for two classes) counts as high.

Linear separability of frozen features is a proxy for "source and target are similar" in the
same spirit as transferability scores (LogME, H-score): it asks whether the checkpoint already
represents what the target labels depend on. With fewer than 2 examples in some class nothing can
be held out; similarity is then taken as high (the checkpoint was chosen for this kind of data)
and the reason says so. Users who know better set `strategy.similarity: high` or `low`, which
skips the measurement.

**The table is the prior; a race on the training data decides when it can.** With
`strategy.race: true` (default), once the table has picked, the pick and `race_candidates` are
trained on three quarters of the training split and scored on the remaining quarter (stratified,
seeded; the eval split is never read), within `max_cost` (2.5) times the estimated run of the pick
(`strategies.auto_race`). Only when that quarter holds at least `min_holdout` (128) examples: on
fewer, the scores are noise and the table decides alone. `auto_decided_by`, `auto_race`,
`auto_race_seconds` and `auto_race_limit_seconds` record which and what it cost.

`auto` then builds the chosen strategy with the same `layer_lr_decay` and `head_lr_multiplier`
and delegates every hook to it (composition): what trains, learning-rate scales, the epoch
schedule, saving, resume state. `describe()` (merged into `metrics.json`) and the log record
`auto_choice`, `auto_reason`, `auto_similarity` (high/low), `auto_similarity_score` (the measured
`s`, or None when given), `auto_balanced_accuracy`, `auto_train_size` and `auto_size_band`.
"""  # noqa: E501  (a markdown table above: its rows cannot wrap)

from __future__ import annotations

import dataclasses
import inspect
import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from torch import nn

from hf_transfer.errors import ConfigError, HFTransferError
from hf_transfer.models.features import FeatureExtractor, extract, spec_from_settings
from hf_transfer.registry import recipe_modality
from hf_transfer.strategies._groups import num_blocks
from hf_transfer.strategies.base import (
    Strategy,
    StrategyConfig,
    available_strategies,
    build_strategy,
    register_strategy,
    strategy_config_class,
)

logger = logging.getLogger(__name__)

#: Fewer training examples than this is "small".
SMALL_BELOW = 100
#: More training examples than this is "large"; SMALL_BELOW .. LARGE_ABOVE inclusive is "medium".
LARGE_ABOVE = 10_000
#: Strategies `auto` races by default (after the prior's pick, in this order).
RACE_CANDIDATES = ("feature_extraction", "contrastive", "lora", "full", "partial", "lp_ft")


@dataclass
class AutoConfig(StrategyConfig):
    """Settings of `auto` (choose the strategy from data size and measured similarity).

    Attributes:
        name: `auto`.
        race: Train candidate strategies on inner folds of the training data and keep the best
            (`strategies.auto_race`) when the inner held-out part has at least `min_holdout`
            examples; otherwise (or with `false`) the prior decides alone.
        race_candidates: The strategies raced, after the prior's pick (which always runs first).
        max_cost: The race and the final run together cost at most this many times the estimated
            whole run of the prior's pick. 2.5 leaves room under 3x for estimates that miss and
            for machine load (measured at 3.0, `auto` took 2.7-3.2x `full` per seed on fortunes24).
        holdout_fraction: Share of each class held out for the race.
        min_holdout: Race only when the held-out part has at least this many examples.
        similarity: `measure` (default) estimates how well the frozen pretrained features separate
            the target labels; `high` or `low` states it and skips the measurement.
        similarity_threshold: Normalised separability (0 = chance, 1 = perfect) at or above which
            the similarity counts as high.
        measure_examples: At most this many training examples (a seeded sample) are embedded for
            the measurement.
        measure_batch_size: Batch size of the feature pass.
        layers: Which layers the features read (`last`, `mean`, or indices); passed on to
            `feature_extraction` when it is chosen.
        combine: `mean` or `concat` for several layers.
        pooling: `auto` (the checkpoint's convention) or an explicit pooling.
        normalize: L2-normalise the features; unset = the checkpoint's convention.
    """

    name: str = "auto"
    similarity: Literal["measure", "high", "low"] = "measure"
    similarity_threshold: float = 0.5
    measure_examples: int = 400
    measure_batch_size: int = 32
    layers: Literal["last", "mean"] | list[int] = "last"
    combine: Literal["mean", "concat"] = "mean"
    pooling: Literal["auto", "mean", "cls", "max", "last_token", "pooler", "head_input"] = "auto"
    normalize: bool | None = None
    race: bool = True
    race_candidates: list[str] = dataclasses.field(default_factory=lambda: list(RACE_CANDIDATES))
    max_cost: float = 2.5
    holdout_fraction: float = 0.25
    min_holdout: int = 128

    def __post_init__(self) -> None:
        if self.max_cost < 1.0:
            raise ConfigError(
                f"strategy.max_cost must be at least 1 (the chosen strategy's own run), got {self.max_cost!r}."
            )
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ConfigError(f"strategy.holdout_fraction must be in (0, 1), got {self.holdout_fraction!r}.")
        if self.min_holdout < 2:
            raise ConfigError(f"strategy.min_holdout must be at least 2, got {self.min_holdout!r}.")
        if "auto" in self.race_candidates or not self.race_candidates:
            raise ConfigError("strategy.race_candidates must name at least one strategy, and not auto itself.")
        if not 0.0 <= self.similarity_threshold <= 1.0:
            raise ConfigError(f"strategy.similarity_threshold must be in [0, 1], got {self.similarity_threshold!r}.")
        if self.measure_examples < 4:
            raise ConfigError(f"strategy.measure_examples must be >= 4, got {self.measure_examples!r}.")
        if self.measure_batch_size < 1:
            raise ConfigError(f"strategy.measure_batch_size must be >= 1, got {self.measure_batch_size!r}.")
        spec_from_settings(self)  # layers / combine / pooling checked before any data is read


@dataclass
class AutoChoice:
    """What `choose_strategy` decided.

    Attributes:
        name: The chosen strategy.
        settings: Its strategy-specific settings (e.g. `trainable_layers`).
        size_band: `small`, `medium` or `large`.
        similarity: `high` or `low`.
        reason: One sentence for the log and metrics.
    """

    name: str
    settings: dict[str, Any]
    size_band: str
    similarity: str
    reason: str


def size_band(train_size: int) -> str:
    """`small` (< 100), `medium` (100 .. 10,000) or `large` (> 10,000)."""
    if train_size < SMALL_BELOW:
        return "small"
    if train_size > LARGE_ABOVE:
        return "large"
    return "medium"


#: Measured separability at or above which a small set's frozen features are left as they are.
NEAR_PERFECT = 0.9
#: At most this many training examples per class (on average) is few-shot: `contrastive` for text
#: that pairs, whatever the total size (24 classes x 8 examples is 192 rows, the medium band).
FEW_PER_CLASS = 16


def choose_strategy(
    train_size: int,
    similarity: str,
    available: list[str] | None = None,
    classes: int | None = None,
    score: float | None = None,
    pairs: bool = False,
) -> AutoChoice:
    """The table in the module docstring, as a function.

    Args:
        train_size: Labelled training examples.
        similarity: `high` or `low`.
        available: Registered strategy names (defaults to `available_strategies()`); decides
            whether `feature_extraction` and `contrastive` can be chosen.
        classes: Number of classes (None: unknown).
        score: The measured separability (None: not measured).
        pairs: The data suits `contrastive`: text with one class per example and at least two
            examples in every class (`pairs_fit`).

    Returns:
        The choice, with its reason.
    """
    if similarity not in ("high", "low"):
        raise ValueError(f"similarity must be 'high' or 'low', got {similarity!r}")
    available = available_strategies() if available is None else available
    band = size_band(train_size)
    where = f"{train_size} training examples ({band}) and {similarity} similarity"
    if band == "small" and similarity == "high" and score is not None and score >= NEAR_PERFECT:
        where += f", frozen features already near-perfectly separable ({score:.2f} >= {NEAR_PERFECT})"
        if "feature_extraction" in available:
            return AutoChoice(
                "feature_extraction",
                {},
                band,
                similarity,
                f"{where}: frozen features with a classic classifier (feature extraction).",
            )
        return AutoChoice(
            "freeze",
            {},
            band,
            similarity,
            f"{where}: feature extraction (linear probe on the frozen backbone; feature_extraction is not installed).",
        )
    few_per_class = bool(classes) and train_size / classes <= FEW_PER_CLASS
    if (band == "small" or few_per_class) and pairs and "contrastive" in available:
        # Measured (docs/benchmarks/fewshot.md, MiniLM, 8 a class, 3 seeds on 2-, 4- and 24-class
        # sets of real text): contrastive pairs were the best strategy on two sets and 0.011 below
        # it on the third, where light fine-tuning (`partial`) lost 0.03 to the frozen features on
        # one. At 64 a class they were not (3 seeds, fortunes: 0.856 against `lp_ft` 0.881;
        # fortunes24: 0.605 against `full` 0.628): above FEW_PER_CLASS a class the table decides.
        if classes:
            where += f", {train_size / classes:.0f} per class"
        return AutoChoice(
            "contrastive",
            {},
            band,
            similarity,
            f"{where}: few examples per class: contrastive pairs shape the encoder, then a classifier on its features.",
        )
    if band == "small":
        return AutoChoice(
            "partial",
            {"trainable_layers": 2},
            band,
            similarity,
            f"{where}: light fine-tuning of the top 2 blocks from a probe-initialised head.",
        )
    if band == "medium" and similarity == "high":
        return AutoChoice(
            "partial", {"trainable_fraction": 0.5}, band, similarity, f"{where}: fine-tune the top half of the blocks."
        )
    if band == "medium":
        return AutoChoice("full", {}, band, similarity, f"{where}: fine-tune every layer.")
    if similarity == "high":
        return AutoChoice("full", {}, band, similarity, f"{where}: fine-tune every layer.")
    return AutoChoice(
        "full",
        {},
        band,
        similarity,
        f"{where}: fine-tune every layer; with this much data from a distant domain, "
        "also train strategy.name=scratch and compare (negative transfer).",
    )


def train_labels(train) -> np.ndarray | None:
    """The training split's `labels` column as an array, or None when it has none."""
    try:
        return np.asarray(train["labels"])
    except (KeyError, TypeError, ValueError):
        return None


def pairs_fit(ctx, labels: np.ndarray | None) -> bool:
    """Whether `contrastive` suits this run: a text recipe with one class id per example (no label
    sets, numbers or tags) and at least two training examples in every class (a positive pair)."""
    cfg = getattr(ctx, "cfg", None)
    if cfg is None or labels is None or labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        return False
    task = getattr(ctx, "task", None)
    if getattr(task, "token_level", False) or getattr(task, "target_kind", None) in ("multilabel", "regression"):
        return False
    if recipe_modality(getattr(cfg, "recipe", "")) != "text":  # measured on text only
        return False
    _, counts = np.unique(labels, return_counts=True)
    return len(counts) >= 2 and int(counts.min()) >= 2


# ----------------------------------------------------------------------------------- measuring


def separability(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> tuple[float | None, float | None]:
    """How well a logistic regression separates `labels` from `features`, on held-out folds.

    Returns:
        `(score, balanced_accuracy)`: score = `(b - 1/K) / (1 - 1/K)` clipped to [0, 1]; both None
        when fewer than 2 classes or a class with fewer than 2 examples leaves nothing to hold out.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray(labels)
    _, counts = np.unique(labels, return_counts=True)
    if len(counts) < 2 or counts.min() < 2:
        return None, None
    folds = int(min(5, counts.min()))
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    pred = cross_val_predict(clf, np.asarray(features, dtype=np.float64), labels, cv=cv)
    bacc = float(balanced_accuracy_score(labels, pred))
    chance = 1.0 / len(counts)
    score = float(np.clip((bacc - chance) / (1.0 - chance), 0.0, 1.0))
    return score, bacc


@dataclass
class Measurement:
    """Result of `measure_similarity`."""

    score: float | None
    balanced_accuracy: float | None
    examples: int
    classes: int


def measure_similarity(
    ctx, max_examples: int = 400, batch_size: int = 32, seed: int = 0, settings: Any = None
) -> Measurement:
    """Normalised linear separability of the target labels in the frozen pretrained features.

    Args:
        ctx: The run context (`ctx.task` builds the model and batches, `ctx.splits.train` is the
            label-encoded training split with a `labels` column).
        max_examples: Sample at most this many training examples (seeded).
        batch_size: Batch size of the feature pass.
        seed: Sampling and cross-validation seed.
        settings: Where `layers`, `combine`, `pooling`, `normalize` come from (the auto config).
    """
    task, train = ctx.task, ctx.splits.train
    n = min(len(train), max_examples)
    sample = train.shuffle(seed=seed).select(range(n)) if n < len(train) else train
    cfg = getattr(ctx, "cfg", None)
    if getattr(task, "token_level", False):
        # Token classification: one example per scored word (its head input and tag); tags with
        # a single token in the sample cannot be held out and are left out of the measurement.
        X, labels = task.token_features(task.build_model(), sample, batch_size=batch_size)
        tags, counts = np.unique(labels, return_counts=True)
        keep = np.isin(labels, tags[counts >= 2])
        score, bacc = separability(X[keep].astype(np.float64), labels[keep], seed)
        return Measurement(score, bacc, n, len(np.unique(labels[keep])))
    recipe = getattr(cfg, "recipe", "text_classification")
    extractor = FeatureExtractor(
        task.build_model(),
        modality=recipe_modality(recipe, "text"),
        spec=spec_from_settings(settings),
        name_or_path=getattr(getattr(cfg, "model", None), "name_or_path", None),
    )
    feats = extract(extractor, task, sample, batch_size=batch_size)
    del extractor
    labels = np.asarray(list(sample["labels"]))
    # Label sets and numeric targets bring their own measure (tasks.multilabel, tasks.regression).
    measure = getattr(task, "separability", separability)
    score, bacc = measure(feats.X.astype(np.float64), labels, seed)
    return Measurement(score, bacc, n, labels.shape[1] if labels.ndim == 2 else len(np.unique(labels)))


# ----------------------------------------------------------------------------------- strategy


@register_strategy("auto", AutoConfig)
class Auto(Strategy):
    """Choose a strategy in `prepare` (see the module docstring), then delegate every hook to it."""

    def __init__(self, config: AutoConfig):
        super().__init__(config)
        self.delegate: Strategy | None = None
        self.choice: AutoChoice | None = None
        self.train_size: int | None = None
        self.measurement: Measurement | None = None
        self.note = ""
        self.decided_by = "prior: strategy.race=false"
        self.race_result = None
        self._started: float | None = None  # when `prepare` began: the measurement counts against the race
        self.race_seconds = 0.0

    # Class-level flags the engine and run.py read come from the chosen strategy.
    @property
    def from_scratch(self) -> bool:  # type: ignore[override]
        return bool(self.delegate is not None and self.delegate.from_scratch)

    @property
    def trains_with_engine(self) -> bool:  # type: ignore[override]
        return self.delegate is None or self.delegate.trains_with_engine

    @property
    def changes_trainable_set(self) -> bool:
        return bool(getattr(self.delegate, "changes_trainable_set", False))

    def _chosen(self) -> Strategy:
        if self.delegate is None:
            raise HFTransferError("strategy 'auto' chooses its strategy in prepare(ctx); call prepare first.")
        return self.delegate

    def __getattr__(self, name: str):
        # Hooks only some strategies have (feature_extraction's `fit`, ...) come from the delegate.
        delegate = self.__dict__.get("delegate")
        if delegate is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(delegate, name)

    def prepare(self, ctx) -> None:
        import time

        self._started = time.time()
        c = self.config
        self.train_size = len(ctx.splits.train)
        if c.similarity == "measure":
            seed = getattr(getattr(getattr(ctx, "cfg", None), "training", None), "seed", 0)
            self.measurement = measure_similarity(ctx, c.measure_examples, c.measure_batch_size, seed, c)
            m = self.measurement
            if m.score is None:
                similarity = "high"
                self.note = " Similarity could not be measured (a class has fewer than 2 examples); assumed high."
            else:
                similarity = "high" if m.score >= c.similarity_threshold else "low"
                kind = getattr(ctx.task, "target_kind", "")  # label sets and numbers measure otherwise
                what = {
                    "regression": f"cross-validated ridge R^2 {m.balanced_accuracy:.3f}",
                    "multilabel": f"mean per-label balanced accuracy {m.balanced_accuracy:.3f}, {m.classes} labels",
                }.get(kind, f"balanced accuracy {m.balanced_accuracy:.3f}, {m.classes} classes")
                self.note = (
                    f" Measured separability {m.score:.3f} ({what}, {m.examples} examples; threshold "
                    f"{c.similarity_threshold})."
                )
        else:
            similarity = c.similarity
            self.note = " Similarity given by strategy.similarity."
        score = self.measurement.score if self.measurement is not None else None
        pairs = pairs_fit(ctx, self._labels(ctx))
        self.choice = choose_strategy(self.train_size, similarity, classes=self._classes(ctx), score=score, pairs=pairs)
        if c.race:
            self._race(ctx)
        self.delegate = build_strategy(self._delegate_config(self.choice))
        logger.info(
            "auto: chose '%s': %s%s Decided by %s.", self.choice.name, self.choice.reason, self.note, self.decided_by
        )
        if self.choice.size_band == "large" and similarity == "low":
            logger.warning("auto: %s", self.choice.reason)
        self.delegate.prepare(ctx)

    @staticmethod
    def _labels(ctx) -> np.ndarray | None:
        return train_labels(ctx.splits.train)

    def _classes(self, ctx) -> int | None:
        labels = self._labels(ctx)
        return None if labels is None else len(np.unique(labels))

    def _race(self, ctx) -> None:
        """Race the candidates on inner folds of the training data (`strategies.auto_race`)."""
        import time

        from hf_transfer.strategies.auto_race import inner_split, run_race, score_on_inner_split

        c = self.config
        labels = self._labels(ctx)
        if labels is None:
            self.decided_by = "prior: the training split has no label column to race on"
            return
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            # The race scores accuracy on held-out rows: one class id per row. Label sets, numbers
            # and tagged sentences keep the prior's choice.
            self.decided_by = (
                "prior: the race compares single-label accuracy; this recipe's labels are not one class per row"
            )
            return
        seed = getattr(getattr(getattr(ctx, "cfg", None), "training", None), "seed", 0)
        train_idx, held_idx = inner_split(labels, c.holdout_fraction, seed)
        if len(held_idx) < c.min_holdout:
            self.decided_by = (
                f"prior: the race's held-out part would have {len(held_idx)} examples, fewer than "
                f"strategy.min_holdout={c.min_holdout}, too few to tell strategies apart"
            )
            return
        available = available_strategies()
        order = [(self.choice.name, dict(self.choice.settings))]
        order += [(n, {}) for n in c.race_candidates if n != self.choice.name and n in available]
        classes = len(np.unique(labels))
        work = self._race_work(ctx, order, len(train_idx), classes)
        whole = self._race_work(ctx, order[:1], len(labels), classes)[0]
        t0 = time.time()
        result = run_race(
            order,
            lambda n, st: score_on_inner_split(
                ctx,
                n,
                st,
                train_idx,
                held_idx,
                lambda name, settings: self._delegate_config(
                    AutoChoice(name, settings, self.choice.size_band, self.choice.similarity, "")
                ),
            ),
            train_fraction=len(train_idx) / len(labels),
            max_cost=c.max_cost,
            work=work,
            whole_work=whole,
            spent_before=t0 - self._started if self._started else 0.0,
        )
        self.race_result, self.race_seconds = result, time.time() - t0
        won = result.entries[result.winner]
        scores = ", ".join(f"{e.name} {e.accuracy:.3f}" for e in result.entries if e.accuracy is not None)
        self.decided_by = (
            f"race on {len(train_idx)} training / {len(held_idx)} held-out examples of the training split: {scores}"
        )
        if won.name != self.choice.name or won.settings != self.choice.settings:
            self.choice = AutoChoice(
                won.name,
                won.settings,
                self.choice.size_band,
                self.choice.similarity,
                f"the race's best ({won.name}, held-out accuracy {won.accuracy:.3f}); "
                f"the prior had said: {self.choice.reason}",
            )

    def _race_work(self, ctx, order: list, examples: int, classes: int) -> list[float | None]:
        """Each candidate's estimated work on the inner training part (`auto_race.estimated_work`);
        None for all when the run has no training settings."""
        from hf_transfer.strategies.auto_race import estimated_work

        training = getattr(getattr(ctx, "cfg", None), "training", None)
        if training is None:
            return [None] * len(order)
        strategies = [
            build_strategy(self._delegate_config(AutoChoice(n, st, self.choice.size_band, self.choice.similarity, "")))
            for n, st in order
        ]
        return [estimated_work(s, training, examples, classes) for s in strategies]

    def _delegate_config(self, choice: AutoChoice) -> StrategyConfig:
        cls = strategy_config_class(choice.name)
        names = {f.name for f in dataclasses.fields(cls)}
        shared = {f.name: getattr(self.config, f.name) for f in dataclasses.fields(StrategyConfig)}
        # The features the measurement read are the ones feature_extraction then fits on.
        shared.update({k: getattr(self.config, k) for k in ("layers", "combine", "pooling", "normalize")})
        kwargs = {k: v for k, v in {**shared, **choice.settings}.items() if k in names}
        kwargs["name"] = choice.name
        return cls(**kwargs)

    def apply(self, model: nn.Module, groups: list) -> nn.Module:
        delegate = self._chosen()
        wanted = getattr(delegate.config, "trainable_layers", None)
        if self.choice.name == "partial" and wanted is not None and wanted > num_blocks(groups):
            # "Top 2 blocks" on a one-block model means every block.
            delegate.config.trainable_layers = num_blocks(groups)
            self.note += f" The model has only {num_blocks(groups)} block(s): all of them train."
        return delegate.apply(model, groups)

    def describe(self, model: nn.Module) -> dict[str, Any]:
        info = self._chosen().describe(model)
        m = self.measurement

        def rounded(x):
            return None if x is None else round(x, 4)

        info.update(
            {
                "strategy": "auto",
                "auto_choice": self.choice.name,
                "auto_reason": self.choice.reason + self.note,
                "auto_similarity": self.choice.similarity,
                "auto_similarity_score": rounded(m.score) if m else None,
                "auto_balanced_accuracy": rounded(m.balanced_accuracy) if m else None,
                "auto_train_size": self.train_size,
                "auto_size_band": self.choice.size_band,
                "auto_decided_by": self.decided_by,
            }
        )
        r = self.race_result
        if r is not None:
            info.update(
                {
                    "auto_race": [e.as_dict() for e in r.entries],
                    "auto_race_seconds": round(self.race_seconds, 2),
                    "auto_race_limit_seconds": None if r.limit_seconds is None else round(r.limit_seconds, 2),
                }
            )
        return info

    def state_dict(self) -> dict[str, Any]:
        return {"auto_choice": self.choice.name if self.choice else None, "delegate": self._chosen().state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        saved = state.get("auto_choice")
        if saved and self.choice is not None and saved != self.choice.name:
            logger.warning(
                "auto: the checkpoint was trained with '%s', but this run chose '%s'.", saved, self.choice.name
            )
        self._chosen().load_state_dict(state.get("delegate") or {})


def _delegating(name: str):
    def method(self, *args, **kwargs):
        return getattr(self._chosen(), name)(*args, **kwargs)

    method.__name__ = name
    method.__doc__ = f"Delegates `{name}` to the chosen strategy."
    return method


# Every other public hook of the base class (lr_scales, on_epoch_start, save_model, and any hook
# added to Strategy later) goes to the chosen strategy, not to the base default.
for _name, _member in inspect.getmembers(Strategy, inspect.isfunction):
    if not _name.startswith("_") and _name not in Auto.__dict__:
        setattr(Auto, _name, _delegating(_name))
