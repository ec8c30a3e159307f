"""Frozen-prefix caching: run the frozen bottom of a model once per example, train the top on the
cached activations.

With `freeze` or `partial`, every step runs the frozen stem and lower blocks forward only to feed
the few blocks that train. When nothing below the cut changes between epochs, those activations
are the same every epoch, so they can be computed once: the hidden states entering the first
trainable block (and the attention mask) are stored per example, and training then runs only the
trainable blocks, the top groups and the head. An epoch costs about `k / L` of a `full` epoch's
forward for `k` trainable blocks of `L` (and none of the frozen part's backward, which `partial`
already skips).

The activations are exact only under these conditions, which `prefix_cache_blocker` checks:

* every parameter below the cut is frozen, and the trainable set never changes (not for
  `gradual_unfreeze`; the caller checks the strategy's `changes_trainable_set`);
* the frozen part runs in evaluation mode (dropout off below the cut; the cache is built with
  `model.eval()`), so the uncached equivalent must keep it in eval mode too (`hold_eval_mode`);
* no data augmentation (a cached activation cannot be re-augmented);
* a supported encoder: the BERT family (BERT/MiniLM, RoBERTa, XLM-R, CamemBERT, ELECTRA,
  DistilBERT) and ViT/DeiT, not PEFT-wrapped.

How the top runs on cached activations: the model's own forward is called, with the stem modules
patched to return the cached hidden states and the frozen blocks patched to pass them through,
only for the duration of that call. Everything above the cut (masks, remaining blocks, final
norm, pooler, head, loss) is the architecture's own code, so the result is the uncached forward's.

Usage with the engine (no change to `engine/trainer.py` is needed: the trainer only sees another
model, other datasets and another collator)::

    model, train_ds, eval_ds, collate = prefix_cached_training(model, groups, train_ds, eval_ds, task)
    groups = layer_groups(model)
    Trainer(cfg.training, task, model, strategy, groups, train_ds, eval_ds, collate, sampler, out)

`setup_prefix_cache` is the one set-up step for callers that decide at run time: it checks the
conditions, and either caches the given datasets (`PrefixCache`: the plan, the cached datasets,
`collate_prefix`) or logs why not and returns None.

`PrefixCachedModel.save_pretrained` saves the wrapped transformers model, and raw inputs (a test
split) run the whole model, so saving and evaluating need no change either.
"""

from __future__ import annotations

import logging
import time
import types
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from hf_transfer.models.features import unwrap_model

logger = logging.getLogger(__name__)

#: Encoders whose forward takes cached hidden states this way (each is covered by a test).
SUPPORTED_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "camembert", "electra", "distilbert", "vit", "deit")
HIDDEN_KEY = "prefix_hidden_states"


class _StopForward(Exception):
    """Raised by the capture hook: nothing above the cut needs computing while caching."""


def first_trainable_group(groups: list) -> int | None:
    """Index of the first group with a trainable parameter, or None when nothing trains."""
    for i, g in enumerate(groups):
        if any(p.requires_grad for p in g.parameters()):
            return i
    return None


def prefix_cache_blocker(
    model: nn.Module, groups: list, first_trainable: int | None, augmentation: bool = False
) -> str | None:
    """Why the frozen prefix of `model` cannot be cached, or None when it can (module docstring).

    Args:
        model: The model as the strategy left it (frozen parameters have `requires_grad=False`).
        groups: `layer_groups(model)`.
        first_trainable: Index in `groups` of the first group that trains (the cut).
        augmentation: Whether the training data is augmented.
    """
    if unwrap_model(model) is not model:
        return "the model is wrapped (PEFT adapters)"
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        return f"model_type {model_type!r} is not one of {', '.join(SUPPORTED_MODEL_TYPES)}"
    if augmentation:
        return "the training data is augmented"
    if first_trainable is None or first_trainable <= 0 or first_trainable >= len(groups):
        return "nothing below the cut is frozen" if first_trainable == 0 else "no group trains"
    below = groups[:first_trainable]
    if any(g.kind not in ("stem", "block") for g in below):
        return "a top or head group lies below the cut"
    if any(p.requires_grad for g in below for p in g.parameters()):
        return "a parameter below the cut is trainable"
    grouped = {id(p) for g in groups for p in g.parameters()}
    if any(p.requires_grad and id(p) not in grouped for p in model.parameters()):
        return "a trainable parameter lies outside every layer group"
    return None


