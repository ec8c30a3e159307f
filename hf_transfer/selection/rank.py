"""`hf-transfer rank`: score candidate checkpoints on the target training data, from one frozen
forward pass each, and say which to fine-tune.

For each candidate: its features of (a seeded sample of at most `max_examples`) training
examples come from the shared frozen-features code (`tasks.features.features_for_config`,
cached on disk like feature extraction), and every metric of `selection.metrics` scores them.
Stability: the scores again on `repeats` random subsamples (80% of the examples each); the
interval is the range over subsamples, "top-1 kept" the share of subsamples whose best candidate
is the full-data best, and the pick is "too close to call" when the best candidate's interval
overlaps the runner-up's.

A candidate that fails to load is reported with its error and the others are still ranked; a
candidate of another modality than the recipe stops the command before any forward pass.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hf_transfer.errors import ConfigError, DataError, HFTransferError, WidthMismatch, WrongModality
from hf_transfer.selection.candidates import CandidateError, inspect_candidate
from hf_transfer.selection.metrics import GROUP_AWARE, METRICS, score

logger = logging.getLogger(__name__)

#: The metric `plan` and the summary use when the examples carry no groups, and the one they use
#: with `group_column`: together, the lowest mean top-1 regret in `bench/rank.py`'s table with
#: every candidate fine-tuned as the ground truth (docs/benchmarks/rank.md). LogME takes
#: no groups: on a training set of a few voices it scores features that recognise the voice, while
#: leave-one-group-out k-NN measures what a new group will meet.
DEFAULT_METRIC = "logme"
DEFAULT_GROUP_METRIC = "knn"
DEFAULT_METRICS = ("knn", "logme", "hscore")
SUBSAMPLE_FRACTION = 0.8


@dataclass
class CandidateResult:
    """One candidate's row."""

    name: str
    path: str | None = None
    family: str | None = None
    parameters: int | None = None
    licence: str | None = None
    licence_warning: str | None = None
    examples: int | None = None
    dim: int | None = None
    seconds_per_1000: float | None = None
    features_cached: bool | None = None
    feature_source: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    ranks: dict[str, int] = field(default_factory=dict)
    repeats: dict[str, list[float]] = field(default_factory=dict)
    error: str | None = None


@dataclass
class RankReport:
    """Everything `rank` found; `to_json()` / `to_markdown()` write it."""

    recipe: str
    metrics: list[str]
    default_metric: str
    layers: str
    max_examples: int
    repeats: int
    results: list[CandidateResult]
    stability: dict[str, dict[str, Any]] = field(default_factory=dict)
    features: dict[str, Any] = field(default_factory=dict)
    labels: np.ndarray | None = field(default=None, repr=False)
    #: The training-data column whose groups `knn` leaves out whole (None: single examples).
    group_column: str | None = None
    groups: int | None = None

    @property
    def ranked(self) -> list[CandidateResult]:
        """Candidates that were scored, best first by the default metric."""
        ok = [r for r in self.results if r.error is None]
        return sorted(ok, key=lambda r: r.ranks.get(self.default_metric, 10**9))

    @property
    def failed(self) -> list[CandidateResult]:
        return [r for r in self.results if r.error is not None]

    def best(self, metric: str | None = None) -> CandidateResult:
        metric = metric or self.default_metric
        ok = [r for r in self.results if r.error is None]
        if not ok:
            raise HFTransferError("No candidate could be scored: " + "; ".join(r.error for r in self.failed))
        return min(ok, key=lambda r: r.ranks[metric])

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "metrics": self.metrics,
            "default_metric": self.default_metric,
            "layers": self.layers,
            "max_examples": self.max_examples,
            "repeats": self.repeats,
            "best": {m: self.best(m).name for m in self.metrics} if self.ranked else {},
            "candidates": [asdict(r) for r in self.results],
            "stability": self.stability,
            "group_column": self.group_column,
            "groups": self.groups,
        }

    def to_markdown(self) -> str:
        return format_markdown(self)


