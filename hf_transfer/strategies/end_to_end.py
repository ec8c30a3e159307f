"""`contrastive`'s end-to-end pass: the pair-trained body and a linear head, trained together.

SetFit calls this the differentiable head: after the contrastive pairs, the body and a classifier
head train together with cross-entropy, so the last steps optimise what is measured (the class)
instead of a proxy (which pairs are alike). Here:

1. The head is a linear layer on exactly the features the classifier later reads (the checkpoint's
   pooling and normalisation, `models.features.FeatureExtractor`), started as scikit-learn's
   default logistic regression on the pair-trained features (`head_init`'s probe settings), so the
   pass starts at the probe's accuracy instead of chance.
2. The same blocks as the pairs train (the top two thirds by default), on the same cached frozen
   prefix, on the shared engine (Accelerate: mixed precision, several processes, checkpoints in
   `end_to_end/checkpoints/` and exact resume), with the task's class weights and
   `training.label_smoothing`. Learning rate `end_to_end_learning_rate` (2e-5, SetFit's body
   rate) for the body and `HEAD_LR_MULTIPLIER` times that for the head, `end_to_end_epochs`
   passes over the training examples, `training.warmup_ratio` warm-up and the run's scheduler.
3. The head is then dropped: the run's classifier is fitted on the final features as without the
   pass (`feature_extraction`'s classifier), so the run folder is the same SetFit-compatible
   folder. Measured (fortunes24, 64 a class, seeds 0-1): the refitted classifier 0.634 / 0.622
   against the trained head's 0.627 / 0.623.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hf_transfer.engine.trainer import EngineHook

logger = logging.getLogger(__name__)

#: The head's learning rate over the body's: a head that starts as a fitted probe still has to move
#: much further than the pretrained weights below it.
HEAD_LR_MULTIPLIER = 50.0

#: Folder of the pass inside the run folder (its checkpoints, when `training.save_strategy` saves).
PHASE_DIR = "end_to_end"


class HeadTask:
    """What the engine needs for batches of labelled examples: cross-entropy on `head(encoder)`."""

    def __init__(self, task, head: nn.Module, class_weights: torch.Tensor | None, label_smoothing: float):
        self.task = task
        self.labels = getattr(task, "labels", None)
        self.head = head
        self.class_weights = class_weights
        self.label_smoothing = float(label_smoothing or 0.0)

    def num_items(self, batch) -> int:
        return int(batch["labels"].shape[0])

    num_examples = num_items

    def loss(self, model, batch) -> torch.Tensor:
        """Summed cross-entropy of the head's logits (the engine divides by the example count)."""
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        emb = model(**inputs).float()
        logits = self.head(emb).float()
        weight = self.class_weights.to(logits.device) if self.class_weights is not None else None
        return nn.functional.cross_entropy(
            logits, batch["labels"], weight=weight, label_smoothing=self.label_smoothing, reduction="sum"
        )


class HeadHook(EngineHook):
    """Puts the head in the optimizer (its own group, `HEAD_LR_MULTIPLIER`), prepared by Accelerate
    and saved in the pass's checkpoints."""

    lr_multiplier = HEAD_LR_MULTIPLIER

    def __init__(self, task: HeadTask):
        self.task = task

    def extra_modules(self) -> list[nn.Module]:
        return [self.task.head]

    def setup(self, trainer, modules: list[nn.Module]) -> None:
        self.task.head = modules[0]


def probe_head(X: np.ndarray, y: np.ndarray, num_labels: int, seed: int) -> tuple[nn.Linear, float]:
    """A linear head holding scikit-learn's default logistic regression on `X`, and the probe's
    training accuracy."""
    from hf_transfer.models.probe import fit_classifier, write_into_head
    from hf_transfer.strategies.head_init import _probe_settings

    probe = fit_classifier(_probe_settings(), X, y, num_labels, seed=seed)
    head = nn.Linear(X.shape[1], num_labels)
    write_into_head(head, probe)
    return head, float(np.mean(probe.predict(X) == y))


def phase_training(training, output_dir: Path, epochs: float, learning_rate: float):
    """The run's `training` settings for the pass: its own epochs and learning rate (not the pair
    phase's; with `epochs` set, `engine.budget` adds no minimum of steps), no step count,
    resuming only from checkpoints of the pass."""
    folder = Path(output_dir) / PHASE_DIR / "checkpoints"
    has_ckpt = folder.is_dir() and any(p.name.startswith("step_") for p in folder.iterdir())
    resume = training.resume_from_checkpoint if training.resume_from_checkpoint == "latest" and has_ckpt else None
    return dataclasses.replace(
        training,
        learning_rate=float(learning_rate),
        epochs=float(epochs),
        max_steps=None,
        min_steps=None,
        resume_from_checkpoint=resume,
    )


def run_end_to_end(
    strategy, ctx, encoder: nn.Module, examples, collate, X: np.ndarray, y: np.ndarray, epochs: float
) -> tuple:
    """Train `encoder` (pooled embeddings) with a probe-initialised linear head on the training
    `examples` with cross-entropy for `epochs` passes. Returns the engine's trainer and the record
    for metrics.json."""
    from hf_transfer.data.text import EpochSampler
    from hf_transfer.engine.trainer import Trainer
    from hf_transfer.models.layer_groups import layer_groups

    c, cfg, task = strategy.config, ctx.cfg, ctx.task
    num_labels = len(task.labels) if getattr(task, "labels", None) is not None else int(y.max()) + 1
    head, probe_acc = probe_head(X, y, num_labels, cfg.training.seed)
    tc = phase_training(cfg.training, Path(ctx.output_dir), epochs, c.end_to_end_learning_rate)
    head_task = HeadTask(task, head, getattr(task, "class_weights", None), tc.label_smoothing)
    trainer = Trainer(
        tc,
        head_task,
        encoder,
        strategy,  # its hooks; the pass's epochs and learning rate are in `tc` (no default minimum then)
        layer_groups(encoder),
        examples,
        None,
        collate,
        EpochSampler(len(examples), tc.seed, None, tc.batch_size),
        Path(ctx.output_dir) / PHASE_DIR,
        hook=HeadHook(head_task),
    )
    logger.info(
        "contrastive: end-to-end pass, %g epoch(s) over %d examples (%d optimizer steps), learning rate %g "
        "(head x%g), head started as a probe with training accuracy %.3f.",
        epochs,
        len(examples),
        trainer.total_steps,
        trainer.budget.learning_rate,
        HEAD_LR_MULTIPLIER,
        probe_acc,
    )
    metrics = trainer.train()
    losses = [r["loss"] for r in trainer.state.history if "loss" in r]
    record: dict[str, Any] = {
        "end_to_end_epochs": epochs,
        "end_to_end_steps": trainer.state.global_step,
        "end_to_end_learning_rate": trainer.budget.learning_rate,
        "end_to_end_probe_train_accuracy": round(probe_acc, 5),
        "end_to_end_first_loss": round(float(losses[0]), 5) if losses else None,
        "end_to_end_last_loss": round(float(losses[-1]), 5) if losses else None,
        "end_to_end_seconds": metrics.get("train_runtime"),
    }
    return trainer, record