@dataclass
class PrefixPlan:
    """Where the cut is.

    Attributes:
        frozen_blocks: Number of frozen blocks (the cached hidden states enter block `frozen_blocks`).
        blocks: Every block module, in forward order.
        stem: The stem groups' modules (embeddings, ELECTRA's projection...).
        input_kwarg: The model keyword that carries the cached states through its forward
            (`inputs_embeds` for text, `pixel_values` for images).
        text: Whether inputs are token sequences with an attention mask.
    """

    frozen_blocks: int
    blocks: list[nn.Module]
    stem: list[nn.Module]
    input_kwarg: str
    text: bool


def plan_prefix(model: nn.Module, groups: list, first_trainable: int) -> PrefixPlan:
    """The cut for `first_trainable`; raises ValueError when it cannot be cached."""
    reason = prefix_cache_blocker(model, groups, first_trainable)
    if reason is not None:
        raise ValueError(f"The frozen prefix cannot be cached: {reason}.")
    blocks = [m for g in groups if g.kind == "block" for m in g.modules]
    frozen = sum(1 for g in groups[:first_trainable] if g.kind == "block")
    stem = [m for g in groups if g.kind == "stem" for m in g.modules]
    text = getattr(model, "main_input_name", "input_ids") == "input_ids"
    return PrefixPlan(frozen, blocks, stem, "inputs_embeds" if text else "pixel_values", text)


def _first_tensor(args, kwargs) -> torch.Tensor:
    if args:
        return args[0]
    return kwargs.get("hidden_states", next(v for v in kwargs.values() if torch.is_tensor(v)))


@torch.no_grad()
def encode_prefix(model: nn.Module, plan: PrefixPlan, inputs: dict) -> torch.Tensor:
    """Hidden states entering block `plan.frozen_blocks` for one batch (the model in eval mode)."""
    captured: list[torch.Tensor] = []
    if plan.frozen_blocks < len(plan.blocks):

        def pre_hook(module, args, kwargs):
            captured.append(_first_tensor(args, kwargs))
            raise _StopForward

        handle = plan.blocks[plan.frozen_blocks].register_forward_pre_hook(pre_hook, with_kwargs=True)
    else:  # every block frozen: the cut is after the last one

        def hook(module, args, output):
            captured.append(output[0] if isinstance(output, tuple) else output)
            raise _StopForward

        handle = plan.blocks[-1].register_forward_hook(hook)
    try:
        model(**inputs)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if not captured:
        raise RuntimeError("The model's forward pass never reached the cut.")
    return captured[0]


class CachedPrefixDataset(Dataset):
    """Per-example cached hidden states (real tokens only), attention masks and labels."""

    def __init__(self, hidden: list[torch.Tensor], labels: list, text: bool):
        self.hidden = hidden
        self.labels = labels
        self.text = text

    def __len__(self) -> int:
        return len(self.hidden)

    def __getitem__(self, i: int) -> dict:
        item = {HIDDEN_KEY: self.hidden[i], "labels": self.labels[i]}
        if self.text:
            item["attention_mask"] = torch.ones(self.hidden[i].shape[0], dtype=torch.long)
        return item

    @property
    def nbytes(self) -> int:
        return sum(h.numel() * h.element_size() for h in self.hidden)


def collate_prefix(features: list[dict]) -> dict[str, torch.Tensor]:
    """Right-pad cached hidden states (zeros) and masks (0) to the batch's longest example."""
    longest = max(f[HIDDEN_KEY].shape[0] for f in features)
    hidden = torch.stack(
        [nn.functional.pad(f[HIDDEN_KEY], (0, 0, 0, longest - f[HIDDEN_KEY].shape[0])) for f in features]
    )
    labels = [f["labels"] for f in features]
    if isinstance(labels[0], (list, tuple)) or getattr(labels[0], "ndim", 0) > 0:  # label sets: one row each
        labels_t = torch.as_tensor(np.asarray([np.asarray(x, dtype=np.float32) for x in labels]))
    else:
        labels_t = torch.as_tensor([int(x) for x in labels])
    batch = {HIDDEN_KEY: hidden, "labels": labels_t}
    if "attention_mask" in features[0]:
        batch["attention_mask"] = torch.stack(
            [nn.functional.pad(f["attention_mask"], (0, longest - len(f["attention_mask"]))) for f in features]
        )
    return batch