def _rank_positions(values: dict[str, float]) -> dict[str, int]:
    """1 = highest score (ties share the better rank)."""
    order = sorted(values.items(), key=lambda kv: -kv[1])
    ranks, prev, pos = {}, None, 0
    for i, (name, v) in enumerate(order, start=1):
        if v != prev:
            pos, prev = i, v
        ranks[name] = pos
    return ranks


def _subsample(y: np.ndarray, rng: np.random.Generator, fraction: float) -> np.ndarray:
    """Indices of a random `fraction` of the examples, at least 2 of each class kept (label sets and
    numbers: a plain random `fraction`)."""
    from hf_transfer.selection.metrics import is_target_array

    if is_target_array(y):
        return np.sort(rng.choice(len(y), size=max(2, int(round(fraction * len(y)))), replace=False))
    keep = []
    for k in np.unique(y):
        idx = np.flatnonzero(y == k)
        n = max(min(2, len(idx)), int(round(fraction * len(idx))))
        keep.append(rng.choice(idx, size=n, replace=False))
    return np.sort(np.concatenate(keep))


def score_features(X: np.ndarray, y: np.ndarray, metrics: list[str], groups=None) -> dict[str, float]:
    return {m: float(score(m, X, y, groups=groups)) for m in metrics}


def stability(results: list[CandidateResult], metrics: list[str], repeats: int) -> dict[str, dict[str, Any]]:
    """Intervals over subsamples, how often the top-1 stays, and whether the pick is too close."""
    ok = [r for r in results if r.error is None and r.repeats]
    out: dict[str, dict[str, Any]] = {}
    if not ok or repeats < 1:
        return out
    for m in metrics:
        table = np.array([r.repeats[m] for r in ok])  # candidates x repeats
        best_full = min(ok, key=lambda r: r.ranks[m])
        winners = [ok[int(i)].name for i in table.argmax(axis=0)]
        kept = winners.count(best_full.name) / table.shape[1]
        intervals = {r.name: (float(np.min(r.repeats[m])), float(np.max(r.repeats[m]))) for r in ok}
        runner = sorted(ok, key=lambda r: r.ranks[m])[1] if len(ok) > 1 else None
        close = False
        if runner is not None:
            lo_best, _ = intervals[best_full.name]
            _, hi_runner = intervals[runner.name]
            close = hi_runner >= lo_best
        out[m] = {
            "top1": best_full.name,
            "top1_kept": round(kept, 3),
            "runner_up": runner.name if runner else None,
            "too_close_to_call": close,
            "intervals": {k: [round(a, 6), round(b, 6)] for k, (a, b) in intervals.items()},
            "means": {r.name: round(float(np.mean(r.repeats[m])), 6) for r in ok},
        }
    return out


def default_metric_for(metrics, group_column: str | None = None) -> str:
    """The metric the summary and `plan` follow when none is asked for: `DEFAULT_GROUP_METRIC` with
    a group column, else `DEFAULT_METRIC`; the first of `metrics` when that one is not computed."""
    preferred = DEFAULT_GROUP_METRIC if group_column else DEFAULT_METRIC
    return preferred if preferred in metrics else list(metrics)[0]


