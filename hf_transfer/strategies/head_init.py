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

Label sets (`tasks.multilabel`) get `feature_extraction`'s linear model instead of the softmax
logistic regression: a balanced one-vs-rest logistic regression for the sigmoid head
(`_init_target_head`); in runs of two epochs or more it is fitted again on the trained body at the
start of the last epoch, which then trains the head alone (`refit_target_head`). Numeric targets
keep the random head (a ridge start measured worse). The single-label path above is unchanged.
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


def init_head_from_probe(
    ctx, model: nn.Module, *, max_examples: int = HEAD_INIT_MAX_EXAMPLES, batch_size: int | None = None
) -> dict[str, Any]:
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
    task = getattr(ctx, "task", None)
    token_level = bool(getattr(task, "token_level", False))  # one label per token
    target_kind = getattr(task, "target_kind", None)  # "multilabel" / "regression" (tasks.targets)
    if target_kind == "multilabel":
        return _init_target_head(ctx, model, target_kind, max_examples=max_examples, batch_size=batch_size)
    if target_kind == "regression":
        # Measured worse: on the tweet-confidence benchmark (MiniLM, 200 rows, `full`, seeds 0 and 1)
        # a head started as the ridge regression on its input ended at RMSE 0.195 / 0.205 against
        # 0.184 / 0.182 with the random head (and 0.195 / 0.203 when also fitted again at the last epoch).
        return {
            "head_init": "random",
            "head_init_reason": "a numeric target keeps the random head (a ridge start "
            "measured worse on the regression benchmark)",
        }
    if (
        not str(recipe).endswith("_classification")
        or token_level
        or problem in ("regression", "multi_label_classification")
    ):
        return {
            "head_init": "random",
            "head_init_reason": f"a probe initialises single-label classification heads "
            f"only (recipe {recipe}, problem type {problem})",
        }
    try:
        head = locate_head_input(model, "auto", modality == "text")
    except ModelError as e:
        return {"head_init": "random", "head_init_reason": str(e)}
    if head.linear is None:
        return {
            "head_init": "random",
            "head_init_reason": f"the head ({', '.join(head.candidates)}) is not one linear layer",
        }
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
    # normalize=False: exactly what the linear layer reads. A sentence-transformers checkpoint's
    # convention L2-normalises vectors; a probe fitted on unit vectors and written into a head that
    # reads raw ones scales every logit by the input's length.
    extractor = FeatureExtractor(
        model,
        modality=modality,
        spec=FeatureSpec(pooling="head_input", normalize=False),
        name_or_path=getattr(getattr(cfg, "model", None), "name_or_path", None),
    )
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
    logger.info(
        "Head initialised from a logistic regression on its input (%d training examples, training "
        "accuracy %.3f, %.1f s).",
        n,
        accuracy,
        seconds,
    )
    return {
        "head_init": "probe",
        "head_init_examples": n,
        "head_init_train_accuracy": round(accuracy, 4),
        "head_init_seconds": seconds,
    }


def _head_linear(model: nn.Module, modality: str) -> tuple[nn.Linear | None, str]:
    """The head's one linear layer, or None and why not."""
    from hf_transfer.models.features import locate_head_input

    try:
        head = locate_head_input(model, "auto", modality == "text")
    except ModelError as e:
        return None, str(e)
    if head.linear is None:
        # Under PEFT the head is a `ModulesToSaveWrapper`: its trained copy is the linear layer.
        for name in head.candidates:
            module = model.get_submodule(name)
            copies = getattr(module, "modules_to_save", None)
            adapter = getattr(module, "active_adapter", None)
            adapter = adapter[0] if isinstance(adapter, (list, tuple)) and adapter else adapter
            if copies is not None and adapter in copies and isinstance(copies[adapter], nn.Linear):
                return copies[adapter], ""
        return None, f"the head ({', '.join(head.candidates)}) is not one linear layer"
    return model.get_submodule(head.linear), ""


