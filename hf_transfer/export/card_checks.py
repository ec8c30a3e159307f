"""Checks a model card must pass before anything is uploaded, and the Hub-id rules they use.

`huggingface_hub.ModelCard.validate` would ask the Hub's `/api/validate-yaml` endpoint, so it needs
the network and answers only after the user has waited for an export; `validate_card` checks the
same metadata locally, so `push` refuses a bad card before it opens a single connection (the Hub
validates once more when the commit is created).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.repocard import REGEX_YAML_BLOCK
from huggingface_hub.utils import HFValidationError, validate_repo_id

from hf_transfer.data.sources import looks_local
from hf_transfer.export.hub_vocabulary import (
    DATA_SUFFIXES,
    HUB_LICENSES,
    LANGUAGE,
    PIPELINE_TAGS,
    SPECIAL_LANGUAGES,
)
from hf_transfer.paths import PREFIX as PKG_PREFIX

__all__ = ["dataset_hub_id", "model_hub_id", "validate_card"]


def _path_like(name: str) -> bool:
    return (
        name.startswith((".", "/", "~", PKG_PREFIX))
        or "://" in name
        or "\\" in name
        or name.count("/") > 1
        or name.lower().endswith(DATA_SUFFIXES)
    )


def _is_hub_id(name: Any) -> bool:
    """Shape check only: `owner/name` or `name`, and nothing that reads as a path."""
    if not isinstance(name, str) or not name or _path_like(name):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def model_hub_id(name_or_path: str | None) -> str | None:
    """`name_or_path` when it names a model on the Hub; None for local and `pkg://` paths.

    The same rule the loaders apply: a path that exists locally is loaded from disk.
    """
    if not _is_hub_id(name_or_path) or Path(name_or_path).expanduser().exists():
        return None
    return name_or_path


def dataset_hub_id(name: str | None) -> str | None:
    """`name` when `hf_transfer.data.sources.load_split` loads it from the Hub, else None."""
    if not _is_hub_id(name) or looks_local(name):  # the loader's own local-vs-Hub rule
        return None
    return name


def _front_matter(card: ModelCard | str | Path) -> tuple[dict | None, str | None]:
    if isinstance(card, Path):
        card = card.read_text(encoding="utf-8")
    text = str(card)
    match = REGEX_YAML_BLOCK.search(text)
    if not match:
        return None, "The card has no YAML front matter (a block between '---' lines at the top)."
    try:
        data = yaml.safe_load(match.group(2))
    except yaml.YAMLError as e:
        return None, f"The card's front matter is not valid YAML: {e}"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        return None, "The card's front matter must be a mapping of keys."
    return data, None


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _check_model_index(index: Any) -> list[str]:
    problems: list[str] = []
    if not isinstance(index, list) or not index:
        return ["model-index must be a non-empty list of {name, results}."]
    for i, entry in enumerate(index):
        where = f"model-index[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
            problems.append(f"{where} needs a name (the model's name).")
            continue
        results = entry.get("results")
        if not isinstance(results, list) or not results:
            problems.append(f"{where}.results must be a non-empty list.")
            continue
        for j, r in enumerate(results):
            at = f"{where}.results[{j}]"
            if not isinstance(r, dict):
                problems.append(f"{at} must be a mapping.")
                continue
            task = r.get("task")
            if not isinstance(task, dict) or not isinstance(task.get("type"), str) or not task["type"]:
                problems.append(f"{at}.task.type is required (a Hub task id such as text-classification).")
            elif task["type"] not in PIPELINE_TAGS:
                problems.append(f"{at}.task.type '{task['type']}' is not a Hub task id.")
            ds = r.get("dataset")
            if not isinstance(ds, dict):
                problems.append(f"{at}.dataset is required, with type and name.")
            else:
                for key in ("type", "name"):
                    if not isinstance(ds.get(key), str) or not ds[key].strip():
                        problems.append(f"{at}.dataset.{key} is required and must be a string (got {ds.get(key)!r}).")
                if isinstance(ds.get("type"), str) and _path_like(ds["type"]):
                    problems.append(f"{at}.dataset.type '{ds['type']}' is a local path, not a dataset id.")
            metrics = r.get("metrics")
            if not isinstance(metrics, list) or not metrics:
                problems.append(f"{at}.metrics must be a non-empty list of {{type, value}}.")
                continue
            for k, met in enumerate(metrics):
                if not isinstance(met, dict) or not isinstance(met.get("type"), str) or not met["type"]:
                    problems.append(f"{at}.metrics[{k}].type is required (a metric id such as accuracy).")
                elif met.get("value") is None or isinstance(met["value"], (bool, dict, list)):
                    problems.append(f"{at}.metrics[{k}] ({met['type']}) needs a number or string value.")
    return problems


def validate_card(card: ModelCard | str | Path) -> list[str]:
    """Problems with a card's metadata that would make the Hub refuse it or mislabel the model.

    Runs offline. Checks: a licence the Hub knows (and a name for `other`); datasets that are
    Hub ids, never null or a local path; base_model a Hub id (required for an unmerged adapter);
    pipeline_tag a Hub task; language codes; a well-formed model-index.

    Args:
        card: A `ModelCard`, the card's text, or the path of a README.md.

    Returns:
        One sentence per problem; empty when the card can be pushed.
    """
    data, error = _front_matter(card)
    if error:
        return [error]
    problems: list[str] = []

    lic = data.get("license")
    if not lic:
        problems.append(
            "No license: the base model's licence is unknown. Set export.license in the config or "
            "pass --license (a Hub licence id such as apache-2.0 or mit; it must allow what the "
            "base model's licence allows)."
        )
    elif not isinstance(lic, str) or lic not in HUB_LICENSES:
        problems.append(
            f"license {lic!r} is not a Hub licence id (see https://huggingface.co/docs/hub/repositories-licenses); "
            "use license: other with license_name and license_link for any other licence."
        )
    elif lic == "other" and not data.get("license_name"):
        problems.append("license: other needs license_name (and license_link to the licence text).")

    if "datasets" in data:
        values = _as_list(data["datasets"])
        if not values:
            problems.append("datasets is empty: leave the key out when no Hub dataset was used.")
        for d in values:
            if d is None or (isinstance(d, str) and not d.strip()):
                problems.append("datasets holds a null entry: list Hub dataset ids only, or leave the key out.")
            elif not isinstance(d, str) or _path_like(d) or not _is_hub_id(d):
                problems.append(
                    f"datasets entry {d!r} is not a Hub dataset id (owner/name): local data belongs "
                    "in the card's text, not in its metadata."
                )

    base = data.get("base_model")
    if base is not None:
        for b in _as_list(base):
            if not _is_hub_id(b):
                problems.append(
                    f"base_model {b!r} is not a Hub model id (owner/name); describe local checkpoints in the text."
                )
    if data.get("library_name") == "peft" and not base:
        problems.append(
            "An unmerged adapter (library_name: peft) needs base_model, the Hub id of the model it "
            "adapts. Train from a Hub checkpoint, or export merged weights (drop --no-merge)."
        )

    tag = data.get("pipeline_tag")
    if tag is not None and tag not in PIPELINE_TAGS:
        problems.append(f"pipeline_tag {tag!r} is not a Hub task id.")
    tags = data.get("tags")
    if tags is not None and not all(isinstance(t, str) and t for t in _as_list(tags)):
        problems.append("tags must be a list of non-empty strings.")
    for lang in _as_list(data.get("language")) if data.get("language") is not None else []:
        if not isinstance(lang, str) or not (LANGUAGE.match(lang) or lang in SPECIAL_LANGUAGES):
            problems.append(f"language {lang!r} is not an ISO 639 code (en, fr, ja, ...).")
    if data.get("library_name") is not None and not (isinstance(data["library_name"], str) and data["library_name"]):
        problems.append("library_name must be a string (transformers, peft, ...).")

    if "model-index" in data:
        problems.extend(_check_model_index(data["model-index"]))
        if not problems:
            try:  # what huggingface_hub itself needs to read the card back
                ModelCardData(**{k: v for k, v in data.items()})
            except (ValueError, TypeError, KeyError) as e:
                problems.append(f"model-index cannot be read back by huggingface_hub: {e}")
    return problems
