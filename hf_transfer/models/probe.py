"""Classic classifiers on frozen features: fitting, choosing the regularisation, scoring.

`logistic_regression` (default) and `linear` give a `LinearProbe`: `logits = X @ W.T + b` on the
raw features (any standardisation folded in), exactly what a linear head computes, so it can be
written into one or handed to scikit-learn as a plain `LogisticRegression`. `svm` and `knn` give
an `EstimatorClassifier` around a scikit-learn pipeline.

**Choosing C.** With `C` unset, `logistic_regression` cross-validates `C_GRID` on the training
features (stratified k-fold, k = min(5, smallest class count), scaler fitted inside each fold,
every fold's fits warm-started along the grid) and keeps scikit-learn's default `DEFAULT_C`
unless another C is *clearly* better: the C with the lowest out-of-fold log loss replaces the
default only when it beats the default's log loss *and* accuracy, each by more than
`CLEARLY_BETTER_SE` (2) standard errors of the paired per-example difference. With fewer than
`MIN_PER_CLASS_TO_SELECT` (16) training examples in some class there is no cross-validation at
all: the default stays. On few-shot sets the curves are flat within their noise (log loss alone
keeps asking for a weaker regularisation that makes the probabilities sharper, not the
predictions better), and a one-standard-error rule still moved C on such noise: on one 5-class
split of 8 examples a class it took C = 1000 and lost 3 points to the default (0.797 against
0.827). With 16 or more a class and two standard errors a clearly better C still wins. With a
class of a single example nothing can be held out: `DEFAULT_C`, and the selection record says so.
`svm` uses `DEFAULT_C` when unset.

**Loss.** `log_proba` gives the per-example log loss: exact for the linear classifiers; for `knn`
the log of its neighbour-vote probabilities clipped at `PROBA_FLOOR`; None for `svm`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import nn

from hf_transfer.errors import DataError

logger = logging.getLogger(__name__)

#: Probabilities are clipped here before the log, so a zero-vote class costs a finite loss.
PROBA_FLOOR = 1e-7
#: Logit of a class the training split never had: its probability is 0 in float32.
ABSENT_CLASS_LOGIT = -1e4
#: Candidate inverse regularisation strengths for cross-validation (log-spaced, 1e-4 .. 1e3).
C_GRID = tuple(float(c) for c in np.logspace(-4, 3, 15))
#: scikit-learn's default C: kept unless cross-validation finds a clearly better one.
DEFAULT_C = 1.0
#: C when it cannot be cross-validated (a class with a single example).
FALLBACK_C = DEFAULT_C
MAX_FOLDS = 5
#: Below this many training examples in the smallest class, C is not cross-validated (the default stays).
MIN_PER_CLASS_TO_SELECT = 16
#: A C replaces the default only when its gains exceed this many standard errors (log loss and accuracy).
CLEARLY_BETTER_SE = 2.0


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


class LinearProbe:
    """A linear model on raw features: `logits = X @ weight.T + bias`, one row per output.

    `output` says what the logits are: `softmax` (single-label classes, the default: `log_proba`
    is their log-softmax, `predict` the argmax), `sigmoid` (one independent logit per label of a
    label set, `models.target_probe`) or `identity` (the prediction itself, in the target's units:
    regression). For `sigmoid` and `identity`, `log_proba` is None (a softmax over independent
    labels or a number means nothing), `predict` gives the labels at probability 0.5 or the
    numbers, and `to_sklearn` refuses (there is no SetFit head to pickle for them).
    """

    OUTPUTS = ("softmax", "sigmoid", "identity")

    def __init__(
        self, weight: np.ndarray, bias: np.ndarray, kind: str, selection: dict | None = None, output: str = "softmax"
    ):
        if output not in self.OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(self.OUTPUTS)}, got {output!r}")
        self.weight = np.asarray(weight, dtype=np.float64)
        self.bias = np.asarray(bias, dtype=np.float64)
        self.kind = kind
        self.selection = selection or {}
        self.output = output

    def logits(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, dtype=np.float64) @ self.weight.T + self.bias

    def log_proba(self, X: np.ndarray) -> np.ndarray | None:
        return _log_softmax(self.logits(X)) if self.output == "softmax" else None

    def predict(self, X: np.ndarray) -> np.ndarray:
        z = self.logits(X)
        if self.output == "sigmoid":
            return (z >= 0).astype(int)
        if self.output == "identity":
            return z.reshape(-1) if z.shape[1] == 1 else z
        return z.argmax(1)

    def num_parameters(self) -> int:
        return int(self.weight.size + self.bias.size)

    def to_sklearn(self):
        """A fitted scikit-learn `LogisticRegression` whose `predict_proba` is this probe's softmax
        (what a SetFit folder's `model_head.pkl` holds; loads without hf_transfer)."""
        if self.output != "softmax":
            from hf_transfer.errors import ModelError

            raise ModelError(
                f"A {self.kind} ({self.output} outputs) has no scikit-learn single-label form: "
                "its run folder keeps it as classifier.safetensors + classifier.json only."
            )
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression()
        k = self.weight.shape[0]
        lr.classes_ = np.arange(k)
        if k == 2:  # scikit-learn's binary form: one row, sigmoid(z) = softmax of the two rows
            lr.coef_ = (self.weight[1] - self.weight[0])[None, :]
            lr.intercept_ = np.array([self.bias[1] - self.bias[0]])
        else:
            lr.coef_, lr.intercept_ = self.weight.copy(), self.bias.copy()
        lr.n_features_in_ = self.weight.shape[1]
        lr.n_iter_ = np.array([0])
        return lr


class EstimatorClassifier:
    """A scikit-learn estimator (or pipeline) over all `num_labels` labels."""

    def __init__(self, estimator, num_labels: int, kind: str, selection: dict | None = None):
        self.estimator = estimator
        self.num_labels = num_labels
        self.kind = kind
        self.selection = selection or {}

    def _expand(self, columns: np.ndarray, fill: float) -> np.ndarray:
        out = np.full((columns.shape[0], self.num_labels), fill, dtype=np.float64)
        out[:, np.asarray(self.estimator.classes_, dtype=np.int64)] = columns
        return out

    def log_proba(self, X: np.ndarray) -> np.ndarray | None:
        if not hasattr(self.estimator, "predict_proba"):
            return None
        p = self._expand(self.estimator.predict_proba(X), 0.0)
        return np.log(np.clip(p, PROBA_FLOOR, 1.0))

    def logits(self, X: np.ndarray) -> np.ndarray:
        """Log-probabilities when the estimator has them, else its decision function."""
        logp = self.log_proba(X)
        if logp is not None:
            return logp
        d = np.asarray(self.estimator.decision_function(X), dtype=np.float64)
        if d.ndim == 1:  # binary: positive means classes_[1]
            d = np.stack([-d / 2, d / 2], axis=1)
        return self._expand(d, ABSENT_CLASS_LOGIT)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator.predict(X), dtype=np.int64)

    def num_parameters(self) -> int:
        est = self.estimator[-1] if hasattr(self.estimator, "steps") else self.estimator
        if hasattr(est, "coef_") and not callable(getattr(est, "coef_", None)):
            try:
                return int(np.asarray(est.coef_).size + np.asarray(est.intercept_).size)
            except (AttributeError, ValueError):
                pass
        return 0

    def to_sklearn(self):
        return self.estimator


