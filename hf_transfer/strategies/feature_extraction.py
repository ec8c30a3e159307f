"""`feature_extraction`: a classic classifier on the frozen backbone's features, cached on disk.

The backbone never trains, so its features are computed once per (checkpoint, data, preprocessing)
and stored; every later run with the same inputs, whatever the classifier or its settings, reads
them back without running the model. Then a classic classifier is fitted on them:
`logistic_regression` (default), `svm`, `knn`, or `linear` (a torch linear layer trained with
AdamW on the cached features).

**Which features.** Exactly what the new head sees: the input of the head, captured with a forward
pre-hook, so the features follow the architecture's own pooling (BERT: the pooler output; ViT: the
final-norm [CLS] token; ResNet: the pooled map). When the head is one linear layer (BERT, ViT,
ResNet, EfficientNet, MiniLM...), its input is the feature vector and nothing else is assumed.
When the head is several modules (DistilBERT `pre_classifier` + `classifier`, RoBERTa/ELECTRA's
`classifier.dense` + `out_proj`, wav2vec2/Whisper `projector` + `classifier`, DeBERTa `pooler` +
`classifier`), the features are the input of the first head module called (the backbone output it
takes), and a sequence there is pooled (`pooling`): the first token for text, as these text heads
do themselves, the mean over time otherwise (audio heads average after their projector).

**What the run folder holds.** For `logistic_regression` and `linear` on a one-linear-layer head,
the fitted weights are written *into* that layer (the scaler folded in; a binary logistic regression
`w, b` becomes the two rows `-w/2, w/2` so that softmax gives exactly its `predict_proba`), and the
run folder is a plain transformers model that predicts exactly as the fitted classifier. For `svm`
and `knn`, and for multi-module heads (whose earlier layers would otherwise stay at their random
initialisation), the fitted estimator is saved as `classifier.joblib` beside the model;
`feature_classifier.json` says which case applies and where the features are read, and
`attach_feature_classifier` wraps the loaded model so that `hf-transfer evaluate` / `predict` use
the estimator. Loading such a folder with plain transformers gives the untrained head's outputs.

**The cache** lives in `strategy.cache_dir`, else `$HF_TRANSFER_CACHE/features`, else
`~/.cache/hf_transfer/features`: one safetensors file (features + labels) per split, named by a
hash of everything the features depend on: the checkpoint (name, revision, a SHA-256 of every
backbone tensor, about 1 s per GB, and its config), the split's content (`datasets` fingerprint,
which covers the file, filters and subsampling), the preprocessing (every `data.*` setting that is
not data selection, and the processor's saved files), where the features are read and pooled,
and the precision. Features are always computed with evaluation preprocessing: augmentation is
off (a cached feature cannot be re-augmented).

**Loss in the metrics.** `eval_loss` is the log loss per example: the exact cross-entropy of the
linear classifiers; for `knn` the log of its neighbour-vote probabilities clipped at 1e-7 (as
scikit-learn's `log_loss` used to); 0 for `svm`, which has no probabilities.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from hf_transfer.errors import ConfigError, DataError, ModelError
from hf_transfer.strategies.base import Strategy, StrategyConfig, register_strategy

logger = logging.getLogger(__name__)

#: Bump when the cache layout or the extraction changes: old entries are then never read.
FEATURE_FORMAT = 1
CLASSIFIER_FILE = "classifier.joblib"
SPEC_FILE = "feature_classifier.json"
#: Probabilities are clipped here before the log, so a zero-vote class costs a finite loss.
PROBA_FLOOR = 1e-7
#: Logit of a class the training split never had: its probability is 0 in float32.
ABSENT_CLASS_LOGIT = -1e4
# data.* settings that select rows: the split's datasets fingerprint already covers them.
_DATA_SELECTION_KEYS = frozenset({
    "train", "eval", "test", "filter", "max_train_samples", "max_eval_samples", "samples_per_class",
    "eval_samples_per_class", "eval_fraction", "group_by_length", "augmentation", "train_indices",
})


@dataclass
class FeatureExtractionConfig(StrategyConfig):
    """Settings of `feature_extraction`.

    Attributes:
        name: `feature_extraction`.
        classifier: `logistic_regression` (scikit-learn, multinomial), `svm` (scikit-learn
            `LinearSVC`, or `SVC` with `svm_kernel: rbf`), `knn` (k nearest neighbours), or `linear`
            (a torch linear layer trained on the cached features with AdamW).
        C: Inverse regularisation strength of `logistic_regression` and `svm`.
        max_iter: Iteration limit of the scikit-learn solvers.
        svm_kernel: `linear` or `rbf`.
        k: Number of neighbours of `knn` (at most the number of training examples).
        standardize: Scale features to zero mean and unit variance before fitting (learned on
            the training split; folded into the weights written into the head).
        epochs: Passes over the training features of the `linear` classifier.
        lr: AdamW learning rate of the `linear` classifier (weight decay is
            `training.weight_decay`; class weights and label smoothing come from `training.*`).
        batch_size: Mini-batch size of the `linear` classifier.
        pooling: How a sequence entering a multi-module head becomes one vector: `auto` (first
            token for text, mean over time otherwise), `first_token` or `mean`. A head that
            takes a vector (BERT, ViT, MiniLM...) is fed exactly that vector whatever this says.
        cache_dir: Feature cache folder. Empty: `$HF_TRANSFER_CACHE/features`, else
            `~/.cache/hf_transfer/features`.
        use_cache: Read and write the feature cache. Off: features are computed every run.
    """

    name: str = "feature_extraction"
    classifier: Literal["logistic_regression", "svm", "knn", "linear"] = "logistic_regression"
    C: float = 1.0
    max_iter: int = 1000
    svm_kernel: Literal["linear", "rbf"] = "linear"
    k: int = 5
    standardize: bool = True
    epochs: int = 100
    lr: float = 1e-2
    batch_size: int = 64
    pooling: Literal["auto", "first_token", "mean"] = "auto"
    cache_dir: str | None = None
    use_cache: bool = True

    def __post_init__(self) -> None:
        for key in ("C", "lr"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"strategy.{key} must be positive, got {getattr(self, key)}.")
        for key in ("max_iter", "k", "epochs", "batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"strategy.{key} must be at least 1, got {getattr(self, key)}.")


# ---------------------------------------------------------------------------------------------
# Where the features are read


@dataclass
class HeadInput:
    """Where the features come from: the input of a head module, pooled to one vector.

    Attributes:
        candidates: Head modules whose input may be the features; the first one called in the
            forward pass is the head's entry.
        linear: The head's only parametrised module when it is one `nn.Linear` (weights can be
            written into it), else None.
        pooling: The `pooling` setting.
        text: Whether the inputs are text (decides `auto` pooling).
    """

    candidates: list[str]
    linear: str | None
    pooling: str = "auto"
    text: bool = True

    def pool(self, x: torch.Tensor) -> tuple[torch.Tensor, str]:
        """One vector per example, and the pooling applied (`none`, `first_token`, `mean`, `spatial_mean`)."""
        if x.ndim == 2:
            return x, "none"
        if x.ndim == 3:
            mode = self.pooling if self.pooling != "auto" else ("first_token" if self.text else "mean")
            return (x[:, 0], mode) if mode == "first_token" else (x.mean(1), mode)
        return x.flatten(2).mean(-1), "spatial_mean"


def locate_head_input(model: nn.Module, groups: list, pooling: str = "auto", text: bool = True) -> HeadInput:
    """Find the module whose input is the feature vector (see the module docstring).

    Raises:
        ModelError: The model has no head group.
    """
    names = [n for g in groups if g.kind == "head" for n in g.param_names]
    if not names:
        raise ModelError(
            "strategy feature_extraction needs a task head to read the features from, and this "
            "model has none (a bare backbone or an output layer tied to the embeddings)."
        )
    owners = list(dict.fromkeys(n.rsplit(".", 1)[0] if "." in n else "" for n in names))
    if len(owners) == 1 and owners[0] and isinstance(model.get_submodule(owners[0]), nn.Linear):
        return HeadInput([owners[0]], owners[0], pooling, text)
    tops = [o for o in dict.fromkeys(o.split(".")[0] for o in owners if o)]
    return HeadInput(tops, None, pooling, text)


class HeadInputCapture:
    """Context manager: forward pre-hooks that keep the input of the first head module called."""

    def __init__(self, model: nn.Module, spec: HeadInput):
        self.model = model
        self.spec = spec
        self.value: torch.Tensor | None = None
        self.module_name: str | None = None
        self._handles: list = []

    def __enter__(self) -> HeadInputCapture:
        for name in self.spec.candidates:
            module = self.model.get_submodule(name)
            self._handles.append(module.register_forward_pre_hook(self._hook(name), with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, name: str):
        def hook(module, args, kwargs):
            if self.value is None:
                x = args[0] if args else next(v for v in kwargs.values() if torch.is_tensor(v))
                self.value, self.module_name = x.detach(), name

        return hook

    def reset(self) -> None:
        self.value = None

    def features(self) -> tuple[torch.Tensor, str]:
        """The pooled float32 features of the last forward pass, and the pooling applied."""
        if self.value is None:
            raise ModelError(
                f"The model's forward pass never called its head ({', '.join(self.spec.candidates)}), "
                "so there are no features to read."
            )
        x, mode = self.spec.pool(self.value)
        return x.float(), mode


def _to_device(batch: dict, device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


@torch.no_grad()
def extract_features(model: nn.Module, spec: HeadInput, task, ds, batch_size: int, device,
                     autocast_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Run the frozen model over split `ds` (evaluation preprocessing) and read the head's input.

    Returns:
        `(features (N, d) float32 on CPU, labels (N,) int64, {"module": ..., "pooling": ...})`.
    """
    from torch.utils.data import DataLoader

    data = task.preprocess(ds, train=False)
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=task.collate)
    model.eval().to(device)
    feats, labels, mode = [], [], "none"
    with HeadInputCapture(model, spec) as cap:
        for batch in loader:
            labels.append(batch["labels"].cpu())
            cap.reset()
            with torch.autocast(device_type=torch.device(device).type, dtype=autocast_dtype,
                                enabled=autocast_dtype is not None):
                model(**_to_device(task.model_inputs(batch), device))
            x, mode = cap.features()
            feats.append(x.cpu())
    info = {"module": cap.module_name, "pooling": mode}
    return torch.cat(feats), torch.cat(labels).long(), info


