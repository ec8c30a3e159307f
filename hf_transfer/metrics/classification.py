"""Offline classification metrics under `evaluate`'s names.

`evaluate.load("accuracy")` and friends download their metric scripts from the Hub, so a run
without network access (or behind a proxy) could train for hours and then fail at the first
evaluation. These functions compute the same numbers with scikit-learn instead, and keep the key
names a user of `evaluate` / `transformers.Trainer` expects (`accuracy`, `f1`, `eval_accuracy`).
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

__all__ = [
    "compute_classification_metrics",
    "label_keys",
    "prefix_metrics",
    "save_confusion_matrix",
    "scalar_metrics",
]


def label_keys(label_names: Sequence[str]) -> list[str]:
    """Turn label names into strings that are safe inside metric keys.

    Trackers (TensorBoard, W&B, MLflow) and `metrics.json` consumers treat keys as identifiers, so
    "Sci/Tech" becomes "sci_tech": lowercase, every run of characters other than ASCII letters and
    digits becomes one "_", and leading/trailing "_" are dropped. A name that leaves nothing (for
    instance a label written only in non-Latin script) uses its label id instead. When two names
    collapse to the same key ("A-B" and "a b"), the later ones get "_<id>" appended so that no
    per-class metric silently overwrites another.

    Args:
        label_names: Label names, indexed by label id.

    Returns:
        One key fragment per label, in the same order, all distinct.
    """
    keys: list[str] = []
    seen: set[str] = set()
    for index, name in enumerate(label_names):
        key = re.sub(r"[^0-9a-z]+", "_", str(name).lower()).strip("_") or str(index)
        if key in seen:
            key = f"{key}_{index}"
        seen.add(key)
        keys.append(key)
    return keys


def _as_label_ids(values: Any, name: str) -> np.ndarray:
    """Convert predictions or references to a 1-D integer array.

    A 2-D input is taken as per-class scores (logits or probabilities) and reduced with argmax,
    because that is what a model's eval loop naturally produces.
    """
    array = np.asarray(values)
    if array.ndim == 2:
        array = array.argmax(axis=-1)
    if array.ndim != 1:
        raise ValueError(f"{name} must be label ids of shape (n,) or scores of shape (n, K); got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        # Float ids such as 1.0 are fine; 1.5 is a bug upstream that must not be truncated silently.
        fractional = array[np.mod(array, 1) != 0]
        if fractional.size:
            raise ValueError(f"{name} must hold integer label ids; got {fractional[0]!r}")
    return array.astype(np.int64)


def compute_classification_metrics(
    predictions: Any,
    references: Any,
    label_names: Sequence[str],
) -> dict[str, Any]:
    """Accuracy, macro precision/recall/F1, per-class scores and the confusion matrix.

    Aggregates match `evaluate`'s `accuracy`, `precision`, `recall` and `f1` with
    `average="macro"`: the macro mean runs over the labels that occur in `references` or
    `predictions` (scikit-learn's default), so a class absent from a small eval split does not drag
    macro-F1 down. Per-class keys and the confusion matrix cover every label id `0..K-1`, so that
    the key set is the same at every evaluation whichever classes happen to appear. Precision of a
    class that is never predicted, and recall of a class that never occurs, are 0 (scikit-learn's
    `zero_division=0`), as `evaluate` reports them.

    Args:
        predictions: Predicted label ids, shape `(n,)`, or per-class scores, shape `(n, K)`, which
            are reduced with argmax. Lists, NumPy arrays and CPU tensors are accepted.
        references: True label ids, shape `(n,)`.
        label_names: Label names indexed by id; `K = len(label_names)`.

    Returns:
        A flat dict: `accuracy`, `f1`, `precision`, `recall` (floats); `precision_<label>`,
        `recall_<label>`, `f1_<label>` for every label (keys from `label_keys`); and
        `confusion_matrix`, a `K x K` nested list of ints with rows = true label and columns =
        predicted label. All values are plain Python types, ready for `json.dump`.

    Raises:
        ValueError: If the inputs are empty, differ in length, or hold ids outside `0..K-1`.
    """
    preds = _as_label_ids(predictions, "predictions")
    refs = _as_label_ids(references, "references")
    num_labels = len(label_names)
    if num_labels == 0:
        raise ValueError("label_names is empty; classification metrics need at least one label")
    if preds.shape != refs.shape:
        raise ValueError(f"predictions and references differ in length: {preds.shape[0]} vs {refs.shape[0]}")
    if refs.size == 0:
        raise ValueError("cannot compute classification metrics on an empty evaluation set")
    for name, array in (("predictions", preds), ("references", refs)):
        # scikit-learn's confusion_matrix silently drops samples whose label is not in `labels`,
        # which would hide a label-map mismatch between the model head and the dataset.
        bad = array[(array < 0) | (array >= num_labels)]
        if bad.size:
            raise ValueError(
                f"{name} hold label id {int(bad[0])}, outside 0..{num_labels - 1} for the {num_labels} labels given"
            )

    all_labels = list(range(num_labels))
    precision, recall, f1, _ = precision_recall_fscore_support(refs, preds, average="macro", zero_division=0)
    per_precision, per_recall, per_f1, _ = precision_recall_fscore_support(
        refs, preds, labels=all_labels, average=None, zero_division=0
    )
    matrix = confusion_matrix(refs, preds, labels=all_labels)

    metrics: dict[str, Any] = {
        "accuracy": float(accuracy_score(refs, preds)),
        "f1": float(f1),
        "precision": float(precision),
        "recall": float(recall),
    }
    for index, key in enumerate(label_keys(label_names)):
        metrics[f"precision_{key}"] = float(per_precision[index])
        metrics[f"recall_{key}"] = float(per_recall[index])
        metrics[f"f1_{key}"] = float(per_f1[index])
    metrics["confusion_matrix"] = matrix.astype(int).tolist()
    return metrics


def prefix_metrics(metrics: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Prefix metric keys the way `transformers.Trainer` does (`accuracy` -> `eval_accuracy`).

    Args:
        metrics: Metric dict, for example from `compute_classification_metrics`.
        prefix: Split name such as "eval" or "test"; a trailing "_" is optional. An empty prefix
            returns an unchanged copy.

    Returns:
        A new dict. Keys that already carry the prefix are kept as they are, so prefixing twice
        is harmless.
    """
    prefix = prefix.rstrip("_")
    if not prefix:
        return dict(metrics)
    head = f"{prefix}_"
    return {key if key.startswith(head) else f"{head}{key}": value for key, value in metrics.items()}


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, int | float]:
    """Keep only the numeric scalars, for trackers that log one number per key.

    The confusion matrix (a nested list) and any strings or None are dropped. NumPy scalars and
    0-d arrays are turned into Python numbers, bools into ints.

    Args:
        metrics: Metric dict.

    Returns:
        A new dict holding the scalar entries in their original order.
    """
    scalars: dict[str, int | float] = {}
    for key, value in metrics.items():
        if isinstance(value, np.ndarray):
            if value.ndim != 0:
                continue
            value = value.item()
        elif isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, bool):
            scalars[key] = int(value)
        elif isinstance(value, numbers.Real):
            scalars[key] = value
    return scalars


