"""EfficientNet in transformers: the fixes hf_transfer applies to it, wherever the model came from.

- A converted EfficientNet-Lite0 (`hf_transfer.importers.efficientnet_lite`) is B0's geometry with
  its squeeze-and-excite (SE) blocks made the identity; `config.squeeze_excite_neutralised` marks
  it, and those parameters must never train (`frozen_parameter_names`, `keep_frozen_parameters`).
- transformers passes TF's batch-norm momentum convention to PyTorch (`fix_batchnorm_momentum`).
- transformers' random init leaves a scratch EfficientNet unable to learn (`fix_scratch_init`).
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)

#: Expand-conv bias of the neutralised SE blocks: sigmoid(100) rounds to exactly 1.0 in float32.
SE_GATE_BIAS = 100.0

#: Substring of every parameter name that belongs to a (neutralised, frozen) SE block.
SQUEEZE_EXCITE_PATTERN = "squeeze_excite"


def neutralise_squeeze_excite(model) -> list[str]:
    """Make every SE block the identity: conv weights 0, reduce bias 0, expand bias +100.

    Works in place on an ``EfficientNetForImageClassification`` / ``EfficientNetModel``;
    returns the names of the parameters it set.
    """
    names = []
    with torch.no_grad():
        for name, param in model.named_parameters():
            if SQUEEZE_EXCITE_PATTERN not in name:
                continue
            if name.endswith("expand.bias"):
                param.fill_(SE_GATE_BIAS)
            else:
                param.zero_()
            names.append(name)
    return names


def frozen_parameter_names(model) -> list[str]:
    """Names of the parameters that must stay frozen (the neutralised SE blocks of a Lite model).

    Empty for models whose config does not say ``squeeze_excite_neutralised`` (a real EfficientNet
    has working SE blocks that may be trained). Accepts PEFT-wrapped models too: names are
    ``model.named_parameters()`` names, and all contain ``"squeeze_excite"``.
    """
    config = getattr(model, "config", None)
    if config is None and hasattr(model, "get_base_model"):
        config = getattr(model.get_base_model(), "config", None)
    if not getattr(config, "squeeze_excite_neutralised", False):
        return []
    patterns = list(getattr(config, "frozen_parameter_patterns", None) or [SQUEEZE_EXCITE_PATTERN])
    return [name for name, _ in model.named_parameters() if any(p in name for p in patterns)]


def freeze_squeeze_excite(model) -> list[str]:
    """Set ``requires_grad=False`` on ``frozen_parameter_names(model)``; returns those names."""
    names = set(frozen_parameter_names(model))
    for name, param in model.named_parameters():
        if name in names:
            param.requires_grad_(False)
    return sorted(names)


def keep_frozen_parameters(model) -> list[str]:
    """Turn the parameters a model says must never train into buffers; return their names.

    A converted EfficientNet-Lite0 carries neutralised squeeze-and-excite blocks that must stay
    exactly as they are (`hf_transfer.importers.efficientnet_lite`). Strategies set
    `requires_grad` themselves and the optimizer places every parameter, so a flag would not
    survive; a buffer is out of reach of both, yet is saved under the same name, so the run folder
    still loads with plain transformers (where these become parameters again).
    """
    names = frozen_parameter_names(model)
    for name in names:
        module_path, _, attr = name.rpartition(".")
        module = model.get_submodule(module_path)
        value = getattr(module, attr).detach().clone()
        delattr(module, attr)
        module.register_buffer(attr, value, persistent=True)
    if names:
        logger.info(
            "Kept %d squeeze-and-excite parameters frozen (as buffers): the converted Lite0 has none.", len(names)
        )
    return names


def fix_batchnorm_momentum(model) -> float | None:
    """Give EfficientNet's batch norms a PyTorch-convention momentum; return the new value (or None).

    transformers' EfficientNet passes the TF-convention `batch_norm_momentum` (0.99: keep 99% of
    the running statistics) straight to `nn.BatchNorm2d`, where momentum is the weight of the *new*
    batch: the running statistics become those of the last training batch (often a short one), and
    a fine-tuned Lite0 evaluated at chance on Fashion-MNIST. The literal translation, 0.01, suits
    long ImageNet runs; fine-tuning runs are a few dozen steps, over which 0.01 leaves the running
    statistics half-way from the source domain's. PyTorch's default 0.1 (also timm's and
    torchvision's EfficientNets') settles within them, and short fine-tunes of Lite0 scored higher
    with it than with 0.01. The config records the new value, so the run folder keeps it.
    """
    config = model.config
    momentum = getattr(config, "batch_norm_momentum", None)
    if config.model_type != "efficientnet" or momentum is None or momentum <= 0.5:
        return None
    fixed = 0.1
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.momentum == momentum:
            module.momentum = fixed
    config.batch_norm_momentum = fixed
    logger.info("EfficientNet batch_norm_momentum %s is TF's convention; using PyTorch's %s.", momentum, fixed)
    return fixed


def fix_scratch_init(model) -> None:
    """Repair transformers' random initialisation of EfficientNet for the `scratch` baseline.

    Its `_init_weights` draws convolution *and batch-norm scale* weights from N(0, 0.02), like
    linear layers. Norm scales near 0 multiply activations by ~0.02 at every norm (about 1e-27 at
    the head), so the training loss stays at log(num_labels) and the baseline is no baseline. The
    reference EfficientNet initialisation is used instead: He-normal (fan-out) convolutions, norms
    at scale 1 and shift 0. Other architectures keep their own initialisation.
    """
    if model.config.model_type != "efficientnet":
        return
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, mode="fan_out")
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.affine:
                module.weight.fill_(1.0)
                module.bias.zero_()
    logger.info(
        "Scratch EfficientNet: He-normal convolutions, batch norms at scale 1 (transformers draws "
        "both from N(0, 0.02))."
    )