def rank_candidates(
    cfg,
    candidates: list[str],
    *,
    metrics: list[str] | tuple[str, ...] = DEFAULT_METRICS,
    layers: str = "last",
    max_examples: int = 2000,
    repeats: int = 5,
    seed: int = 0,
    default_metric: str | None = None,
    keep_features: bool = False,
    group_column: str | None = None,
) -> RankReport:
    """Score every candidate on `cfg`'s training data.

    Args:
        cfg: A TrainConfig (recipe, data; `model.name_or_path` is not used).
        candidates: Candidate names (see `selection.candidates`).
        metrics: Names from `selection.metrics.METRICS`.
        layers: `last` or `mean` (the average of every block's pooled output).
        max_examples: Seeded sample of the training split.
        repeats: Subsamples for the stability table (0 = none).
        seed: Sampling seed.
        default_metric: The metric the summary and `plan` follow (default: `default_metric_for`,
            i.e. `logme`, or `knn` with a `group_column`).
        keep_features: Keep each candidate's feature matrix in `report.features` (for `plan`).
        group_column: A training-data column with each example's group (speaker, patient): `knn`
            then leaves out each example's whole group (`selection.metrics.GROUP_AWARE`) and is
            the default metric.

    Raises:
        HFTransferError: a candidate of another modality, an unknown metric, or a recipe without
            class labels.
    """
    from hf_transfer.models.features import FeatureSpec

    metrics, default_metric = _check_metrics(cfg.recipe, metrics, default_metric, group_column)
    if len(set(candidates)) != len(candidates) or not candidates:
        raise HFTransferError("--candidates must name at least one checkpoint, each once.")
    # Everything that needs no forward pass first: a wrong-modality candidate stops the command
    # before minutes of feature extraction; one that does not load is recorded and skipped.
    results = _inspect_candidates(candidates, cfg.recipe)
    spec = FeatureSpec(layers=layers)
    features: dict[str, Any] = {}
    labels = None
    n_groups = None
    for r in results:
        if r.error is not None:
            continue
        logger.info("rank: features of %s", r.name)
        feats = _candidate_features(cfg, r, spec, max_examples=max_examples, seed=seed, group_column=group_column)
        if feats is None:
            continue
        if feats.y is None:
            raise HFTransferError("The training split has no labels to rank against.")
        if labels is None:
            labels = feats.y
        elif not np.array_equal(labels, feats.y):  # every candidate must see the same examples
            raise HFTransferError("Candidates saw different training examples; is data.seed fixed?")
        groups = np.asarray([str(v) for v in feats.columns[group_column]]) if group_column else None
        n_groups = None if groups is None else len(set(groups.tolist()))
        _score_candidate(r, feats, metrics, groups, repeats=repeats, seed=seed)
        if keep_features:
            features[r.name] = feats.X
        logger.info("rank: %s %s", r.name, {m: round(v, 4) for m, v in r.scores.items()})

    ok = _assign_ranks(results, metrics)
    report = RankReport(
        recipe=cfg.recipe,
        metrics=metrics,
        default_metric=default_metric,
        layers=str(layers),
        max_examples=max_examples,
        repeats=repeats,
        results=results,
        stability=stability(results, metrics, repeats),
        features=features,
        labels=labels,
        group_column=group_column,
        groups=n_groups,
    )
    if not ok:
        raise HFTransferError("No candidate could be scored: " + " ".join(r.error for r in results))
    return report


def _check_metrics(recipe: str, metrics, default_metric: str | None, group_column: str | None) -> tuple[list[str], str]:
    """The metrics to compute for `recipe` (label sets and numbers: the target metrics when the
    defaults were asked for) and the default one; `HFTransferError` for what cannot be ranked."""
    from hf_transfer.registry import recipe_info
    from hf_transfer.selection.metrics import TARGET_METRICS

    metrics = list(metrics)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise HFTransferError(
            f"Unknown metric(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(METRICS)}."
        )
    if recipe == "speech_recognition":
        raise HFTransferError(
            "rank scores class labels; recipe speech_recognition has transcripts. Rank with an "
            "audio_classification config over the same audio."
        )
    kind = {"label_set": "multilabel", "number": "regression"}.get(recipe_info(recipe).targets)
    if kind and any(m not in TARGET_METRICS for m in metrics):
        if list(metrics) != list(DEFAULT_METRICS):
            raise HFTransferError(
                f"Recipe {recipe} has {kind} targets: rank it with "
                f"--metrics {','.join(TARGET_METRICS)} (the others score class labels)."
            )
        metrics = list(TARGET_METRICS)  # the defaults, for label sets and numbers
    if default_metric is None:
        default_metric = default_metric_for(metrics, group_column)
    if default_metric not in metrics:
        raise HFTransferError(f"default metric '{default_metric}' is not among --metrics {','.join(metrics)}.")
    return metrics, default_metric


