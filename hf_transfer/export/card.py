"""Model cards for a run folder: metadata and the body rendered from `model_cards/<recipe>.md`.

Cards are built with `huggingface_hub.ModelCardData` / `EvalResult` and rendered with
`huggingface_hub.ModelCard.from_template`, from the run folder's typed reads
(`hf_transfer.run_folder.RunFolder`) and the recipe's registered Hub facts
(`hf_transfer.registry.RecipeInfo`). The checks a card must pass before upload are in
`card_checks`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.repocard import metadata_load

from hf_transfer.config import DataSource
from hf_transfer.errors import ConfigError, ExportError
from hf_transfer.export.card_checks import dataset_hub_id, model_hub_id, validate_card
from hf_transfer.paths import PREFIX as PKG_PREFIX
from hf_transfer.paths import model_cards_dir, resolve
from hf_transfer.registry import RecipeInfo, recipe_info
from hf_transfer.run_folder import IMAGES, RunFolder, metric_value

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGES",
    "RunFolder",
    "recipe_of",
    "build_card",
    "dataset_hub_id",
    "model_hub_id",
    "resolve_license",
    "validate_card",
]


def recipe_of(run: RunFolder) -> RecipeInfo:
    """The registered Hub facts of the run's recipe; `ExportError` when export cannot present it."""
    try:
        info = recipe_info(run.recipe)
    except ConfigError:
        info = None
    if info is None or not info.pipeline_tag:
        raise ExportError(f"Run '{run.path}' has recipe '{run.recipe}', which export does not know.")
    return info


def _template(info: RecipeInfo) -> Path:
    return model_cards_dir() / f"{info.name}.md"


# ---------------------------------------------------------------------------------------------
# Licence and language of the base model


def _base_card_metadata(name_or_path: str, revision: str | None) -> dict:
    """Front matter of the base model's README: from its folder, the Hub cache, or the Hub."""
    if not name_or_path:
        return {}
    try:
        local = Path(resolve(name_or_path)).expanduser()
    except Exception:  # an uninstalled pkg:// package: no card to read
        return {}
    readme: Path | None = local / "README.md" if local.is_dir() else None
    hub_id = model_hub_id(name_or_path)
    if readme is None and hub_id:
        from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

        cached = try_to_load_from_cache(hub_id, "README.md", revision=revision)
        if isinstance(cached, str):
            readme = Path(cached)
        elif not constants.is_offline_mode():
            try:
                readme = Path(hf_hub_download(hub_id, "README.md", revision=revision))
            except Exception as e:  # no README, no network: the licence is then asked for
                logger.info("Could not read the card of %s (%s).", hub_id, type(e).__name__)
    if readme is None or not readme.is_file():
        return {}
    try:
        return metadata_load(readme) or {}
    except (yaml.YAMLError, ValueError):
        return {}


def resolve_license(run: RunFolder, license: str | None = None, base_meta: dict | None = None) -> tuple[dict, str]:
    """The card's licence fields and where they came from.

    Order: the `license` argument (`--license`), `export.license` in the run's config, the base
    model's own card (`base_meta`, read when not given). Returns ({}, "") when none is known.
    """
    if license:
        return {"license": license}, "--license"
    configured = run.config.export.license
    if configured:
        return {"license": configured}, "export.license"
    meta = base_meta if base_meta is not None else _base_card_metadata(run.base_name, run.base_revision)
    lic = meta.get("license")
    if isinstance(lic, str) and lic and lic != "unknown":
        out = {"license": lic}
        for key in ("license_name", "license_link"):
            if meta.get(key):
                out[key] = meta[key]
        return out, "the base model's card"
    return {}, ""


# ---------------------------------------------------------------------------------------------
# Building the card


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    if isinstance(v, list):
        return ", ".join(str(x) for x in v)
    return str(v)


def _md_table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _describe_model(name: str, revision: str | None) -> str:
    hub = model_hub_id(name)
    if hub:
        rev = f" (revision `{revision}`)" if revision else ""
        return f"[`{hub}`](https://huggingface.co/{hub}){rev}"
    if name.startswith(PKG_PREFIX):
        package = name[len(PKG_PREFIX) :].split("/", 1)[0]
        return f"the checkpoint shipped in the Python package `{package}` (`{name}`; not a Hub repository)"
    return f"a local checkpoint (folder `{Path(name).name}`; not a Hub repository)"


