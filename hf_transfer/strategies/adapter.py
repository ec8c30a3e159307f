"""`lora_ffn` (also spelled `adapter`): LoRA beside each block's feed-forward layers (PEFT).

A linear *parallel adapter* on the feed-forward sublayer, named for what it is: PEFT's LoRA layer,
so it merges into the weights (the run folder stays a plain transformers model) and keeps PEFT's
save, load and resume. Not a nonlinear bottleneck adapter; why that is fine and where the idea
comes from: docs/strategies.md. `adapter` stays accepted so existing configs keep working.
"""

from __future__ import annotations

from dataclasses import dataclass

from hf_transfer.strategies.base import register_strategy
from hf_transfer.strategies.lora import Lora, LoraSettings


@dataclass
class LoraFfnSettings(LoraSettings):
    """Settings of `lora_ffn` / `adapter`: those of `lora`, with adapters on the feed-forward
    layers by default (`target_modules` empty: BERT `intermediate.dense`/`output.dense`, ViT
    `mlp.fc1`/`mlp.fc2`, Whisper `fc1`/`fc2`, wav2vec2 `feed_forward.*_dense`), a wider bottleneck
    (`r` 16, `alpha` 32)."""

    name: str = "lora_ffn"
    r: int = 16
    alpha: float = 32.0


@register_strategy("lora_ffn", LoraFfnSettings)
class LoraFfn(Lora):
    """LoRA on the feed-forward layers, a linear parallel adapter (PEFT `LoraConfig`)."""

    default_roles = ("ffn_in", "ffn_out")
    default_learning_rate = 1e-3  # what `adapter` has always had (engine.budget)


@dataclass
class AdapterSettings(LoraFfnSettings):
    """Settings of `adapter`, the alias of `lora_ffn`."""

    name: str = "adapter"


@register_strategy("adapter", AdapterSettings)
class Adapter(LoraFfn):
    """LoRA on the feed-forward layers, a linear parallel adapter (alias of `lora_ffn`; PEFT `LoraConfig`)."""
