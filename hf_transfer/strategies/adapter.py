"""`adapter`: small bottleneck modules beside each block's feed-forward layers (PEFT LoRA).

Bottleneck adapters (Houlsby et al. 2019) insert a down-projection to a small width, a
nonlinearity and an up-projection into every block. PEFT 0.21 has no such adapter: its methods
either re-parametrise weights (LoRA and its variants, OFT, ...), rescale activations (IA3) or
add prompts; PEANuT's small network acts on the *weights*, not the activations, and ShadowPEFT
targets decoder-only language models. So `adapter` uses PEFT's LoRA layer placed where adapters
work best, as a *parallel adapter* on the feed-forward sublayer (He et al. 2022, "Towards a
Unified View of Parameter-Efficient Transfer Learning"): a down-projection `A` to `r` and a
zero-initialised up-projection `B` beside each feed-forward linear layer. He et al. show this
linear bottleneck performs like the nonlinear one at the same place and width; being linear it
merges into the weights, so the run folder stays a plain transformers model, and it keeps
PEFT's save, load and resume support. The new head trains in full.
"""

from __future__ import annotations

from dataclasses import dataclass

from hf_transfer.strategies.base import register_strategy
from hf_transfer.strategies.lora import Lora, LoraSettings


@dataclass
class AdapterSettings(LoraSettings):
    """Settings of `adapter`.

    Attributes:
        name: `adapter`.
        r: Bottleneck width of each adapter.
        alpha: Scale numerator: the adapter's output is multiplied by `alpha / r`.
        dropout: Dropout on the adapter's input during training.
        target_modules: Modules to put adapters beside (full names or suffixes). Empty: both
            feed-forward linear layers of every block (BERT `intermediate.dense`/`output.dense`,
            ViT `mlp.fc1`/`mlp.fc2`, Whisper `fc1`/`fc2`, wav2vec2 `feed_forward.*_dense`).
        merge: What `export` ships: the merged model (true) or the adapter alone (false). The run
            folder always holds both (merged weights at the root, the adapter under `adapter/`).
    """

    name: str = "adapter"
    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.1


@register_strategy("adapter", AdapterSettings)
class Adapter(Lora):
    """Parallel bottleneck adapters on the feed-forward sublayer (PEFT `LoraConfig`)."""

    default_roles = ("ffn_in", "ffn_out")