# ---------------------------------------------------------------------------------------------
# The cache


def cache_root(setting: str | None = None) -> Path:
    """The feature cache folder: `setting`, else `$HF_TRANSFER_CACHE/features`, else `~/.cache/...`."""
    if setting:
        return Path(setting).expanduser()
    env = os.environ.get("HF_TRANSFER_CACHE")
    if env:
        return Path(env).expanduser() / "features"
    return Path.home() / ".cache" / "hf_transfer" / "features"


def state_digest(model: nn.Module, skip_top: set[str] = frozenset()) -> str:
    """SHA-256 of every tensor in `model.state_dict()` (names, shapes, dtypes, bytes), skipping
    top-level modules in `skip_top` (the randomly initialised head)."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        if name.split(".")[0] in skip_top:
            continue
        t = t.detach().reshape(-1).contiguous().cpu()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def processor_digest(task) -> str:
    """SHA-256 of the files the task's processor saves (tokenizer / image / audio settings)."""
    h = hashlib.sha256()
    with tempfile.TemporaryDirectory() as tmp:
        task.save_processor(tmp)
        for path in sorted(Path(tmp).rglob("*")):
            if path.is_file():
                h.update(path.relative_to(tmp).as_posix().encode())
                h.update(path.read_bytes())
    return h.hexdigest()


