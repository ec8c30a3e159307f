"""`feature_extraction` for token classification: a per-token linear classifier on frozen features,
written into the model's own head.

Every word's first subword (all subwords with `data.tagging.subword_labels: all`) gives one
training example: the final hidden state the `*ForTokenClassification` head reads
(`models.token_features`) and the word's tag. A multinomial logistic regression
(`strategy.classifier: logistic_regression`, C = `strategy.C`, 1.0 when unset: cross-validating C
over tens of thousands of tokens that share sentences is neither cheap nor sound) or a torch
linear layer (`linear`) is fitted and its weights copied into the head's linear layer, so the run
folder is a plain transformers model: `evaluate`, `predict`, export and transformers' pipeline
read it as they read a fine-tuned one. Evaluation goes through the task's own `eval_outputs`, the
same path `hf-transfer evaluate` takes.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hf_transfer.errors import ConfigError
from hf_transfer.models.probe import DEFAULT_C, LinearProbe, fit_classifier, write_into_head
from hf_transfer.models.token_features import token_head_linear

logger = logging.getLogger(__name__)


def check_token_settings(c) -> None:
    """The settings a head-written per-token classifier supports."""
    if c.classifier not in ("logistic_regression", "linear"):
        raise ConfigError(
            f"strategy.classifier={c.classifier} is not available for token_classification: the "
            "classifier is written into the model's linear head, so it must be logistic_regression "
            "or linear."
        )
    if c.layers != "last" or c.pooling not in ("auto", "head_input") or c.normalize:
        raise ConfigError(
            "token_classification's feature_extraction reads what the head reads (the last layer, per "
            "token, not normalised), so that the classifier can be written into the model: leave "
            "strategy.layers, pooling and normalize at their defaults."
        )


@torch.no_grad()
def _evaluate(model, task, ds, batch_size: int, device, prefix: str) -> dict[str, Any]:
    from torch.utils.data import DataLoader

    loader = DataLoader(task.preprocess(ds, train=False), batch_size=batch_size, collate_fn=task.collate)
    gathered: dict[str, list[np.ndarray]] = {}
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        for k, v in task.eval_outputs(model, batch).items():
            gathered.setdefault(k, []).append(v.float().cpu().numpy() if v.is_floating_point() else v.cpu().numpy())
    arrays = {}
    for k, parts in gathered.items():
        if parts[0].ndim == 1:
            arrays[k] = np.concatenate(parts)
        else:
            width = max(p.shape[1] for p in parts)
            arrays[k] = np.concatenate(
                [np.pad(p, ((0, 0), (0, width - p.shape[1])), constant_values=-100) for p in parts]
            )
    return {f"{prefix}_{k}": v for k, v in task.compute_metrics(arrays).items()}


def fit_token_probe(strategy, ctx, model: nn.Module) -> tuple[dict[str, Any], dict[str, Any]]:
    """Features, classifier written into the head, metrics, run folder. Returns `(metrics, record)`."""
    from hf_transfer.models.features import default_device

    c, cfg, task, splits = strategy.config, ctx.cfg, ctx.task, ctx.splits
    check_token_settings(c)
    start = time.time()
    device = default_device()
    bs = cfg.training.eval_batch_size or cfg.training.batch_size
    X, y = task.token_features(model, splits.train, batch_size=bs, label_key="labels", device=device)
    feature_seconds = time.time() - start
    settings = c if c.C is not None or c.classifier != "logistic_regression" else dataclasses.replace(c, C=DEFAULT_C)
    t0 = time.time()
    probe = fit_classifier(
        settings,
        X.astype(np.float64),
        y,
        len(task.labels),
        None,
        seed=cfg.training.seed,
        weight_decay=cfg.training.weight_decay,
        label_smoothing=cfg.training.label_smoothing,
    )
    classifier_seconds = time.time() - t0
    assert isinstance(probe, LinearProbe)
    name, linear = token_head_linear(model)
    if not write_into_head(linear, probe):
        raise ConfigError(
            f"The classifier ({probe.weight.shape}) does not fit the head '{name}' ({tuple(linear.weight.shape)})."
        )
    model.to(device).eval()
    metrics: dict[str, Any] = {}
    for role in ("eval", "test"):
        ds = getattr(splits, role)
        if ds is not None:
            metrics.update(_evaluate(model, task, ds, bs, device, role))
    runtime = time.time() - start
    record = {
        "head_written": True,
        "run_layout": "head",
        "classifier_parameters": int(linear.weight.numel() + linear.bias.numel()),
        "feature_dim": int(X.shape[1]),
        "train_tokens": int(len(y)),
        "C": float(settings.C) if settings.classifier == "logistic_regression" else None,
        "C_selection": (
            "given (strategy.C)" if c.C is not None else f"default {DEFAULT_C:g} (not cross-validated over tokens)"
        )
        if settings.classifier == "logistic_regression"
        else None,
    }
    from accelerate.state import PartialState

    if PartialState().is_main_process:
        out = Path(ctx.output_dir)
        model.to("cpu")
        strategy.save_model(model, out)
        task.save_processor(out)
    metrics.update(
        {
            "train_runtime": round(runtime, 3),
            "train_samples_per_second": round(len(splits.train) / runtime, 3) if runtime > 0 else 0.0,
            "feature_seconds": round(feature_seconds, 3),
            "classifier_seconds": round(classifier_seconds, 3),
            "feature_cache_hit": False,
        }
    )
    logger.info("Per-token %s on %d tokens x %d features, written into '%s'.", c.classifier, len(y), X.shape[1], name)
    return metrics, record
