"""Head swap: load a checkpoint with a fresh task head for the dataset's labels."""

from __future__ import annotations

import logging

from torch import nn
from transformers import AutoConfig

from hf_transfer.errors import ModelError
from hf_transfer.paths import resolve
from hf_transfer.utils import set_seed_all  # noqa: F401  (moved; this name kept for callers)

logger = logging.getLogger(__name__)


def load_config_checked(name_or_path: str, revision: str | None = None, trust_remote_code: bool = False, **kwargs):
    """`AutoConfig.from_pretrained` with errors that say what to do."""
    from hf_transfer.paths import check_model_path

    name_or_path = check_model_path(name_or_path)
    try:
        return AutoConfig.from_pretrained(
            name_or_path, revision=revision, trust_remote_code=trust_remote_code, **kwargs
        )
    except ValueError as e:
        if "trust_remote_code" in str(e):
            raise ModelError(
                f"'{name_or_path}' needs code from its repository to load. Read that code, then set "
                "model.trust_remote_code=true if you trust it."
            ) from None
        raise ModelError(f"Cannot load the config of '{name_or_path}': {e}") from None
    except OSError as e:
        from pathlib import Path

        local = Path(name_or_path).expanduser()
        where = (
            f"'{local}' has no config.json"
            if local.is_dir()
            else f"there is no folder '{name_or_path}' in '{Path.cwd()}'"
        )
        raise ModelError(
            f"Cannot find model '{name_or_path}': {where}, and it is not reachable as a Hub id "
            f"({type(e).__name__}). Check model.name_or_path, model.revision and your network "
            "(HF_HUB_OFFLINE=1 only reads the local cache)."
        ) from None


#: Modality -> transformers' tables of model types that have a model for it (any task).
_MODALITY_TABLES = {
    "text": ("MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES", "MODEL_FOR_MASKED_LM_MAPPING_NAMES"),
    "image": ("MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES",),
    "audio": (
        "MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES",
        "MODEL_FOR_CTC_MAPPING_NAMES",
        "MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES",
    ),
}
#: Modality -> the recipe that fits a checkpoint of it, and a shipped config that uses it.
_FITTING_RECIPE = {
    "text": ("text_classification", "bert/sst2_full"),
    "image": ("image_classification", "vit/beans_full"),
    "audio": ("audio_classification (speech_recognition for transcripts)", "whisper/minds14_intent_partial"),
}


def checkpoint_modalities(config) -> tuple[str, ...]:
    """The modalities transformers has a model of `config.model_type` for (text, image, audio);
    empty for a model type it does not know (remote code)."""
    from transformers.models.auto import modeling_auto

    return tuple(
        m
        for m, tables in _MODALITY_TABLES.items()
        if any(config.model_type in getattr(modeling_auto, t, {}) for t in tables)
    )


def check_checkpoint_fits_recipe(config, recipe: str, name_or_path: str) -> None:
    """Refuse a checkpoint of another modality than the recipe's (an image model in a text
    recipe), naming the recipe that fits it.

    Raises:
        ModelError: The checkpoint is known to be of another modality only.
    """
    from hf_transfer.registry import recipe_modality

    want = recipe_modality(recipe) or None
    found = checkpoint_modalities(config)
    if want is None or not found or want in found:
        return
    kind = " / ".join(found)
    fitting, example = _FITTING_RECIPE[found[0]]
    lacks = " It has no masked-language-model form either." if recipe == "masked_lm" else ""
    command = "hf-transfer pretrain" if recipe == "masked_lm" else f"recipe {recipe}"
    raise ModelError(
        f"'{name_or_path}' is {_a(kind)} model ({config.model_type}), but {command} trains {_a(want)} model: it "
        f"needs {_a(want)} checkpoint in model.name_or_path.{lacks} For this checkpoint use recipe {fitting} "
        f"(`recipe: {fitting.split()[0]}` in the config with `hf-transfer train`; the shipped config {example} is "
        "an example, `hf-transfer cp` copies it)."
    )


