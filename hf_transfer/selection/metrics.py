"""Transferability scores: how well frozen features of a checkpoint suit a labelled target set,
computed from one forward pass, without fine-tuning.

Every score takes a feature matrix `X` (n examples x d features, one row per example) and integer
labels `y`, and is *higher = better*. None needs the checkpoint's source head, so they apply to
any backbone (LEEP and NCE, which score the source classifier's predictions, do not apply to a
bare encoder or to a sentence-embedding model; they are not offered).

* `logme`: LogME (You et al., "LogME: Practical Assessment of Pre-trained Models for Transfer
  Learning", ICML 2021). For each class k, a Bayesian linear regression from `X` to the one-hot
  target column `y_k` with prior `w ~ N(0, alpha^-1 I)` and noise `N(0, beta^-1)`; alpha and beta
  maximise the marginal likelihood (evidence) by the paper's fixed-point iteration; the score is
  the maximised log evidence divided by n, averaged over classes.
* `hscore`: H-score (Bao et al., "An Information-Theoretic Approach to Transferability in Task
  Transfer Learning", ICIP 2019), `tr(cov(X)^-1 cov(E[X | y]))`, with the covariance shrunk
  towards a scaled identity by the Ledoit-Wolf estimate as in Ibrahim et al. ("Newer is not
  always better: Rethinking transferability metrics, their peculiarities, stability and
  performance", ECML-PKDD 2022). Without shrinkage (`hscore_raw`) the inverse of a covariance
  estimated from fewer examples than dimensions is noise, which is the common case here.
* `knn`: leave-one-out k-nearest-neighbour accuracy (each example classified by its k nearest
  other examples, cosine distance, majority vote, ties to the nearest). In a 2025 study of 23
  transferability scores over 16 datasets (arXiv 2503.18528) a plain k-NN estimator was the most
  reliable. With `groups` (a speaker, a patient, a photographer per example) it leaves out the
  example's whole group, not just the example: otherwise features that recognise the group (the
  same voice's other clips) score well on a target that must generalise to new groups. LogME and
  H-score are not held-out estimates and take no groups.

The formulas are written with numpy and scikit-learn (Ledoit-Wolf); no maintained library offers
these three for arbitrary feature matrices outside a ranking pipeline of its own.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = [
    "GROUP_AWARE",
    "MAX_NOISE_PRECISION",
    "METRICS",
    "TARGET_METRICS",
    "hscore",
    "hscore_raw",
    "is_target_array",
    "knn_loo_accuracy",
    "logme",
    "logme_targets",
    "score",
]


def _prepare(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if X.ndim != 2:
        raise ValueError(f"features must be a 2-D matrix (examples x dimensions), got shape {X.shape}")
    if len(X) != len(y):
        raise ValueError(f"{len(X)} feature rows but {len(y)} labels")
    if len(X) < 2:
        raise ValueError("at least 2 examples are needed to score features")
    if not np.isfinite(X).all():
        raise ValueError("features contain NaN or infinite values")
    _, y = np.unique(y, return_inverse=True)
    return X, y


# ------------------------------------------------------------------------------------- LogME


# The largest noise precision beta (noise sd 0.001 on a 0/1 target). When the target column lies
# exactly in the span of fewer than n feature directions (duplicated rows with one label, features
# that encode the label), the evidence grows without bound as beta -> infinity, and the fixed point
# would stop wherever floating point stops it. With the cap the maximum is finite and well defined;
# where the maximum is interior (the usual case, n < d included) the cap changes nothing.
MAX_NOISE_PRECISION = 1e6
_TINY = float(np.finfo(np.float64).tiny)


def _logme_one(
    vt: np.ndarray,
    sigma: np.ndarray,
    Xty: np.ndarray,
    X: np.ndarray,
    t: np.ndarray,
    max_iter: int = 1000,
    tol: float = 1e-10,
) -> float:
    """Maximised log evidence / n for one target column `t` (You et al. 2021, Algorithm 1), with
    beta <= `MAX_NOISE_PRECISION`.

    `X = U S Vt` (thin SVD, rank r), `sigma = S**2` are the non-zero eigenvalues of `X^T X`; the
    other d - r eigenvalues are 0 and add `log(alpha)` each to `log det(A)`.
    """
    n, d = X.shape
    proj = vt @ Xty  # V^T X^T t, in the r-dim row space where m lives
    alpha, beta = 1.0, 1.0
    for _ in range(max_iter):
        m = vt.T @ (beta * proj / (alpha + beta * sigma))  # m = beta A^-1 X^T t
        gamma = float(np.sum(beta * sigma / (alpha + beta * sigma)))
        mm = float(m @ m)
        res = float(np.sum((X @ m - t) ** 2))
        # Floors at the smallest positive float, not at a fixed 1e-12: a fixed floor would make
        # the score depend on the scale of the features (m shrinks as X grows).
        new_alpha = gamma / max(mm, _TINY) if gamma > 0 else alpha  # rank 0: alpha cancels out
        new_beta = min((n - gamma) / max(res, _TINY), MAX_NOISE_PRECISION)
        converged = abs(new_alpha / new_beta - alpha / beta) <= tol * (alpha / beta)
        alpha, beta = new_alpha, new_beta
        if converged:
            break
    m = vt.T @ (beta * proj / (alpha + beta * sigma))
    mm = float(m @ m)
    res = float(np.sum((X @ m - t) ** 2))
    logdet = float(np.sum(np.log(alpha + beta * sigma))) + (d - len(sigma)) * np.log(alpha)
    evidence = (
        d / 2 * np.log(alpha)
        + n / 2 * np.log(beta)
        - beta / 2 * res
        - alpha / 2 * mm
        - logdet / 2
        - n / 2 * np.log(2 * np.pi)
    )
    return float(evidence / n)


def logme(X: np.ndarray, y: np.ndarray) -> float:
    """LogME: mean over classes of the maximised log marginal likelihood per example.

    Args:
        X: Features, n x d.
        y: Class labels (any hashable values), length n.

    Returns:
        The score (higher = better; typically between -2 and 2 for standardised targets).
    """
    X, y = _prepare(X, y)
    _, s, vt = np.linalg.svd(X, full_matrices=False)
    keep = s > s.max() * max(X.shape) * np.finfo(np.float64).eps
    s, vt = s[keep], vt[keep]
    sigma = s**2
    classes = np.unique(y)
    scores = []
    for k in classes:
        t = (y == k).astype(np.float64)
        scores.append(_logme_one(vt, sigma, X.T @ t, X, t))
    return float(np.mean(scores))


def is_target_array(y) -> bool:
    """Label sets (an n x L 0/1 matrix) or numbers (floats), rather than one class per example."""
    y = np.asarray(y)
    return y.ndim == 2 or np.issubdtype(y.dtype, np.floating)


def logme_targets(X: np.ndarray, Y: np.ndarray) -> float:
    """LogME for label sets and numbers: the mean, over target columns, of the maximised log
    evidence per example of the same Bayesian linear regression as `logme`. A label set's columns
    are its 0/1 label indicators (as `logme`'s one-hot columns); a numeric target is standardised
    first (LogME is a regression evidence: You et al. 2021 score regression targets the same way).
    Constant columns are skipped."""
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    numeric = Y.ndim == 1
    Y = Y.reshape(len(Y), -1)
    if len(X) != len(Y) or len(X) < 2:
        raise ValueError(f"{len(X)} feature rows but {len(Y)} targets (at least 2 needed)")
    if not np.isfinite(X).all():
        raise ValueError("features contain NaN or infinite values")
    _, s, vt = np.linalg.svd(X, full_matrices=False)
    keep = s > s.max() * max(X.shape) * np.finfo(np.float64).eps
    s, vt = s[keep], vt[keep]
    scores = []
    for t in Y.T:
        if np.ptp(t) == 0:
            continue
        if numeric:
            t = (t - t.mean()) / t.std()
        scores.append(_logme_one(vt, s**2, X.T @ t, X, t))
    if not scores:
        raise ValueError("every target column is constant: nothing to score")
    return float(np.mean(scores))


#: Scores for label sets and numeric targets (`is_target_array`).
TARGET_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {"logme": logme_targets}


# ------------------------------------------------------------------------------------- H-score


def _class_mean_matrix(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each row replaced by the mean of its class (E[X | y] per example), centred features."""
    g = np.zeros_like(X)
    for k in np.unique(y):
        g[y == k] = X[y == k].mean(axis=0)
    return g


def hscore_raw(X: np.ndarray, y: np.ndarray) -> float:
    """H-score without shrinkage (Bao et al. 2019): `tr(pinv(cov(X)) cov(E[X | y]))`."""
    X, y = _prepare(X, y)
    X = X - X.mean(axis=0)
    g = _class_mean_matrix(X, y)
    cov_f = X.T @ X / len(X)
    cov_g = g.T @ g / len(X)
    return float(np.trace(np.linalg.pinv(cov_f, rcond=1e-15, hermitian=True) @ cov_g))


def hscore(X: np.ndarray, y: np.ndarray) -> float:
    """Shrinkage-regularised H-score (Ibrahim et al. 2022).

    With the Ledoit-Wolf shrinkage `a` and covariance `C_a = (1 - a) C + a mu I`
    (`mu = tr(C) / d`), the score is `tr(C_a^-1 (1 - a) cov(E[X | y]))`.
    """
    from sklearn.covariance import LedoitWolf

    X, y = _prepare(X, y)
    X = X - X.mean(axis=0)
    lw = LedoitWolf(assume_centered=True).fit(X)
    g = _class_mean_matrix(X, y)
    cov_g = g.T @ g / len(X)
    return float(np.trace(np.linalg.solve(lw.covariance_, (1 - lw.shrinkage_) * cov_g)))


# ------------------------------------------------------------------------------------- k-NN


def knn_loo_accuracy(X: np.ndarray, y: np.ndarray, k: int = 5, groups=None) -> float:
    """Leave-one-out (or leave-one-group-out) k-NN accuracy with cosine distance.

    Each example is classified by majority vote of its `k` nearest *other* examples (itself
    excluded by index, so exact duplicates still count as neighbours; with `groups`, every example
    of its group is excluded); a tied vote goes to the tied class whose member is nearest.

    Args:
        X: Features, n x d.
        y: Class labels, length n.
        k: Neighbours (capped at the examples left to vote).
        groups: Optional group of each example, length n (any hashable values).
    """
    X, y = _prepare(X, y)
    n = len(X)
    g = None
    if groups is not None:
        if len(groups) != n:
            raise ValueError(f"{n} feature rows but {len(groups)} group values")
        _, g = np.unique(np.asarray([str(v) for v in groups]), return_inverse=True)
        if g.max() == 0:
            raise ValueError(
                "every example is in the same group: leaving a group out leaves nothing to vote; "
                "give a column with several groups, or no group column"
            )
        k = max(1, min(k, n - int(np.bincount(g).max())))
    else:
        k = max(1, min(k, n - 1))
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    Z = X / np.where(norms > 0, norms, 1.0)
    correct = 0
    n_classes = int(y.max()) + 1
    for start in range(0, n, 512):  # n x n similarities in blocks: memory stays O(512 n)
        sim = Z[start : start + 512] @ Z.T
        rows = np.arange(sim.shape[0])
        sim[rows, start + rows] = -np.inf  # leave the example itself out
        if g is not None:
            sim[g[start : start + 512, None] == g[None, :]] = -np.inf  # and its whole group
        nearest = np.argsort(-sim, axis=1, kind="stable")[:, :k]
        for i, idx in enumerate(nearest):
            votes = np.bincount(y[idx], minlength=n_classes)
            tied = np.flatnonzero(votes == votes.max())
            pred = tied[0] if len(tied) == 1 else next(c for c in y[idx] if c in tied)
            correct += int(pred == y[start + i])
    return correct / n


#: Score functions by name, each `(X, y) -> float`, higher = better.
METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "knn": knn_loo_accuracy,
    "logme": logme,
    "hscore": hscore,
    "hscore_raw": hscore_raw,
}


#: Metrics that take the examples' groups (leave-one-group-out); the others ignore them.
GROUP_AWARE = ("knn",)


def score(name: str, X: np.ndarray, y: np.ndarray, groups=None) -> float:
    """Score features with the metric called `name` (see `METRICS`); `groups` for `GROUP_AWARE` ones."""
    if name not in METRICS:
        raise ValueError(f"unknown transferability metric '{name}'; choose from {', '.join(METRICS)}")
    if is_target_array(y):
        if name not in TARGET_METRICS:
            raise ValueError(
                f"'{name}' scores class labels; label sets and numeric targets are scored with "
                f"{', '.join(TARGET_METRICS)}"
            )
        return TARGET_METRICS[name](X, y)
    if groups is not None and name in GROUP_AWARE:
        return METRICS[name](X, y, groups=groups)
    return METRICS[name](X, y)