def _inspect_candidates(candidates: list[str], recipe: str) -> list[CandidateResult]:
    """One row per candidate from what is known without a forward pass; a candidate that does not
    load gets its error. Candidates of another modality stop the command (`HFTransferError`)."""
    results: list[CandidateResult] = []
    wrong: list[str] = []
    for name in candidates:
        try:
            info = inspect_candidate(name, recipe)
        except WrongModality as e:
            wrong.append(str(e))
            continue
        except CandidateError as e:
            results.append(CandidateResult(name=name, error=str(e)))
            logger.error("%s", e)
            continue
        results.append(
            CandidateResult(
                name=name,
                path=info.path,
                family=info.family,
                parameters=info.parameters,
                licence=info.licence,
                licence_warning=info.licence_warning,
            )
        )
    if wrong:
        raise HFTransferError("Candidates of another modality than the recipe: " + " ".join(wrong))
    return results


def _candidate_features(cfg, r: CandidateResult, spec, *, max_examples: int, seed: int, group_column: str | None):
    """The candidate's features of the training sample, timed into `r`; None (the error in
    `r.error`) when the candidate fails. Layers of different widths are concatenated instead of
    averaged. A data or config error is raised: every candidate would fail the same way."""
    from hf_transfer.models.features import FeatureSpec
    from hf_transfer.tasks.features import features_for_config

    columns = (group_column,) if group_column else ()

    def extract(feature_spec):
        return features_for_config(
            cfg,
            ("train",),
            name_or_path=r.path,
            spec=feature_spec,
            max_examples=max_examples,
            seed=seed,
            columns=columns,
        )["train"]

    try:
        t0 = time.time()
        try:
            feats = extract(spec)
        except WidthMismatch:
            if spec.layers != "mean":
                raise
            # A CNN's stages differ in width: they cannot be averaged, so they are concatenated.
            logger.info("rank: %s: layers differ in width, concatenating them instead of averaging", r.name)
            feats = extract(FeatureSpec(layers="mean", combine="concat"))
        wall = time.time() - t0
    except (DataError, ConfigError):
        raise  # the data or the config is wrong, not this candidate: every candidate would fail
    except HFTransferError as e:
        r.error = f"candidate '{r.name}' could not be loaded: {e}"
        logger.error("%s", r.error)
        return None
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        r.error = f"candidate '{r.name}' failed during its forward pass ({type(e).__name__}: {e})"
        logger.error("%s", r.error)
        return None
    n = len(feats.X)
    r.examples, r.dim = n, int(feats.X.shape[1])
    r.seconds_per_1000 = round(1000.0 * float(feats.info.get("seconds", wall)) / max(n, 1), 2)
    r.features_cached = feats.cache_hit
    r.feature_source = feats.info.get("source")
    return feats


def _score_candidate(r: CandidateResult, feats, metrics: list[str], groups, *, repeats: int, seed: int) -> None:
    """`r`'s scores on every example, and on `repeats` seeded subsamples (stability)."""
    r.scores = score_features(feats.X, feats.y, metrics, groups)
    rng = np.random.default_rng(seed)
    for _ in range(repeats):
        idx = _subsample(feats.y, rng, SUBSAMPLE_FRACTION)
        for m, v in score_features(
            feats.X[idx], feats.y[idx], metrics, None if groups is None else groups[idx]
        ).items():
            r.repeats.setdefault(m, []).append(v)