def _describe_source(src: DataSource | None) -> str:
    if src is None:
        return "none"
    name = src.name
    hub = dataset_hub_id(name)
    if hub:
        parts = [f"[`{hub}`](https://huggingface.co/datasets/{hub})"]
        for key in ("config", "split", "revision"):
            if getattr(src, key):
                parts.append(f"{key} `{getattr(src, key)}`")
        return ", ".join(parts)
    if name.startswith(PKG_PREFIX):
        package = name[len(PKG_PREFIX) :].split("/", 1)[0]
        return f"local data shipped in the Python package `{package}` (file `{Path(name).name}`), not on the Hub"
    return f"local data (`{Path(name).name}`), not on the Hub"


_HPARAMS = (
    ("training", "epochs"),
    ("training", "max_steps"),
    ("training", "learning_rate"),
    ("training", "batch_size"),
    ("training", "gradient_accumulation_steps"),
    ("training", "weight_decay"),
    ("training", "warmup_ratio"),
    ("training", "scheduler"),
    ("training", "max_grad_norm"),
    ("training", "mixed_precision"),
    ("training", "label_smoothing"),
    ("training", "class_weights"),
    ("training", "early_stopping_patience"),
    ("training", "metric_for_best_model"),
    ("training", "seed"),
    ("data", "max_length"),
    ("data", "max_train_samples"),
    ("data", "samples_per_class"),
    ("data", "eval_samples_per_class"),
    ("data", "max_audio_seconds"),
)


def _hyperparameters(run: RunFolder) -> list[list[Any]]:
    rows = []
    for section, key in _HPARAMS:
        if section == "data" and key == "max_length" and not run.recipe.startswith("text_"):
            continue
        value = getattr(getattr(run.config, section), key)
        ran = run.metrics.raw.get("mixed_precision") if key == "mixed_precision" else None
        if ran is not None and value is None:  # unset: the strategy's default, as it ran
            value = ran
        elif ran is not None and ran != value:  # the precision that ran, from metrics.json
            value = f"{ran} ({value} requested)"
        if value is None or value == "none" or (key == "early_stopping_patience" and value == 0):
            continue
        if key == "label_smoothing" and not value:
            continue
        rows.append([f"`{section}.{key}`", value])
    aug = dataclasses.asdict(run.config.data.augmentation)
    if run.recipe == "image_classification" and aug["enabled"]:
        rows.append(["`data.augmentation`", ", ".join(f"{k}={v}" for k, v in aug.items() if k != "enabled")])
    return rows


# Strategy keys left out of the card when at these values (the base defaults say nothing), and
# `merge`, which is about export rather than training.
_QUIET_STRATEGY_KEYS = {"layer_lr_decay": 1.0, "head_lr_multiplier": 1.0}


def _strategy_settings(run: RunFolder) -> list[list[Any]]:
    rows = [
        [f"`strategy.{k}`", v]
        for k, v in dataclasses.asdict(run.config.strategy).items()
        if k not in ("name", "merge") and v is not None and _QUIET_STRATEGY_KEYS.get(k) != v
    ]
    ac = run.adapter_config
    if ac:
        for key in ("peft_type", "target_modules", "modules_to_save"):  # r, alpha: strategy.* above
            value = ac.get(key)
            if value in (None, [], {}):
                continue
            if key == "target_modules" and isinstance(value, list):
                # Full module paths, one per block: the layer names and their count say it all.
                leaves = sorted({str(v).rsplit(".", 1)[-1] for v in value})
                value = f"{', '.join(leaves)} ({len(value)} modules)"
            rows.append([f"adapter `{key}`", value])
    return rows


def load_baseline(baseline: str | Path | dict | None, run: RunFolder) -> dict | None:
    """Baseline metrics: a dict, a scratch run folder or a metrics file; else the run's own
    `baseline_metrics.json` when it has one."""
    if isinstance(baseline, dict):
        return baseline
    path = Path(baseline) if baseline else run.baseline_path
    if path.is_dir():
        other = RunFolder.open(path, finished=False, needs_metrics=True, error=ExportError)
        return {**other.metrics.raw, "strategy": other.strategy_name}
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ExportError(f"Baseline metrics '{path}' is not valid JSON: {e}") from None
    if baseline:
        raise ExportError(f"Baseline '{baseline}' is neither a run folder nor a metrics JSON file.")
    return None


def _score(v: float | None) -> str:
    return "–" if v is None else f"{v:.4f}"


def _results(run: RunFolder, baseline: dict | None) -> tuple[list[str], list[list[Any]], list[str]]:
    fam = recipe_of(run)
    headers = ["model", "split"] + list(fam.metrics)
    rows, splits = [], []
    for split in ("eval", "test"):
        values = [run.metrics.score(split, m) for m in fam.metrics]
        if any(v is not None for v in values):
            splits.append(split)
            rows.append(["this model", split] + [_score(v) for v in values])
    if baseline:
        who = baseline.get("strategy") or "scratch"
        label = "scratch baseline (same architecture, random init)" if who == "scratch" else f"baseline ({who})"
        for split in splits:
            values = [metric_value(baseline, split, m) for m in fam.metrics]
            if any(v is not None for v in values):
                rows.append([label, split] + [_score(v) for v in values])
    return headers, rows, splits


