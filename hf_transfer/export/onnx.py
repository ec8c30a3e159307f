"""ONNX export of a run: one graph from the processor's tensors to the logits, optional int8.

`hf-transfer export RUN OUT --format onnx [--quantize int8]` writes a folder that ONNX Runtime
serves without PyTorch:

    model.onnx              fp32 graph: model inputs (input_ids, attention_mask, ... / pixel_values /
                            input_values / input_features) -> logits
    model_int8.onnx         with --quantize int8: ONNX Runtime's dynamic quantization of model.onnx
                            (int8 weights of MatMul/Gemm/Conv, activations quantized per batch)
    onnx_export.json        what the folder holds: recipe, labels, input names, the file served by
                            default, the parity figures
    config.json, tokenizer / processor files, config.yaml (the run's settings, so `evaluate` finds
    the eval data), README.md (the card, with the parity and accuracy figures)

The graph is traced with `torch.onnx.export(dynamo=True)` (torch.export + onnxscript). Optimum's
ONNX exporter is not used: it moved to the `optimum-onnx` package, whose releases require
transformers < 4.58 (this toolkit runs on transformers 5), and its import fails on transformers 5.

Feature-classifier runs (`feature_extraction`, `contrastive`: a scikit-learn classifier on pooled
features) become one graph too: encoder, pooling as at training time (`models.features`), and the
classifier rewritten as torch operations (`classifier_module`: linear models, a standard scaler,
k-nearest neighbours), so one ONNX Runtime session answers end to end.

Parity is checked before anything is written: the fp32 graph's logits match PyTorch's on sample
inputs within `FP32_ATOL`; the int8 graph's predicted labels agree with PyTorch's on at least
`MIN_INT8_AGREEMENT` of the eval split, and the accuracy of each is written on the card.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hf_transfer.errors import ExportError, ModelError
from hf_transfer.run_folder import ONNX_FILE
from hf_transfer.run_folder import ONNX_SPEC_FILE as SPEC_FILE

logger = logging.getLogger(__name__)

__all__ = [
    "FP32_ATOL",
    "MIN_INT8_AGREEMENT",
    "check_out_dir",
    "OnnxClassifier",
    "OnnxExport",
    "classifier_module",
    "export_onnx",
    "is_onnx_export",
    "require_onnx",
]

INT8_FILE = "model_int8.onnx"
#: fp32 graph against PyTorch, largest absolute logit difference allowed.
FP32_ATOL = 1e-4
#: int8 graph against PyTorch: share of eval examples with the same predicted label.
MIN_INT8_AGREEMENT = 0.99
QUANTIZATIONS = ("int8",)
INSTALL_HINT = "pip install 'hf-transfer-toolkit[onnx]' (onnx, onnxruntime, onnxscript)"
_COPY = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
    "preprocessor_config.json",
    "processor_config.json",
    "feature_extractor_config.json",
    "image_processor_config.json",
    "config.yaml",
)


def require_onnx() -> None:
    """Raise `ExportError` with the install line when onnx, onnxruntime or onnxscript is missing."""
    missing = []
    for name in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ExportError(f"ONNX export and serving need {', '.join(missing)}, which is not installed: {INSTALL_HINT}.")


def is_onnx_export(folder: str | Path) -> bool:
    """Whether `folder` is an ONNX export written by `export_onnx`."""
    return (Path(folder) / SPEC_FILE).is_file() and (Path(folder) / ONNX_FILE).is_file()


# ---------------------------------------------------------------------------------------------
# Classifiers on features, as torch modules


class _Affine(nn.Module):
    def __init__(self, weight: np.ndarray, bias: np.ndarray):
        super().__init__()
        self.register_buffer("weight", torch.tensor(np.array(weight, dtype=np.float64)))
        self.register_buffer("bias", torch.tensor(np.array(bias, dtype=np.float64)))

    def forward(self, x):
        return x @ self.weight.T + self.bias


class _Scale(nn.Module):
    def __init__(self, mean, scale):
        super().__init__()
        self.register_buffer("mean", torch.tensor(np.array(mean, dtype=np.float64)))
        self.register_buffer("scale", torch.tensor(np.array(scale, dtype=np.float64)))

    def forward(self, x):
        return (x - self.mean) / self.scale


class _Expand(nn.Module):
    """Columns of the estimator's classes_ placed among all labels; absent labels get `fill`."""

    def __init__(self, classes: np.ndarray, num_labels: int, fill: float):
        super().__init__()
        place = torch.zeros(len(classes), num_labels, dtype=torch.float64)
        place[torch.arange(len(classes)), torch.as_tensor(np.asarray(classes, dtype=np.int64))] = 1.0
        absent = torch.full((num_labels,), float(fill), dtype=torch.float64)
        absent[torch.as_tensor(np.asarray(classes, dtype=np.int64))] = 0.0
        self.register_buffer("place", place)
        self.register_buffer("absent", absent)

    def forward(self, x):
        return x @ self.place + self.absent


