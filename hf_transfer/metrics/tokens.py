"""Token classification metrics: entity-level precision / recall / F1 under seqeval's conventions,
and token accuracy.

Entities are scored by seqeval (the library transformers' examples and `evaluate`'s `seqeval`
metric use): micro-averaged over entities, an entity counting only when its type and both
boundaries match. The default mode is seqeval's (conlleval's) lenient chunking, where for
example an `I-X` that follows `O` still starts an entity; `strict=True` is seqeval's strict mode
with the BIO (IOB2) or BIOES scheme, where such tags start nothing. Token accuracy is the share of
words (first subwords) whose tag is right, `O` included, as `evaluate`'s `overall_accuracy`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

IGNORE = -100


def sequences_from_ids(
    predictions: np.ndarray, references: np.ndarray, names: Sequence[str]
) -> tuple[list[list[str]], list[list[str]]]:
    """Tag-name sequences per sentence, reading only the positions whose reference is not -100."""
    y_true, y_pred = [], []
    for p, r in zip(np.asarray(predictions), np.asarray(references)):
        keep = r != IGNORE
        y_true.append([names[int(i)] for i in r[keep]])
        y_pred.append([names[int(i)] if 0 <= int(i) < len(names) else "O" for i in p[keep]])
    return y_true, y_pred


def entity_metrics(
    y_true: list[list[str]], y_pred: list[list[str]], scheme: str = "BIO", strict: bool = False
) -> dict[str, Any]:
    """`precision`, `recall`, `f1` (micro over entities), `accuracy` (per token), `macro_f1` over
    entity types, and `per_type` {type: {precision, recall, f1, support}}."""
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2, IOBES

    if len(y_true) != len(y_pred) or any(len(a) != len(b) for a, b in zip(y_true, y_pred)):
        raise ValueError("entity_metrics: predictions and references differ in length.")
    kwargs: dict[str, Any] = {"mode": "strict", "scheme": IOBES if scheme == "BIOES" else IOB2} if strict else {}
    tokens = sum(len(t) for t in y_true)
    correct = sum(a == b for ts, ps in zip(y_true, y_pred) for a, b in zip(ts, ps))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seqeval warns on sentences without entities
        report = classification_report(y_true, y_pred, output_dict=True, zero_division=0, **kwargs)
    per_type = {
        k: {
            "precision": float(v["precision"]),
            "recall": float(v["recall"]),
            "f1": float(v["f1-score"]),
            "support": int(v["support"]),
        }
        for k, v in report.items()
        if not k.endswith(" avg")
    }
    micro = report.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 0})
    return {
        "precision": float(micro["precision"]),
        "recall": float(micro["recall"]),
        "f1": float(micro["f1-score"]),
        "accuracy": correct / tokens if tokens else float("nan"),
        "macro_f1": float(np.mean([v["f1"] for v in per_type.values()])) if per_type else 0.0,
        "entities": int(micro["support"]),
        "per_type": per_type,
    }


def compute_token_metrics(
    predictions: np.ndarray, references: np.ndarray, names: Sequence[str], scheme: str = "BIO", strict: bool = False
) -> dict[str, Any]:
    """`entity_metrics` from id arrays (sentences x positions; -100 where nothing is scored)."""
    from hf_transfer.metrics.classification import label_keys

    y_true, y_pred = sequences_from_ids(predictions, references, names)
    metrics = entity_metrics(y_true, y_pred, scheme, strict)
    per_type = metrics.pop("per_type")
    # Flat keys per entity type, as the classification metrics have per label (`f1_<type>`).
    for key, values in zip(label_keys(list(per_type)), per_type.values()):
        for name in ("precision", "recall", "f1", "support"):
            metrics[f"{name}_{key}"] = values[name]
    return metrics
