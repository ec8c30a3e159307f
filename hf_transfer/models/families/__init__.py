"""Architecture-specific knowledge, one module per model family (`efficientnet`, ...), and the
family facts the rest of the package asks about (`is_convolutional`)."""

from __future__ import annotations

#: `config.model_type`s of convolutional networks: batch-normalised, fine-tuned with learning
#: rates about ten times a transformer's (`engine.budget`, `selection.plan`).
CONV_FAMILIES = frozenset(
    {"efficientnet", "resnet", "mobilenet_v1", "mobilenet_v2", "regnet", "convnext", "convnextv2", "bit"}
)


def model_type_of(model_or_type) -> str | None:
    """`config.model_type` of a model (PEFT/Accelerate wrappers seen through), or the string itself."""
    if model_or_type is None or isinstance(model_or_type, str):
        return model_or_type
    from hf_transfer.models.anatomy import unwrap_model

    return getattr(getattr(unwrap_model(model_or_type), "config", None), "model_type", None)


def is_convolutional(model_or_type) -> bool:
    """True for a convolutional family (`CONV_FAMILIES`)."""
    return model_type_of(model_or_type) in CONV_FAMILIES