class _LogProba(nn.Module):
    """log(clip(p)) as `models.probe.EstimatorClassifier.logits` computes it."""

    def __init__(self, proba: nn.Module, expand: _Expand, floor: float):
        super().__init__()
        self.proba, self.expand, self.floor = proba, expand, float(floor)

    def forward(self, x):
        return torch.log(self.expand(self.proba(x)).clamp(min=self.floor, max=1.0))


class _LogisticProba(nn.Module):
    def __init__(self, coef, intercept):
        super().__init__()
        self.linear = _Affine(coef, intercept)
        self.binary = np.asarray(coef).shape[0] == 1

    def forward(self, x):
        z = self.linear(x)
        if self.binary:
            p = torch.sigmoid(z)
            return torch.cat([1 - p, p], dim=-1)
        return torch.softmax(z, dim=-1)


class _KNNProba(nn.Module):
    """Uniform-weight votes of the k nearest training features (Euclidean), as scikit-learn's."""

    def __init__(self, fit_x, y_index, k: int, n_classes: int):
        super().__init__()
        self.register_buffer("fit_x", torch.tensor(np.array(fit_x, dtype=np.float64)))
        self.register_buffer(
            "votes", nn.functional.one_hot(torch.as_tensor(np.asarray(y_index, dtype=np.int64)), n_classes).double()
        )
        self.k = int(k)

    def forward(self, x):
        # Squared distances (monotone in the distance): |x|^2 - 2 x.f + |f|^2.
        d = (x * x).sum(-1, keepdim=True) - 2 * x @ self.fit_x.T + (self.fit_x * self.fit_x).sum(-1)
        idx = torch.topk(d, self.k, dim=-1, largest=False).indices
        return self.votes[idx].mean(1)


class _BinaryDecision(nn.Module):
    def forward(self, d):
        return torch.cat([-d / 2, d / 2], dim=-1)


def classifier_module(clf, num_labels: int) -> nn.Module:
    """A torch module computing `clf.logits(X)` for a fitted feature classifier.

    `clf` is what the run folder's loader gives back (`models.feature_run`): a linear probe
    (`weight`, `bias`), an estimator wrapper (`estimator`: a scikit-learn estimator or pipeline),
    or a bare scikit-learn estimator. Supported: linear models (logistic regression, linear SVM),
    a standard scaler in front, and k-nearest neighbours with uniform weights.

    Raises:
        ExportError: A classifier with no torch form here (an RBF SVM, a distance-weighted kNN).
    """
    from hf_transfer.models.probe import ABSENT_CLASS_LOGIT, PROBA_FLOOR, StoredClassifier

    if isinstance(clf, StoredClassifier):
        return _stored_classifier_module(clf, num_labels)
    if hasattr(clf, "weight") and hasattr(clf, "bias") and not hasattr(clf, "estimator"):
        return _Affine(clf.weight, clf.bias)
    est = getattr(clf, "estimator", clf)
    steps = [s for _, s in est.steps] if hasattr(est, "steps") else [est]
    layers: list[nn.Module] = []
    for step in steps[:-1]:
        name = type(step).__name__
        if name != "StandardScaler":
            raise ExportError(f"The feature classifier's pipeline has a {name} step, which has no ONNX form here.")
        mean = step.mean_ if getattr(step, "with_mean", True) and step.mean_ is not None else 0.0
        scale = step.scale_ if getattr(step, "with_std", True) and step.scale_ is not None else 1.0
        layers.append(
            _Scale(np.broadcast_to(mean, (step.n_features_in_,)), np.broadcast_to(scale, (step.n_features_in_,)))
        )
    final = steps[-1]
    name = type(final).__name__
    classes = np.asarray(final.classes_, dtype=np.int64)
    if name == "LogisticRegression":
        layers.append(
            _LogProba(_LogisticProba(final.coef_, final.intercept_), _Expand(classes, num_labels, 0.0), PROBA_FLOOR)
        )
    elif name == "KNeighborsClassifier" and final.weights == "uniform" and final.effective_metric_ == "euclidean":
        layers.append(
            _LogProba(
                _KNNProba(final._fit_X, final._y, final.n_neighbors, len(classes)),
                _Expand(classes, num_labels, 0.0),
                PROBA_FLOOR,
            )
        )
    elif name in ("LinearSVC", "RidgeClassifier") or (name == "SVC" and final.kernel == "linear"):
        coef = np.asarray(
            final.coef_ if name != "SVC" else final.coef_.toarray() if hasattr(final.coef_, "toarray") else final.coef_
        )
        if name == "SVC" and len(classes) > 2:
            raise ExportError(
                "A multi-class SVC (one-vs-one) has no ONNX form here; train with svm_kernel: linear (LinearSVC)."
            )
        layers.append(_Affine(coef, final.intercept_))
        if coef.shape[0] == 1:
            layers.append(_BinaryDecision())
        layers.append(_Expand(classes, num_labels, ABSENT_CLASS_LOGIT))
    else:
        detail = f" (kernel={final.kernel})" if hasattr(final, "kernel") else ""
        raise ExportError(
            f"The run's feature classifier is a {name}{detail}, which has no ONNX form here. ONNX export "
            "supports logistic regression, the linear classifier, a linear SVM and k-nearest neighbours "
            "(uniform weights); retrain with one of them (strategy.classifier)."
        )
    return nn.Sequential(*layers)