def save_confusion_matrix(
    cm: Any,
    label_names: Sequence[str],
    out_dir: str | Path,
    stem: str = "confusion_matrix",
) -> tuple[Path, Path]:
    """Write a confusion matrix as `<stem>.json` and `<stem>.png` into `out_dir`.

    The JSON is `{"labels": [...], "matrix": [[...]]}` with rows = true label and columns =
    predicted label, one matrix row per line so that it stays readable in a diff. The PNG is drawn
    by `hf_transfer.metrics.plots.plot_confusion_matrix`.

    Args:
        cm: `K x K` counts, a nested list or array (for example `metrics["confusion_matrix"]`).
        label_names: The K label names, indexed by id.
        out_dir: Folder to write into; created if missing.
        stem: File name without extension, e.g. "test_confusion_matrix" for a test split.

    Returns:
        The paths of the JSON and the PNG file.

    Raises:
        ValueError: If `cm` is not square or does not match `label_names`.
    """
    import json

    # Imported here so that computing metrics in the eval loop does not pay matplotlib's import.
    from hf_transfer.metrics.plots import plot_confusion_matrix

    matrix = np.asarray(cm)
    labels = [str(name) for name in label_names]
    if matrix.ndim != 2 or matrix.shape != (len(labels), len(labels)):
        raise ValueError(f"confusion matrix of shape {matrix.shape} does not match {len(labels)} label names")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    rows = matrix.astype(int).tolist()
    body = ",\n".join(f"    {json.dumps(row)}" for row in rows)
    text = f'{{\n  "labels": {json.dumps(labels, ensure_ascii=False)},\n  "matrix": [\n{body}\n  ]\n}}\n'
    json_path = out / f"{stem}.json"
    json_path.write_text(text, encoding="utf-8")

    png_path = plot_confusion_matrix(matrix, labels, out / f"{stem}.png")
    return json_path, png_path
