"""Evaluation across processes, and batch-norm recalibration after training."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from hf_transfer.quiet import progress_disabled


@torch.no_grad()
def run_evaluation(accelerator: Accelerator, model, dataloader, task, prefix: str = "eval") -> dict[str, Any]:
    """Evaluate `model` on a prepared `dataloader`: outputs gathered from every process with
    `gather_for_metrics` (which drops the duplicates padding the last batch), then the task's
    metrics, keys prefixed Trainer-style (`eval_accuracy`)."""
    was_training = model.training
    model.eval()
    gathered: dict[str, list[np.ndarray]] = {}
    for batch in tqdm(
        dataloader,
        desc=f"Evaluating ({prefix})",
        leave=False,
        disable=not accelerator.is_local_main_process or progress_disabled(),
    ):
        outputs = task.eval_outputs(model, batch)
        # Sequence outputs (generated tokens) differ in length between processes: pad first.
        outputs = {
            k: accelerator.pad_across_processes(v, dim=1, pad_index=-100) if v.ndim > 1 and k != "logits" else v
            for k, v in outputs.items()
        }
        outputs = accelerator.gather_for_metrics(outputs)
        for k, v in outputs.items():
            gathered.setdefault(k, []).append(v.float().cpu().numpy() if v.is_floating_point() else v.cpu().numpy())
    if was_training:
        model.train()
    arrays = {k: _concat(v) for k, v in gathered.items()}
    metrics = (
        task.compute_metrics_for(arrays, prefix)
        if hasattr(task, "compute_metrics_for")
        else task.compute_metrics(arrays)
    )
    return {f"{prefix}_{k}": v for k, v in metrics.items()}


@torch.no_grad()
def recalibrate_batchnorm(model: torch.nn.Module, batches, forward, accelerator: Accelerator | None = None) -> int:
    """Recompute every batch norm's running statistics over `batches` with the current weights.

    "Precise BN": after a short, high-learning-rate run (a scratch baseline, typically) the
    running averages lag behind the weights and evaluation suffers. PyTorch's
    `torch.optim.swa_utils.update_bn` resets the statistics and accumulates an exact average
    (momentum None) over one pass in train mode; `forward(batch)` runs the model on a batch (our
    batches are dicts, which `update_bn` would not unpack). The statistics are then averaged across
    processes. Returns the number of batch-norm layers recalibrated.
    """
    from torch.optim.swa_utils import update_bn

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return 0
    update_bn(batches, _BatchForward(model, forward))
    if accelerator is not None and accelerator.num_processes > 1:
        for m in bns:
            m.running_mean.copy_(accelerator.reduce(m.running_mean, reduction="mean"))
            m.running_var.copy_(accelerator.reduce(m.running_var, reduction="mean"))
    return len(bns)


class _BatchForward(torch.nn.Module):
    """`model` as `update_bn` calls it: one positional batch in, `forward(batch)` run."""

    def __init__(self, model: torch.nn.Module, forward):
        super().__init__()
        self.model = model  # registered, so update_bn finds its batch norms and train() reaches it
        self._forward = forward
        self.training = model.training  # what update_bn restores afterwards

    def forward(self, batch):
        return self._forward(batch)


def _concat(arrays: list[np.ndarray]) -> np.ndarray:
    if arrays[0].ndim <= 1:
        return np.concatenate(arrays)
    width = max(a.shape[1] for a in arrays)
    padded = [np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=-100) for a in arrays]
    return np.concatenate(padded)