def _init_target_head(
    ctx, model: nn.Module, kind: str, *, max_examples: int, batch_size: int | None, cache: bool = True
) -> dict[str, Any]:
    """Label sets (`tasks.multilabel`): what `feature_extraction` fits for them, on the head's input.

    One-vs-rest logistic regression, each label balanced as scikit-learn's
    `class_weight="balanced"` (`models.target_probe.fit_multilabel`, C=1, thresholds not tuned): its
    weights and biases become the sigmoid head's, so the untrained model's probabilities are the
    probe's (and replace the prior biases `tasks.multilabel.init_bias_to_prior` set).
    """
    from hf_transfer.models.features import FeatureExtractor, FeatureSpec, extract
    from hf_transfer.models.probe import write_into_head
    from hf_transfer.models.target_probe import fit_multilabel

    cfg = getattr(ctx, "cfg", None)
    modality = _modality_of(ctx)
    linear, why = _head_linear(model, modality)
    if linear is None:
        return {"head_init": "random", "head_init_reason": why}
    train = ctx.splits.train
    seed = int(getattr(getattr(cfg, "training", None), "seed", 0) or 0)
    n = min(len(train), max_examples)
    sample = train.shuffle(seed=seed).select(range(n)) if n < len(train) else train
    y = np.asarray(list(sample["labels"]), dtype=np.float64)
    Y = (y.reshape(len(y), -1) > 0.5).astype(int)
    if not (Y.min(0) != Y.max(0)).any():
        return {"head_init": "random", "head_init_reason": "no label has both positive and negative training rows"}
    training = getattr(cfg, "training", None)
    bs = batch_size or getattr(training, "eval_batch_size", None) or getattr(training, "batch_size", None) or 32
    t0 = time.time()
    # normalize=False: exactly what the linear layer reads (a sentence-transformers checkpoint's
    # convention would L2-normalise the vectors, and the probe would not fit the head's input).
    extractor = FeatureExtractor(
        model,
        modality=modality,
        spec=FeatureSpec(pooling="head_input", normalize=False),
        name_or_path=getattr(getattr(cfg, "model", None), "name_or_path", None),
    )
    X = extract(extractor, ctx.task, sample, batch_size=bs, cache=cache).X.astype(np.float64)
    record: dict[str, Any] = {"head_init": "probe", "head_init_examples": n}
    probe, _, _ = fit_multilabel(X, Y, C=1.0, balanced=True, seed=seed, tune=False)
    P = 1.0 / (1.0 + np.exp(-probe.logits(X)))
    record["head_init_probe"] = "one-vs-rest logistic regression (balanced, C=1)"
    record["head_init_train_f1_macro"] = round(float(_macro_f1(P >= 0.5, Y)), 4)
    if not write_into_head(linear, probe):
        return {
            "head_init": "random",
            "head_init_reason": f"the probe {probe.weight.shape} does not fit the head {tuple(linear.weight.shape)}",
        }
    ctx.task.balanced_head = True  # thresholds: 0.5 unless the eval split can move them (tasks.multilabel)
    record["head_init_seconds"] = round(time.time() - t0, 2)
    logger.info(
        "Head initialised from a %s on its input (%d training examples, %.1f s).",
        record["head_init_probe"],
        n,
        record["head_init_seconds"],
    )
    return record


def _macro_f1(pred: np.ndarray, Y: np.ndarray) -> float:
    tp = (pred & (Y > 0)).sum(0)
    fp = (pred & (Y == 0)).sum(0)
    fn = (~pred & (Y > 0)).sum(0)
    denom = 2 * tp + fp + fn
    return float(np.mean(np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)))


def _modality_of(ctx) -> str:
    from hf_transfer.registry import recipe_modality

    return recipe_modality(getattr(getattr(ctx, "cfg", None), "recipe", ""), "text")


def refit_target_head(strategy, epoch: int, model: nn.Module) -> bool:
    """Label sets: at the start of the last epoch (of two or more), the head is fitted
    again, as at the start, on what the trained body now gives (`Strategy.on_epoch_start`; the
    last epoch from `Strategy.on_budget`).

    The output layer of a label set moves little at a body's learning rate, and BCE without
    weights pulls rare labels' probabilities below 0.5, while the body's features move away from
    the ones the first probe was fitted on: on the disaster-messages benchmark (MiniLM, 200 rows,
    `full`, seed 0) the trained head scored 0.47-0.50 test macro F1 and the same body with the
    balanced one-vs-rest probe fitted again on its features 0.57. The record of the last refit
    goes to `metrics.json` (`head_refits`, `head_refit_epoch`).
    """
    ctx = getattr(strategy, "_target_head_ctx", None)
    budget = getattr(strategy, "budget", None)
    if ctx is None or budget is None or epoch < 1 or epoch != budget.epochs - 1:
        return False
    kind = getattr(ctx.task, "target_kind", None)
    was_training = model.training
    model.eval()
    try:
        record = _init_target_head(ctx, model, kind, max_examples=HEAD_INIT_MAX_EXAMPLES, batch_size=None, cache=False)
    finally:
        model.train(was_training)
    if record.get("head_init") != "probe":
        logger.info("The head was not fitted again at epoch %d: %s", epoch, record.get("head_init_reason"))
        return False
    strategy._head_refits = getattr(strategy, "_head_refits", 0) + 1
    strategy._head_refit_epoch = epoch
    # The last epoch trains the refitted head only: a body trained on under the fresh head's
    # gradients moves away from the features it was fitted on (same benchmark, seed 0: 0.533 with
    # the body training on, against ...). Not under several processes: DDP expects the gradients
    # of every parameter it was built with.
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return False
    linear, _ = _head_linear(model, _modality_of(ctx))
    keep = {id(p) for p in linear.parameters()} if linear is not None else set()
    frozen = 0
    for p in model.parameters():
        if p.requires_grad and id(p) not in keep:
            p.requires_grad_(False)
            frozen += 1
    strategy._head_refit_froze_body = frozen > 0
    logger.info(
        "Epoch %d (the last): the head was fitted again on the trained body, which is frozen from here on.", epoch
    )
    return frozen > 0


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
    record = init_head_from_probe(ctx, model)
    if record.get("head_init") == "probe" and getattr(ctx.task, "target_kind", None) == "multilabel":
        strategy._target_head_ctx = ctx  # refit at each epoch start (`refit_target_head`)
    return record
