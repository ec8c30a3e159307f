"""Intervals for a study: a paired bootstrap over the eval examples and the seeds, and the
Student-t interval over seeds it replaced (kept for cells that recorded no per-example results).

Two sources of noise move a study's numbers: which examples the eval split happens to hold, and
which subsample and initialisation a seed draws. A t-interval over 2-3 seeds sees only the second,
and with two seeds its 95% critical value is 12.71, so it says nothing (and runs past [0, 1]). The
study's cells all predict the same eval examples, so the bootstrap resamples both at once: each
replicate draws eval examples with replacement (the same draw for every seed and every strategy:
paired) and seeds with replacement, and recomputes the metric from the predictions. A percentile
interval of the metric stays inside its range; the difference between two strategies is
bootstrapped on the same draws, which removes what the two share. With fewer than
`MIN_SEEDS_TO_JUDGE` seeds the interval still counts the eval examples, but how much another seed
would move a result is not measured: the report says so.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as _scipy_stats

#: Fewer seeds than this: the run-to-run spread is not measured well enough to judge.
MIN_SEEDS_TO_JUDGE = 3
#: Bootstrap replicates (percentile intervals; the replicates' own noise is ~0.5% of the width).
REPLICATES = 2000
#: Metrics the bootstrap recomputes from per-example predictions (loss: per-example losses).
BOOTSTRAP_METRICS = ("accuracy", "f1", "precision", "recall", "loss")


@dataclass(frozen=True)
class Summary:
    """Several runs of one quantity.

    Attributes:
        n: Number of values (seeds).
        mean: Their mean.
        sd: Sample standard deviation over seeds (ddof=1); NaN for a single value.
        low: Lower end of the `confidence` interval of the mean; NaN when there is none.
        high: Upper end; NaN when there is none.
        confidence: Coverage of the interval (0.95).
        method: `bootstrap` (eval examples and seeds, paired), or `t` (Student-t over seeds only).
        examples: Eval examples the bootstrap resampled (0 for `t`).
    """

    n: int
    mean: float
    sd: float
    low: float
    high: float
    confidence: float = 0.95
    method: str = "t"
    examples: int = 0

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    @property
    def has_interval(self) -> bool:
        return not math.isnan(self.low) and (self.n >= 2 or self.method == "bootstrap")

    @property
    def few_seeds(self) -> bool:
        return self.n < MIN_SEEDS_TO_JUDGE

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def t_critical(df: int, confidence: float = 0.95) -> float:
    """Two-sided Student-t critical value: P(|T_df| <= value) = confidence."""
    return float(_scipy_stats.t.ppf(0.5 + confidence / 2, df))


def summarize(values, confidence: float = 0.95, bounds: tuple[float, float] | None = None) -> Summary:
    """Mean, sd (ddof=1) and the t-interval mean +- t(n-1) * sd / sqrt(n), cut to `bounds` (a
    metric's range, [0, 1] for accuracy) when given."""
    x = np.asarray([float(v) for v in values], dtype=float)
    if x.size == 0:
        raise ValueError("summarize needs at least one value")
    mean = float(x.mean())
    if x.size == 1:
        return Summary(1, mean, math.nan, math.nan, math.nan, confidence)
    sd = float(x.std(ddof=1))
    half = t_critical(x.size - 1, confidence) * sd / math.sqrt(x.size)
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return Summary(int(x.size), mean, sd, low, high, confidence)


def paired_difference(a: dict, b: dict, confidence: float = 0.95) -> Summary | None:
    """Student-t summary of a[k] - b[k] over the keys (seeds) both have; None when they share none."""
    common = sorted(set(a) & set(b))
    if not common:
        return None
    return summarize([a[k] - b[k] for k in common], confidence)


# ------------------------------------------------------------------------------------------------
# Paired bootstrap over eval examples and seeds


@dataclass(frozen=True)
class Outcome:
    """One cell's eval results, example by example, in eval-split order."""

    predictions: np.ndarray
    references: np.ndarray
    losses: np.ndarray | None = None

    @classmethod
    def from_metrics(cls, metrics: dict, prefix: str = "eval") -> Outcome | None:
        """From a cell's metrics.json (`eval_predictions`, `eval_references`, `eval_example_losses`)."""
        p, r = metrics.get(f"{prefix}_predictions"), metrics.get(f"{prefix}_references")
        if not isinstance(p, list) or not isinstance(r, list) or len(p) != len(r) or not p:
            return None
        losses = metrics.get(f"{prefix}_example_losses")
        losses = np.asarray(losses, dtype=float) if isinstance(losses, list) and len(losses) == len(p) else None
        return cls(np.asarray(p, dtype=np.int64), np.asarray(r, dtype=np.int64), losses)


def _metric_of_weights(metric: str, weights: np.ndarray, o: Outcome, num_labels: int) -> np.ndarray:
    """The metric under each row of `weights` (how often each example was drawn), shape (R,).

    Macro precision/recall/F1 as `hf_transfer.metrics.classification` computes them: averaged over
    the classes that occur in the references or predictions drawn, 0 where undefined."""
    total = weights.sum(1).astype(float)
    if metric == "accuracy":
        return weights @ (o.predictions == o.references).astype(float) / total
    if metric == "loss":
        return weights @ o.losses / total
    eye = np.eye(num_labels)
    tp = weights @ (eye[o.references] * (o.predictions == o.references)[:, None])
    pred = weights @ eye[o.predictions]
    true = weights @ eye[o.references]
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "precision":
            per = np.where(pred > 0, tp / pred, 0.0)
        elif metric == "recall":
            per = np.where(true > 0, tp / true, 0.0)
        else:
            per = np.where(pred + true > 0, 2 * tp / (pred + true), 0.0)
    present = (pred + true) > 0
    return (per * present).sum(1) / np.maximum(present.sum(1), 1)


def can_bootstrap(metric: str, outcomes: list[Outcome]) -> bool:
    """Every outcome present, on the same eval examples (equal references), with what `metric` needs."""
    if metric not in BOOTSTRAP_METRICS or not outcomes or any(o is None for o in outcomes):
        return False
    ref = outcomes[0].references
    if any(o.references.shape != ref.shape or not np.array_equal(o.references, ref) for o in outcomes):
        return False
    return metric != "loss" or all(o.losses is not None for o in outcomes)


def _replicates(
    metric: str, sides: list[dict[int, Outcome]], seeds: list, num_labels: int, replicates: int, rng_seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per side: the metric per seed on the data as it is, shape (S,), and per replicate
    (examples and seeds resampled, the same draws for every side), shape (R,)."""
    m = len(next(iter(sides[0].values())).references)
    rng = np.random.default_rng(rng_seed)
    seed_draw = rng.integers(0, len(seeds), size=(replicates, len(seeds)))
    point = np.zeros((len(sides), len(seeds)))
    per_seed = np.zeros((len(sides), len(seeds), replicates))
    ones = np.ones((1, m), dtype=np.int64)
    chunk = max(1, min(replicates, 2_000_000 // max(m, 1)))
    for start in range(0, replicates, chunk):
        n = min(chunk, replicates - start)
        draws = rng.integers(0, m, size=(n, m))
        weights = np.bincount((np.arange(n)[:, None] * m + draws).ravel(), minlength=n * m).reshape(n, m)
        for i, side in enumerate(sides):
            for j, s in enumerate(seeds):
                per_seed[i, j, start : start + n] = _metric_of_weights(metric, weights, side[s], num_labels)
    for i, side in enumerate(sides):
        for j, s in enumerate(seeds):
            point[i, j] = _metric_of_weights(metric, ones, side[s], num_labels)[0]
    # Seeds resampled too: each replicate averages its drawn seeds.
    reps = np.take_along_axis(per_seed, seed_draw.T[None, :, :], axis=1).mean(1)
    return point, reps


def _num_labels(outcomes) -> int:
    return int(max(max(o.predictions.max(), o.references.max()) for o in outcomes)) + 1


def bootstrap_summary(
    metric: str, outcomes: dict[int, Outcome], confidence: float = 0.95, replicates: int = REPLICATES, rng_seed: int = 0
) -> Summary:
    """Mean over seeds of `metric`, sd over seeds, and the percentile interval of the paired
    bootstrap over eval examples and seeds (`outcomes`: seed -> that seed's eval results)."""
    seeds = sorted(outcomes)
    point, reps = _replicates(metric, [outcomes], seeds, _num_labels(outcomes.values()), replicates, rng_seed)
    values = point[0]
    alpha = (1 - confidence) / 2
    low, high = np.quantile(reps[0], [alpha, 1 - alpha])
    sd = float(values.std(ddof=1)) if len(values) > 1 else math.nan
    return Summary(
        len(seeds),
        float(values.mean()),
        sd,
        float(low),
        float(high),
        confidence,
        "bootstrap",
        len(next(iter(outcomes.values())).references),
    )


def bootstrap_difference(
    metric: str,
    a: dict[int, Outcome],
    b: dict[int, Outcome],
    confidence: float = 0.95,
    replicates: int = REPLICATES,
    rng_seed: int = 0,
) -> Summary | None:
    """`metric` of a minus `metric` of b over the seeds both have, paired by seed (the same
    subsample) and by eval example (the same bootstrap draws); None when they share no seed."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    a, b = {s: a[s] for s in seeds}, {s: b[s] for s in seeds}
    k = _num_labels(list(a.values()) + list(b.values()))
    point, reps = _replicates(metric, [a, b], seeds, k, replicates, rng_seed)
    diff, rep_diff = point[0] - point[1], reps[0] - reps[1]
    alpha = (1 - confidence) / 2
    low, high = np.quantile(rep_diff, [alpha, 1 - alpha])
    sd = float(diff.std(ddof=1)) if len(diff) > 1 else math.nan
    return Summary(
        len(seeds),
        float(diff.mean()),
        sd,
        float(low),
        float(high),
        confidence,
        "bootstrap",
        len(next(iter(a.values())).references),
    )