class _Softmax(nn.Module):
    def forward(self, z):
        return torch.softmax(z, dim=-1)


def _stored_classifier_module(clf, num_labels: int) -> nn.Module:
    """The torch form of a classifier read back from a run folder's tensors and JSON
    (`models.probe.StoredClassifier`), computing what its `logits` computes."""
    from hf_transfer.models.probe import ABSENT_CLASS_LOGIT, PROBA_FLOOR

    t = clf.t
    if clf.form == "linear":
        return _Affine(t["weight"], t["bias"])
    layers: list[nn.Module] = []
    if "scaler_mean" in t:
        layers.append(_Scale(t["scaler_mean"], t["scaler_scale"]))
    classes = np.asarray(t["classes"], dtype=np.int64)
    if clf.form == "knn":
        k = min(int(clf.settings["k"]), len(t["fit_X"]))
        layers.append(
            _LogProba(
                _KNNProba(t["fit_X"], t["fit_y"], k, len(classes)), _Expand(classes, num_labels, 0.0), PROBA_FLOOR
            )
        )
    elif clf.form == "linear_decision":
        decision: list[nn.Module] = [_Affine(t["coef"], t["intercept"])]
        if np.asarray(t["coef"]).shape[0] == 1:
            decision.append(_BinaryDecision())
        if clf.settings.get("has_proba"):
            layers.append(
                _LogProba(nn.Sequential(*decision, _Softmax()), _Expand(classes, num_labels, 0.0), PROBA_FLOOR)
            )
        else:
            layers.extend([*decision, _Expand(classes, num_labels, ABSENT_CLASS_LOGIT)])
    else:
        raise ExportError(
            f"The run's feature classifier is an SVM with an RBF kernel ({clf.kind}), which has no ONNX form here. "
            "ONNX export "
            "supports logistic regression, the linear classifier, a linear SVM and k-nearest neighbours "
            "(uniform weights); retrain with one of them (strategy.classifier)."
        )
    return nn.Sequential(*layers)


# ---------------------------------------------------------------------------------------------
# The graph


class _LogitsGraph(nn.Module):
    """`model(**inputs).logits` with positional inputs in `names` order (what the exporter traces)."""

    def __init__(self, model: nn.Module, names: list[str]):
        super().__init__()
        self.model, self.names = model, list(names)

    def forward(self, *tensors):
        return self.model(**dict(zip(self.names, tensors))).logits.float()


class _FeatureGraph(nn.Module):
    """Encoder + pooling (the run's `FeatureExtractor`) + the classifier as torch operations."""

    def __init__(self, extractor, head: nn.Module, names: list[str]):
        super().__init__()
        self.model = extractor.model  # registered, so its weights are the graph's initialisers
        self.extractor, self.head, self.names = extractor, head, list(names)

    def forward(self, *tensors):
        # The classifier in float64, as scikit-learn computes it: float32 would cost ~1e-4 on the
        # log-probabilities of a confident logistic regression.
        return self.head(self.extractor(dict(zip(self.names, tensors))).double()).float()


