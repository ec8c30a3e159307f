"""The new head starts as a fitted probe, not at random (`strategy.head_init: probe`, the default).

A freshly initialised head sends random gradients into the pretrained body for the first
hundreds of steps; with many classes and few examples each the run ends before the head has
caught up, and the body has been pulled away from its features meanwhile (measured: 24 classes x
8 examples, MiniLM-L6, `full` with a random head 0.16 below the frozen features). LP-FT (Kumar et
al. 2022) fixes this by training the head first; here it is done in one step before training: the
training split goes once through the frozen, just-built model, the input of the head's linear
layer is captured (`models.features`, pooling `head_input`: exactly what the head reads, eval
mode), a logistic regression (scikit-learn's default C) is fitted on it, and its weights and bias
are copied into the head (`models.probe.write_into_head`). Fine-tuning then starts from the
probe's accuracy instead of chance. The model's architecture does not change: the run folder
still loads with plain transformers.

Applies to the strategies that train the head with the engine (`full`, `partial`, `lora`,
`lp_ft`, `freeze`, `gradual_unfreeze`, `ia3`, `lora_ffn`), not to `scratch` (its body is random
too) and not on resume (the checkpoint brings its head). When the head is not one linear layer
(RoBERTa's two-layer head, Whisper's projector + classifier), it stays random and the record says
why. At most `HEAD_INIT_MAX_EXAMPLES` training examples (a seeded sample) are embedded.
`strategy.head_init: random` restores the random head.
"""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace
from typing import Any

import numpy as np
from torch import nn

from hf_transfer.errors import ConfigError, ModelError

logger = logging.getLogger(__name__)

#: Training examples (a seeded sample) the head's probe is fitted on, at most.
HEAD_INIT_MAX_EXAMPLES = 5000
HEAD_INITS = ("probe", "random")


def _probe_settings() -> SimpleNamespace:
    """scikit-learn's default logistic regression: no cross-validation (a starting point only)."""
    return SimpleNamespace(classifier="logistic_regression", C=1.0, max_iter=1000, standardize=False)


def init_head_from_probe(ctx, model: nn.Module, *, max_examples: int = HEAD_INIT_MAX_EXAMPLES,
                         batch_size: int | None = None) -> dict[str, Any]:
    """Fit a logistic regression on what the head reads and write it into the head.

    Args:
        ctx: The run context (`task`, `splits.train` with a `labels` column, `cfg`).
        model: The just-built model with its new head (not yet frozen or wrapped).
        max_examples: Embed at most this many training examples (seeded sample).
        batch_size: Forward-pass batch size (default: the evaluation batch size).

    Returns:
        The record for `metrics.json`: `head_init` (`probe` or `random`) and, for a probe, the
        examples it saw, its training accuracy and the seconds it took; `head_init_reason` when the
        head stays random.
    """
    from hf_transfer.models.features import FeatureExtractor, FeatureSpec, extract, locate_head_input
    from hf_transfer.models.probe import fit_classifier, write_into_head
    from hf_transfer.registry import recipe_modality

    cfg = getattr(ctx, "cfg", None)
    recipe = getattr(cfg, "recipe", "text_classification")
    modality = recipe_modality(recipe, "text")
    problem = getattr(getattr(model, "config", None), "problem_type", None)
    token_level = bool(getattr(getattr(ctx, "task", None), "token_level", False))  # one label per token
    if (not str(recipe).endswith("_classification") or token_level
            or problem in ("regression", "multi_label_classification")):
        return {"head_init": "random", "head_init_reason": f"a probe initialises single-label classification heads "
                                                           f"only (recipe {recipe}, problem type {problem})"}
    try:
        head = locate_head_input(model, "auto", modality == "text")
    except ModelError as e:
        return {"head_init": "random", "head_init_reason": str(e)}
    if head.linear is None:
        return {"head_init": "random",
                "head_init_reason": f"the head ({', '.join(head.candidates)}) is not one linear layer"}
    linear = model.get_submodule(head.linear)
    train = ctx.splits.train
    seed = int(getattr(getattr(cfg, "training", None), "seed", 0) or 0)
    n = min(len(train), max_examples)
    sample = train.shuffle(seed=seed).select(range(n)) if n < len(train) else train
    labels = np.asarray(sample["labels"])
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        return {"head_init": "random", "head_init_reason": "the labels are not one class id per example"}
    if len(np.unique(labels)) < 2:
        return {"head_init": "random", "head_init_reason": "the training split has a single label"}
    training = getattr(cfg, "training", None)
    bs = batch_size or getattr(training, "eval_batch_size", None) or getattr(training, "batch_size", None) or 32
    t0 = time.time()
    extractor = FeatureExtractor(model, modality=modality, spec=FeatureSpec(pooling="head_input"),
                                 name_or_path=getattr(getattr(cfg, "model", None), "name_or_path", None))
    feats = extract(extractor, ctx.task, sample, batch_size=bs)
    X = feats.X.astype(np.float64)
    probe = fit_classifier(_probe_settings(), X, labels, linear.out_features, seed=seed)
    if not write_into_head(linear, probe):
        shape = tuple(linear.weight.shape)
        return {
            "head_init": "random",
            "head_init_reason": f"the probe {probe.weight.shape} does not fit the head {shape}",
        }
    accuracy = float(np.mean(probe.predict(X) == labels))
    seconds = round(time.time() - t0, 2)
    logger.info("Head initialised from a logistic regression on its input (%d training examples, training "
                "accuracy %.3f, %.1f s).", n, accuracy, seconds)
    return {"head_init": "probe", "head_init_examples": n, "head_init_train_accuracy": round(accuracy, 4),
            "head_init_seconds": seconds}


def initialise_head(strategy, ctx, model: nn.Module) -> dict[str, Any]:
    """`strategy.head_init` applied to `model` (see the module docstring); the record for metrics."""
    how = getattr(strategy.config, "head_init", "random")
    if how not in HEAD_INITS:
        raise ConfigError(f"strategy.head_init must be one of {', '.join(HEAD_INITS)}, got {how!r}.")
    if not strategy.trains_with_engine or strategy.from_scratch:
        return {}
    if how == "random":
        return {"head_init": "random", "head_init_reason": "strategy.head_init=random"}
    cfg = getattr(ctx, "cfg", None)
    if getattr(getattr(cfg, "training", None), "resume_from_checkpoint", None):
        return {"head_init": "checkpoint"}
    if getattr(model, "hf_transfer_new_weights", None) == []:
        return {"head_init": "checkpoint", "head_init_reason": "the checkpoint's head was kept (same labels)"}
    return init_head_from_probe(ctx, model)