def _scaler(X: np.ndarray, standardize: bool) -> tuple[np.ndarray, np.ndarray]:
    if not standardize:
        return np.zeros(X.shape[1]), np.ones(X.shape[1])
    from sklearn.preprocessing import StandardScaler

    s = StandardScaler().fit(X)
    return s.mean_, s.scale_


def _fold(weight_z: np.ndarray, bias_z: np.ndarray, mean: np.ndarray, scale: np.ndarray):
    """Weights on standardised features -> the same classifier on raw features."""
    weight = weight_z / scale
    return weight, bias_z - weight @ mean


def _full_rows(weight: np.ndarray, bias: np.ndarray, classes: np.ndarray, num_labels: int):
    """Rows for every label; labels absent from training get zero weight and a very low bias."""
    W = np.zeros((num_labels, weight.shape[1]))
    b = np.full(num_labels, ABSENT_CLASS_LOGIT)
    W[classes], b[classes] = weight, bias
    return W, b


def _out_of_fold_logits(
    X: np.ndarray,
    y: np.ndarray,
    grid,
    folds: int,
    *,
    standardize: bool,
    class_weight: dict | None,
    max_iter: int,
    seed: int,
) -> np.ndarray:
    """Held-out decision values (len(grid), n, n_classes) of a logistic regression per C.

    Within a fold the fits run along the grid in increasing C, each warm-started from the last
    (scikit-learn's `warm_start`): the regularisation path costs little more than its last fit.
    (`LogisticRegressionCV` walks the same path but keeps only a score per fold; the rule in
    `choose_C` needs every held-out example's prediction for its paired standard errors.)
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    classes = np.unique(y)
    out = np.zeros((len(grid), len(y), len(classes)))
    order = np.argsort(grid)
    for train, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, y):
        mean, scale = _scaler(X[train], standardize)
        Xtr, Xte = (X[train] - mean) / scale, (X[held] - mean) / scale
        lr = LogisticRegression(max_iter=max_iter, class_weight=class_weight, random_state=seed, warm_start=True)
        for j in order:
            lr.set_params(C=float(grid[j]))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)  # a weak C on separable folds
                lr.fit(Xtr, y[train])
            d = lr.decision_function(Xte)
            if d.ndim == 1:
                d = np.stack([-d / 2, d / 2], axis=1)
            out[j, held] = d
    return out


def _clearly_better(gain: np.ndarray) -> bool:
    """True when the mean per-example gain exceeds `CLEARLY_BETTER_SE` standard errors of it."""
    if len(gain) < 2:
        return False
    return float(gain.mean()) > CLEARLY_BETTER_SE * float(gain.std(ddof=1)) / np.sqrt(len(gain))


def choose_C(
    X: np.ndarray,
    y: np.ndarray,
    *,
    standardize: bool = False,
    class_weight: dict | None = None,
    max_iter: int = 1000,
    seed: int = 0,
    grid: tuple[float, ...] = C_GRID,
) -> tuple[float, dict]:
    """C for a logistic regression: `DEFAULT_C` unless cross-validation finds a clearly better one
    (module docstring).

    Returns:
        `(C, record)`; the record goes to metrics: `C`, `C_selection`, `cv_folds`, and the
        out-of-fold `cv_log_loss` / `cv_accuracy` of the chosen C, `cv_best_C` (lowest log loss)
        and the default's `cv_log_loss_default` / `cv_accuracy_default`.
    """
    from scipy.special import log_softmax

    X = np.asarray(X, dtype=np.float64)
    classes, yi, counts = np.unique(y, return_inverse=True, return_counts=True)
    folds = int(min(MAX_FOLDS, counts.min()))
    if folds < 2:
        return FALLBACK_C, {
            "C": FALLBACK_C,
            "C_selection": "default (a class has a single training example)",
            "cv_folds": 0,
        }
    if counts.min() < MIN_PER_CLASS_TO_SELECT:
        return DEFAULT_C, {
            "C": DEFAULT_C,
            "cv_folds": 0,
            "C_selection": (
                f"default (the smallest class has {int(counts.min())} training examples, fewer than "
                f"{MIN_PER_CLASS_TO_SELECT}: cross-validation on so few is too noisy to move C)"
            ),
        }
    grid = tuple(float(c) for c in grid)
    if DEFAULT_C not in grid:
        grid = tuple(sorted(grid + (DEFAULT_C,)))
    cw = None if class_weight is None else {int(i): class_weight[c] for i, c in enumerate(classes) if c in class_weight}
    Z = _out_of_fold_logits(X, yi, grid, folds, standardize=standardize, class_weight=cw, max_iter=max_iter, seed=seed)
    rows = np.arange(len(yi))
    loss = np.stack([-log_softmax(z, axis=1)[rows, yi] for z in Z])  # (grid, n)
    correct = np.stack([(z.argmax(1) == yi).astype(np.float64) for z in Z])
    mean_loss = loss.mean(1)
    best = int(np.flatnonzero(mean_loss <= mean_loss.min() + 1e-12)[0])  # ties: the smaller C
    default = grid.index(DEFAULT_C)
    switch = (
        best != default
        and _clearly_better(loss[default] - loss[best])
        and _clearly_better(correct[best] - correct[default])
    )
    chosen = best if switch else default
    how = f"{folds}-fold stratified cross-validation: lowest log loss at C={grid[best]:g}, " + (
        f"better than the default in log loss and accuracy by more than {CLEARLY_BETTER_SE:g} standard errors"
        if switch
        else (
            f"the default C={DEFAULT_C:g}"
            if best == default
            else f"not clearly better than the default C={DEFAULT_C:g} in both log loss and accuracy, "
            "so the default is kept"
        )
    )
    return float(grid[chosen]), {
        "C": float(grid[chosen]),
        "C_selection": how,
        "cv_folds": folds,
        "cv_best_C": float(grid[best]),
        "cv_log_loss": round(float(mean_loss[chosen]), 4),
        "cv_accuracy": round(float(correct[chosen].mean()), 4),
        "cv_log_loss_default": round(float(mean_loss[default]), 4),
        "cv_accuracy_default": round(float(correct[default].mean()), 4),
    }


def fit_classifier(
    c,
    X: np.ndarray,
    y: np.ndarray,
    num_labels: int,
    class_weights: np.ndarray | None = None,
    seed: int = 0,
    weight_decay: float = 0.0,
    label_smoothing: float = 0.0,
):
    """Fit the classifier `c.classifier` on features `X` (N, d) and labels `y`.

    Args:
        c: Settings with `classifier`, `C` (None: cross-validated), `max_iter`, `svm_kernel`, `k`,
            `standardize`, `epochs`, `lr`, `batch_size` (the `feature_extraction` config).

    Returns:
        A `LinearProbe` (`logistic_regression`, `linear`) or an `EstimatorClassifier`, with
        `.selection` saying how C was chosen.
    """
    classes = np.unique(y)
    if len(classes) < 2:
        raise DataError(
            f"The training split has a single label ({int(classes[0])}): a classifier needs at "
            "least two. Check data.train and data.label_column."
        )
    cw = {int(i): float(class_weights[i]) for i in classes} if class_weights is not None else None

    if c.classifier == "logistic_regression":
        from sklearn.linear_model import LogisticRegression

        if c.C is None:
            C, selection = choose_C(X, y, standardize=c.standardize, class_weight=cw, max_iter=c.max_iter, seed=seed)
        else:
            C, selection = float(c.C), {"C": float(c.C), "C_selection": "given (strategy.C)"}
        mean, scale = _scaler(X, c.standardize)
        lr = LogisticRegression(C=C, max_iter=c.max_iter, class_weight=cw, random_state=seed)
        lr.fit((X - mean) / scale, y)
        coef, intercept = lr.coef_, lr.intercept_
        if coef.shape[0] == 1:  # binary: z = w.x + b for classes_[1]; softmax([-z/2, z/2]) = sigmoid(z)
            coef = np.concatenate([-coef / 2, coef / 2])
            intercept = np.concatenate([-intercept / 2, intercept / 2])
        W, b = _fold(coef, intercept, mean, scale)
        return LinearProbe(*_full_rows(W, b, lr.classes_, num_labels), kind=c.classifier, selection=selection)

    if c.classifier == "linear":
        mean, scale = _scaler(X, c.standardize)
        W, b = _train_linear(c, (X - mean) / scale, y, num_labels, class_weights, seed, weight_decay, label_smoothing)
        return LinearProbe(*_fold(W, b, mean, scale), kind=c.classifier)

    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    selection: dict[str, Any] = {}
    if c.classifier == "svm":
        from sklearn.svm import SVC, LinearSVC

        C = DEFAULT_C if c.C is None else float(c.C)
        selection = {"C": C, "C_selection": "given (strategy.C)" if c.C is not None else "default"}
        if c.svm_kernel == "linear":
            est = LinearSVC(C=C, class_weight=cw, max_iter=c.max_iter, random_state=seed)
        else:
            est = SVC(C=C, kernel="rbf", class_weight=cw, max_iter=-1, random_state=seed)
    else:
        from sklearn.neighbors import KNeighborsClassifier

        est = KNeighborsClassifier(n_neighbors=min(c.k, len(y)))
    steps = [StandardScaler(), est] if c.standardize else [est]
    pipe = make_pipeline(*steps).fit(X, y)
    return EstimatorClassifier(pipe, num_labels, kind=c.classifier, selection=selection)


def _train_linear(c, Z, y, num_labels, class_weights, seed, weight_decay, label_smoothing):
    """A torch linear layer trained with AdamW on (standardised) features. Returns (W, b)."""
    # One thread: the matrices are tiny, and thread hand-offs cost more than the arithmetic
    # (far slower with two threads on a busy machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = torch.Generator().manual_seed(seed)
        Zt = torch.as_tensor(Z, dtype=torch.float32)
        yt = torch.as_tensor(y, dtype=torch.long)
        layer = nn.Linear(Zt.shape[1], num_labels)
        with torch.no_grad():  # seeded init, independent of the global RNG
            bound = 1.0 / max(1, Zt.shape[1]) ** 0.5
            layer.weight.uniform_(-bound, bound, generator=g)
            layer.bias.zero_()
        opt = torch.optim.AdamW(layer.parameters(), lr=c.lr, weight_decay=weight_decay)
        weight = torch.as_tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
        for _ in range(c.epochs):
            order = torch.randperm(len(yt), generator=g)
            for i in range(0, len(yt), c.batch_size):
                idx = order[i : i + c.batch_size]
                opt.zero_grad(set_to_none=True)
                loss_fn(layer(Zt[idx]), yt[idx]).backward()
                opt.step()
        return layer.weight.detach().double().numpy(), layer.bias.detach().double().numpy()
    finally:
        torch.set_num_threads(threads)


def classifier_metrics(clf, X: np.ndarray, y: np.ndarray, task, prefix: str) -> dict[str, Any]:
    """The task's metrics for `clf` on features `X`, keys prefixed (`eval_accuracy`)."""
    preds = clf.predict(X)
    logp = clf.log_proba(X)
    loss = -logp[np.arange(len(y)), y] if logp is not None else np.zeros(len(y))
    metrics = task.compute_metrics({"predictions": preds, "references": np.asarray(y), "loss": loss})
    return {f"{prefix}_{k}": v for k, v in metrics.items()}