def _model_config(model: nn.Module) -> dict:
    config = getattr(model, "config", None)
    if config is None:
        return {}
    d = config.to_dict()
    for k in ("id2label", "label2id", "num_labels", "_name_or_path", "transformers_version", "architectures"):
        d.pop(k, None)
    return d


def feature_key(parts: dict) -> str:
    """The cache file stem for `parts` (a JSON-able mapping of everything the features depend on)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def load_cached(path: Path) -> tuple[torch.Tensor, torch.Tensor, dict] | None:
    """`(features, labels, meta)` from a cache file, or None when absent or unreadable."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("meta", "{}"))
            return f.get_tensor("features"), f.get_tensor("labels"), meta
    except Exception as e:  # a truncated or foreign file: recompute rather than fail the run
        logger.warning("Ignoring unreadable feature cache file %s (%s).", path, e)
        return None


def save_cached(path: Path, features: torch.Tensor, labels: torch.Tensor, meta: dict) -> None:
    """Write a cache file atomically (aside, then renamed), so a crash never leaves half a file."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file({"features": features.contiguous(), "labels": labels.contiguous()}, str(tmp),
              metadata={"meta": json.dumps(meta, default=str)})
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Classifiers


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


class LinearProbe:
    """A linear classifier on raw features: `logits = X @ weight.T + bias`, one row per label.

    This is exactly what a linear head computes, so its weights can be written into one.
    """

    def __init__(self, weight: np.ndarray, bias: np.ndarray, kind: str):
        self.weight = np.asarray(weight, dtype=np.float64)
        self.bias = np.asarray(bias, dtype=np.float64)
        self.kind = kind

    def logits(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, dtype=np.float64) @ self.weight.T + self.bias

    def log_proba(self, X: np.ndarray) -> np.ndarray:
        return _log_softmax(self.logits(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.logits(X).argmax(1)

    def num_parameters(self) -> int:
        return int(self.weight.size + self.bias.size)


class EstimatorClassifier:
    """A scikit-learn estimator (with its scaler) over all `num_labels` labels."""

    def __init__(self, estimator, num_labels: int, kind: str):
        self.estimator = estimator
        self.num_labels = num_labels
        self.kind = kind

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


def fit_classifier(c: FeatureExtractionConfig, X: np.ndarray, y: np.ndarray, num_labels: int,
                   class_weights: np.ndarray | None = None, seed: int = 0, weight_decay: float = 0.0,
                   label_smoothing: float = 0.0):
    """Fit the configured classifier on features `X` (N, d) and labels `y`.

    Returns:
        A `LinearProbe` (`logistic_regression`, `linear`) or an `EstimatorClassifier`.
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

        mean, scale = _scaler(X, c.standardize)
        lr = LogisticRegression(C=c.C, max_iter=c.max_iter, class_weight=cw, random_state=seed)
        lr.fit((X - mean) / scale, y)
        coef, intercept = lr.coef_, lr.intercept_
        if coef.shape[0] == 1:  # binary: z = w.x + b for classes_[1]; softmax([-z/2, z/2]) = sigmoid(z)
            coef = np.concatenate([-coef / 2, coef / 2])
            intercept = np.concatenate([-intercept / 2, intercept / 2])
        W, b = _fold(coef, intercept, mean, scale)
        return LinearProbe(*_full_rows(W, b, lr.classes_, num_labels), kind=c.classifier)

    if c.classifier == "linear":
        mean, scale = _scaler(X, c.standardize)
        W, b = _train_linear(c, (X - mean) / scale, y, num_labels, class_weights, seed, weight_decay, label_smoothing)
        return LinearProbe(*_fold(W, b, mean, scale), kind=c.classifier)

    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if c.classifier == "svm":
        from sklearn.svm import SVC, LinearSVC

        if c.svm_kernel == "linear":
            est = LinearSVC(C=c.C, class_weight=cw, max_iter=c.max_iter, random_state=seed)
        else:
            est = SVC(C=c.C, kernel="rbf", class_weight=cw, max_iter=-1, random_state=seed)
    else:
        from sklearn.neighbors import KNeighborsClassifier

        est = KNeighborsClassifier(n_neighbors=min(c.k, len(y)))
    steps = [StandardScaler(), est] if c.standardize else [est]
    pipe = make_pipeline(*steps).fit(X, y)
    return EstimatorClassifier(pipe, num_labels, kind=c.classifier)


