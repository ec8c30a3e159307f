"""`ia3`: (IA)^3, learned rescaling of keys, values and feed-forward activations (PEFT).

IA3 multiplies the key and value projections' outputs and the input of each block's second
feed-forward layer by learned vectors that start at one (Liu et al. 2022). It trains far fewer
parameters than LoRA (a few thousand per block) and usually wants a larger learning rate
(around 1e-3 to 3e-3). The new head trains in full. The scalings merge exactly into the weights.
"""

from __future__ import annotations

from dataclasses import dataclass

from hf_transfer.strategies._peft import PeftStrategy, PeftStrategyConfig, block_linear_roles
from hf_transfer.strategies.base import register_strategy


@dataclass
class IA3Settings(PeftStrategyConfig):
    """Settings of `ia3`.

    Attributes:
        name: `ia3`.
        target_modules: Modules whose activations are rescaled (full names or suffixes). Empty:
            each block's key and value projections and its second feed-forward layer.
        feedforward_modules: Which of `target_modules` are feed-forward layers: their *input* is
            rescaled instead of their output. Empty with `target_modules` set: none; empty with
            the default targets: the second feed-forward layer of each block.
        merge: What `export` ships: the merged model (true) or the adapter alone (false). The run
            folder always holds both (merged weights at the root, the adapter under `adapter/`).
    """

    name: str = "ia3"
    feedforward_modules: list[str] | None = None


@register_strategy("ia3", IA3Settings)
class IA3(PeftStrategy):
    """IA3 scalings (PEFT `IA3Config`) plus the new head."""

    default_roles = ("key", "value", "ffn_out")

    def peft_config(self, model, groups, target_modules, modules_to_save):
        from peft import IA3Config

        c = self.config
        if c.feedforward_modules is not None and c.target_modules:
            feedforward = list(c.feedforward_modules)
        elif c.feedforward_modules is not None:
            # Default targets are full names: pick those the given names or suffixes match.
            given = list(c.feedforward_modules)
            feedforward = [t for t in target_modules if any(t == f or t.endswith("." + f) for f in given)]
        elif c.target_modules:
            feedforward = []
        else:
            roles = dict(block_linear_roles(model, groups))
            feedforward = [n for n in target_modules if roles.get(n) == "ffn_out"]
        return IA3Config(
            target_modules=target_modules,
            feedforward_modules=feedforward,
            modules_to_save=modules_to_save or None,
        )