def _assign_ranks(results: list[CandidateResult], metrics: list[str]) -> list[CandidateResult]:
    """Rank the scored candidates per metric (into their `ranks`); returns them."""
    ok = [r for r in results if r.error is None]
    for m in metrics:
        for name, pos in _rank_positions({r.name: r.scores[m] for r in ok}).items():
            next(r for r in ok if r.name == name).ranks[m] = pos
    return ok


def _fmt_params(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n:,}"


def format_markdown(report: RankReport) -> str:
    m0 = report.default_metric
    lines = [f"# Checkpoint ranking ({report.recipe})", ""]
    ok = report.ranked
    if ok:
        n = ok[0].examples
        lines += [
            f"{n} training examples, features from layers `{report.layers}`; higher scores are better, "
            f"rank 1 = best. Default metric: `{m0}`.",
            "",
        ]
        if report.group_column:
            aware = ", ".join(f"`{m}`" for m in report.metrics if m in GROUP_AWARE) or "no metric asked for"
            lines += [
                f"Groups: column `{report.group_column}`, {report.groups} groups; {aware} leaves out each "
                "example's whole group, the other metrics use no groups"
                + (
                    " (they can score features that merely recognise the group)."
                    if m0 in GROUP_AWARE
                    else f"; the default metric `{m0}` is not group-aware: it can rank features that merely "
                    f"recognise the group first (the default with groups is `{DEFAULT_GROUP_METRIC}`)."
                ),
                "",
            ]
        head = (
            ["rank", "candidate"]
            + [f"{m} (rank)" for m in report.metrics]
            + ["parameters", "s / 1k examples", "licence", "family"]
        )
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in ok:
            cells = (
                [str(r.ranks[m0]), f"`{r.name}`"]
                + [f"{r.scores[m]:.4f} ({r.ranks[m]})" for m in report.metrics]
                + [
                    _fmt_params(r.parameters),
                    f"{r.seconds_per_1000:.1f}" + (" (cached)" if r.features_cached else ""),
                    r.licence or "unknown",
                    r.family or "-",
                ]
            )
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if report.stability:
        lines += [
            f"## Stability over {report.repeats} subsamples ({int(SUBSAMPLE_FRACTION * 100)}% each)",
            "",
            "| metric | top-1 | top-1 kept | interval of top-1 | runner-up | interval of runner-up | verdict |",
            "|---|---|---|---|---|---|---|",
        ]
        for m, s in report.stability.items():
            lo, hi = s["intervals"][s["top1"]]
            if s["runner_up"]:
                rlo, rhi = s["intervals"][s["runner_up"]]
                runner, rint = f"`{s['runner_up']}`", f"[{rlo:.4f}, {rhi:.4f}]"
            else:
                runner, rint = "-", "-"
            verdict = "too close to call" if s["too_close_to_call"] else "clear"
            lines.append(
                f"| {m} | `{s['top1']}` | {s['top1_kept']:.0%} | [{lo:.4f}, {hi:.4f}] | {runner} | {rint} | {verdict} |"
            )
        lines.append("")
    warnings = [f"- `{r.name}`: {r.licence_warning}" for r in report.results if r.error is None and r.licence_warning]
    if warnings:
        lines += ["## Licence warnings", "", *warnings, ""]
    if report.failed:
        lines += ["## Candidates that could not be ranked", "", *[f"- {r.error}" for r in report.failed], ""]
    return "\n".join(lines)


def write_report(report: RankReport, out_dir: str | Path) -> tuple[Path, Path]:
    """Write `rank.json` and `rank.md` into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jpath, mpath = out / "rank.json", out / "rank.md"
    jpath.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    mpath.write_text(report.to_markdown(), encoding="utf-8")
    return jpath, mpath


__all__ = [
    "DEFAULT_GROUP_METRIC",
    "DEFAULT_METRIC",
    "DEFAULT_METRICS",
    "CandidateResult",
    "RankReport",
    "default_metric_for",
    "format_markdown",
    "rank_candidates",
    "score_features",
    "stability",
    "write_report",
]
