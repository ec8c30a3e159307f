"""`lora`: low-rank adapters on every linear layer of the blocks (PEFT), the new head trained in full.

LoRA adds `B @ A` (rank `r`, scaled by `alpha / r`) beside each adapted weight; `B` starts at
zero, so training starts from the pretrained function. Only the adapters and the head train, a
few percent of the parameters, which is what makes LoRA cheap to train and to store per task.

By default the adapters go on every linear layer of every block (query, key, value, attention
output, feed-forward in and out; found per architecture, see `hf_transfer.strategies._peft`) and
on the linear layers between the last block and the head (BERT's pooler, which the head reads).
LoRA on the query and value projections alone (Hu et al. 2021) stays well below full fine-tuning
with small data; adapters on every linear layer close that gap (Dettmers et al. 2023, QLoRA),
which is why they are the default (the comparison on real tweets: docs/benchmarks/budgets.md).
`strategy.target_modules: [query, value]` gives the original placement.
"""

from __future__ import annotations

from dataclasses import dataclass

from hf_transfer.errors import ConfigError
from hf_transfer.strategies._peft import ROLES, PeftStrategy, PeftStrategyConfig
from hf_transfer.strategies.base import register_strategy


@dataclass
class LoraSettings(PeftStrategyConfig):
    """Settings of `lora`.

    Attributes:
        name: `lora`.
        r: Rank of the update (the adapter's bottleneck width).
        alpha: Scale numerator: the update is multiplied by `alpha / r`.
        dropout: Dropout on the adapter's input during training.
        target_modules: Modules to adapt (a full module name, or a suffix such as `query` that
            matches every `*.query`). Empty: every linear layer of every block (attention
            projections and feed-forward layers, by the per-architecture tables; for other
            architectures the layers named so, else every attention linear layer) and the linear
            layers of the groups between the blocks and the head (a pooler).
        merge: What `export` ships: the merged model (true) or the adapter alone (false). The run
            folder always holds both (merged weights at the root, the adapter under `adapter/`).
    """

    name: str = "lora"
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ConfigError(f"strategy.r must be at least 1, got {self.r}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"strategy.dropout must be in [0, 1), got {self.dropout}.")


@register_strategy("lora", LoraSettings)
class Lora(PeftStrategy):
    """LoRA adapters (PEFT `LoraConfig`) plus the new head."""

    default_roles = ROLES
    adapt_top = True

    def peft_config(self, model, groups, target_modules, modules_to_save):
        from peft import LoraConfig

        c = self.config
        return LoraConfig(
            r=c.r,
            lora_alpha=c.alpha,
            lora_dropout=c.dropout,
            target_modules=target_modules,
            modules_to_save=modules_to_save or None,
            bias="none",
            # PEFT's token-classification wrapper: the saved adapter says what it is for
            # (AutoPeftModelForTokenClassification reloads it).
            task_type="TOKEN_CLS" if type(model).__name__.endswith("ForTokenClassification") else None,
        )