def _a(word: str) -> str:
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def head_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Top-level child modules that make up the task head (the layer groups' `head` group).

    Not simply "children other than `base_model_prefix`": some classifiers (Whisper's) hold their
    backbone under another name.
    """
    from hf_transfer.models.anatomy import find_head

    return {name: model.get_submodule(name) for name in find_head(model)}


def _reinit(model: nn.Module, module: nn.Module) -> None:
    for sub in module.modules():
        if hasattr(sub, "reset_parameters"):
            sub.reset_parameters()
        if isinstance(sub, nn.Linear):
            # The checkpoint family's own init (e.g. normal(0, initializer_range)) where it has one.
            std = getattr(model.config, "initializer_range", None)
            if std is not None:
                nn.init.normal_(sub.weight, mean=0.0, std=std)
                if sub.bias is not None:
                    nn.init.zeros_(sub.bias)


def load_for_classification(
    auto_cls,
    name_or_path: str,
    id2label: dict[int, str],
    revision: str | None = None,
    trust_remote_code: bool = False,
    from_scratch: bool = False,
    **config_kwargs,
) -> nn.Module:
    """Load `name_or_path` with its head replaced for `id2label`.

    Works whether the checkpoint has no head (a bare backbone), a head for other labels (any
    number of them), or already the same head (a run being reloaded, kept as is). New weights
    are logged. With `from_scratch`, the same architecture is built with random weights: the
    baseline transfer is measured against.

    Args:
        auto_cls: An `AutoModelFor...` class (sequence, image or audio classification).
        name_or_path: Hub id or local folder.
        id2label: Label names by id, from the data.
        revision: Hub revision.
        trust_remote_code: Allow code from the checkpoint's repository.
        from_scratch: Random initialisation instead of the pretrained weights.
        **config_kwargs: Extra config attributes (e.g. dropout).

    Returns:
        The model, in train mode.
    """
    name_or_path = resolve(name_or_path)
    id2label = {int(k): str(v) for k, v in id2label.items()}
    label2id = {v: k for k, v in id2label.items()}
    config = load_config_checked(name_or_path, revision, trust_remote_code)
    old_labels = dict(getattr(config, "id2label", {}) or {})
    had_head = any(a.endswith("Classification") for a in (getattr(config, "architectures", None) or []))
    config.num_labels = len(id2label)
    config.id2label = id2label
    config.label2id = label2id
    for k, v in config_kwargs.items():
        setattr(config, k, v)
    try:
        if from_scratch:
            model = auto_cls.from_config(config, trust_remote_code=trust_remote_code)
            logger.info("Built %s from random initialisation (scratch baseline).", type(model).__name__)
            return model
        model, info = auto_cls.from_pretrained(
            name_or_path,
            config=config,
            revision=revision,
            trust_remote_code=trust_remote_code,
            ignore_mismatched_sizes=True,
            output_loading_info=True,
        )
    except ValueError as e:
        from hf_transfer.files import check_weights

        check_weights(name_or_path)  # a damaged weights file: name it
        raise ModelError(
            f"'{name_or_path}' ({config.model_type}) cannot be loaded as {auto_cls.__name__}: {e}"
        ) from None
    except Exception:
        from hf_transfer.files import check_weights

        check_weights(name_or_path)  # a truncated download or copy: name the file, not a traceback
        raise
    new = set(info.get("missing_keys", ())) | {k[0] for k in info.get("mismatched_keys", ())}
    same_labels = {int(k): str(v) for k, v in old_labels.items()} == id2label
    if had_head and not same_labels:
        # Same number of classes but other labels: the checkpoint's head would load silently and
        # map to the wrong classes. Start the head afresh.
        for name, module in head_modules(model).items():
            _reinit(model, module)
            new |= {f"{name}.{p}" for p, _ in module.named_parameters()}
    if new:
        logger.info("New (randomly initialised) weights for the %d labels: %s", len(id2label), ", ".join(sorted(new)))
    else:
        logger.info("All weights loaded from %s (head kept: same labels).", name_or_path)
    model.hf_transfer_new_weights = sorted(new)
    return model
