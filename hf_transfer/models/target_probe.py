"""Linear models on frozen features for label sets and numbers.

- Multi-label: one logistic regression per label (one-vs-rest, SetFit's multi-label head), on the
  raw features, each label's two classes weighted as scikit-learn's `class_weight="balanced"` (so
  0.5 is where a rare label's positives and negatives weigh the same). A label with a single class
  in the training split gets a constant logit (+-`CONSTANT_LOGIT`). A label's threshold moves from
  0.5 to the one that maximises its F1 on out-of-fold probabilities of a k-fold cross-validation
  over the training features (k = min(5, rows // 2)) only when the training rows hold at least
  `MIN_TUNING_POSITIVES` of its positives, and only from `MIN_TUNING_ROWS` training rows on: on
  the disaster-messages benchmark (13 labels; `python bench/families.py --thresholds --sizes 200
  800`, docs/benchmarks/families.md) tuning every label lowered macro F1 with 200 training rows
  (0.514-0.550 against 0.542-0.572 at 0.5, 3 seeds); tuning the labels with 50 positives changed
  it by -0.003..+0.002 per seed at 200 rows (mean -0.0005) and raised it with 800
  (0.582-0.609 against 0.558-0.593).
- Regression: ridge regression, its strength chosen by scikit-learn's efficient leave-one-out
  cross-validation (`RidgeCV`) over `RIDGE_ALPHAS`.

Both give a `models.probe.LinearProbe`: `logits = X @ W.T + b`, which is what a transformers linear
head computes, so it can be written into one; its `output` is `sigmoid` (per-label logits) or
`identity` (the prediction in the target's units) instead of single-label's `softmax`, so it has no
log-softmax and no scikit-learn single-label form (its run folder stores it as tensors + JSON only).
"""

from __future__ import annotations

import warnings

import numpy as np

from hf_transfer.metrics.multilabel import MIN_TUNING_POSITIVES, MIN_TUNING_ROWS, tune_thresholds
from hf_transfer.models.probe import LinearProbe

CONSTANT_LOGIT = 10.0
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-3, 4, 15))
MAX_FOLDS = 5
# A label's threshold is tuned only with at least MIN_TUNING_POSITIVES positive training rows, and
# only when the training set has at least MIN_TUNING_ROWS rows (the out-of-fold models of a smaller
# one are fitted on too few rows to say where the final model's threshold belongs).


def _fit_ovr(X: np.ndarray, Y: np.ndarray, C: float, balanced: bool, max_iter: int, seed: int):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    W = np.zeros((Y.shape[1], X.shape[1]))
    b = np.zeros(Y.shape[1])
    for j in range(Y.shape[1]):
        y = Y[:, j]
        if y.min() == y.max():
            b[j] = CONSTANT_LOGIT if y[0] else -CONSTANT_LOGIT
            continue
        lr = LogisticRegression(
            C=C, max_iter=max_iter, class_weight="balanced" if balanced else None, random_state=seed
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            lr.fit(X, y)
        W[j], b[j] = lr.coef_[0], lr.intercept_[0]
    return W, b


def fit_multilabel(
    X: np.ndarray,
    Y: np.ndarray,
    *,
    C: float | None = None,
    balanced: bool = True,
    max_iter: int = 1000,
    seed: int = 0,
    tune: bool = True,
) -> tuple[LinearProbe, np.ndarray, dict]:
    """One-vs-rest logistic regression and its per-label thresholds (module docstring).

    Returns:
        `(probe, thresholds, record)`; the record says how C and the thresholds were chosen.
    """
    X = np.asarray(X, dtype=np.float64)
    Y = (np.asarray(Y) > 0.5).astype(int)
    C = 1.0 if C is None else float(C)
    W, b = _fit_ovr(X, Y, C, balanced, max_iter, seed)
    record = {
        "C": C,
        "C_selection": "scikit-learn's default C=1" if C == 1.0 else "given (strategy.C)",
        "class_weight": "balanced" if balanced else "none",
    }
    thresholds = np.full(Y.shape[1], 0.5)
    k = int(min(MAX_FOLDS, len(Y) // 2))
    if tune and k >= 2 and len(Y) >= MIN_TUNING_ROWS:
        from sklearn.model_selection import KFold

        oof = np.zeros(Y.shape, dtype=np.float64)
        for tr, te in KFold(k, shuffle=True, random_state=seed).split(X):
            Wf, bf = _fit_ovr(X[tr], Y[tr], C, balanced, max_iter, seed)
            oof[te] = 1.0 / (1.0 + np.exp(-(X[te] @ Wf.T + bf)))
        thresholds = tune_thresholds(oof, Y, min_positives=MIN_TUNING_POSITIVES)
        tuned = int((Y.sum(0) >= MIN_TUNING_POSITIVES).sum())
        record["threshold_selection"] = (
            f"per-label F1 on out-of-fold probabilities of a {k}-fold cross-validation "
            f"over the {len(Y)} training rows, for the {tuned} of {Y.shape[1]} labels with at "
            f"least {MIN_TUNING_POSITIVES} positives (0.5 for the others)"
        )
    elif tune:
        record["threshold_selection"] = (
            f"default 0.5 ({len(Y)} training rows: thresholds are tuned from {MIN_TUNING_ROWS} rows on)"
        )
    else:
        record["threshold_selection"] = "fixed"
    return LinearProbe(W, b, "one_vs_rest_logistic_regression", record, output="sigmoid"), thresholds, record


def fit_ridge(X: np.ndarray, y: np.ndarray, alpha: float | None = None) -> LinearProbe:
    """Ridge regression (alpha by leave-one-out cross-validation unless given)."""
    from sklearn.linear_model import Ridge, RidgeCV

    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if alpha is None:
        model = RidgeCV(alphas=RIDGE_ALPHAS).fit(X, y)
        record = {
            "alpha": float(model.alpha_),
            "alpha_selection": "leave-one-out cross-validation (RidgeCV) over "
            f"{RIDGE_ALPHAS[0]:g}..{RIDGE_ALPHAS[-1]:g}",
        }
    else:
        model = Ridge(alpha=float(alpha)).fit(X, y)
        record = {"alpha": float(alpha), "alpha_selection": "given"}
    return LinearProbe(model.coef_.reshape(1, -1), np.atleast_1d(model.intercept_), "ridge", record, output="identity")
