"""Where things are in a transformers model: unwrapping, the head, the backbone, its depth, and the
input of the head (captured with forward pre-hooks). One place for every strategy and feature reader."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hf_transfer.errors import ModelError


def unwrap_model(model: nn.Module) -> nn.Module:
    """The transformers model inside Accelerate (DDP, compile) and PEFT / prefix-cache wrappers."""
    from accelerate.utils import extract_model_from_parallel

    base = extract_model_from_parallel(model)
    for _ in range(8):  # wrappers can nest; stop when get_base_model() returns the same object
        getter = getattr(base, "get_base_model", None)
        inner = getter() if callable(getter) else None
        if not isinstance(inner, nn.Module) or inner is base:
            break
        base = inner
    return base


def find_head(model: nn.Module) -> list[str]:
    """Top-level module names of the task head (the layer groups' `head` group), in model order."""
    from hf_transfer.models.layer_groups import layer_groups

    base = unwrap_model(model)
    try:
        head_params = {n for g in layer_groups(base) if g.kind == "head" for n in g.param_names}
    except ModelError:
        return []
    return [
        name for name, m in base.named_children() if any(f"{name}.{p}" in head_params for p, _ in m.named_parameters())
    ]


def backbone_of(model: nn.Module) -> nn.Module:
    """The module whose forward gives the hidden states: the encoder of an encoder-decoder
    (Whisper), else transformers' `base_model` (the model itself when it is bare)."""
    base = unwrap_model(model)
    if getattr(getattr(base, "config", None), "is_encoder_decoder", False) and callable(
        getattr(base, "get_encoder", None)
    ):
        return base.get_encoder()
    return getattr(base, "base_model", base)


def count_layers(model: nn.Module) -> int | None:
    """Number of blocks (hidden layers after the embeddings), or None when not found."""
    from hf_transfer.models.layer_groups import layer_groups

    base = unwrap_model(model)
    config = getattr(base, "config", None)
    if getattr(config, "is_encoder_decoder", False) and getattr(config, "encoder_layers", None):
        return int(config.encoder_layers)
    try:
        return sum(1 for g in layer_groups(base) if g.kind == "block") or None
    except ModelError:
        return None


@dataclass
class HeadInput:
    """Where head-input features come from: the input of the first head module called.

    Attributes:
        candidates: Head modules whose input may be the features.
        linear: The head's only parametrised module when it is one `nn.Linear`, else None.
        pooling: How a sequence there becomes a vector: `auto` (first token for text, as those
            heads do, the mean otherwise), `first_token` or `mean`.
        text: Whether the inputs are text.
    """

    candidates: list[str]
    linear: str | None
    pooling: str = "auto"
    text: bool = True

    def pool(self, x: torch.Tensor) -> tuple[torch.Tensor, str]:
        """One vector per example, and the pooling applied (`none`, `first_token`, `mean`, `spatial_mean`)."""
        if x.ndim == 2:
            return x, "none"
        if x.ndim == 3:
            mode = self.pooling if self.pooling in ("first_token", "mean") else ("first_token" if self.text else "mean")
            return (x[:, 0], mode) if mode == "first_token" else (x.mean(1), mode)
        return x.flatten(2).mean(-1), "spatial_mean"


def locate_head_input(model: nn.Module, pooling: str = "auto", text: bool = True) -> HeadInput:
    """The module(s) whose input is the head's feature vector.

    Raises:
        ModelError: The model has no head.
    """
    heads = find_head(model)
    if not heads:
        raise ModelError(
            "Head-input features need a task head to read them from, and this model has none (a bare "
            "backbone or an output layer tied to the embeddings)."
        )
    base = unwrap_model(model)
    linears = [
        n
        for h in heads
        for n, m in base.get_submodule(h).named_modules()
        if any(True for _ in m.parameters(recurse=False))
    ]
    if len(heads) == 1 and linears == [""] and isinstance(base.get_submodule(heads[0]), nn.Linear):
        return HeadInput([heads[0]], heads[0], pooling, text)
    return HeadInput(heads, None, pooling, text)


class HeadInputCapture:
    """Context manager: forward pre-hooks that keep the input of the first head module called."""

    def __init__(self, model: nn.Module, spec: HeadInput, detach: bool = True):
        self.model = unwrap_model(model)
        self.spec = spec
        self.detach = detach
        self.value: torch.Tensor | None = None
        self.module_name: str | None = None
        self._handles: list = []

    def __enter__(self) -> HeadInputCapture:
        for name in self.spec.candidates:
            module = self.model.get_submodule(name)
            self._handles.append(module.register_forward_pre_hook(self._hook(name), with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, name: str):
        def hook(module, args, kwargs):
            if self.value is None:
                x = args[0] if args else next(v for v in kwargs.values() if torch.is_tensor(v))
                self.value, self.module_name = (x.detach() if self.detach else x), name

        return hook

    def reset(self) -> None:
        self.value = None

    def features(self) -> tuple[torch.Tensor, str]:
        """The pooled float32 features of the last forward pass, and the pooling applied."""
        if self.value is None:
            raise ModelError(
                f"The model's forward pass never called its head ({', '.join(self.spec.candidates)}), "
                "so there are no features to read."
            )
        x, mode = self.spec.pool(self.value)
        return x.float(), mode