def write_into_head(linear: nn.Linear, probe: LinearProbe) -> bool:
    """Copy a linear probe into the head's linear layer. False when the shapes do not fit."""
    if linear.bias is None or tuple(linear.weight.shape) != probe.weight.shape:
        return False
    with torch.no_grad():
        linear.weight.copy_(torch.as_tensor(probe.weight, dtype=linear.weight.dtype))
        linear.bias.copy_(torch.as_tensor(probe.bias, dtype=linear.bias.dtype))
    return True


# ----------------------------------------------------------------------------- storing without pickle
#
# A fitted classifier is stored as tensors (safetensors) plus JSON settings, and read back as a
# `StoredClassifier`: numpy arithmetic that reproduces the fitted classifier's logits, so loading a
# run folder never unpickles anything (a pickle runs whatever code the file holds).

#: `form` values of the stored settings.
STORED_FORMS = ("linear", "linear_decision", "rbf_svm", "knn")


def classifier_state(clf) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The tensors and JSON settings that `StoredClassifier` rebuilds `clf` from.

    Covers every classifier `fit_classifier` makes: logistic regression and torch linear
    (`LinearProbe`), linear and RBF SVMs and kNN (scikit-learn, optionally behind a
    `StandardScaler`).

    Raises:
        ModelError: A classifier this cannot store (another scikit-learn estimator or setting).
    """
    tensors, settings = _classifier_state(clf)
    # C order: safetensors writes an array's memory as it lies (LinearSVC's coef_ is Fortran-ordered).
    return {k: np.ascontiguousarray(v) for k, v in tensors.items()}, settings


def _classifier_state(clf) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    from hf_transfer.errors import ModelError

    settings: dict[str, Any] = {"kind": clf.kind, "selection": dict(getattr(clf, "selection", {}) or {})}
    if isinstance(clf, LinearProbe):  # logits = X W^T + b (label sets and numbers too: `output`)
        return (
            {"weight": np.asarray(clf.weight, np.float64), "bias": np.asarray(clf.bias, np.float64)},
            {**settings, "form": "linear", "num_labels": int(clf.weight.shape[0]), "output": clf.output},
        )
    if not isinstance(clf, EstimatorClassifier):
        raise ModelError(f"A {type(clf).__name__} classifier cannot be stored without pickle.")
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC, LinearSVC

    est = clf.estimator
    steps = [s for _, s in est.steps] if hasattr(est, "steps") else [est]
    *before, final = steps
    tensors: dict[str, np.ndarray] = {}
    settings["num_labels"] = int(clf.num_labels)

    def refuse(what: str):
        raise ModelError(
            f"The {clf.kind} classifier ({what}) cannot be stored without pickle; "
            "use strategy.classifier logistic_regression, linear, svm or knn with their settings."
        )

    for step in before:
        if not isinstance(step, StandardScaler) or len(before) > 1:
            refuse(f"a {type(step).__name__} step")
        dim = int(step.n_features_in_)
        tensors["scaler_mean"] = np.asarray(
            step.mean_ if step.mean_ is not None and step.with_mean else np.zeros(dim), np.float64
        )
        tensors["scaler_scale"] = np.asarray(
            step.scale_ if step.scale_ is not None and step.with_std else np.ones(dim), np.float64
        )
    tensors["classes"] = np.asarray(final.classes_, dtype=np.int64)
    if isinstance(final, (LinearSVC, LogisticRegression)):
        settings["form"] = "linear_decision"
        tensors["coef"] = np.asarray(final.coef_, np.float64)
        tensors["intercept"] = np.asarray(final.intercept_, np.float64).reshape(-1)
        settings["has_proba"] = isinstance(final, LogisticRegression)
    elif isinstance(final, SVC):
        if final.kernel != "rbf" or final.decision_function_shape != "ovr" or final.probability is True:
            refuse(f"SVC kernel={final.kernel!r}")
        settings.update(form="rbf_svm", gamma=float(final._gamma))
        tensors.update(
            support_vectors=np.asarray(final.support_vectors_, np.float64),
            dual_coef=np.asarray(final.dual_coef_, np.float64),
            intercept=np.asarray(final.intercept_, np.float64),
            n_support=np.asarray(final.n_support_, np.int64),
        )
    elif isinstance(final, KNeighborsClassifier):
        if final.weights != "uniform" or final.effective_metric_ != "euclidean":
            refuse(f"kNN weights={final.weights!r} metric={final.effective_metric_!r}")
        settings.update(form="knn", k=int(final.n_neighbors))
        tensors.update(fit_X=np.asarray(final._fit_X, np.float64), fit_y=np.asarray(final._y, np.int64))
    else:
        refuse(type(final).__name__)
    return tensors, settings


def _ovr_from_ovo(ovo: np.ndarray, n_classes: int) -> np.ndarray:
    """scikit-learn's one-vs-rest decision from pairwise (one-vs-one) decisions: votes plus
    confidences squashed into (-1/3, 1/3), so the votes decide and the confidences break ties."""
    votes = np.zeros((len(ovo), n_classes))
    confidence = np.zeros((len(ovo), n_classes))
    k = 0
    for i in range(n_classes):
        for j in range(i + 1, n_classes):
            confidence[:, i] += ovo[:, k]
            confidence[:, j] -= ovo[:, k]
            votes[:, i] += ovo[:, k] >= 0
            votes[:, j] += ovo[:, k] < 0
            k += 1
    return votes + confidence / (3 * (np.abs(confidence) + 1))


class StoredClassifier:
    """A classifier read back from tensors and JSON settings (`classifier_state`): the same logits,
    log-probabilities and predictions as the fitted one, in numpy, with nothing unpickled."""

    def __init__(self, tensors: dict[str, np.ndarray], settings: dict[str, Any]):
        from hf_transfer.errors import ModelError

        self.form = settings.get("form")
        if self.form not in STORED_FORMS:
            raise ModelError(f"Unknown stored classifier form {self.form!r} (known: {', '.join(STORED_FORMS)}).")
        self.t = {k: np.asarray(v) for k, v in tensors.items()}
        self.kind = str(settings.get("kind"))
        self.num_labels = int(settings["num_labels"])
        self.settings = settings
        self.selection = settings.get("selection") or {}

    def _scaled(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if "scaler_mean" in self.t:
            X = (X - self.t["scaler_mean"]) / self.t["scaler_scale"]
        return X

    def _expand(self, columns: np.ndarray, fill: float) -> np.ndarray:
        out = np.full((columns.shape[0], self.num_labels), fill, dtype=np.float64)
        out[:, self.t["classes"]] = columns
        return out

    def _decision(self, X: np.ndarray) -> np.ndarray:
        """The estimator's decision function over its own classes (binary: one column, as
        scikit-learn's)."""
        Z = self._scaled(X)
        if self.form == "linear_decision":
            d = Z @ self.t["coef"].T + self.t["intercept"]
            return d[:, 0] if d.shape[1] == 1 else d
        sv, dual, b, ns = self.t["support_vectors"], self.t["dual_coef"], self.t["intercept"], self.t["n_support"]
        sq = (Z**2).sum(1)[:, None] + (sv**2).sum(1)[None, :] - 2 * Z @ sv.T
        K = np.exp(-float(self.settings["gamma"]) * np.maximum(sq, 0.0))
        if len(ns) == 2:
            return K @ dual[0] + b[0]
        starts = np.r_[0, np.cumsum(ns)]
        pairs = []
        p = 0
        for i in range(len(ns)):
            for j in range(i + 1, len(ns)):
                si, sj = slice(starts[i], starts[i + 1]), slice(starts[j], starts[j + 1])
                pairs.append(K[:, si] @ dual[j - 1, si] + K[:, sj] @ dual[i, sj] + b[p])
                p += 1
        return _ovr_from_ovo(np.stack(pairs, axis=1), len(ns))

    def log_proba(self, X: np.ndarray) -> np.ndarray | None:
        if self.form == "linear":  # label sets and numbers (`output` sigmoid / identity) have none
            return _log_softmax(self.logits(X)) if self.settings.get("output", "softmax") == "softmax" else None
        if self.form == "knn":
            Z = self._scaled(X)
            fit_X, fit_y, classes = self.t["fit_X"], self.t["fit_y"], self.t["classes"]
            k = min(int(self.settings["k"]), len(fit_X))
            sq = (Z**2).sum(1)[:, None] + (fit_X**2).sum(1)[None, :] - 2 * Z @ fit_X.T
            nearest = np.argsort(sq, axis=1, kind="stable")[:, :k]
            votes = np.zeros((len(Z), len(classes)))
            for col in range(k):
                np.add.at(votes, (np.arange(len(Z)), fit_y[nearest[:, col]]), 1.0)
            return np.log(np.clip(self._expand(votes / k, 0.0), PROBA_FLOOR, 1.0))
        if self.form == "linear_decision" and self.settings.get("has_proba"):
            d = self._decision(X)
            d = np.stack([-d / 2, d / 2], axis=1) if d.ndim == 1 else d
            return np.log(np.clip(self._expand(np.exp(_log_softmax(d)), 0.0), PROBA_FLOOR, 1.0))
        return None

    def logits(self, X: np.ndarray) -> np.ndarray:
        """Log-probabilities when the classifier has them, else its decision function (as
        `LinearProbe.logits` / `EstimatorClassifier.logits`)."""
        if self.form == "linear":
            return np.asarray(X, dtype=np.float64) @ self.t["weight"].T + self.t["bias"]
        logp = self.log_proba(X)
        if logp is not None:
            return logp
        d = self._decision(X)
        if d.ndim == 1:
            d = np.stack([-d / 2, d / 2], axis=1)
        return self._expand(d, ABSENT_CLASS_LOGIT)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.logits(X).argmax(1)

    def num_parameters(self) -> int:
        if self.form == "linear":
            return int(self.t["weight"].size + self.t["bias"].size)
        if self.form == "linear_decision":
            return int(self.t["coef"].size + self.t["intercept"].size)
        return 0