def build_prefix_cache(
    model: nn.Module,
    plan: PrefixPlan,
    dataset,
    collate_fn: Callable,
    batch_size: int = 32,
    model_inputs: Callable | None = None,
    device=None,
    storage_dtype: torch.dtype = torch.float32,
) -> CachedPrefixDataset:
    """Run the frozen prefix over `dataset` once (eval mode, no grad) and keep its output.

    Args:
        model: The model (frozen below the cut).
        plan: From `plan_prefix`.
        dataset: Preprocessed dataset, as the engine would train on it (with `labels`).
        collate_fn: The task's collator.
        batch_size: Examples per forward pass while caching.
        model_inputs: Batch -> model keyword arguments (default: everything but `labels`).
        device: Where to run (default: the model's device).
        storage_dtype: Dtype of the stored activations (float32 keeps training exact; bfloat16
            halves the memory).
    """
    device = device or next(model.parameters()).device
    pick = model_inputs or (lambda b: {k: v for k, v in b.items() if k != "labels"})
    was_training = model.training
    model.eval()
    hidden: list[torch.Tensor] = []
    labels: list = []
    try:
        # Its own generator: starting a DataLoader iterator draws a seed, and drawing it from the
        # global RNG would shift every dropout mask of the training that follows.
        loader = DataLoader(
            dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn, generator=torch.Generator()
        )
        for batch in loader:
            inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in pick(batch).items()}
            states = encode_prefix(model, plan, inputs).to("cpu", storage_dtype)
            mask = inputs.get("attention_mask") if plan.text else None
            for i in range(states.shape[0]):
                # Keep real tokens only (left or right padding alike); collate_prefix re-pads.
                hidden.append(states[i][mask[i].bool().cpu()].clone() if mask is not None else states[i].clone())
            labels.extend(batch["labels"].tolist())
    finally:
        model.train(was_training)
    return CachedPrefixDataset(hidden, labels, plan.text)


@contextmanager
def _patched_forward(modules: Iterable[nn.Module], forward: Callable):
    """Give each module an instance-level `forward` for the duration; restore what was there."""
    saved = []
    for m in modules:
        saved.append((m, m.__dict__.get("forward")))
        m.forward = forward
    try:
        yield
    finally:
        for m, previous in saved:
            if previous is None:
                del m.forward
            else:
                m.forward = previous


class PrefixCachedModel(nn.Module):
    """The model, trainable on cached prefix activations.

    `forward(prefix_hidden_states=..., attention_mask=..., labels=...)` runs only what lies above
    the cut; any other inputs (raw `input_ids` / `pixel_values`) run the whole model. Parameter
    names gain a `model.` prefix; `get_base_model()` lets `layer_groups` see through it, and
    `save_pretrained` writes the plain transformers model.
    """

    def __init__(self, model: nn.Module, plan: PrefixPlan):
        super().__init__()
        self.model = model
        self.plan = plan

    @property
    def config(self):
        return self.model.config

    def get_base_model(self) -> nn.Module:
        return self.model

    def save_pretrained(self, *args, **kwargs):
        return self.model.save_pretrained(*args, **kwargs)

    def forward(self, prefix_hidden_states: torch.Tensor | None = None, **inputs):
        if prefix_hidden_states is None:
            return self.model(**inputs)
        plan = self.plan
        if not plan.text:
            inputs.pop("attention_mask", None)
        inputs[plan.input_kwarg] = prefix_hidden_states
        with cached_prefix(plan, prefix_hidden_states):
            return self.model(**inputs)


@contextmanager
def cached_prefix(plan: PrefixPlan, prefix_hidden_states: torch.Tensor):
    """While inside, the model's stem returns `prefix_hidden_states` and its frozen blocks pass
    them through, so a forward call given them as `plan.input_kwarg` runs only the blocks above the
    cut (what `PrefixCachedModel.forward` does; also for callers that run the backbone themselves,
    such as a feature extractor)."""

    def from_cache(*args, **kwargs):
        return prefix_hidden_states

    def pass_through(*args, **kwargs):
        return _first_tensor(args, kwargs)

    with _patched_forward(plan.stem, from_cache), _patched_forward(plan.blocks[: plan.frozen_blocks], pass_through):
        yield


def hold_eval_mode(modules: Iterable[nn.Module]) -> None:
    """Keep `modules` in eval mode even when their parent's `train()` is called.

    What the uncached equivalent of prefix caching needs: the frozen part without dropout, while
    the engine switches the model to train mode at every epoch and after each evaluation.
    """

    def train(self, mode: bool = True):
        self.training = False
        for child in self.children():
            child.train(False)
        return self

    for m in modules:
        for sub in m.modules():
            sub.train = types.MethodType(train, sub)
            sub.training = False