def _transfer_verdict(run: RunFolder, baseline: dict | None, splits: list[str]) -> str | None:
    """How the model compares with the baseline on its headline metric, when both were measured."""
    if not baseline or not splits:
        return None
    fam, split = recipe_of(run), ("test" if "test" in splits else "eval")
    metric = fam.metrics[0]
    ours, theirs = run.metrics.score(split, metric), metric_value(baseline, split, metric)
    if ours is None or theirs is None:
        return None
    better = ours < theirs if fam.lower_is_better else ours > theirs
    word = "beats" if better else "does not beat"
    return f"On the {split} split this model {word} the baseline ({metric} {ours:.4f} against {theirs:.4f})."


def _eval_results(run: RunFolder, splits: list[str]) -> list[EvalResult]:
    fam = recipe_of(run)
    results = []
    for split in splits:
        src = run.source(split) or run.source("train")
        carved = split == "eval" and run.source("eval") is None
        # huggingface_hub groups eval results by (task, dataset type/config/split/revision), so
        # every split needs its own split name or eval and test scores would merge.
        split_name = (
            "held-out part of train"
            if carved
            else ((src.split if src else None) or ("validation" if split == "eval" else "test"))
        )
        hub = dataset_hub_id(src.name) if src else None
        if hub:
            ds = dict(
                dataset_type=hub,
                dataset_name=hub,
                dataset_config=src.config,
                dataset_revision=src.revision,
                dataset_split=split_name,
            )
        else:
            # Local data has no Hub id. The Hub requires dataset.type and dataset.name in a
            # model-index but does not resolve them; `local` names no dataset and no path.
            file = Path(src.name).name if src else "data"
            ds = dict(dataset_type="local", dataset_name=f"local data ({file})", dataset_split=split_name)
        for m in fam.metrics:
            v = run.metrics.score(split, m)
            if v is not None:
                results.append(
                    EvalResult(
                        task_type=fam.pipeline_tag,
                        task_name=fam.task_name,
                        metric_type=m,
                        metric_value=round(v, 4),
                        metric_name=f"{split} {m}",
                        **ds,
                    )
                )
    return results


def _widget(fam: RecipeInfo) -> dict:
    """The Hub's inference widget example, for token classification (the text it tags)."""
    if fam.pipeline_tag == "token-classification" and fam.example_input:
        return {"widget": [{"text": fam.example_input}]}
    return {}


def _tagging_context(run: RunFolder) -> dict:
    """Template values of a token-classification run (scheme, entity types, alignment)."""
    if run.recipe != "token_classification":
        return {}
    tagging = run.config.data.tagging
    return dict(
        tag_scheme=run.metrics.raw.get("tag_scheme") or "BIO",
        entity_types=sorted({t[2:] for t in run.labels if t[:2] in ("B-", "I-", "E-", "S-")}),
        subword_labels=run.metrics.raw.get("subword_labels") or tagging.subword_labels,
        strict=tagging.strict,
    )


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "not recorded"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 60} min {s % 60} s" if s >= 60 else f"{seconds:.1f} s"


