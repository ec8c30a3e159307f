"""What the PEFT strategies (`lora`, `ia3`, `adapter`) share: where the adapters go, keeping the
new head trainable and saved, and a run folder that loads with plain transformers.

PEFT does the adapters; this module only decides *where* they go and *what else trains*:

* **Targets.** Each block's linear layers are sorted into roles (query, key, value, attention
  output, feed-forward in / out) from their names relative to the block, by a table per
  `config.model_type`; unknown architectures are sorted by name (`attn`/`attention` in the path,
  `q`/`k`/`v` leaves, `fc1`/`fc2`...). A strategy asks for roles (LoRA: query and value) and gets
  the full module names, so an adapter never lands in the head or outside the blocks. When no
  linear layer of the wanted roles exists, every linear layer inside an attention module is used.
  `strategy.target_modules` overrides all of this with PEFT's own matching (exact names, name
  suffixes such as `query`, or a regex).
* **The head.** PEFT's `modules_to_save` only defaults to heads named `classifier` or `score`; a
  swapped head under another name (`pre_classifier`, `projector`, `pooler`, RoBERTa's
  `classifier.dense` + `out_proj` under `classifier`) would stay frozen at its random init and be
  left out of the saved adapter. Here the head's module names come from the model's head layer
  group (every module outside `base_model_prefix` that holds parameters), whatever they are called.
* **Saving.** The run folder root holds the merged weights (adapter folded into the base weights,
  the trained head in place), so `from_pretrained(run_dir)` with plain transformers predicts like
  the trained model; `adapter/` holds the adapter in PEFT format for
  `PeftModel.from_pretrained(base_with_same_head, run_dir / "adapter")`.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from hf_transfer.errors import ConfigError, ModelError
from hf_transfer.models.anatomy import unwrap_model
from hf_transfer.strategies.base import Strategy, StrategyConfig

logger = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"
#: Written beside the PEFT files: what `export` needs to know about the adapter.
ADAPTER_INFO = "hf_transfer_adapter.json"

ROLES = ("query", "key", "value", "attention_out", "ffn_in", "ffn_out")

_BERT = {
    "attention.self.query": "query",
    "attention.self.key": "key",
    "attention.self.value": "value",
    "attention.output.dense": "attention_out",
    "intermediate.dense": "ffn_in",
    "output.dense": "ffn_out",
}
_DEBERTA = {
    "attention.self.query_proj": "query",
    "attention.self.key_proj": "key",
    "attention.self.value_proj": "value",
    "attention.output.dense": "attention_out",
    "intermediate.dense": "ffn_in",
    "output.dense": "ffn_out",
}
# transformers 5 ViT/DeiT blocks; transformers 4 used the BERT names under attention.attention.
_VIT = {
    "attention.q_proj": "query",
    "attention.k_proj": "key",
    "attention.v_proj": "value",
    "attention.o_proj": "attention_out",
    "mlp.fc1": "ffn_in",
    "mlp.fc2": "ffn_out",
    "attention.attention.query": "query",
    "attention.attention.key": "key",
    "attention.attention.value": "value",
    "attention.output.dense": "attention_out",
    "intermediate.dense": "ffn_in",
    "output.dense": "ffn_out",
}
_DISTILBERT = {
    "attention.q_lin": "query",
    "attention.k_lin": "key",
    "attention.v_lin": "value",
    "attention.out_lin": "attention_out",
    "ffn.lin1": "ffn_in",
    "ffn.lin2": "ffn_out",
}
# Whisper decoder blocks also hold encoder_attn.*: cross-attention is left out of the defaults.
_WHISPER = {
    "self_attn.q_proj": "query",
    "self_attn.k_proj": "key",
    "self_attn.v_proj": "value",
    "self_attn.out_proj": "attention_out",
    "fc1": "ffn_in",
    "fc2": "ffn_out",
}
_WAV2VEC2 = {
    "attention.q_proj": "query",
    "attention.k_proj": "key",
    "attention.v_proj": "value",
    "attention.out_proj": "attention_out",
    "feed_forward.intermediate_dense": "ffn_in",
    "feed_forward.output_dense": "ffn_out",
}

#: config.model_type -> {linear layer path relative to its block: role}.
ROLE_TABLES: dict[str, dict[str, str]] = {
    "bert": _BERT,  # MiniLM checkpoints too
    "roberta": _BERT,
    "xlm-roberta": _BERT,
    "camembert": _BERT,
    "electra": _BERT,
    "deberta-v2": _DEBERTA,
    "distilbert": _DISTILBERT,
    "vit": _VIT,
    "deit": _VIT,
    "whisper": _WHISPER,
    "wav2vec2": _WAV2VEC2,
    "hubert": _WAV2VEC2,
    "wavlm": _WAV2VEC2,
}

_LEAF_ROLES = {
    "query": ("q", "query", "q_proj", "q_lin", "query_proj"),
    "key": ("k", "key", "k_proj", "k_lin", "key_proj"),
    "value": ("v", "value", "v_proj", "v_lin", "value_proj"),
}
_FFN_IN = ("fc1", "lin1", "wi", "up_proj", "intermediate_dense")
_FFN_OUT = ("fc2", "lin2", "wo", "down_proj", "output_dense")


def _guess_role(rel: str) -> str | None:
    """Role of a block-relative linear layer path for architectures without a table."""
    path = rel.lower()
    leaf = path.rsplit(".", 1)[-1]
    if "attn" in path or "attention" in path:
        if "cross" in path or "encoder_attn" in path:
            return "cross_attention"
        for role, leaves in _LEAF_ROLES.items():
            if leaf in leaves:
                return role
        return "attention_out"
    if leaf in _FFN_IN or path == "intermediate.dense":
        return "ffn_in"
    if leaf in _FFN_OUT or path == "output.dense":
        return "ffn_out"
    return None


_unwrap = unwrap_model  # the one unwrap (models.anatomy)


def block_linear_roles(model: nn.Module, groups: list) -> list[tuple[str, str | None]]:
    """Every linear layer inside a block, as `(full module name, role)`, in model order."""
    base = _unwrap(model)
    model_type = getattr(getattr(base, "config", None), "model_type", None)
    table = ROLE_TABLES.get(model_type)
    full_names = {id(m): n for n, m in model.named_modules()}
    out = []
    for group in groups:
        if group.kind != "block":
            continue
        for block in group.modules:
            for rel, module in block.named_modules():
                if not isinstance(module, nn.Linear) or id(module) not in full_names:
                    continue
                role = table.get(rel) if table is not None else None
                if role is None:
                    role = _guess_role(rel)
                out.append((full_names[id(module)], role))
    return out


def default_target_modules(model: nn.Module, groups: list, roles: tuple[str, ...]) -> list[str]:
    """Full names of the block linear layers with one of `roles` (see the module docstring).

    Raises:
        ModelError: No linear layer of those roles, nor any attention linear layer, exists.
    """
    found = block_linear_roles(model, groups)
    names = [n for n, role in found if role in roles]
    if not names:
        names = [n for n, role in found if role in ("query", "key", "value", "attention_out")]
        if names:
            logger.info(
                "No %s layers found by name; adapting every attention linear layer (%d).", "/".join(roles), len(names)
            )
    if not names:
        model_type = getattr(getattr(_unwrap(model), "config", None), "model_type", None)
        raise ModelError(
            f"Found no linear layers to adapt in the blocks of this {model_type!r} model for roles "
            f"{', '.join(roles)}. Set strategy.target_modules to the module names to adapt "
            "(`hf-transfer layers MODEL` shows the blocks; names like [query, value] match suffixes)."
        )
    return names


def top_linear_modules(model: nn.Module, groups: list) -> list[str]:
    """Full names of the linear layers in the groups between the last block and the head (`top`:
    BERT's pooler, ...): the head reads their output."""
    full_names = {id(m): n for n, m in model.named_modules()}
    return [
        full_names[id(module)]
        for group in groups
        if group.kind == "top"
        for top in group.modules
        for module in top.modules()
        if isinstance(module, nn.Linear) and id(module) in full_names
    ]


def head_module_names(model: nn.Module, groups: list) -> tuple[list[str], list[str]]:
    """The new head's top-level module names, and head parameters that hang off no module.

    The head is the model's head layer group: every parameter outside the backbone
    (`base_model_prefix`), so `classifier`, `score`, `pre_classifier`, `projector`, DeBERTa's
    `pooler`... whatever the architecture calls them.
    """
    base = _unwrap(model)
    modules: list[str] = []
    loose: list[str] = []
    for group in groups:
        if group.kind != "head":
            continue
        for pname in group.param_names:
            first = pname.split(".")[0]
            if "." in pname and isinstance(getattr(base, first, None), nn.Module):
                if first not in modules:
                    modules.append(first)
            else:
                loose.append(pname)
    return modules, loose


def _check_head_names(model: nn.Module, heads: list[str]) -> None:
    # PEFT matches modules_to_save by plain `name.endswith(key)`: a backbone module whose name
    # ends with a head name (e.g. `bert.pooler` for a head called `pooler`) would be wrapped too.
    for name, _ in model.named_modules():
        top = name.split(".")[0]
        if top in heads or not name:
            continue
        for head in heads:
            if name.endswith(head):
                raise ModelError(
                    f"The head module '{head}' shares its name with the backbone module '{name}', so "
                    "PEFT's modules_to_save would train and save both. This architecture needs its "
                    "head renamed before a PEFT strategy can run on it."
                )


@dataclass
class PeftStrategyConfig(StrategyConfig):
    """Settings every PEFT strategy has.

    Attributes:
        target_modules: Modules to adapt, matched the PEFT way: a full module name, or a name
            suffix such as `query` that matches every module ending in `.query`. Empty: chosen per
            architecture (see each strategy).
        merge: What `export` ships: the merged model (true) or the adapter alone (false). The run
            folder always holds both: merged weights at its root (plain transformers loads it,
            and `hf-transfer evaluate` / `predict` use it) and the adapter under `adapter/`.
    """

    target_modules: list[str] | None = None
    merge: bool = True


class PeftStrategy(Strategy):
    """Wrap the model with a PEFT adapter; the head trains in full (`modules_to_save`)."""

    #: Which block linear layers the adapter goes on by default.
    default_roles: ClassVar[tuple[str, ...]] = ("query", "value")
    #: Also adapt the linear layers of the `top` groups (a pooler the head reads) by default.
    adapt_top: ClassVar[bool] = False

    def __init__(self, config: PeftStrategyConfig):
        super().__init__(config)
        self.target_modules: list[str] = []
        self.modules_to_save: list[str] = []

    def peft_config(self, model: nn.Module, groups: list, target_modules: list[str], modules_to_save: list[str]):
        """The PEFT config object for this method."""
        raise NotImplementedError

    def resolve_targets(self, model: nn.Module, groups: list) -> list[str]:
        if self.config.target_modules:
            return list(self.config.target_modules)
        names = default_target_modules(model, groups, self.default_roles)
        if self.adapt_top:
            names += [n for n in top_linear_modules(model, groups) if n not in names]
        return names

    def apply(self, model: nn.Module, groups: list) -> nn.Module:
        from peft import PeftModel, get_peft_model

        if isinstance(model, PeftModel):
            raise ModelError(f"strategy '{self.name}' got a model that is already a PEFT model.")
        heads, loose = head_module_names(model, groups)
        if not heads:
            logger.warning("This model has no separate head group: only the %s adapter trains.", self.name)
        _check_head_names(model, heads)
        if loose:
            logger.info("Head parameters outside any module stay at their initial values: %s", ", ".join(loose))
        targets = self.resolve_targets(model, groups)
        self.target_modules, self.modules_to_save = targets, heads
        config = self.peft_config(model, groups, targets, heads)
        try:
            wrapped = get_peft_model(model, config)
        except ValueError as e:
            raise ConfigError(f"strategy '{self.name}': PEFT cannot apply {sorted(targets)[:6]}...: {e}") from None
        logger.info(
            "%s on %d modules (%s); trained in full: %s",
            self.name,
            len(targets),
            ", ".join(sorted({t.rsplit(".", 1)[-1] for t in targets})),
            ", ".join(heads) or "none",
        )
        return wrapped

    def save_model(self, model: nn.Module, out_dir) -> None:
        """Merged weights at `out_dir` (plain transformers), the PEFT adapter under `adapter/`."""
        out_dir = Path(out_dir)
        adapter_dir = out_dir / ADAPTER_DIR
        model.save_pretrained(adapter_dir)
        (adapter_dir / ADAPTER_INFO).write_text(
            json.dumps(
                {
                    "method": self.name,
                    "merge": self.config.merge,
                    "modules_to_save": self.modules_to_save,
                    "note": "Load with PeftModel.from_pretrained(base, this_folder), base being the base "
                    "checkpoint loaded with the same head class and labels (config.json of the run).",
                },
                indent=2,
            )
        )
        merged_model(model).save_pretrained(out_dir)

    def describe(self, model: nn.Module) -> dict[str, Any]:
        info = super().describe(model)
        info.update(
            {
                "peft_method": self.name,
                "adapted_modules": len(self.target_modules),
                "adapted_layer_names": sorted({t.rsplit(".", 1)[-1] for t in self.target_modules}),
                "modules_to_save": list(self.modules_to_save),
                "merge": self.config.merge,
            }
        )
        return info


def merged_model(model: nn.Module) -> nn.Module:
    """A transformers model with the adapter folded into the weights and the trained head in place.

    Works on a copy, so `model` keeps training or evaluating as an adapter model.
    """
    if not callable(getattr(model, "merge_and_unload", None)):
        return model
    from peft.utils import ModulesToSaveWrapper

    model = copy.deepcopy(model)
    base = model.get_base_model()
    # Put the trained head copies in place first. PEFT's IA3 unload assumes every wrapped module
    # is a Linear (it copies `.weight` across) and fails on a composite head such as RoBERTa's
    # `classifier` (dense + out_proj); unwrapping here works for every method and head.
    for name, module in list(base.named_modules()):
        if isinstance(module, ModulesToSaveWrapper):
            parent, _, child = name.rpartition(".")
            trained = module.unload_and_optionally_merge_module(merge=False, safe_merge=False, adapter_names=None)
            setattr(base.get_submodule(parent) if parent else base, child, trained)
    return model.merge_and_unload()
