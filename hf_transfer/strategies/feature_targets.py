"""`feature_extraction` for multi-label and regression recipes.

The features are `feature_extraction`'s (same extractor, same cache); the classifier is
`models.target_probe`'s: one-vs-rest logistic regression with per-label thresholds tuned by
cross-validation on the training features (multi-label), or ridge regression with its strength
chosen by leave-one-out cross-validation (regression). `strategy.classifier` must be
`logistic_regression` (the default; ridge for regression) or `linear` (the same models).

The run folder: when the features are exactly the model head's input, the linear model is written
into the head (a plain transformers model, `thresholds` / target units in config.json); otherwise
the model with its linear model beside it as tensors and JSON (`classifier.safetensors` +
`classifier.json`, `layout: beside`; nothing pickled), which evaluate and predict load.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from hf_transfer.errors import ConfigError, ModelError
from hf_transfer.models.feature_run import CLASSIFIER_TENSORS_FILE, SPEC_FILE, fit_record, save_classifier
from hf_transfer.models.features import locate_head_input
from hf_transfer.models.probe import write_into_head
from hf_transfer.models.target_probe import fit_multilabel, fit_ridge

logger = logging.getLogger(__name__)

SUPPORTED = ("logistic_regression", "linear")


def fit_targets(strategy, ctx, model, extractor, feats: dict, hits: list, start: float, device) -> dict[str, Any]:
    """Fit, score and save (module docstring). `feats`: role -> (X, y)."""
    from hf_transfer.strategies.feature_extraction import _is_main, features_are_head_input

    c, cfg, task, splits = strategy.config, ctx.cfg, ctx.task, ctx.splits
    if c.classifier not in SUPPORTED:
        raise ConfigError(f"strategy.classifier={c.classifier} is not available for recipe {cfg.recipe}: use "
                          "logistic_regression (one-vs-rest for label sets, ridge for numbers).")
    feature_seconds = time.time() - start
    X, y = feats["train"]
    t0 = time.time()
    multilabel = task.target_kind == "multilabel"
    if multilabel:
        fixed = task._fixed()
        probe, thresholds, record = fit_multilabel(
            X, y, C=c.C, balanced=True, max_iter=c.max_iter,
            seed=cfg.training.seed, tune=fixed is None)
        if fixed is not None:
            thresholds = np.full(len(task.labels), fixed)
        task.thresholds = thresholds
        task.threshold_selection = record.get("threshold_selection", "")
        task.fixed_thresholds = thresholds  # evaluation applies them; it never re-tunes
    else:
        probe = fit_ridge(X, y)
        task.mean, task.std, task.folded = 0.0, 1.0, True  # ridge fits the target in its own units
    classifier_seconds = time.time() - t0
    runtime = time.time() - start

    metrics: dict[str, Any] = {}
    for role in ("eval", "test"):
        if role not in feats:
            continue
        Xr, yr = feats[role]
        z = probe.logits(Xr)
        if multilabel:
            p = 1.0 / (1.0 + np.exp(-z))
            eps = 1e-7
            loss = -(yr * np.log(np.clip(p, eps, 1)) + (1 - yr) * np.log(np.clip(1 - p, eps, 1))).mean(1)
            arrays = {"probabilities": p, "references": yr, "loss": loss}
        else:
            arrays = {"predictions": z.reshape(-1), "references": yr, "loss": (z.reshape(-1) - yr) ** 2}
        m = task.compute_metrics_for(arrays, role)
        metrics.update({f"{role}_{k}": v for k, v in m.items()})

    head_written = False
    try:
        head = locate_head_input(model, "auto", extractor.modality == "text")
    except ModelError:
        head = None
    candidate = (extractor.pooling in (("pooler",), ("head_input",), ("auto",)) and not extractor.normalize
                 and extractor.spec.layers == "last")
    if (head is not None and head.linear is not None and candidate
            and features_are_head_input(extractor, model, head, task, splits.train, device)):
        head_written = write_into_head(model.get_submodule(head.linear), probe)
    fitted = {"head_written": head_written, **fit_record(extractor, probe, X.shape[1]),
              "run_layout": "head" if head_written else "beside", "classifier": probe.kind}
    strategy._fitted = fitted
    if not head_written:
        logger.info("The %s is saved beside the model (%s): hf-transfer evaluate/predict use it; "
                    "plain transformers would not.", probe.kind, CLASSIFIER_TENSORS_FILE)
    if _is_main():
        out = Path(ctx.output_dir)
        model.save_pretrained(out)
        task.save_processor(out)
        if not head_written:
            save_classifier(out, probe, list(task.labels.names) if multilabel else ["score"])
        (out / SPEC_FILE).write_text(json.dumps({
            "layout": fitted["run_layout"], "classifier": probe.kind, "head_written": head_written,
            "features": extractor.describe(), **{k: v for k, v in fitted.items() if k != "head_written"}},
            indent=2, default=str))
    metrics.update({
        "train_runtime": round(runtime, 3),
        "train_samples_per_second": round(len(y) / runtime, 3) if runtime > 0 else 0.0,
        "feature_seconds": round(feature_seconds, 3),
        "classifier_seconds": round(classifier_seconds, 3),
        "feature_cache_hit": bool(hits) and all(hits),
    })
    return metrics