def _train_linear(c, Z, y, num_labels, class_weights, seed, weight_decay, label_smoothing):
    """A torch linear layer trained with AdamW on (standardised) features. Returns (W, b)."""
    # One thread: the matrices are tiny, and thread hand-offs cost more than the arithmetic
    # (10x slower with two threads on a busy machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_linear_1(c, Z, y, num_labels, class_weights, seed, weight_decay, label_smoothing)
    finally:
        torch.set_num_threads(threads)


def _train_linear_1(c, Z, y, num_labels, class_weights, seed, weight_decay, label_smoothing):
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
            idx = order[i:i + c.batch_size]
            opt.zero_grad(set_to_none=True)
            loss_fn(layer(Zt[idx]), yt[idx]).backward()
            opt.step()
    return layer.weight.detach().double().numpy(), layer.bias.detach().double().numpy()


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


# ---------------------------------------------------------------------------------------------
# Loading a run whose classifier lives beside the model


class FeatureClassifierModel(nn.Module):
    """A transformers model whose head is replaced by a saved classifier on the head's input.

    `model(**inputs).logits` runs the backbone, reads the features where the fit read them, and
    returns the classifier's logits (log-probabilities, or the SVM decision function).
    """

    def __init__(self, model: nn.Module, classifier, spec: HeadInput):
        super().__init__()
        self.model = model
        self.classifier = classifier
        self.spec = spec

    @property
    def config(self):
        return self.model.config

    def forward(self, **inputs):
        from transformers.modeling_outputs import SequenceClassifierOutput

        inputs.pop("labels", None)
        with HeadInputCapture(self.model, self.spec) as cap:
            self.model(**inputs)
            x, _ = cap.features()
        logits = self.classifier.logits(x.cpu().numpy())
        return SequenceClassifierOutput(logits=torch.as_tensor(logits, dtype=torch.float32, device=x.device))


