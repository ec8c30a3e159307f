"""Linear models on frozen features for label sets and numbers.

- Multi-label: one logistic regression per label (one-vs-rest, SetFit's multi-label head), on the
  raw features, each label's two classes weighted as scikit-learn's `class_weight="balanced"` (so
  0.5 is where a rare label's positives and negatives weigh the same). A label with a single class
  in the training split gets a constant logit (+-`CONSTANT_LOGIT`). A label's threshold moves from
  0.5 to the one that maximises its F1 on out-of-fold probabilities of a k-fold cross-validation
  over the training features (k = min(5, rows // 2)) only when the training rows hold at least
  `MIN_TUNING_POSITIVES` of its positives: on the disaster-messages benchmark (13 labels;
  `python bench/families.py --thresholds --sizes 200 800`, docs/benchmarks/families.md) tuning
  lowered macro F1 with 200 training rows (0.514-0.550 against 0.542-0.572 at 0.5, 3 seeds) and
  raised it with 800 (0.578-0.615 against 0.558-0.593).
- Regression: ridge regression, its strength chosen by scikit-learn's efficient leave-one-out
  cross-validation (`RidgeCV`) over `RIDGE_ALPHAS`.

Both give a `TargetLinearProbe`: `logits = X @ W.T + b` (per-label logits, or the prediction in
the target's units), which is what a transformers linear head computes, so it can be written
into one.
"""

from __future__ import annotations

import warnings

import numpy as np

from hf_transfer.metrics.multilabel import tune_thresholds

CONSTANT_LOGIT = 10.0
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-3, 4, 15))
MAX_FOLDS = 5
#: A label's threshold is tuned only with at least this many positive training rows.
MIN_TUNING_POSITIVES = 50


class TargetLinearProbe:
    """`logits = X @ weight.T + bias`; `kind` is `one_vs_rest_logistic_regression` or `ridge`."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, kind: str, selection: dict | None = None):
        self.weight = np.asarray(weight, dtype=np.float64)
        self.bias = np.asarray(bias, dtype=np.float64)
        self.kind = kind
        self.selection = selection or {}

    def logits(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, dtype=np.float64) @ self.weight.T + self.bias

    def log_proba(self, X: np.ndarray):
        return None

    def num_parameters(self) -> int:
        return int(self.weight.size + self.bias.size)

    def to_sklearn(self):
        return self


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
        lr = LogisticRegression(C=C, max_iter=max_iter, class_weight="balanced" if balanced else None,
                                random_state=seed)
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
) -> tuple[TargetLinearProbe, np.ndarray, dict]:
    """One-vs-rest logistic regression and its per-label thresholds (module docstring).

    Returns:
        `(probe, thresholds, record)`; the record says how C and the thresholds were chosen.
    """
    X = np.asarray(X, dtype=np.float64)
    Y = (np.asarray(Y) > 0.5).astype(int)
    C = 1.0 if C is None else float(C)
    W, b = _fit_ovr(X, Y, C, balanced, max_iter, seed)
    record = {"C": C, "C_selection": "scikit-learn's default C=1" if C == 1.0 else "given (strategy.C)",
              "class_weight": "balanced" if balanced else "none"}
    thresholds = np.full(Y.shape[1], 0.5)
    k = int(min(MAX_FOLDS, len(Y) // 2))
    if tune and k >= 2:
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
    else:
        record["threshold_selection"] = "default 0.5 (too few training rows to cross-validate)" if tune else "fixed"
    return TargetLinearProbe(W, b, "one_vs_rest_logistic_regression", record), thresholds, record


def fit_ridge(X: np.ndarray, y: np.ndarray, alpha: float | None = None) -> TargetLinearProbe:
    """Ridge regression (alpha by leave-one-out cross-validation unless given)."""
    from sklearn.linear_model import Ridge, RidgeCV

    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if alpha is None:
        model = RidgeCV(alphas=RIDGE_ALPHAS).fit(X, y)
        record = {"alpha": float(model.alpha_), "alpha_selection": "leave-one-out cross-validation (RidgeCV) over "
                  f"{RIDGE_ALPHAS[0]:g}..{RIDGE_ALPHAS[-1]:g}"}
    else:
        model = Ridge(alpha=float(alpha)).fit(X, y)
        record = {"alpha": float(alpha), "alpha_selection": "given"}
    return TargetLinearProbe(model.coef_.reshape(1, -1), np.atleast_1d(model.intercept_), "ridge", record)