def build_card(
    run_dir: str | Path,
    *,
    merged: bool = True,
    repo_id: str | None = None,
    model_name: str | None = None,
    baseline: str | Path | dict | None = None,
    license: str | None = None,
    language: str | list[str] | None = None,
    images: tuple[str, ...] | None = None,
) -> ModelCard:
    """The model card of a run, rendered from its recipe's template.

    Args:
        run_dir: The run folder.
        merged: The weights are merged (plain transformers); False for an unmerged PEFT adapter.
        repo_id: Hub repository the card will live in (used in the usage snippet).
        model_name: Name for the model-index; defaults to the repository name.
        baseline: Scratch-baseline metrics: a run folder, a metrics JSON file, or a dict.
            Defaults to the run's `baseline_metrics.json` when present.
        license: Licence id; overrides `export.license` and the base model's licence.
        language: Language code(s); defaults to the base model's.
        images: Image files that sit next to the card; defaults to those the run folder has.

    Returns:
        The rendered `huggingface_hub.ModelCard`. Check it with `validate_card`.
    """
    run = RunFolder.open(run_dir, needs_metrics=True, error=ExportError)
    fam = recipe_of(run)
    base_line = load_baseline(baseline, run)
    base_meta = _base_card_metadata(run.base_name, run.base_revision)
    lic, lic_source = resolve_license(run, license, base_meta)
    if language is None:
        language = base_meta.get("language")
    base_hub = model_hub_id(run.base_name)
    hub_datasets = []
    for role in ("train", "eval", "test"):
        src = run.source(role)
        hub = dataset_hub_id(src.name) if src else None
        if hub and hub not in hub_datasets:
            hub_datasets.append(hub)
    name = model_name or (repo_id.split("/")[-1] if repo_id else Path(run.path).name)
    headers, rows, splits = _results(run, base_line)
    adapter = run.adapter_config if not merged else None
    peft_type = (run.adapter_config or {}).get("peft_type")
    tags = ["hf-transfer", f"transfer-strategy:{run.strategy_name}", fam.pipeline_tag]
    if peft_type:
        tags.append(str(peft_type).lower())
    data = ModelCardData(
        base_model=base_hub,
        datasets=hub_datasets or None,
        language=language or None,
        library_name="peft" if adapter else "transformers",
        pipeline_tag=fam.pipeline_tag,
        tags=tags,
        metrics=list(fam.metrics),
        model_name=name,
        eval_results=_eval_results(run, splits) or None,
        **lic,
        **_widget(fam),
    )
    if images is None:
        images = run.images()
    m = run.metrics
    trainable, frozen = m.trainable_parameters, m.frozen_parameters
    total = (trainable or 0) + (frozen or 0)
    labels = run.labels
    ctx = dict(
        model_title=name,
        model_ref=repo_id or f"your-username/{name}",
        base_ref=base_hub or "path/to/the/base/checkpoint",
        base_model_md=_describe_model(run.base_name, run.base_revision),
        base_is_hub=bool(base_hub),
        merged=not adapter,
        peft_type={"LORA": "LoRA", "ADALORA": "AdaLoRA", "LOHA": "LoHa", "LOKR": "LoKr"}.get(str(peft_type), peft_type),
        auto_class=fam.auto_class,
        strategy=run.strategy_name,
        strategy_summary=str(m.raw.get("strategy_summary") or ""),  # written by Strategy.describe
        strategy_table=_md_table(["setting", "value"], _strategy_settings(run)) if _strategy_settings(run) else "",
        trainable=_fmt(trainable) if trainable is not None else "not recorded",
        frozen=_fmt(frozen) if frozen is not None else "not recorded",
        trainable_percent=f"{100 * trainable / total:.2f}" if trainable is not None and total else None,
        labels=labels,
        num_labels=len(labels),
        id2label=repr({i: n for i, n in enumerate(labels)}),
        train_source=_describe_source(run.source("train")),
        eval_source=(
            _describe_source(run.source("eval"))
            if run.source("eval")
            else "held out from the training data (stratified)"
        ),
        test_source=_describe_source(run.source("test")) if run.source("test") else None,
        train_size=m.train_size,
        eval_size=m.eval_size,
        test_size=m.test_size,
        small_data=isinstance(m.train_size, int) and m.train_size < 1000,
        hyperparameters_table=_md_table(["setting", "value"], _hyperparameters(run)),
        results_table=_md_table(headers, rows) if rows else "",
        has_baseline=bool(base_line),
        transfer_verdict=_transfer_verdict(run, base_line, splits),
        images=list(images),
        has_training_curves="training_curves.png" in images,
        has_confusion_matrix="confusion_matrix.png" in images,
        has_test_confusion_matrix="test_confusion_matrix.png" in images,
        train_runtime=_duration(m.train_runtime),
        train_steps=m.train_steps,
        hardware=m.hardware or "not recorded in the run folder",
        license_source=lic_source,
        example_input=fam.example_input,
        max_length=run.config.data.max_length,
        # hf-transfer trains and scores Whisper classifiers pooling over real frames only; plain
        # transformers pools over the padding too (hf_transfer.models.whisper).
        whisper_pooling=run.recipe == "audio_classification" and run.model_type == "whisper",
        audio_window=m.audio_window_seconds,
        # A classifier kept beside the model (feature_extraction / contrastive with svm, knn, or
        # features that are not the head's input): its files, how to load them, and the pickle.
        feature_layout=run.feature_layout,
        feature_classifier=(run.feature_classifier.classifier if run.feature_classifier else None),
        setfit_pickle=(run.path / "model_head.pkl").is_file(),
        lower_is_better=fam.lower_is_better,
        thresholds=m.raw.get("thresholds"),  # multi-label recipes
        threshold_selection=m.raw.get("threshold_selection"),
        target_scaling=m.raw.get("target_scaling"),  # regression recipes
        **_tagging_context(run),
    )
    card = ModelCard.from_template(data, template_path=str(_template(fam)), **ctx)
    # Template conditionals leave runs of blank lines; Markdown treats them as one.
    return ModelCard(re.sub(r"\n{3,}", "\n\n", card.content))
