"""Frozen features, one place: forward to a layer (or several), pool as the checkpoint was trained
to be pooled, batch over a split on Accelerate's device, and cache on disk.

Every consumer of frozen features (`feature_extraction`, `auto`'s similarity measure, ranking,
shift reports...) goes through `FeatureExtractor` and `extract`.

**Pooling convention** (`FeatureSpec.pooling="auto"`), decided once per model, reported by
`FeatureExtractor.describe()["source"]`:

- *sentence-transformers folder* (`modules.json` with a `Pooling` module): pooled exactly as
  sentence-transformers pools (`1_Pooling/config.json`: mean, cls, max, lasttoken,
  mean_sqrt_len_tokens, weightedmean, several concatenated), L2-normalised when a `Normalize` module
  follows. An unreadable pooling config is logged and falls back to the masked mean.
- *other text encoders*: the mean over real tokens (padding masked out), unless the checkpoint has
  a **trained pooler**: its `config.architectures` names a `*ForSequenceClassification` (a
  classifier, whose pooler was trained on a sentence task) and the pooler's weights came from the
  checkpoint (not newly initialised). Then the pooler output. (A bare `BertModel` checkpoint such
  as all-MiniLM-L6-v2 has `pooler.dense` weights that were never trained for sentences.)
- *images*: what the head reads: the backbone's pooler output when it has one (CNNs: the pooled
  map; ConvNeXt: pooled and normed; Swin/BEiT: their token mean), else the [CLS] token after the
  final layer norm (ViT, DeiT). Intermediate layers: [CLS] for token sequences, the spatial mean
  for feature maps.
- *audio*: the mean over real frames (Whisper: the feature extractor's mel-frame mask, two mel
  frames per encoder position; wav2vec2-style: the model's own feature-vector mask).
- `pooling="head_input"`: the input of the model's head module, whatever the architecture (the
  generic fallback; a sequence there is pooled by its first token for text, the mean otherwise).

**Layers.** Layer 0 is the embeddings' output, 1..L the blocks' outputs; layer L is the backbone's
own output (`last_hidden_state`, after any final norm). `"last"` = L; `"mean"` = every layer 1..L,
pooled each, then averaged (`combine="mean"`) or concatenated (`combine="concat"`); explicit
indices may be negative (-1 = L). An index the model lacks is a `ConfigError` at construction,
before any forward pass.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hf_transfer.errors import ConfigError, ModelError, WidthMismatch
from hf_transfer.models import feature_cache as fc
from hf_transfer.models.anatomy import (  # noqa: F401  (part of this module's API)
    HeadInput,
    HeadInputCapture,
    backbone_of,
    count_layers,
    find_head,
    locate_head_input,
    unwrap_model,
)
from hf_transfer.models.pooling import has_trained_pooler, pool_map, pool_tokens, read_sentence_transformers

logger = logging.getLogger(__name__)

POOLINGS = ("auto", "mean", "cls", "max", "last_token", "pooler", "head_input")


@dataclass(frozen=True)
class FeatureSpec:
    """Which features: layers, how several layers combine, pooling, normalisation.

    Attributes:
        layers: `"last"`, `"mean"` (every block's output, 1..L) or explicit indices (0 = embeddings).
        combine: `"mean"` or `"concat"` when several layers are read.
        pooling: `"auto"` (the checkpoint's convention, module docstring) or one of `mean`, `cls`,
            `max`, `last_token`, `pooler`, `head_input`.
        normalize: L2-normalise the pooled vector; None = the checkpoint's convention.
    """

    layers: str | tuple[int, ...] = "last"
    combine: str = "mean"
    pooling: str = "auto"
    normalize: bool | None = None

    def __post_init__(self) -> None:
        layers = self.layers
        if isinstance(layers, (list, tuple)):
            if not layers or not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in layers):
                raise ConfigError(f"strategy.layers must be 'last', 'mean' or a list of layer indices, got {layers!r}.")
            object.__setattr__(self, "layers", tuple(int(i) for i in layers))
        elif isinstance(layers, int) and not isinstance(layers, bool):
            object.__setattr__(self, "layers", (int(layers),))
        elif layers not in ("last", "mean"):
            raise ConfigError(f"strategy.layers must be 'last', 'mean' or a list of layer indices, got {layers!r}.")
        if self.combine not in ("mean", "concat"):
            raise ConfigError(f"strategy.combine must be 'mean' or 'concat', got {self.combine!r}.")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"strategy.pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}.")
        if self.pooling in ("pooler", "head_input") and self.layers != "last":
            raise ConfigError(f"pooling={self.pooling!r} reads one place in the model: use layers='last'.")


@dataclass
class Features:
    """Pooled features of one split: `X` (N, d) float32, `y` (N,) int64 or None without labels."""

    X: np.ndarray
    y: np.ndarray | None
    info: dict = field(default_factory=dict)
    cache_hit: bool = False
    #: Raw columns of the same rows, by name (`features_for_config(columns=...)`).
    columns: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- the extractor


class FeatureExtractor:
    """Pooled (B, d) float32 features of `model` per the checkpoint's convention (module docstring).

    Args:
        model: A transformers model (with or without head; PEFT/Accelerate wrappers are seen through).
        modality: `text`, `image` or `audio`.
        spec: Layers, combination, pooling, normalisation.
        name_or_path: The checkpoint's folder or Hub id (`pkg://` resolved): where a
            sentence-transformers `modules.json` is looked for. Default: the model's config's.

    Raises:
        ConfigError: A layer index the model does not have, or a pooling that does not apply.
    """

    def __init__(
        self, model: nn.Module, *, modality: str, spec: FeatureSpec = FeatureSpec(), name_or_path: str | None = None
    ):
        if modality not in ("text", "image", "audio"):
            raise ConfigError(f"modality must be text, image or audio, got {modality!r}.")
        self.model = model
        self.modality = modality
        self.spec = spec
        base = unwrap_model(model)
        self.name_or_path = name_or_path or getattr(getattr(base, "config", None), "_name_or_path", None) or None
        folder = self._local_folder(self.name_or_path)
        self.num_layers = count_layers(base)
        self.layer_indices = self._check_layers()
        self.sentence_transformers = read_sentence_transformers(folder) if modality == "text" else None
        self.pooling, self.normalize, self.source = self._convention(base, folder)
        self._head_input = (
            locate_head_input(base, "auto", modality == "text") if self.pooling == ("head_input",) else None
        )

    @staticmethod
    def _local_folder(name_or_path: str | None) -> str | None:
        from hf_transfer.paths import resolve

        if not name_or_path:
            return None
        try:
            path = resolve(str(name_or_path))
        except Exception:  # a pkg:// package not installed: no local folder to read conventions from
            return None
        return path if Path(path).is_dir() else None

    def _check_layers(self) -> tuple[int, ...] | None:
        layers, n = self.spec.layers, self.num_layers
        if layers == "last":
            return None
        if n is None:
            raise ConfigError(
                f"strategy.layers={layers!r} needs the model's block list, "
                f"and {type(unwrap_model(self.model)).__name__} "
                "has none that hf_transfer can find. Use layers: last."
            )
        if layers == "mean":
            return tuple(range(1, n + 1))
        bad = [i for i in layers if not -(n + 1) <= i <= n]
        if bad:
            raise ConfigError(
                f"strategy.layers names layer(s) {bad}, but this model has {n} layers: valid indices are "
                f"0 (the embeddings' output) to {n} (the last block), or -1 .. -{n + 1} counted from the end."
            )
        return tuple(i % (n + 1) for i in layers)

    def _convention(self, base: nn.Module, folder: str | None) -> tuple[tuple[str, ...], bool, str]:
        """(pooling modes, normalize, why) for this model and spec."""
        spec, st = self.spec, self.sentence_transformers
        normalize = spec.normalize
        if st is not None and st["error"]:
            logger.warning(
                "The sentence-transformers folder %s: %s. Falling back to the mean over real tokens.",
                folder,
                st["error"],
            )
        if st is not None and st["dense"]:
            logger.warning(
                "The sentence-transformers folder %s has a Dense module after pooling; hf_transfer "
                "reads the pooled vector before it.",
                folder,
            )
        if normalize is None:
            normalize = bool(st and st["normalize"] and not st["error"])
        if spec.pooling != "auto":
            return (spec.pooling,), normalize, f"pooling={spec.pooling} set explicitly"
        if self.modality == "text":
            if st is not None and not st["error"]:
                why = (
                    "sentence-transformers folder (1_Pooling/config.json"
                    + (", Normalize" if st["normalize"] else "")
                    + ")"
                )
                return st["modes"], normalize, why
            if st is not None:
                return (
                    ("mean",),
                    normalize,
                    f"sentence-transformers pooling config unreadable ({st['error']}): masked mean",
                )
            if spec.layers == "last" and has_trained_pooler(base, folder):
                return ("pooler",), normalize, "text classifier checkpoint with a trained pooler"
            return ("mean",), normalize, "text encoder without a trained pooler: mean over real tokens"
        if self.modality == "image":
            return (
                ("auto",),
                normalize,
                (
                    "image: the backbone's pooled output when it has one (CNNs), "
                    "else [CLS] after the final norm (ViT/DeiT)"
                ),
            )
        return ("mean",), normalize, "audio: mean over real frames"

    @classmethod
    def from_description(cls, model: nn.Module, desc: dict, *, name_or_path: str | None = None) -> FeatureExtractor:
        """The extractor a saved `describe()` dict names (a run folder's), whatever conventions say now."""
        layers = desc.get("layers", "last")
        layers = tuple(layers) if isinstance(layers, list) else layers
        modes = tuple(str(desc.get("pooling", "auto")).split("+"))
        fx = cls(
            model,
            modality=desc.get("modality", "text"),
            name_or_path=name_or_path,
            spec=FeatureSpec(layers=layers, combine=desc.get("combine", "mean"), normalize=bool(desc.get("normalize"))),
        )
        fx.pooling, fx.source = modes, f"as saved: {desc.get('source', '')}"
        fx._head_input = locate_head_input(model, "auto", fx.modality == "text") if modes == ("head_input",) else None
        return fx

    def describe(self) -> dict:
        """What the features are and why: pooling, layers, normalisation, source."""
        layers = self.spec.layers if isinstance(self.spec.layers, str) else list(self.spec.layers)
        return {
            "pooling": "+".join(self.pooling),
            "layers": layers,
            "combine": self.spec.combine,
            "normalize": self.normalize,
            "modality": self.modality,
            "source": self.source,
        }

    # -- forward -----------------------------------------------------------------------------

    def __call__(self, inputs: dict) -> torch.Tensor:
        """Pooled features of one batch (differentiable: no `no_grad` inside)."""
        inputs = {k: v for k, v in inputs.items() if k != "labels"}
        if self._head_input is not None:
            with HeadInputCapture(self.model, self._head_input, detach=False) as cap:
                self.model(**inputs)
                x, _ = cap.features()
            return self._finish([x])
        backbone = backbone_of(self.model)
        base = unwrap_model(self.model)
        mask = inputs.get("attention_mask")
        call = dict(inputs)
        if getattr(getattr(base, "config", None), "is_encoder_decoder", False):
            main = getattr(base, "main_input_name", "input_features")
            call = {main: inputs[main]}
        want_all = self.layer_indices is not None
        out = backbone(**call, output_hidden_states=want_all)
        last = out[0] if not hasattr(out, "last_hidden_state") else out.last_hidden_state
        pooler = getattr(out, "pooler_output", None)
        if self.pooling == ("pooler",):
            if pooler is None:
                raise ConfigError(f"pooling='pooler': {type(backbone).__name__} returns no pooler output.")
            return self._finish([pooler.flatten(1)])
        if want_all:
            hidden = list(out.hidden_states)
            hidden[-1] = last  # layer L is the backbone's own output (after any final norm)
            if len(hidden) - 1 != self.num_layers:
                raise ModelError(
                    f"{type(backbone).__name__} returned {len(hidden) - 1} hidden layers, expected {self.num_layers}."
                )
            chosen = [(hidden[i], i == len(hidden) - 1) for i in self.layer_indices]
        else:
            chosen = [(last, True)]
        return self._finish([self._pool(x, is_last, pooler, mask, backbone) for x, is_last in chosen])

    def _frame_mask(self, x: torch.Tensor, mask, backbone) -> torch.Tensor | None:
        if mask is None or self.modality != "audio" or mask.shape[1] == x.shape[1]:
            return mask
        if getattr(getattr(backbone, "config", None), "model_type", None) == "whisper":
            from hf_transfer.models.whisper import frame_mask

            return frame_mask(mask, x.shape[1])
        getter = getattr(backbone, "_get_feature_vector_attention_mask", None)
        return getter(x.shape[1], mask) if callable(getter) else None

    def _pool(self, x, is_last: bool, pooler, mask, backbone) -> torch.Tensor:
        if x.ndim == 2:
            return x
        if self.pooling == ("auto",):  # images: what the head reads
            if is_last and pooler is not None:
                return pooler.flatten(1)
            if x.ndim == 4:
                return pool_map(x, "mean")
            return x[:, 0] if pooler is None else x.mean(1)
        if x.ndim == 4:
            return torch.cat([pool_map(x, m) for m in self.pooling], dim=-1)
        mask = self._frame_mask(x, mask, backbone)
        return torch.cat([pool_tokens(x, m, mask) for m in self.pooling], dim=-1)

    def _finish(self, pooled: list[torch.Tensor]) -> torch.Tensor:
        if len(pooled) == 1:
            x = pooled[0]
        elif self.spec.combine == "concat":
            x = torch.cat(pooled, dim=-1)
        else:
            dims = {p.shape[-1] for p in pooled}
            if len(dims) > 1:
                raise WidthMismatch(
                    f"strategy.layers: the chosen layers have different widths {sorted(dims)}; use combine: concat."
                )
            x = torch.stack(pooled).mean(0)
        x = x.float()
        return nn.functional.normalize(x, p=2, dim=-1) if self.normalize else x


# ----------------------------------------------------------------------------- over a split


def default_device():
    """Accelerate's device for this process (respects `accelerate launch --cpu` and multi-GPU ranks)."""
    from accelerate.state import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU")).device


def key_parts_for(extractor: FeatureExtractor, task, autocast: torch.dtype | None = None) -> dict:
    """Everything the features of a split depend on except its content (the dataset fingerprint)."""
    cfg = getattr(task, "cfg", None)
    model = unwrap_model(extractor.model)
    return {
        "format": fc.FEATURE_FORMAT,
        "recipe": getattr(cfg, "recipe", None),
        "model": extractor.name_or_path,
        "revision": getattr(getattr(cfg, "model", None), "revision", None),
        "weights": fc.state_digest(model, set(find_head(model))),
        "config": fc.model_config_dict(model),
        "data": fc.data_settings(getattr(cfg, "data", None)),
        "processor": fc.processor_digest(task),
        "features": extractor.describe(),
        "precision": str(autocast) if autocast is not None else "no",
    }


def extract(
    extractor: FeatureExtractor,
    task,
    ds,
    *,
    batch_size: int = 32,
    device=None,
    cache: bool = True,
    cache_dir: str | None = None,
    key_parts: dict | None = None,
    autocast: torch.dtype | None = None,
) -> Features:
    """Features of split `ds` (evaluation preprocessing, no grad), read from or written to the cache.

    Args:
        extractor: The features to compute.
        task: Preprocessing, collate and `model_inputs`.
        ds: A label-encoded split (`labels` column optional).
        batch_size: Examples per forward pass.
        device: Default: Accelerate's device for this process.
        cache: Read and write the disk cache (only for datasets with a fingerprint).
        cache_dir: Cache folder (default `feature_cache.cache_root()`).
        key_parts: Extra entries for the cache key (they override the defaults of `key_parts_for`).
        autocast: Mixed-precision dtype on accelerators (part of the key).
    """
    from accelerate.state import PartialState
    from torch.utils.data import DataLoader, Subset

    fingerprint = getattr(ds, "_fingerprint", None)
    path = None
    if cache and fingerprint is not None:
        parts = {**key_parts_for(extractor, task, autocast), **(key_parts or {}), "dataset": fingerprint}
        path = fc.cache_root(cache_dir) / f"{fc.feature_key(parts)}.safetensors"
        cached = fc.load_cached(path)
        if cached is not None and len(cached[0]) == len(ds):
            X, y, meta = cached
            logger.info("Features (%d) read from the cache: %s", len(ds), path)
            return Features(
                X.float().numpy(), None if y is None else _label_array(y), {**meta, "cache_path": str(path)}, True
            )
    device = device if device is not None else default_device()
    t0 = time.time()
    model = extractor.model
    was_training = model.training
    model.eval().to(device)
    data = task.preprocess(ds, train=False)
    order = length_order(data)
    loader = DataLoader(
        data if order is None else Subset(data, order.tolist()),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=task.collate,
        generator=torch.Generator(),
    )
    pick = task.model_inputs
    feats, labels = [], []
    try:
        with torch.no_grad():
            for batch in loader:
                if "labels" in batch:
                    labels.append(torch.as_tensor(batch["labels"]).cpu())
                inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in pick(batch).items()}
                with torch.autocast(
                    device_type=torch.device(device).type, dtype=autocast, enabled=autocast is not None
                ):
                    feats.append(extractor(inputs).float().cpu())
    finally:
        model.train(was_training)
    X = torch.cat(feats) if feats else torch.zeros(0, 0)
    y = torch.cat(labels) if labels and len(labels) == len(feats) else None
    if order is not None:  # back to the split's order
        back = torch.as_tensor(np.argsort(order, kind="stable"))
        X = X[back]
        y = None if y is None else y[back]
    y = y if y is None or y.is_floating_point() else y.long()  # float: label sets, regression targets
    info = {**extractor.describe(), "seconds": round(time.time() - t0, 3), "dim": int(X.shape[1]) if X.ndim == 2 else 0}
    logger.info(
        "Features: %d x %d in %.1f s (%s, layers %s, %s).",
        X.shape[0],
        info["dim"],
        info["seconds"],
        info["pooling"],
        info["layers"],
        info["source"],
    )
    if path is not None and PartialState().is_main_process:
        fc.save_cached(path, X, y, info)
        info["cache_path"] = str(path)
    return Features(X.numpy(), None if y is None else y.numpy(), info, False)


def length_order(data) -> np.ndarray | None:
    """Token sequences: the example order, shortest first, in which `extract` batches them, so a
    batch pads to about its own length (the features come back in the split's order; padding is
    masked, so they are the same features). None (the split's order) for images, audio, or data
    without `input_ids`."""
    if len(data) < 2:
        return None
    try:
        first = data[0]
    except (IndexError, KeyError, TypeError):
        return None
    if not isinstance(first, dict) or "input_ids" not in first:
        return None
    column = data["input_ids"] if hasattr(data, "column_names") else [row["input_ids"] for row in data]
    lengths = np.fromiter((len(ids) for ids in column), dtype=np.int64, count=len(data))
    if lengths.min() == lengths.max():
        return None
    return np.argsort(lengths, kind="stable")


def _label_array(y: torch.Tensor) -> np.ndarray:
    """Cached labels: class ids as int64; label sets and regression targets stay float."""
    return y.numpy() if y.is_floating_point() else y.numpy().astype(np.int64)


def spec_from_settings(settings: Any) -> FeatureSpec:
    """A FeatureSpec from a strategy config's `layers`, `combine`, `pooling`, `normalize` (those it has)."""
    kw = {k: getattr(settings, k) for k in ("layers", "combine", "pooling", "normalize") if hasattr(settings, k)}
    if isinstance(kw.get("layers"), list):
        kw["layers"] = tuple(kw["layers"])
    if kw.get("pooling") not in POOLINGS:
        kw.pop("pooling", None)
    return FeatureSpec(**kw)


__all__ = [
    "FeatureSpec",
    "FeatureExtractor",
    "Features",
    "extract",
    "unwrap_model",
    "find_head",
    "backbone_of",
    "HeadInput",
    "HeadInputCapture",
    "locate_head_input",
    "pool_tokens",
    "read_sentence_transformers",
    "has_trained_pooler",
    "default_device",
]