@dataclass
class PrefixCache:
    """The frozen prefix, run once (`setup_prefix_cache`).

    Attributes:
        plan: Where the cut is.
        datasets: The cached datasets, one per dataset given (None where None was given).
        seconds: Time spent caching.
    """

    plan: PrefixPlan
    datasets: list[CachedPrefixDataset | None]
    seconds: float

    #: The collator of cached datasets.
    collate = staticmethod(collate_prefix)

    @property
    def nbytes(self) -> int:
        return sum(d.nbytes for d in self.datasets if d is not None)

    @property
    def examples(self) -> int:
        return sum(len(d) for d in self.datasets if d is not None)


def setup_prefix_cache(
    model: nn.Module,
    groups: list,
    task,
    datasets,
    *,
    batch_size: int = 32,
    augmentation: bool = False,
    changes_trainable_set: bool = False,
    device=None,
    storage_dtype: torch.dtype = torch.float32,
    log_name: str = "",
) -> PrefixCache | None:
    """Run the frozen prefix of `model` once over `datasets` when it can be cached; otherwise log
    why not (`prefix_cache_blocker`) and return None.

    Args:
        model: The model with the strategy's freezing applied; moved to `device` when cached.
        groups: `layer_groups(model)`.
        task: The recipe's task (`collate`, `model_inputs`).
        datasets: The preprocessed datasets to cache (None entries stay None), or a function
            returning them, called only when the prefix can be cached.
        batch_size: Examples per forward pass while caching.
        augmentation: Whether the training data is augmented (no cache then).
        changes_trainable_set: The strategy's `changes_trainable_set` (no cache then).
        device: Where to run the prefix (default `models.features.default_device()`).
        storage_dtype: Dtype of the stored activations.
        log_name: Prefix of the log lines (e.g. `contrastive: `).
    """
    first = first_trainable_group(groups)
    reason = (
        "the trainable set changes during training"
        if changes_trainable_set
        else prefix_cache_blocker(model, groups, first, augmentation)
    )
    if reason is not None:
        logger.info("%sfrozen-prefix cache off: %s.", log_name, reason)
        return None
    plan = plan_prefix(model, groups, first)
    if device is None:
        from hf_transfer.models.features import default_device

        device = default_device()
    model.to(device)
    start = time.time()
    todo = datasets() if callable(datasets) else datasets
    cached = [
        None
        if ds is None
        else build_prefix_cache(
            model,
            plan,
            ds,
            task.collate,
            batch_size=batch_size,
            model_inputs=task.model_inputs,
            device=device,
            storage_dtype=storage_dtype,
        )
        for ds in todo
    ]
    out = PrefixCache(plan, cached, time.time() - start)
    logger.info(
        "%sfrozen prefix (stem + %d of %d blocks) cached for %d examples in %.1f s (%.1f MB).",
        log_name,
        plan.frozen_blocks,
        len(plan.blocks),
        out.examples,
        out.seconds,
        out.nbytes / 1e6,
    )
    return out


def prefix_cached_training(
    model: nn.Module,
    groups: list,
    train_dataset,
    eval_dataset,
    task,
    batch_size: int = 32,
    device=None,
    storage_dtype: torch.dtype = torch.float32,
):
    """Everything the engine needs to train `model`'s top on cached prefix activations.

    Args:
        model: The model with the strategy's freezing applied (static trainable set).
        groups: `layer_groups(model)`.
        train_dataset: Preprocessed training split (no augmentation).
        eval_dataset: Preprocessed evaluation split, or None.
        task: The recipe's task (`collate`, `model_inputs`).
        batch_size: Examples per forward pass while caching.
        device: Where to run the prefix (default: Accelerate's device for this process); the
            model is moved there. Every process caches the whole split (Accelerate shards the
            batches afterwards).
        storage_dtype: Dtype of the stored activations.

    Returns:
        `(PrefixCachedModel, cached train dataset, cached eval dataset or None, collate_prefix)`.
    """
    plan_prefix(model, groups, first_trainable_group(groups))  # ValueError when it cannot be cached
    if device is None:
        from accelerate.state import PartialState

        device = PartialState().device  # where the engine will train (it would move the model anyway)
    cache = setup_prefix_cache(
        model,
        groups,
        task,
        [train_dataset, eval_dataset],
        batch_size=batch_size,
        device=device,
        storage_dtype=storage_dtype,
    )
    train_cached, eval_cached = cache.datasets
    return PrefixCachedModel(model, cache.plan), train_cached, eval_cached, collate_prefix
