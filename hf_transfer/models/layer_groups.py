"""Split a model into ordered layer groups: stem, blocks, top, head.

Every transfer strategy (freeze the backbone, gradual unfreezing, layer-wise learning-rate decay,
...) is a small operation on a list of groups ordered from the input side to the output side. This
module builds that list once, so strategies never need to know how a given architecture names its
modules.

How the split is made:

1. **Unwrap.** A PEFT model (anything with ``get_base_model()``) is unwrapped to the transformers
   model for the structure, but parameter names are reported as they appear in the *wrapped*
   model's ``named_parameters()``. Parameters are matched by identity, so LoRA matrices land in the
   group of the module they adapt and ``modules_to_save`` copies land in the head.
2. **Backbone.** The backbone is ``getattr(model, model.base_model_prefix)``. Every parameter
   outside it is the head. A bare backbone (``BertModel``, ``WhisperModel``...) has no head.
   ``WhisperForAudioClassification`` is the odd one: it has a head but no attribute named after its
   prefix, so for a model whose class name holds ``"For"`` (transformers' ``<Arch>For<Task>``
   convention) and lacks that attribute, the backbone is the top-level children that contain a
   block list, and everything else is the head.
3. **Blocks.** ``_RULES`` maps ``config.model_type`` to the paths (relative to the backbone) of the
   ``nn.ModuleList``s of repeated blocks, in forward order. Each path is one *tower* (Whisper has
   an encoder tower then a decoder tower). Paths that do not exist on a given model are skipped, so
   one rule covers every head class and survives renames between transformers versions (ViT's
   ``encoder.layer`` became ``layers`` in transformers 5). Unknown architectures, or rules whose
   paths all miss, fall back to the largest ``nn.ModuleList`` of same-type modules in the backbone.
4. **Stem and top.** The remaining backbone parameters go before (stem) or after (top) their
   tower's blocks according to registration order, which matches forward order for every
   supported architecture except where ``_RULES`` overrides it (wav2vec2 / HuBERT
   ``encoder.layer_norm``).

Tied weights: ``named_parameters()`` yields a tied parameter once, under its first name, and each
parameter here belongs to exactly one group. For ``WhisperForConditionalGeneration`` the output
projection ``proj_out.weight`` is tied to ``model.decoder.embed_tokens.weight``, so it is reported
in the decoder stem group and there is **no head group** (training the decoder stem trains the
output projection too). With ``tie_word_embeddings=False`` ``proj_out`` is its own head group.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from hf_transfer.errors import ModelError
from hf_transfer.models.anatomy import unwrap_model

logger = logging.getLogger(__name__)

__all__ = [
    "KINDS",
    "LayerGroup",
    "SUPPORTED_MODEL_TYPES",
    "block_groups",
    "format_layer_groups",
    "layer_groups",
    "split_groups",
]

KINDS = ("stem", "block", "top", "head")


@dataclass
class LayerGroup:
    """A contiguous slice of a model, the unit that strategies freeze, unfreeze and scale.

    Attributes:
        name: Module path relative to the backbone, e.g. ``"embeddings"``, ``"encoder.layer.0"``,
            ``"pooler"``; ``"stem"`` / ``"top"`` (or ``"<tower>.stem"`` / ``"<tower>.top"``) when the
            group spans several modules; ``"head"`` for the task head.
        kind: One of ``"stem"``, ``"block"``, ``"top"``, ``"head"``.
        modules: Submodules whose parameters make up the group. Loose parameters registered directly
            on a parent module (wav2vec2's ``masked_spec_embed``, ``layer_weights``) have no module
            of their own and appear only in ``param_names``.
        param_names: Fully-qualified names as in ``model.named_parameters()`` of the model passed to
            :func:`layer_groups` (the wrapped model for PEFT).
    """

    name: str
    kind: str
    modules: list[nn.Module]
    param_names: list[str]
    # The Parameter objects behind param_names; kept so parameters() needs no model lookup.
    _params: list[nn.Parameter] = field(default_factory=list, repr=False, compare=False)

    def parameters(self) -> list[nn.Parameter]:
        """The group's parameters, in ``param_names`` order."""
        return list(self._params)

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of scalar parameters, optionally only those with ``requires_grad``."""
        return sum(p.numel() for p in self._params if p.requires_grad or not trainable_only)

    def requires_grad_(self, requires_grad: bool = True) -> LayerGroup:
        """Freeze or unfreeze every parameter of the group; returns the group."""
        for p in self._params:
            p.requires_grad_(requires_grad)
        return self


@dataclass(frozen=True)
class _Rule:
    """How one architecture splits.

    Attributes:
        block_paths: Candidate paths, relative to the backbone, of block ``ModuleList``s in forward
            order. Missing paths are skipped (not every head class has every tower).
        placement: Optional ``config -> {path: "stem" | "top"}`` for backbone modules whose
            registration order differs from their forward position.
    """

    block_paths: tuple[str, ...]
    placement: Callable[[Any], dict[str, str]] | None = None


def _speech_placement(config: Any) -> dict[str, str]:
    # wav2vec2/HuBERT add the convolutional positional embedding before the blocks. The encoder
    # layer_norm is applied before the blocks in the post-norm encoder (base models) but after them
    # in the "stable layer norm" encoder (large/lv60 models), although both register it first.
    stable = bool(getattr(config, "do_stable_layer_norm", False))
    return {"encoder.pos_conv_embed": "stem", "encoder.layer_norm": "top" if stable else "stem"}


_BERT_LIKE = _Rule(("encoder.layer",))
_SPEECH = _Rule(("encoder.layers",), _speech_placement)

# model_type -> rule. "encoder.layer" for ViT/DeiT is transformers 4.x, "layers" is 5.x.
_RULES: dict[str, _Rule] = {
    "bert": _BERT_LIKE,  # also MiniLM checkpoints, which are model_type "bert"
    "roberta": _BERT_LIKE,
    "electra": _BERT_LIKE,
    "distilbert": _Rule(("transformer.layer",)),
    "vit": _Rule(("encoder.layer", "layers")),
    "deit": _Rule(("encoder.layer", "layers")),
    # WhisperModel / ForConditionalGeneration: encoder + decoder towers; ForAudioClassification:
    # encoder only; a bare WhisperEncoder / WhisperDecoder holds "layers" at its root.
    "whisper": _Rule(("encoder.layers", "decoder.layers", "layers")),
    "efficientnet": _Rule(("encoder.blocks",)),
    # A ResNet/ConvNeXt stage (several residual layers at one resolution) is the usual unit of
    # discriminative fine-tuning for CNNs, so stages are the blocks.
    "resnet": _Rule(("encoder.stages",)),
    "convnext": _Rule(("encoder.stages",)),
    "wav2vec2": _SPEECH,
    "hubert": _SPEECH,
}

SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(sorted(_RULES))


@dataclass
class _Tower:
    """One block list and the stem/top parameters that surround it."""

    path: str  # block list path relative to the backbone
    root: str  # parent of the block list ("" when the list hangs off the backbone itself)
    blocks: nn.Module
    first_index: int = -1  # registration index of the tower's first block parameter
    stem: list[tuple[str, nn.Parameter]] = field(default_factory=list)
    top: list[tuple[str, nn.Parameter]] = field(default_factory=list)
    block_params: dict[str, list[tuple[str, nn.Parameter]]] = field(default_factory=dict)


_unwrap = unwrap_model  # the one unwrap (models.anatomy): PEFT, prefix-cache and Accelerate wrappers


def _is_under(name: str, path: str) -> bool:
    """Whether dotted ``name`` is ``path`` or lies inside it (``""`` contains everything)."""
    return path == "" or name == path or name.startswith(path + ".")


def _strip(name: str, path: str) -> str:
    return name if path == "" else name[len(path) + 1 :]


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def _find_block_lists(backbone: nn.Module, rule: _Rule | None) -> list[str]:
    """Resolve the rule's block paths on ``backbone``, falling back to the largest block list."""
    paths: list[str] = []
    if rule is not None:
        for path in rule.block_paths:
            try:
                module = backbone.get_submodule(path)
            except AttributeError:
                continue  # this head class / transformers version lacks this tower
            if not isinstance(module, (nn.ModuleList, nn.Sequential)) or len(module) == 0:
                continue
            # A path nested inside an already-resolved list would double-count its parameters.
            if any(_is_under(path, p) or _is_under(p, path) for p in paths):
                continue
            paths.append(path)
        if paths:
            return paths
        logger.debug("Layer-group rule paths %s not found; using the generic search.", rule.block_paths)

    best_path, best_size = None, 0
    for path, module in backbone.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        # Repeated blocks share one class; a list of assorted modules is not a block stack.
        if len({type(child) for child in module}) != 1:
            continue
        size = sum(p.numel() for p in module.parameters())
        # Strictly larger: on a tie the outer list (visited first) wins over a list nested in it.
        if size > best_size:
            best_path, best_size = path, size
    return [best_path] if best_path is not None else []


def _unit(rel: str, tower_root: str | None) -> str:
    """The module path a stem/top parameter is grouped under (the parameter itself when loose)."""
    scope = tower_root if tower_root is not None else ""
    rest = _strip(rel, scope).split(".")
    return _join(scope, rest[0])


def _group_name(units: Sequence[str], suffix: str) -> str:
    if len(units) == 1:
        return units[0]
    common: list[str] = []
    for parts in zip(*(u.split(".") for u in units)):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    return _join(".".join(common), suffix)


def layer_groups(model: nn.Module) -> list[LayerGroup]:
    """Split ``model`` into groups ordered from input to output.

    Order: for each tower (Whisper: encoder then decoder; everything else: one tower) its stem
    group, then one group per block in forward order, then its top group; the head group last.
    Every parameter of ``model.named_parameters()`` is in exactly one group. Groups other than
    blocks are only emitted when they hold parameters; every block is emitted so that block ``i``
    is always ``block_groups(groups)[i]``.

    Args:
        model: A transformers model (bare backbone or with a task head), optionally wrapped by
            PEFT, or any ``nn.Module`` that holds an ``nn.ModuleList`` of repeated blocks.

    Returns:
        The ordered list of :class:`LayerGroup`.

    Raises:
        ModelError: The model holds no list of repeated blocks to split on.
    """
    base = _unwrap(model)
    config = getattr(base, "config", None)
    model_type = getattr(config, "model_type", None)
    rule = _RULES.get(model_type) if model_type else None

    # Names are reported as in the model the caller passed; matching by identity maps the
    # unwrapped model's parameters onto the wrapper's names whatever prefix PEFT adds.
    outer_names = {id(p): n for n, p in model.named_parameters()}
    base_params = list(base.named_parameters())

    prefix = getattr(base, "base_model_prefix", "") or ""
    inner = getattr(base, prefix, None) if prefix else None
    has_backbone_attr = isinstance(inner, nn.Module) and inner is not base
    backbone_path = prefix if has_backbone_attr else ""
    backbone = inner if has_backbone_attr else base

    block_paths = _find_block_lists(backbone, rule)
    if not block_paths:
        supported = ", ".join(SUPPORTED_MODEL_TYPES)
        raise ModelError(
            f"Cannot split {type(base).__name__} (model_type {model_type!r}) into layer groups: "
            "it has no repeated block list (an nn.ModuleList of same-type blocks) to split on. "
            f"Architectures with layer-group rules: {supported}; other models work when their "
            "backbone holds such a list."
        )

    # Which base-relative names are backbone (see the module docstring for the no-attribute case).
    if has_backbone_attr:
        backbone_roots = [backbone_path]
    elif "For" in type(base).__name__:
        backbone_roots = list(dict.fromkeys(p.split(".")[0] for p in block_paths))
    else:
        backbone_roots = [""]

    towers = [_Tower(path=p, root=p.rpartition(".")[0], blocks=backbone.get_submodule(p)) for p in block_paths]
    for tower in towers:
        # Keep every block, in index order, even one without parameters (index = depth).
        tower.block_params = {key: [] for key, _ in tower.blocks.named_children()}
    placement = rule.placement(config) if rule is not None and rule.placement else {}

    head: list[tuple[str, nn.Parameter]] = []
    # Non-block backbone parameters, placed once each tower's block range is known.
    loose: list[tuple[int, str, nn.Parameter]] = []
    for index, (name, param) in enumerate(base_params):
        if not any(_is_under(name, r) for r in backbone_roots):
            head.append((name, param))
            continue
        rel = _strip(name, backbone_path)
        for tower in towers:
            if _is_under(rel, tower.path) and rel != tower.path:
                key = _strip(rel, tower.path).split(".")[0]
                tower.block_params.setdefault(key, []).append((name, param))
                if tower.first_index < 0:
                    tower.first_index = index
                break
        else:
            loose.append((index, name, param))

    for index, name, param in loose:
        rel = _strip(name, backbone_path)
        roots = [t for t in towers if _is_under(rel, t.root)]
        # The innermost tower root that holds the parameter owns it (Whisper encoder vs decoder).
        owner = max(roots, key=lambda t: len(t.root)) if roots else None
        forced = next((where for path, where in placement.items() if _is_under(rel, path)), None)
        if owner is not None:
            before = index < owner.first_index if owner.first_index >= 0 else True
            where = forced or ("stem" if before else "top")
            (owner.stem if where == "stem" else owner.top).append((name, param))
            continue
        # Outside every tower root (BERT embeddings / pooler): stem of the next tower whose blocks
        # come later in registration order, else top of the last tower.
        if forced == "top":
            towers[-1].top.append((name, param))
        elif forced == "stem":
            towers[0].stem.append((name, param))
        else:
            nxt = next((t for t in towers if t.first_index > index), None)
            if nxt is not None:
                nxt.stem.append((name, param))
            else:
                towers[-1].top.append((name, param))

    def make(name: str, kind: str, params: list[tuple[str, nn.Parameter]], modules: list[nn.Module]) -> LayerGroup:
        return LayerGroup(
            name=name,
            kind=kind,
            modules=modules,
            param_names=[outer_names.get(id(p), n) for n, p in params],
            _params=[p for _, p in params],
        )

    def side_group(params: list[tuple[str, nn.Parameter]], kind: str) -> LayerGroup:
        # Group the loose parameters by the module they hang from, for the name and module list.
        units: dict[str, nn.Module | None] = {}
        for name, _ in params:
            rel = _strip(name, backbone_path)
            roots = [t.root for t in towers if _is_under(rel, t.root)]
            unit = _unit(rel, max(roots, key=len) if roots else None)
            if unit not in units:
                units[unit] = None if unit == rel else backbone.get_submodule(unit)
        modules = [m for m in units.values() if m is not None]
        return make(_group_name(list(units), kind), kind, params, modules)

    groups: list[LayerGroup] = []
    # Parameters that live only on the wrapper (PEFT prompt-learning encoders) feed the input side.
    base_ids = {id(p) for _, p in base_params}
    wrapper_only: dict[str, list[tuple[str, nn.Parameter]]] = {}
    for name, param in model.named_parameters():
        if id(param) not in base_ids:
            wrapper_only.setdefault(name.split(".")[0], []).append((name, param))
    for top_name, params in wrapper_only.items():
        module = getattr(model, top_name, None)
        groups.append(make(top_name, "stem", params, [module] if isinstance(module, nn.Module) else []))

    for tower in towers:
        if tower.stem:
            groups.append(side_group(tower.stem, "stem"))
        for key, params in tower.block_params.items():
            groups.append(make(_join(tower.path, key), "block", params, [tower.blocks.get_submodule(key)]))
        if tower.top:
            groups.append(side_group(tower.top, "top"))

    if head:
        modules: list[nn.Module] = []
        for name, _ in head:
            first = name.split(".")[0]
            module = getattr(base, first, None) if "." in name else None
            if isinstance(module, nn.Module) and all(module is not m for m in modules):
                modules.append(module)
        groups.append(make("head", "head", head, modules))
    return groups


def split_groups(
    groups: Iterable[LayerGroup],
) -> tuple[list[LayerGroup], list[LayerGroup], list[LayerGroup], list[LayerGroup]]:
    """Partition groups by kind, keeping order.

    Returns:
        ``(stem, blocks, top, head)``; each a list (several stems/tops for Whisper's two towers;
        ``head`` is empty for a bare backbone or a tied head).
    """
    by_kind: dict[str, list[LayerGroup]] = {kind: [] for kind in KINDS}
    for group in groups:
        by_kind[group.kind].append(group)
    return by_kind["stem"], by_kind["block"], by_kind["top"], by_kind["head"]


def block_groups(groups: Iterable[LayerGroup]) -> list[LayerGroup]:
    """The block groups in forward order (Whisper: encoder blocks, then decoder blocks)."""
    return [g for g in groups if g.kind == "block"]


def format_layer_groups(groups: Sequence[LayerGroup]) -> str:
    """A plain-text table of the groups, as printed by ``hf-transfer layers MODEL``.

    Args:
        groups: Output of :func:`layer_groups`.

    Returns:
        One row per group (index, name, kind, parameters, trainable parameters) and a total row.
    """
    rows = [
        (str(i), g.name, g.kind, f"{g.num_parameters():,}", f"{g.num_parameters(trainable_only=True):,}")
        for i, g in enumerate(groups)
    ]
    total = (
        "",
        "total",
        "",
        f"{sum(g.num_parameters() for g in groups):,}",
        f"{sum(g.num_parameters(trainable_only=True) for g in groups):,}",
    )
    header = ("#", "group", "kind", "params", "trainable")
    widths = [max(len(r[c]) for r in [header, *rows, total]) for c in range(len(header))]
    right = {0, 3, 4}  # numbers are right-aligned so their digits line up

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows), rule, line(total)])
