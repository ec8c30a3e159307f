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

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from hf_transfer.errors import ConfigError, ModelError
from hf_transfer.models.feature_run import CLASSIFIER_TENSORS_FILE, fit_record, save_feature_run
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
        raise ConfigError(
            f"strategy.classifier={c.classifier} is not available for recipe {cfg.recipe}: use "
            "logistic_regression (one-vs-rest for label sets, ridge for numbers)."
        )
    feature_seconds = time.time() - start
    X, y = feats["train"]
    t0 = time.time()
    multilabel = task.target_kind == "multilabel"
    probe = _fit(task, c, cfg.training.seed, X, y)
    classifier_seconds = time.time() - t0
    runtime = time.time() - start
    metrics: dict[str, Any] = {}
    if "eval" in feats:
        metrics.update(_score(task, probe, *feats["eval"], "eval", multilabel))
    refit = "eval" in feats and _eval_carved(cfg.data)
    if refit:
        # The eval rows came out of the training data and were scored just above by the model that
        # never saw them; the model kept (and tested) is fitted again on all the rows.
        Xe, ye = feats["eval"]
        X, y = np.concatenate([X, Xe]), np.concatenate([y, ye])
        t0 = time.time()
        probe = _fit(task, c, cfg.training.seed, X, y)
        classifier_seconds += time.time() - t0
        runtime = time.time() - start
        metrics["refit_rows"] = int(len(y))
    if "test" in feats:
        metrics.update(_score(task, probe, *feats["test"], "test", multilabel))

    head_written = False
    try:
        head = locate_head_input(model, "auto", extractor.modality == "text")
    except ModelError:
        head = None
    candidate = (
        extractor.pooling in (("pooler",), ("head_input",), ("auto",))
        and not extractor.normalize
        and extractor.spec.layers == "last"
    )
    if (
        head is not None
        and head.linear is not None
        and candidate
        and features_are_head_input(extractor, model, head, task, splits.train, device)
    ):
        head_written = write_into_head(model.get_submodule(head.linear), probe)
    fitted = {
        "head_written": head_written,
        **fit_record(extractor, probe, X.shape[1]),
        "run_layout": "head" if head_written else "beside",
        "classifier": probe.kind,
    }
    if refit:
        fitted["refit"] = (
            f"fitted again on the {len(y)} training + carved eval rows after the eval split "
            "was scored (eval metrics: the fit on the training rows alone)"
        )
    strategy._fitted = fitted
    if not head_written:
        logger.info(
            "The %s is saved beside the model (%s): hf-transfer evaluate/predict use it; plain transformers would not.",
            probe.kind,
            CLASSIFIER_TENSORS_FILE,
        )
    if _is_main():
        fitted["run_layout"] = save_feature_run(
            Path(ctx.output_dir),
            model,
            task,
            probe,
            extractor,
            head_written=head_written,
            labels=list(task.labels.names) if multilabel else ["score"],
            max_length=getattr(cfg.data, "max_length", None),
            record={k: v for k, v in fitted.items() if k not in ("head_written", "run_layout", "classifier")},
        )
    metrics.update(
        {
            "train_runtime": round(runtime, 3),
            "train_samples_per_second": round(len(y) / runtime, 3) if runtime > 0 else 0.0,
            "feature_seconds": round(feature_seconds, 3),
            "classifier_seconds": round(classifier_seconds, 3),
            "feature_cache_hit": bool(hits) and all(hits),
        }
    )
    return metrics


def _eval_carved(d) -> bool:
    """Whether, by the data settings `d`, the eval split was carved from the training data (no
    `data.eval` given) and the training rows are the whole of what is left (no
    `data.train_indices` / `max_train_samples` subsample, which fixes the training rows on
    purpose)."""
    return (
        not (d.eval is not None and d.eval.name)
        and not getattr(d, "train_indices", None)
        and getattr(d, "max_train_samples", None) is None
    )


def _fit(task, c, seed: int, X: np.ndarray, y: np.ndarray):
    """The linear model on `(X, y)`; for label sets also the thresholds, set on the task."""
    if task.target_kind == "multilabel":
        fixed = task._fixed()
        probe, thresholds, record = fit_multilabel(
            X, y, C=c.C, balanced=True, max_iter=c.max_iter, seed=seed, tune=fixed is None
        )
        if fixed is not None:
            thresholds = np.full(len(task.labels), fixed)
        task.thresholds = thresholds
        task.threshold_selection = record.get("threshold_selection", "")
        task.fixed_thresholds = thresholds  # evaluation applies them; it never re-tunes
        return probe
    task.mean, task.std, task.folded = 0.0, 1.0, True  # ridge fits the target in its own units
    return fit_ridge(X, y)


def _score(task, probe, X: np.ndarray, y: np.ndarray, role: str, multilabel: bool) -> dict[str, Any]:
    z = probe.logits(X)
    if multilabel:
        p = 1.0 / (1.0 + np.exp(-z))
        eps = 1e-7
        loss = -(y * np.log(np.clip(p, eps, 1)) + (1 - y) * np.log(np.clip(1 - p, eps, 1))).mean(1)
        arrays = {"probabilities": p, "references": y, "loss": loss}
    else:
        arrays = {"predictions": z.reshape(-1), "references": y, "loss": (z.reshape(-1) - y) ** 2}
    return {f"{role}_{k}": v for k, v in task.compute_metrics_for(arrays, role).items()}