def graph_module(model: nn.Module, names: list[str]) -> nn.Module:
    """The module exported for a loaded run model: logits of a transformers model, or the whole
    feature pipeline for a model whose classifier lives beside it (`models.feature_run`)."""
    extractor, clf = getattr(model, "extractor", None), getattr(model, "classifier", None)
    if extractor is not None and clf is not None and hasattr(clf, "logits"):
        return _FeatureGraph(extractor, classifier_module(clf, int(model.config.num_labels)), names).eval()
    return _LogitsGraph(model, names).eval()


def _example(inputs: dict[str, torch.Tensor], rows: int = 7) -> dict[str, torch.Tensor]:
    """A slice of the sample batch whose batch size equals no other dimension (torch.export takes
    equal sizes for one symbol) and is not 0 or 1 (it specialises those)."""
    n = next(iter(inputs.values())).shape[0]
    if n < 2:
        inputs = {k: torch.cat([v, v]) for k, v in inputs.items()}
        n = 2
    others = {d for v in inputs.values() for d in v.shape[1:]}
    for b in (rows, 5, 3, 2, 6, 4):
        if b <= n and b not in others:
            return {k: v[:b] for k, v in inputs.items()}
    return {k: v[:2] for k, v in inputs.items()}


def _dynamic_shapes(inputs: dict[str, torch.Tensor]) -> tuple:
    """Batch dynamic everywhere; the second axis of 2-D inputs (tokens, audio samples) too."""
    from torch.export import Dim

    batch, seq = Dim("batch"), Dim("sequence")
    return tuple({0: batch, 1: seq} if v.ndim == 2 else {0: batch} for v in inputs.values())


