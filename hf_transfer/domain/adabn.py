"""AdaBN (Li et al. 2016) and target-domain input normalisation.

AdaBN: the learned weights stay, the batch-norm running statistics are recomputed on target
data after training (the engine's exact "precise BN" pass, `recalibrate_batchnorm`, over target
batches instead of training batches). It changes nothing in a model without batch norm (BERT, ViT,
Whisper use LayerNorm, which normalises per example), so it refuses such a model with the
alternatives.

`data.normalize_from: target` recomputes the image processor's per-channel mean/std from the
target images; the run saves that processor, so the exported model normalises like its target.
"""

from __future__ import annotations

import logging

import numpy as np
from torch import nn
from torch.utils.data import DataLoader

from hf_transfer.engine.trainer import EngineHook, recalibrate_batchnorm
from hf_transfer.errors import DataError, ModelError

logger = logging.getLogger(__name__)


def batchnorm_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def check_adabn_model(model: nn.Module) -> int:
    """Number of batch-norm layers AdaBN will recompute; a ModelError when there are none."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    n = len(batchnorm_layers(base))
    if n == 0:
        norms = sorted({type(m).__name__ for m in base.modules() if "Norm" in type(m).__name__})
        raise ModelError(
            f"adaptation.name=adabn recomputes batch-norm statistics on the target data, but "
            f"{type(base).__name__} has no batch norm (its norms: {', '.join(norms) or 'none'}; they normalise "
            "each example on its own, so there are no domain statistics to swap). Nothing would change, so "
            "the run stops here. Use adaptation.name=dann for this model, and for images "
            "data.normalize_from=target to recompute the input mean/std from the target images."
        )
    return n


class AdaBNHook(EngineHook):
    """After training: batch-norm running statistics recomputed over `target_dataset`."""

    def __init__(self, task, target_dataset, collate_fn):
        self.task = task
        self.target_dataset = target_dataset
        self.collate_fn = collate_fn

    def on_train_end(self, trainer):
        tc = trainer.tc
        loader = trainer.accelerator.prepare(
            DataLoader(
                self.target_dataset,
                batch_size=tc.eval_batch_size or tc.batch_size,
                shuffle=False,
                collate_fn=self.collate_fn,
                num_workers=tc.num_workers,
            )
        )
        model = trainer.model
        n = recalibrate_batchnorm(
            trainer.unwrapped_model(), loader, lambda batch: model(**self.task.model_inputs(batch)), trainer.accelerator
        )
        logger.info(
            "AdaBN: recomputed the running statistics of %d batch-norm layers over %d target examples.",
            n,
            len(self.target_dataset),
        )


def image_mean_std(task, ds, max_images: int = 1000, batch_size: int = 64) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of `ds`'s images as the model sees them (resized, rescaled), before
    normalisation."""
    from hf_transfer.data.image import load_image

    processor = task.processor
    col = task.input_col
    n = min(len(ds), max_images)
    total = np.zeros(3)
    total_sq = np.zeros(3)
    count = 0
    for start in range(0, n, batch_size):
        rows = ds.select(range(start, min(n, start + batch_size)))
        images = []
        for value in rows[col]:
            try:
                images.append(load_image(value))
            except Exception:  # unreadable files were counted when the target was checked
                continue
        if not images:
            continue
        pixels = processor(images=images, do_normalize=False, return_tensors="pt")["pixel_values"].double()
        if pixels.shape[1] != 3:
            raise DataError(f"data.normalize_from=target expects 3-channel images, got {pixels.shape[1]} channels.")
        total += pixels.sum(dim=(0, 2, 3)).numpy()
        total_sq += (pixels**2).sum(dim=(0, 2, 3)).numpy()
        count += pixels.shape[0] * pixels.shape[2] * pixels.shape[3]
    if count == 0:
        raise DataError("data.normalize_from=target: no readable target image.")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 1e-12))
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


def normalize_from_target(cfg, task) -> dict:
    """Set the image processor's mean/std to the target images' (`data.normalize_from: target`)."""
    from hf_transfer.domain.target import load_target

    if not hasattr(task.processor, "image_mean"):
        raise ModelError(
            f"data.normalize_from=target: the image processor {type(task.processor).__name__} has no "
            "image_mean/image_std to set."
        )
    target, _ = load_target(cfg, task, max_samples=1000)
    before = (list(task.processor.image_mean), list(task.processor.image_std))
    mean, std = image_mean_std(task, target)
    task.processor.image_mean, task.processor.image_std = mean, std
    task.processor.do_normalize = True
    logger.info(
        "Image normalisation from the target images: mean %s, std %s (the checkpoint's: mean %s, std %s).",
        mean,
        std,
        [round(float(v), 4) for v in before[0]],
        [round(float(v), 4) for v in before[1]],
    )
    return {"image_mean": mean, "image_std": std, "checkpoint_image_mean": before[0], "checkpoint_image_std": before[1]}