def attach_feature_classifier(run_dir, model: nn.Module) -> nn.Module:
    """`model` itself, or wrapped in `FeatureClassifierModel` when the run saved its classifier
    beside the model (`svm`, `knn`, multi-module heads). For `hf-transfer evaluate` / `predict`."""
    run_dir = Path(run_dir)
    spec_path = run_dir / SPEC_FILE
    if not spec_path.is_file():
        return model
    info = json.loads(spec_path.read_text())
    if info.get("head_written", True):
        return model
    import joblib

    clf = joblib.load(run_dir / CLASSIFIER_FILE)
    spec = HeadInput([info["module"]], info.get("linear"), info.get("pooling_setting", "auto"), info.get("text", True))
    return FeatureClassifierModel(model, clf, spec).eval()


# ---------------------------------------------------------------------------------------------
# The strategy


@register_strategy("feature_extraction", FeatureExtractionConfig)
class FeatureExtraction(Strategy):
    """Frozen backbone features, cached; a classic classifier on top (see the module docstring)."""

    trains_with_engine = False

    def __init__(self, config: FeatureExtractionConfig):
        super().__init__(config)
        self._fitted: dict[str, Any] | None = None

    def prepare(self, ctx) -> None:
        if ctx.cfg.recipe == "speech_recognition":
            raise ConfigError("strategy feature_extraction needs a classification recipe, not speech_recognition.")
        if getattr(getattr(ctx.cfg.data, "augmentation", None), "enabled", False):
            logger.info("Augmentation is off for feature_extraction: features are computed once, unaugmented.")

    def apply(self, model: nn.Module, groups: list) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(False)
        return model.eval()

    def describe(self, model: nn.Module) -> dict[str, Any]:
        info = super().describe(model)
        info["classifier"] = self.config.classifier
        if self._fitted:
            info.update(self._fitted)
            if self._fitted.get("head_written"):
                info["trainable_parameters"] = self._fitted["classifier_parameters"]
                info["frozen_parameters"] = sum(p.numel() for p in model.parameters()) - info["trainable_parameters"]
        return info

    # -- features ------------------------------------------------------------------------------

    def _key_parts(self, ctx, model, spec: HeadInput, precision: str) -> dict:
        cfg = ctx.cfg
        heads = {c.split(".")[0] for c in spec.candidates}
        data = {k: v for k, v in dataclasses.asdict(cfg.data).items() if k not in _DATA_SELECTION_KEYS}
        return {
            "format": FEATURE_FORMAT,
            "recipe": cfg.recipe,
            "model": cfg.model.name_or_path,
            "revision": cfg.model.revision,
            "weights": state_digest(model, heads),
            "config": _model_config(model),
            "data": data,
            "processor": processor_digest(ctx.task),
            "head_input": spec.candidates,
            "pooling": spec.pooling,
            "precision": precision,
        }

    def _split_features(self, ctx, model, spec, ds, role, parts, device, autocast_dtype):
        c = self.config
        path = None
        if c.use_cache:
            fingerprint = getattr(ds, "_fingerprint", None)
            key = feature_key({**parts, "dataset": fingerprint})
            path = cache_root(c.cache_dir) / f"{key}.safetensors"
            cached = load_cached(path)
            if cached is not None and len(cached[1]) == len(ds):
                logger.info("Features of the %s split (%d) read from the cache: %s", role, len(ds), path)
                return cached[0], cached[1], cached[2], True
        t0 = time.time()
        bs = ctx.cfg.training.eval_batch_size or ctx.cfg.training.batch_size
        X, y, info = extract_features(model, spec, ctx.task, ds, bs, device, autocast_dtype)
        logger.info("Features of the %s split: %d x %d in %.1f s (input of '%s', pooling %s).",
                    role, X.shape[0], X.shape[1], time.time() - t0, info["module"], info["pooling"])
        if path is not None and _is_main():
            save_cached(path, X, y, {**info, "role": role, "model": ctx.cfg.model.name_or_path})
        return X, y, info, False

    # -- fit -----------------------------------------------------------------------------------

    def fit(self, ctx, model: nn.Module, groups: list) -> dict[str, Any]:
        """Features (cached), classifier, metrics; writes the run folder's model and processor."""
        from accelerate.state import PartialState

        c, cfg, task, splits = self.config, ctx.cfg, ctx.task, ctx.splits
        start = time.time()
        spec = locate_head_input(model, groups, c.pooling, text=cfg.recipe == "text_classification")
        device = PartialState().device
        autocast_dtype = None
        if cfg.training.mixed_precision != "no" and torch.device(device).type != "cpu":
            autocast_dtype = torch.bfloat16 if cfg.training.mixed_precision == "bf16" else torch.float16
        precision = cfg.training.mixed_precision if autocast_dtype is not None else "no"
        parts = self._key_parts(ctx, model, spec, precision) if c.use_cache else {}

        feats, hits, info = {}, [], {}
        for role, ds in (("train", splits.train), ("eval", splits.eval), ("test", splits.test)):
            if ds is None:
                continue
            X, y, info_split, hit = self._split_features(ctx, model, spec, ds, role, parts, device, autocast_dtype)
            feats[role] = (X.double().numpy(), y.numpy().astype(np.int64))
            hits.append(hit)
            info = info or info_split
        feature_seconds = time.time() - start

        X, y = feats["train"]
        num_labels = len(task.labels) if getattr(task, "labels", None) is not None else int(y.max()) + 1
        cw = getattr(task, "class_weights", None)
        t0 = time.time()
        clf = fit_classifier(
            c, X, y, num_labels, cw.numpy() if cw is not None else None, seed=cfg.training.seed,
            weight_decay=cfg.training.weight_decay, label_smoothing=cfg.training.label_smoothing,
        )
        classifier_seconds = time.time() - t0
        runtime = time.time() - start

        metrics: dict[str, Any] = {}
        for role, prefix in (("eval", "eval"), ("test", "test")):
            if role in feats:
                metrics.update(classifier_metrics(clf, *feats[role], task, prefix))

        head_written = False
        if isinstance(clf, LinearProbe) and spec.linear is not None and info.get("pooling") == "none":
            head_written = write_into_head(model.get_submodule(spec.linear), clf)
        if not head_written:
            logger.info("The %s classifier is saved beside the model (%s): hf-transfer evaluate/predict "
                        "use it; plain transformers would use the untrained head.", c.classifier, CLASSIFIER_FILE)

        self._fitted = {
            "head_written": head_written,
            "feature_dim": int(X.shape[1]),
            "classifier_parameters": clf.num_parameters(),
            "feature_module": info.get("module"),
            "feature_pooling": info.get("pooling"),
        }
        out = Path(ctx.output_dir)
        if _is_main():
            model.save_pretrained(out)
            task.save_processor(out)
            if not head_written:
                import joblib

                joblib.dump(clf, out / CLASSIFIER_FILE)
            (out / SPEC_FILE).write_text(json.dumps({
                "classifier": c.classifier,
                "head_written": head_written,
                "module": info.get("module"),
                "linear": spec.linear,
                "pooling": info.get("pooling"),
                "pooling_setting": spec.pooling,
                "text": spec.text,
                "feature_dim": int(X.shape[1]),
            }, indent=2))

        metrics.update({
            "train_runtime": round(runtime, 3),
            "train_samples_per_second": round(len(y) / runtime, 3) if runtime > 0 else 0.0,
            "feature_seconds": round(feature_seconds, 3),
            "classifier_seconds": round(classifier_seconds, 3),
            "feature_cache_hit": bool(hits) and all(hits),
            "_model": model if head_written else FeatureClassifierModel(model, clf, HeadInput(
                [info.get("module") or spec.candidates[0]], spec.linear, spec.pooling, spec.text)),
        })
        return metrics


def _is_main() -> bool:
    from accelerate.state import PartialState

    return PartialState().is_main_process
