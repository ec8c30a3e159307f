"""DANN (Ganin et al. 2016): a domain classifier on the pooled features the task head reads,
trained through a gradient-reversal layer, so the body learns features that predict the labels
but not the domain.

Each training micro-batch is the source batch and one unlabelled target batch, concatenated and
run through the model in ONE forward pass: under DDP a module must not run twice before its
backward, and the concatenation keeps the source's loss scaling exact (the classification loss
is computed on the source rows only, with the task's own loss: class weights, label smoothing).
The pooled features are caught with the shared head-input capture (`hf_transfer.models.features`:
a forward pre-hook on the task head, kept attached to the graph here), so any classifier the
recipes build works without knowing its architecture: BERT's pooler output, ViT's CLS token,
EfficientNet's pooled map, Whisper's pooled frames.
"""

from __future__ import annotations

import logging
import math
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from hf_transfer.data.text import EpochSampler
from hf_transfer.engine.trainer import EngineHook
from hf_transfer.models.features import HeadInputCapture, locate_head_input

logger = logging.getLogger(__name__)


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, coeff: float):
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.coeff * grad, None


def grad_reverse(x: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
    """Identity forward; the gradient is multiplied by `-coeff` on the way back."""
    return _ReverseGradient.apply(x, coeff)


def dann_lambda(progress: float, lambda_max: float = 1.0, gamma: float = 10.0) -> float:
    """Ganin et al.'s schedule: `lambda_max * (2 / (1 + exp(-gamma * p)) - 1)`, p in [0, 1].

    0 at the start (the domain classifier's first, random gradients do not disturb the body), close
    to `lambda_max` after about half of training.
    """
    p = min(max(progress, 0.0), 1.0)
    return lambda_max * (2.0 / (1.0 + math.exp(-gamma * p)) - 1.0)


class DomainClassifier(nn.Module):
    """Source-vs-target logit from pooled features (an MLP, or linear with `hidden_size=0`)."""

    def __init__(self, in_features: int, hidden_size: int = 256, dropout: float = 0.1):
        super().__init__()
        if hidden_size > 0:
            self.net = nn.Sequential(
                nn.Linear(in_features, hidden_size),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(hidden_size, hidden_size),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(hidden_size, 1),
            )
        else:
            self.net = nn.Linear(in_features, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features).squeeze(-1)


def concat_batches(source: dict, target: dict, pad_values: dict[str, int]) -> dict:
    """Source rows then target rows in one batch; sequences padded on the right to one length."""
    out = {}
    for key, s in source.items():
        t = target[key]
        if s.ndim >= 2 and s.shape[1] != t.shape[1] and s.shape[2:] == t.shape[2:]:
            width = max(s.shape[1], t.shape[1])
            value = pad_values.get(key, 0)
            s = F.pad(s, (0, 0) * (s.ndim - 2) + (0, width - s.shape[1]), value=value)
            t = F.pad(t, (0, 0) * (t.ndim - 2) + (0, width - t.shape[1]), value=value)
        out[key] = torch.cat([s, t.to(s.dtype)], dim=0)
    return out


class _Logits(nn.Module):
    """Stands in for the model inside `task.loss`: returns logits already computed."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, **_):
        return SimpleNamespace(logits=self.logits)


class DANNHook(EngineHook):
    """Adversarial domain adaptation inside the shared engine (see the module docstring).

    Args:
        adaptation: The run's `adaptation` settings.
        modality: What the recipe takes in (`text`, `image`, `audio`).
        task: The classification task.
        model: The model, as the strategy left it (PEFT wrapper included).
        target_dataset: Preprocessed target examples (their labels are ignored).
        collate_fn: The task's collator.
        probe_batch: One collated source batch, to read the feature width.
    """

    def __init__(self, adaptation, modality: str, task, model, target_dataset, collate_fn, probe_batch):
        self.a, self.task = adaptation, task
        spec = locate_head_input(model, text=modality == "text")
        self.capture = HeadInputCapture(model, spec, detach=False).__enter__()  # removed in on_train_end
        was_training = model.training
        model.eval()
        with torch.no_grad():
            task.logits(model, probe_batch)
        model.train(was_training)
        width = self._features().shape[-1]
        self.domain_classifier = DomainClassifier(width, self.a.domain_hidden_size)
        self.lr_multiplier = self.a.domain_lr_multiplier
        self.target_dataset = target_dataset
        self.collate_fn = collate_fn
        pad_id = getattr(getattr(task, "processor", None), "pad_token_id", None)
        self.pad_values = {"input_ids": pad_id or 0}
        self._stats = torch.zeros(3)  # domain loss sum, correct, count since the last log record
        self.coeff = 0.0
        logger.info(
            "DANN: domain classifier (%s, hidden %d) on the %d-d input of %s; %d target examples.",
            "MLP" if self.a.domain_hidden_size else "linear",
            self.a.domain_hidden_size,
            width,
            "/".join(spec.candidates),
            len(target_dataset),
        )

    def _features(self) -> torch.Tensor:
        features, _ = self.capture.features()
        self.capture.reset()
        return features

    def extra_modules(self):
        return [self.domain_classifier]

    def setup(self, trainer, modules):
        (self.domain_classifier,) = modules
        tc = trainer.tc
        self.sampler = EpochSampler(len(self.target_dataset), tc.seed + 1)
        loader = DataLoader(
            self.target_dataset,
            batch_size=self.a.target_batch_size or tc.batch_size,
            sampler=self.sampler,
            collate_fn=self.collate_fn,
            num_workers=tc.num_workers,
            generator=torch.Generator().manual_seed(tc.seed + 1),
        )
        self.loader = trainer.accelerator.prepare(loader)  # sharded between processes like the source
        self._epoch, self._cycle, self._iterator = 0, 0, None

    def _restart(self) -> None:
        # Target order depends only on (seed, epoch, pass over the target), so a resume replays it.
        order = self._epoch * 1000 + self._cycle
        self.sampler.set_epoch(order)
        if hasattr(self.loader, "set_epoch"):
            self.loader.set_epoch(order)
        self._iterator = iter(self.loader)

    def _next_target(self):
        try:
            return next(self._iterator)
        except StopIteration:
            self._cycle += 1
            self._restart()
            return next(self._iterator)

    def on_epoch_start(self, trainer, epoch, batches_done):
        self._epoch, self._cycle = epoch, 0
        self._restart()
        for _ in range(batches_done):
            self._next_target()

    def loss(self, trainer, batch):
        task = self.task
        target = self._next_target()
        source_inputs = task.model_inputs(batch)
        combined = concat_batches(source_inputs, task.model_inputs(target), self.pad_values)
        n_source = next(iter(source_inputs.values())).shape[0]
        logits = task.logits(trainer.model, combined)
        features = self._features()
        class_loss = task.loss(_Logits(logits[:n_source]), batch)

        self.coeff = dann_lambda(
            trainer.state.global_step / max(1, trainer.total_steps), self.a.lambda_max, self.a.gamma
        )
        domain_logits = self.domain_classifier(grad_reverse(features, self.coeff))
        domain = torch.zeros_like(domain_logits)
        domain[n_source:] = 1.0
        domain_loss = F.binary_cross_entropy_with_logits(domain_logits, domain)
        with torch.no_grad():
            correct = ((domain_logits > 0).float() == domain).sum()
            self._stats += torch.stack(
                [domain_loss.detach().float().cpu() * len(domain), correct.cpu(), torch.tensor(float(len(domain)))]
            )
        # The engine divides the summed loss by the source item count: the domain term, a mean, is
        # scaled by this batch's item count so that it weighs as a mean in the window's loss.
        return class_loss + domain_loss * task.num_items(batch)

    def log_values(self, trainer):
        stats = self._stats.to(trainer.accelerator.device)
        if trainer.accelerator.num_processes > 1:
            stats = trainer.accelerator.reduce(stats, reduction="sum")
        self._stats = torch.zeros(3)
        if stats[2] == 0:
            return {}
        return {
            "domain_loss": float(stats[0] / stats[2]),
            "domain_accuracy": float(stats[1] / stats[2]),
            "dann_lambda": self.coeff,
        }

    def on_train_end(self, trainer):
        self.capture.__exit__(None, None, None)
