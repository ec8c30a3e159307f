"""The audit's measurements on arrays: out-of-fold probabilities, label issues (confident learning,
cleanlab), near duplicates and cross-split matches (a nearest-neighbour index), outliers.

Everything here takes features `X` (n, d) and integer labels `y`; `core.py` loads them, maps the
indices back to source rows and writes the report.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from hf_transfer.errors import HFTransferError

logger = logging.getLogger(__name__)

#: How `label_issues` flags rows (`filter_by` of `cleanlab.filter.find_label_issues`).
METHODS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given")
DEFAULT_METHOD = "prune_by_noise_rate"
MAX_FOLDS = 5


def require_cleanlab():
    """`cleanlab`, or an error that says how to install it."""
    try:
        import cleanlab.filter  # noqa: F401
    except ImportError:
        raise HFTransferError(
            "`hf-transfer audit` finds label errors with cleanlab, which is not installed: "
            "pip install 'hf-transfer-toolkit[audit]' (or: pip install cleanlab)."
        ) from None
    import cleanlab

    return cleanlab


def unit_rows(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length: cosine similarity is then a dot product."""
    X = np.asarray(X, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(norms, 1e-12)


@dataclass
class OutOfFold:
    """Held-out class probabilities for the rows whose class can be cross-validated."""

    probs: np.ndarray  # (len(rows), num_labels)
    rows: np.ndarray  # indices into the input with probabilities
    folds: int
    left_out_classes: list[int] = field(default_factory=list)  # classes with fewer than 2 rows


def out_of_fold_probabilities(
    X: np.ndarray,
    y: np.ndarray,
    num_labels: int,
    *,
    C: float = 1.0,
    standardize: bool = False,
    max_iter: int = 1000,
    seed: int = 0,
    folds: int = MAX_FOLDS,
) -> OutOfFold:
    """Stratified k-fold out-of-fold probabilities of the frozen-feature logistic regression
    (`models.probe.fit_classifier`, the classifier `feature_extraction` fits).

    Classes with a single row cannot be held out: their rows get no probabilities and are left out
    (`left_out_classes`); k = min(`folds`, the smallest remaining class count).

    Raises:
        HFTransferError: Fewer than two classes with at least two rows each.
    """
    from types import SimpleNamespace

    from sklearn.model_selection import StratifiedKFold

    from hf_transfer.models.probe import fit_classifier

    y = np.asarray(y)
    counts = np.bincount(y, minlength=num_labels)
    left_out = [int(c) for c in np.flatnonzero((counts > 0) & (counts < 2))]
    keep = np.flatnonzero(np.isin(y, np.flatnonzero(counts >= 2)))
    kept_classes = np.unique(y[keep])
    if len(kept_classes) < 2:
        raise HFTransferError("fewer than two classes with two or more rows")
    k = int(min(folds, counts[kept_classes].min()))
    settings = SimpleNamespace(classifier="logistic_regression", C=C, max_iter=max_iter, standardize=standardize)
    Xk, yk = np.asarray(X, dtype=np.float64)[keep], y[keep]
    probs = np.zeros((len(keep), num_labels))
    for tr, held in StratifiedKFold(k, shuffle=True, random_state=seed).split(Xk, yk):
        clf = fit_classifier(settings, Xk[tr], yk[tr], num_labels, seed=seed)
        probs[held] = np.exp(clf.log_proba(Xk[held]))
    return OutOfFold(probs, keep, k, left_out)


@dataclass
class LabelIssues:
    rows: np.ndarray  # indices into the labels given, most suspicious first
    quality: np.ndarray  # label quality of those rows (0..1, low = likely wrong)
    suggested: np.ndarray  # the class the probabilities favour
    noise_rate: dict  # per given class: estimated share of wrong labels
    estimated_issues: int  # cleanlab's estimate of the number of label errors


def label_issues(y: np.ndarray, probs: np.ndarray, method: str = DEFAULT_METHOD) -> LabelIssues:
    """Confident learning on out-of-fold probabilities (`cleanlab.filter.find_label_issues`),
    ranked by self-confidence (`cleanlab.rank.get_label_quality_scores`); the per-class noise
    estimate from cleanlab's calibrated confident joint.

    `y` holds labels in 0..K-1 where K = probs.shape[1] (classes absent from `y` are fine).
    """
    require_cleanlab()
    from cleanlab.count import estimate_joint, num_label_issues
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    if method not in METHODS:
        raise HFTransferError(f"Unknown label-issue method {method!r}: use one of {', '.join(METHODS)}.")
    y = np.asarray(y, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    probs = probs / probs.sum(1, keepdims=True)
    present = np.unique(y)
    # cleanlab wants every column to be a class that occurs: work on the present classes only.
    sub = probs[:, present]
    sub = sub / np.maximum(sub.sum(1, keepdims=True), 1e-12)
    yi = np.searchsorted(present, y)
    flags = find_label_issues(yi, sub, filter_by=method)
    quality = get_label_quality_scores(yi, sub)
    rows = np.flatnonzero(flags)
    rows = rows[np.argsort(quality[rows], kind="stable")]
    joint = estimate_joint(yi, sub)
    noise = {}
    for i, c in enumerate(present):
        total = joint[i].sum()
        noise[int(c)] = float(1 - joint[i, i] / total) if total > 0 else 0.0
    try:
        estimated = int(num_label_issues(yi, sub))
    except Exception:  # older cleanlab signatures; the estimate is informative only
        estimated = int(len(rows))
    return LabelIssues(rows, quality[rows], present[sub[rows].argmax(1)], noise, estimated)


def disagreement(y: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """The naive baseline: rows whose out-of-fold prediction differs from the given label."""
    return np.flatnonzero(np.asarray(probs).argmax(1) != np.asarray(y))


def _index(U: np.ndarray):
    from sklearn.neighbors import NearestNeighbors

    return NearestNeighbors(metric="cosine", algorithm="brute", n_jobs=1).fit(U)


def near_pairs(U: np.ndarray, threshold: float, k: int = 10) -> list[tuple[int, int, float]]:
    """Pairs (i < j, cosine similarity) of rows of `U` with similarity >= threshold, from each row's
    k nearest neighbours (scikit-learn's NearestNeighbors; a group larger than k still joins up
    through its members' lists)."""
    n = len(U)
    if n < 2:
        return []
    k = min(k + 1, n)
    dist, idx = _index(U).kneighbors(U, n_neighbors=k)
    out = {}
    for i in range(n):
        for d, j in zip(dist[i], idx[i]):
            j = int(j)
            sim = 1.0 - float(d)
            if j != i and sim >= threshold:
                a, b = (i, j) if i < j else (j, i)
                out[(a, b)] = max(sim, out.get((a, b), -1.0))
    return [(a, b, s) for (a, b), s in sorted(out.items())]


def groups_from_pairs(n: int, pairs) -> list[list[int]]:
    """Connected components (of two or more) of the pair graph, each sorted, in order of first row."""
    parent = list(range(n))

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b, *_ in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(find(i), []).append(i)
    return sorted((g for g in members.values() if len(g) > 1), key=lambda g: g[0])


def best_matches(U_query: np.ndarray, U_ref: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """(query index, its nearest reference index, similarity) for each query row whose nearest
    reference row is at least `threshold` similar."""
    if len(U_query) == 0 or len(U_ref) == 0:
        return []
    dist, idx = _index(U_ref).kneighbors(U_query, n_neighbors=1)
    sims = 1.0 - dist[:, 0]
    return [(int(q), int(idx[q, 0]), float(sims[q])) for q in np.flatnonzero(sims >= threshold)]


def knn_distance(U: np.ndarray, k: int = 5) -> np.ndarray:
    """Mean cosine distance of every row to its k nearest other rows."""
    n = len(U)
    if n < 2:
        return np.zeros(n)
    k = min(k, n - 1)
    dist, _ = _index(U).kneighbors(U, n_neighbors=k + 1)
    return dist[:, 1:].mean(1)


def outlier_cutoff(score: np.ndarray) -> float:
    """Tukey's far-out fence: Q3 + 3 x IQR of the scores."""
    if len(score) == 0:
        return float("inf")
    q1, q3 = np.percentile(score, [25, 75])
    return float(q3 + 3 * (q3 - q1))
