"""Multi-label metrics and per-label decision thresholds (scikit-learn, offline).

Metric names (prefixed `eval_` / `test_` by the engine):

- `f1_macro` (also `f1`, so `training.metric_for_best_model: f1` selects by it), `f1_micro`,
  `precision_micro/macro`, `recall_micro/macro`;
- `subset_accuracy` (also `accuracy`): the share of examples whose whole label set is right;
- `hamming_loss`; `lrap`: label-ranking average precision (scikit-learn's
  `label_ranking_average_precision_score`, on the probabilities, threshold-free);
- `f1_<label>` and `support_<label>` per label (label names made key-safe by `label_keys`);
- `empty_predictions`: examples given no label at all.

**Thresholds.** `tune_thresholds` picks, per label, the threshold on the sigmoid probability that
maximises that label's F1 on held-out predictions (grid `THRESHOLD_GRID`; ties go to the value
closest to 0.5; a label without a positive example keeps 0.5). `cross_fitted_predictions` scores
held-out predictions honestly: each fold's rows are thresholded with thresholds tuned on the other
folds, so the reported F1 is not the F1 of thresholds fitted to the same rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hf_transfer.metrics.classification import label_keys

__all__ = [
    "THRESHOLD_GRID",
    "compute_multilabel_metrics",
    "cross_fitted_predictions",
    "tune_thresholds",
    "DEFAULT_THRESHOLD",
    "THRESHOLD_FOLDS",
    "MIN_TUNING_POSITIVES",
    "MIN_TUNING_ROWS",
]

DEFAULT_THRESHOLD = 0.5
#: Candidate thresholds on the probability.
THRESHOLD_GRID = tuple(round(float(t), 2) for t in np.arange(0.05, 0.951, 0.05))
#: Folds of the cross-fitting that scores tuned thresholds (fewer when there are fewer rows).
THRESHOLD_FOLDS = 5
#: The tools' defaults move a label's threshold from 0.5 only when the rows it is tuned on hold at
#: least this many of its positives ...
MIN_TUNING_POSITIVES = 50
#: ... and number at least this many (`models.target_probe` has the measurements).
MIN_TUNING_ROWS = 400


def _f1_counts(pred: np.ndarray, ref: np.ndarray) -> tuple[float, float, float]:
    tp = float((pred & ref).sum())
    fp = float((pred & ~ref).sum())
    fn = float((~pred & ref).sum())
    return tp, fp, fn


def _f1(tp: float, fp: float, fn: float) -> float:
    d = 2 * tp + fp + fn
    return 2 * tp / d if d else 0.0


def tune_thresholds(
    probs: np.ndarray, refs: np.ndarray, grid: Sequence[float] = THRESHOLD_GRID, min_positives: int = 1
) -> np.ndarray:
    """Per-label thresholds maximising each label's F1 on `probs` (n, L) against 0/1 `refs` (n, L).

    A label with fewer than `min_positives` positive rows keeps `DEFAULT_THRESHOLD`: its F1 curve
    is too noisy to move the threshold on."""
    probs = np.asarray(probs, dtype=np.float64)
    refs = np.asarray(refs) > 0.5
    grid = np.asarray(sorted(grid), dtype=np.float64)
    out = np.full(probs.shape[1], DEFAULT_THRESHOLD)
    closeness = -np.abs(grid - DEFAULT_THRESHOLD)
    for j in range(probs.shape[1]):
        if int(refs[:, j].sum()) < max(1, min_positives):
            continue
        scores = np.array([_f1(*_f1_counts(probs[:, j] >= t, refs[:, j])) for t in grid])
        best = np.flatnonzero(scores >= scores.max() - 1e-12)
        out[j] = float(grid[best[np.argmax(closeness[best])]])
    return out


def cross_fitted_predictions(
    probs: np.ndarray, refs: np.ndarray, folds: int = THRESHOLD_FOLDS, seed: int = 0, min_positives: int = 1
) -> tuple[np.ndarray, int]:
    """0/1 predictions where each row is thresholded with thresholds tuned on the other rows' folds.

    Returns:
        `(predictions, folds used)`; with fewer than 4 rows no fold can be held out and the
        thresholds are tuned on all rows (folds used = 1).
    """
    probs = np.asarray(probs, dtype=np.float64)
    n = len(probs)
    k = int(min(folds, n // 2))
    if k < 2:
        return probs >= tune_thresholds(probs, refs, min_positives=min_positives)[None, :], 1
    order = np.random.default_rng(seed).permutation(n)
    pred = np.zeros(probs.shape, dtype=bool)
    for part in np.array_split(order, k):
        rest = np.setdiff1d(order, part)
        t = tune_thresholds(probs[rest], np.asarray(refs)[rest], min_positives=min_positives)
        pred[part] = probs[part] >= t[None, :]
    return pred, k


def compute_multilabel_metrics(
    predictions: np.ndarray, references: np.ndarray, probabilities: np.ndarray | None, label_names: Sequence[str]
) -> dict[str, Any]:
    """The module docstring's metrics for 0/1 `predictions` and `references` (n, L)."""
    from sklearn.metrics import hamming_loss, label_ranking_average_precision_score, precision_recall_fscore_support

    pred = np.asarray(predictions) > 0.5 if np.asarray(predictions).dtype != bool else np.asarray(predictions)
    ref = np.asarray(references) > 0.5
    out: dict[str, Any] = {}
    if len(ref) == 0:
        return {
            "f1": float("nan"),
            "f1_macro": float("nan"),
            "f1_micro": float("nan"),
            "subset_accuracy": float("nan"),
            "accuracy": float("nan"),
        }
    for avg in ("micro", "macro"):
        p, r, f, _ = precision_recall_fscore_support(ref, pred, average=avg, zero_division=0)
        out[f"precision_{avg}"], out[f"recall_{avg}"], out[f"f1_{avg}"] = float(p), float(r), float(f)
    out["f1"] = out["f1_macro"]
    out["subset_accuracy"] = float((pred == ref).all(axis=1).mean())
    out["accuracy"] = out["subset_accuracy"]
    out["hamming_loss"] = float(hamming_loss(ref, pred))
    if probabilities is not None:
        out["lrap"] = float(label_ranking_average_precision_score(ref.astype(int), np.asarray(probabilities, float)))
    out["empty_predictions"] = int((~pred.any(axis=1)).sum())
    _, _, per_f1, support = precision_recall_fscore_support(ref, pred, average=None, zero_division=0)
    for key, f, s in zip(label_keys(label_names), per_f1, support):
        out[f"f1_{key}"] = float(f)
        out[f"support_{key}"] = int(s)
    return out
