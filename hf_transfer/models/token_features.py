"""Frozen per-token features of a token-classification model: what its head's linear layer reads.

A `*ForTokenClassification` model maps every token's final hidden state (after a dropout that is
the identity in evaluation) through one linear layer. The features here are captured at that
layer's input, so a linear classifier fitted on them can be written into the layer and the run
folder stays a plain transformers model. Only the scored positions are kept: those whose label
(the `labels` or `word_labels` column of the aligned data) is not -100.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from torch import nn

from hf_transfer.errors import ModelError

logger = logging.getLogger(__name__)


def token_head_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    """The head's linear layer (name, module): the last `nn.Linear` among the head modules whose
    output size is the number of labels."""
    from hf_transfer.models.anatomy import find_head, unwrap_model

    model = unwrap_model(model)
    num_labels = getattr(model.config, "num_labels", None)
    found = None
    for head in find_head(model):
        module = model.get_submodule(head)
        for name, sub in module.named_modules():
            if isinstance(sub, nn.Linear) and sub.out_features == num_labels:
                found = (f"{head}.{name}".rstrip("."), sub)
    if found is None:
        raise ModelError(f"{type(model).__name__} has no linear head with {num_labels} outputs to read features at.")
    return found


@torch.no_grad()
def token_features(
    model: nn.Module, task, ds, *, batch_size: int = 32, label_key: str = "word_labels", device=None
) -> tuple[np.ndarray, np.ndarray]:
    """`(X, y)`: the head input of every scored token of split `ds` (tokens x hidden) and its tag id.

    Args:
        model: A token-classification model (put in eval mode for the pass).
        task: Preprocessing (`preprocess`, `collate`, `model_inputs`).
        ds: Label-encoded sentences (`tokens`, `tags`).
        label_key: `word_labels` (first subword of each word) or `labels` (the training alignment).
    """
    from torch.utils.data import DataLoader

    _, linear = token_head_linear(model)
    if device is None:
        from hf_transfer.models.features import default_device

        device = default_device()
    was_training = model.training
    model.eval().to(device)
    data = task.preprocess(ds, train=False)
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=task.collate)
    captured: list[torch.Tensor] = []
    hook = linear.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
    xs, ys = [], []
    t0 = time.time()
    try:
        for batch in loader:
            inputs = {k: v.to(device) for k, v in task.model_inputs(batch).items()}
            model(**inputs)
            h = captured.pop()
            labels = batch[label_key].to(device)
            keep = labels != -100
            xs.append(h[keep].float().cpu())
            ys.append(labels[keep].cpu())
    finally:
        hook.remove()
        model.train(was_training)
    X = torch.cat(xs).numpy() if xs else np.zeros((0, linear.in_features), dtype=np.float32)
    y = torch.cat(ys).numpy().astype(np.int64) if ys else np.zeros(0, dtype=np.int64)
    logger.info("Token features: %d tokens x %d in %.1f s.", X.shape[0], X.shape[1], time.time() - t0)
    return X, y