def _trace(graph: nn.Module, inputs: dict[str, torch.Tensor], path: Path) -> None:
    example = _example(inputs)
    names = list(example)
    printed = io.StringIO()
    # "torchvision is not installed. Skipping torchvision::nms" and the like: not ours to fix.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    try:
        with torch.no_grad(), contextlib.redirect_stdout(printed), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notes on its own dynamic-shape internals
            torch.onnx.export(
                graph,
                tuple(example[n] for n in names),
                str(path),
                input_names=names,
                output_names=["logits"],
                dynamic_shapes=(_dynamic_shapes(example),),
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    except Exception as e:
        tail = printed.getvalue().strip().splitlines()[-5:]
        raise ExportError(
            f"torch.onnx could not export the model: {type(e).__name__}: {str(e)[:2000]}"
            + (f"\n{chr(10).join(tail)}" if tail else "")
        ) from None


def quantize_int8(src: Path, dest: Path) -> None:
    """ONNX Runtime dynamic quantization: int8 weights, activations quantized on the fly."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process is logged on the root logger at every call
    try:
        quantize_dynamic(str(src), str(dest), weight_type=QuantType.QInt8)
    except Exception as e:
        raise ExportError(f"ONNX Runtime could not quantize the graph: {type(e).__name__}: {e}") from None
    finally:
        root.setLevel(level)


# ---------------------------------------------------------------------------------------------
# Serving


class OnnxClassifier(nn.Module):
    """An ONNX export behind the interface evaluate and predict use: `model(**inputs).logits`,
    `model.config.id2label`.

    Args:
        folder: The export folder.
        file: The `.onnx` file to run (default: the one `onnx_export.json` names: int8 when quantized).
        threads: ONNX Runtime intra-op threads (default: its own choice).
        labels: Label names in id order (default: those in `onnx_export.json`).
    """

    def __init__(
        self, folder: str | Path, file: str | None = None, threads: int | None = None, labels: list[str] | None = None
    ):
        super().__init__()
        require_onnx()
        import onnxruntime as ort

        self.folder = Path(folder)
        spec_path = self.folder / SPEC_FILE
        self.spec = json.loads(spec_path.read_text()) if spec_path.is_file() else {}
        self.file = file or self.spec.get("model_file") or ONNX_FILE
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        path = self.folder / self.file
        if not path.is_file():
            raise ModelError(f"'{path}' is missing: the ONNX export is incomplete; export again.")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name: _NP_TYPES.get(i.type, np.float32) for i in self.session.get_inputs()}
        labels = (self.spec.get("labels") or []) if labels is None else labels
        self.config = _Config(dict(enumerate(labels)))
        self._device_anchor = nn.Parameter(torch.zeros(0), requires_grad=False)  # `next(model.parameters())`

    def run(self, inputs: dict[str, Any]) -> np.ndarray:
        """Logits (numpy) for a batch of model inputs (tensors or arrays)."""
        missing = [n for n in self.inputs if n not in inputs]
        if missing:
            raise ModelError(f"The ONNX model needs input(s) {missing}; got {sorted(inputs)}.")
        feed = {}
        for name, dtype in self.inputs.items():
            v = inputs[name]
            v = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
            feed[name] = v.astype(dtype, copy=False)
        return self.session.run(["logits"], feed)[0]

    def forward(self, **inputs):
        from transformers.modeling_outputs import SequenceClassifierOutput

        inputs.pop("labels", None)
        return SequenceClassifierOutput(logits=torch.from_numpy(np.ascontiguousarray(self.run(inputs))))


@dataclass
class _Config:
    id2label: dict

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    pad_token_id: int | None = None


_NP_TYPES = {
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(bool)": np.bool_,
}


# ---------------------------------------------------------------------------------------------
# Parity


@dataclass
class OnnxExport:
    """What `export_onnx` wrote and measured (also in `onnx_export.json`)."""

    folder: Path
    model_file: str
    fp32_max_abs_diff: float
    sample_rows: int
    eval_examples: int = 0
    accuracy: dict[str, float] = field(default_factory=dict)
    int8_agreement: float | None = None
    int8_max_abs_diff: float | None = None
    export_seconds: float = 0.0
    sizes: dict[str, int] = field(default_factory=dict)


def _torch_logits(model: nn.Module, inputs: dict) -> np.ndarray:
    with torch.no_grad():
        return model(**inputs).logits.float().cpu().numpy()


def _eval_pass(model, sessions: dict[str, OnnxClassifier], batches: Iterable[tuple[dict, torch.Tensor]]):
    """Predicted labels of PyTorch and each session over the batches, and the references."""
    preds: dict[str, list[np.ndarray]] = {"pytorch": [], **{k: [] for k in sessions}}
    refs = []
    for inputs, labels in batches:
        preds["pytorch"].append(_torch_logits(model, inputs).argmax(-1))
        for k, s in sessions.items():
            preds[k].append(s.run(inputs).argmax(-1))
        refs.append(np.asarray(labels))
    return {k: np.concatenate(v) if v else np.zeros(0, int) for k, v in preds.items()}, (
        np.concatenate(refs) if refs else np.zeros(0, int)
    )


# ---------------------------------------------------------------------------------------------
# Export


def _is_replaceable(out: Path) -> bool:
    return not out.exists() or (out.is_dir() and (not any(out.iterdir()) or (out / SPEC_FILE).is_file()))


def check_out_dir(run_dir: str | Path, out_dir: str | Path, quantize: str | None = None) -> None:
    """Refuse, before anything loads, an output folder that is the run or holds something else,
    and an unknown quantization."""
    if quantize not in (None, *QUANTIZATIONS):
        raise ExportError(f"--quantize {quantize!r} is not supported; use one of: {', '.join(QUANTIZATIONS)}.")
    out = Path(out_dir)
    if out.resolve() == Path(run_dir).resolve():
        raise ExportError("The export folder must not be the run folder itself; give another OUT_DIR.")
    if not _is_replaceable(out):
        raise ExportError(f"'{out}' exists and is not an earlier ONNX export; choose another folder or remove it.")


def export_onnx(
    model: nn.Module,
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    sample_inputs: dict[str, torch.Tensor],
    eval_batches: Callable[[], Iterable[tuple[dict, torch.Tensor]]] | None = None,
    recipe: str,
    labels: list[str],
    quantize: str | None = None,
    atol: float = FP32_ATOL,
    min_agreement: float = MIN_INT8_AGREEMENT,
) -> OnnxExport:
    """Export a run's loaded model to an ONNX folder (module docstring) and check it.

    Args:
        model: The run's model as evaluate loads it (`model(**inputs).logits`), in eval mode.
        run_dir: The run folder (its processor files, config.json and config.yaml are copied).
        out_dir: Folder to write; an earlier ONNX export there is replaced, any other non-empty
            folder refused.
        sample_inputs: A batch of model inputs (a few eval rows) for the trace and the fp32 check.
        eval_batches: Called once: (inputs, labels) batches of the eval split, for accuracy and
            the int8 agreement. None: the checks run on `sample_inputs` only.
        recipe: The run's recipe (text/image/audio classification).
        labels: Label names in id order.
        quantize: None or `int8`.
        atol: Largest fp32 logit difference allowed.
        min_agreement: Smallest int8 label agreement with PyTorch allowed.

    Raises:
        ExportError: The onnx packages are missing, the graph does not export, or a parity check fails.
    """
    require_onnx()
    run_dir, out = Path(run_dir), Path(out_dir)
    check_out_dir(run_dir, out, quantize)
    names = list(sample_inputs)
    graph = graph_module(model, names)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        t0 = time.time()
        _trace(graph, sample_inputs, tmp / ONNX_FILE)
        export_seconds = time.time() - t0
        fp32 = _session(tmp, ONNX_FILE)
        ref = _torch_logits(model, sample_inputs)
        got = fp32.run(sample_inputs)
        if got.shape != ref.shape:
            raise ExportError(f"The ONNX graph's logits have shape {got.shape}, PyTorch's {ref.shape}.")
        diff = float(np.abs(got - ref).max())
        if not diff <= atol:
            raise ExportError(
                f"The ONNX graph does not reproduce PyTorch's logits on the sample inputs: largest "
                f"difference {diff:.3g}, tolerance {atol:g}. Nothing was written."
            )
        logger.info("fp32 parity: largest logit difference %.2g on %d sample rows.", diff, len(ref))
        sessions = {"onnx_fp32": fp32}
        result = OnnxExport(
            folder=out,
            model_file=ONNX_FILE,
            fp32_max_abs_diff=diff,
            sample_rows=len(ref),
            export_seconds=round(export_seconds, 2),
        )
        if quantize == "int8":
            quantize_int8(tmp / ONNX_FILE, tmp / INT8_FILE)
            sessions["onnx_int8"] = _session(tmp, INT8_FILE)
            result.model_file = INT8_FILE
            result.int8_max_abs_diff = float(np.abs(sessions["onnx_int8"].run(sample_inputs) - ref).max())
        batches = eval_batches() if eval_batches is not None else [(sample_inputs, torch.as_tensor(ref.argmax(-1)))]
        preds, refs = _eval_pass(model, sessions, batches)
        if eval_batches is not None and len(refs):
            result.eval_examples = int(len(refs))
            result.accuracy = {k: float((v == refs).mean()) for k, v in preds.items()}
        fp32_agree = float((preds["onnx_fp32"] == preds["pytorch"]).mean()) if len(refs) else 1.0
        if fp32_agree < 1.0:
            logger.warning(
                "fp32 ONNX and PyTorch differ on %.2f%% of the eval labels (near-ties).", 100 * (1 - fp32_agree)
            )
        if quantize == "int8":
            agree = float((preds["onnx_int8"] == preds["pytorch"]).mean()) if len(refs) else 1.0
            result.int8_agreement = agree
            if agree < min_agreement:
                lost = ""
                if result.accuracy:
                    lost = (
                        f"; accuracy {result.accuracy['pytorch']:.4f} (PyTorch) vs "
                        f"{result.accuracy['onnx_int8']:.4f} (int8)"
                    )
                raise ExportError(
                    f"The int8 model agrees with PyTorch on {100 * agree:.2f}% of the "
                    f"{'eval' if eval_batches else 'sample'} labels, below the {100 * min_agreement:g}% required"
                    f"{lost}. Serve the fp32 export (drop --quantize) instead. Nothing was written."
                )
            logger.info("int8 agreement with PyTorch: %.2f%% of %d labels.", 100 * agree, len(refs))
        for name in _COPY:
            if (run_dir / name).is_file():
                shutil.copyfile(run_dir / name, tmp / name)
        result.sizes = {p.name: p.stat().st_size for p in tmp.glob("*.onnx")}
        spec = {
            "format": "onnx",
            "recipe": recipe,
            "labels": list(labels),
            "inputs": names,
            "model_file": result.model_file,
            "files": {"fp32": ONNX_FILE, **({"int8": INT8_FILE} if quantize else {})},
            "quantization": "dynamic int8 (ONNX Runtime quantize_dynamic, QInt8 weights)" if quantize else None,
            "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
            "parity": {k: v for k, v in asdict(result).items() if k != "folder"},
        }
        (tmp / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n")
        (tmp / "README.md").write_text(_card(spec, result))
        from hf_transfer.files import respect_umask

        respect_umask(tmp)
        del sessions, fp32
        from hf_transfer.export.export import _replace_folder  # the Hub export's folder swap

        _replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def _session(folder: Path, file: str) -> OnnxClassifier:
    try:
        return OnnxClassifier(folder, file=file, labels=[])
    except Exception as e:  # a graph ONNX Runtime rejects
        raise ExportError(f"ONNX Runtime cannot load the exported graph: {type(e).__name__}: {e}") from None


#: The card's usage snippet per modality: (loading the processor, building the feed), run in the folder.
_USAGE = {
    "text": (
        'from transformers import AutoTokenizer\ntok = AutoTokenizer.from_pretrained(".")',
        'feed = dict(tok(["a sentence"], return_tensors="np"))',
    ),
    "image": (
        "from PIL import Image\nfrom transformers import AutoImageProcessor\n"
        'proc = AutoImageProcessor.from_pretrained(".")',
        'feed = dict(proc(images=[Image.open("image.jpg").convert("RGB")], return_tensors="np"))',
    ),
    "audio": (
        'from transformers import AutoFeatureExtractor\nproc = AutoFeatureExtractor.from_pretrained(".")',
        "# waveform: a 1-D float32 array at proc.sampling_rate\n"
        'feed = dict(proc([waveform], sampling_rate=proc.sampling_rate, return_tensors="np"))',
    ),
}


def _card(spec: dict, r: OnnxExport) -> str:
    from hf_transfer.registry import ConfigError, recipe_info, recipe_modality

    try:
        tag = recipe_info(spec["recipe"]).pipeline_tag or spec["recipe"]
    except ConfigError:  # a plugin's recipe not installed here
        tag = spec["recipe"]
    tags = ["hf-transfer", "onnx", tag] + (["int8"] if r.int8_agreement is not None else [])
    lines = ["---", "library_name: onnx", f"pipeline_tag: {tag}", "tags:"] + [f"- {t}" for t in tags] + ["---", ""]
    lines += [
        f"# ONNX export ({tag})",
        "",
        f"`{ONNX_FILE}` is the fp32 graph (inputs: {', '.join(f'`{n}`' for n in spec['inputs'])}; output: "
        "`logits`)"
        + (
            f"; `{INT8_FILE}` its dynamic int8 quantization (ONNX Runtime), served by default."
            if r.int8_agreement is not None
            else "."
        ),
        f"Labels: {', '.join(spec['labels'])}.",
        "",
        "## Parity with the PyTorch model",
        "",
        "| check | result |",
        "| --- | --- |",
        f"| fp32 logits, largest absolute difference on {r.sample_rows} sample rows | {r.fp32_max_abs_diff:.2g} "
        f"(tolerance {FP32_ATOL:g}) |",
    ]
    if r.int8_agreement is not None:
        where = f"{r.eval_examples} eval examples" if r.eval_examples else f"{r.sample_rows} sample rows"
        lines.append(f"| int8 predicted labels equal to PyTorch's, {where} | {100 * r.int8_agreement:.2f}% |")
    if r.accuracy:
        lines += [
            "",
            f"## Accuracy on the run's eval split ({r.eval_examples} examples)",
            "",
            "| model | accuracy | difference to PyTorch |",
            "| --- | --- | --- |",
        ]
        base = r.accuracy["pytorch"]
        for k, label in (("pytorch", "PyTorch fp32"), ("onnx_fp32", "ONNX fp32"), ("onnx_int8", "ONNX int8")):
            if k in r.accuracy:
                lines.append(f"| {label} | {r.accuracy[k]:.4f} | {100 * (r.accuracy[k] - base):+.2f} points |")
    load, feed = _USAGE.get(recipe_modality(spec["recipe"]), ("", "feed = {...}  # the processor's tensors"))
    lines += [
        "",
        "## How to use",
        "",
        "```python",
        "import onnxruntime as ort",
        load,
        f'session = ort.InferenceSession("{r.model_file}")',
        feed,
        "names = {i.name for i in session.get_inputs()}",
        'logits = session.run(["logits"], {k: v for k, v in feed.items() if k in names})[0]',
        "```",
        "",
        "Or with hf-transfer: `hf-transfer predict THIS_FOLDER INPUT...`, `hf-transfer evaluate THIS_FOLDER`.",
        "",
    ]
    return "\n".join(lines)
