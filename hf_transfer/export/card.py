"""Model cards for a run folder: metadata, the body rendered from `model_cards/<recipe>.md`, and
the checks a card must pass before anything is uploaded.

Cards are built with `huggingface_hub.ModelCardData` / `EvalResult` and rendered with
`huggingface_hub.ModelCard.from_template`. `ModelCard.validate` would ask the Hub's
`/api/validate-yaml` endpoint, so it needs the network and answers only after the user has waited
for an export; `validate_card` checks the same metadata locally, so `push` can refuse a bad card
before it opens a single connection (the Hub validates once more when the commit is created).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.repocard import REGEX_YAML_BLOCK, metadata_load
from huggingface_hub.utils import HFValidationError, validate_repo_id

from hf_transfer import model_cards_dir
from hf_transfer.errors import ExportError
from hf_transfer.paths import PREFIX as PKG_PREFIX
from hf_transfer.paths import resolve

logger = logging.getLogger(__name__)

__all__ = [
    "FAMILIES",
    "Family",
    "RunFolder",
    "build_card",
    "dataset_hub_id",
    "model_hub_id",
    "resolve_license",
    "validate_card",
]


@dataclass(frozen=True)
class Family:
    """What a recipe's card and export need: Hub task id, loader class, headline metrics."""

    recipe: str
    pipeline_tag: str
    task_name: str
    auto_class: str
    metrics: tuple[str, ...]
    lower_is_better: bool = False

    @property
    def template(self) -> Path:
        return model_cards_dir() / f"{self.recipe}.md"


FAMILIES: dict[str, Family] = {
    f.recipe: f
    for f in (
        Family("text_classification", "text-classification", "Text Classification",
               "AutoModelForSequenceClassification", ("accuracy", "f1")),
        Family("image_classification", "image-classification", "Image Classification",
               "AutoModelForImageClassification", ("accuracy", "f1")),
        Family("audio_classification", "audio-classification", "Audio Classification",
               "AutoModelForAudioClassification", ("accuracy", "f1")),
        Family("speech_recognition", "automatic-speech-recognition", "Automatic Speech Recognition",
               "AutoModelForSpeechSeq2Seq", ("wer", "cer"), lower_is_better=True),
    )
}

#: Files the run writes that the card shows, copied next to README.md.
IMAGES = ("training_curves.png", "confusion_matrix.png", "test_confusion_matrix.png")

# Licence identifiers the Hub accepts in a card (https://huggingface.co/docs/hub/repositories-licenses).
HUB_LICENSES = frozenset("""
apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0
bigcode-openrail-m afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear
c-uda cc cc0-1.0 cc-by-2.0 cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0
cc-by-nc-3.0 cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0
cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 cdla-sharing-1.0 cdla-permissive-1.0 cdla-permissive-2.0 wtfpl
ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1 eupl-1.2 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl
lgpl-2.1 lgpl-3.0 isc h-research intel-research lppl-1.3c ms-pl apple-ascl apple-amlr mpl-2.0
odc-by odbl openrail++ osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib pddl lgpl-lr
deepfloyd-if-license fair-noncommercial-research-license llama2 llama3 llama3.1 llama3.2 llama3.3
llama4 gemma unknown other
""".split())

# Hub task ids (pipeline tags).
PIPELINE_TAGS = frozenset("""
text-classification token-classification table-question-answering question-answering
zero-shot-classification translation summarization feature-extraction text-generation
text2text-generation fill-mask sentence-similarity text-ranking text-to-speech text-to-audio
automatic-speech-recognition audio-to-audio audio-classification audio-text-to-text
voice-activity-detection depth-estimation image-classification object-detection
image-segmentation text-to-image image-to-text image-to-image image-to-video
unconditional-image-generation video-classification reinforcement-learning robotics
tabular-classification tabular-regression tabular-to-text table-to-text multiple-choice
text-retrieval time-series-forecasting text-to-video image-text-to-text visual-question-answering
document-question-answering zero-shot-image-classification graph-ml mask-generation
zero-shot-object-detection text-to-3d image-to-3d image-feature-extraction video-text-to-text
keypoint-detection visual-document-retrieval any-to-any other
""".split())

# A data file name is never a Hub id, even though `train.csv` passes the repo-id regex.
_DATA_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".parquet", ".arrow", ".txt", ".zip", ".tar", ".gz")
_LANGUAGE = re.compile(r"^[a-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")
_SPECIAL_LANGUAGES = {"multilingual", "code"}


# ---------------------------------------------------------------------------------------------
# Hub ids


def _path_like(name: str) -> bool:
    return (
        name.startswith((".", "/", "~", PKG_PREFIX))
        or "://" in name
        or "\\" in name
        or name.count("/") > 1
        or name.lower().endswith(_DATA_SUFFIXES)
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
    from hf_transfer.data.sources import _looks_local  # the loader's own local-vs-Hub rule

    if not _is_hub_id(name) or _looks_local(name):
        return None
    return name


# ---------------------------------------------------------------------------------------------
# The run folder


def _source(spec: Any) -> dict | None:
    """A `DataSource` from config.yaml as a dict (the YAML may hold the string shorthand)."""
    if spec is None or spec == "":
        return None
    if isinstance(spec, str):
        return {"name": spec}
    if isinstance(spec, dict) and spec.get("name"):
        return spec
    return None


@dataclass
class RunFolder:
    """A finished run folder, read as plain data (config.yaml is not re-validated, so a card can
    still be written for a run made by an older version with since-renamed keys)."""

    path: Path
    config: dict
    metrics: dict

    @classmethod
    def load(cls, run_dir: str | Path) -> "RunFolder":
        path = Path(run_dir)
        cfg_path, metrics_path = path / "config.yaml", path / "metrics.json"
        if not cfg_path.is_file():
            raise ExportError(
                f"'{run_dir}' is not a run folder (no config.yaml). Give the output_dir of a "
                "finished `hf-transfer train`."
            )
        if not metrics_path.is_file():
            raise ExportError(
                f"'{run_dir}' has no metrics.json: training did not finish. Resume it with "
                "training.resume_from_checkpoint=latest, then export."
            )
        try:
            config = yaml.safe_load(cfg_path.read_text()) or {}
            metrics = json.loads(metrics_path.read_text())
        except (yaml.YAMLError, json.JSONDecodeError) as e:
            raise ExportError(f"Cannot read the run folder '{run_dir}': {e}") from None
        return cls(path, config, metrics)

    @property
    def recipe(self) -> str:
        return self.config.get("recipe", "text_classification")

    @property
    def family(self) -> Family:
        if self.recipe not in FAMILIES:
            raise ExportError(f"Run '{self.path}' has recipe '{self.recipe}', which export does not know.")
        return FAMILIES[self.recipe]

    @property
    def base_name(self) -> str:
        return (self.config.get("model") or {}).get("name_or_path") or ""

    @property
    def base_revision(self) -> str | None:
        return (self.config.get("model") or {}).get("revision")

    @property
    def strategy(self) -> dict:
        s = self.config.get("strategy") or {}
        return s if isinstance(s, dict) else {"name": str(s)}

    @property
    def strategy_name(self) -> str:
        return str(self.metrics.get("strategy") or self.strategy.get("name") or "full")

    @property
    def labels(self) -> list[str]:
        return [str(x) for x in self.metrics.get("labels") or []]

    def source(self, role: str) -> dict | None:
        return _source((self.config.get("data") or {}).get(role))

    @property
    def adapter_dir(self) -> Path | None:
        """Where the run keeps its PEFT adapter: `adapter/` (PEFT strategies) or the root."""
        for d in (self.path / "adapter", self.path):
            if (d / "adapter_config.json").is_file():
                return d
        return None

    @property
    def adapter_config(self) -> dict | None:
        d = self.adapter_dir
        return json.loads((d / "adapter_config.json").read_text()) if d else None


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
    configured = (run.config.get("export") or {}).get("license")
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
        package = name[len(PKG_PREFIX):].split("/", 1)[0]
        return f"the checkpoint shipped in the Python package `{package}` (`{name}`; not a Hub repository)"
    return f"a local checkpoint (folder `{Path(name).name}`; not a Hub repository)"


def _describe_source(src: dict | None) -> str:
    if src is None:
        return "none"
    name = str(src["name"])
    hub = dataset_hub_id(name)
    if hub:
        parts = [f"[`{hub}`](https://huggingface.co/datasets/{hub})"]
        for key in ("config", "split", "revision"):
            if src.get(key):
                parts.append(f"{key} `{src[key]}`")
        return ", ".join(parts)
    if name.startswith(PKG_PREFIX):
        package = name[len(PKG_PREFIX):].split("/", 1)[0]
        return f"local data shipped in the Python package `{package}` (file `{Path(name).name}`), not on the Hub"
    return f"local data (`{Path(name).name}`), not on the Hub"


def _strategy_summary(name: str) -> str:
    """The registered strategy's own one-line docstring."""
    from hf_transfer.errors import HFTransferError
    from hf_transfer.strategies import build_strategy, strategy_config_class

    try:
        strategy = build_strategy(strategy_config_class(name)())
    except (HFTransferError, TypeError):  # a strategy this installation does not have
        return ""
    doc = (type(strategy).__doc__ or "").strip().splitlines()
    return doc[0].rstrip(".") + "." if doc else ""


_HPARAMS = (
    ("training", "epochs"), ("training", "max_steps"), ("training", "learning_rate"),
    ("training", "batch_size"), ("training", "gradient_accumulation_steps"),
    ("training", "weight_decay"), ("training", "warmup_ratio"), ("training", "scheduler"),
    ("training", "max_grad_norm"), ("training", "mixed_precision"), ("training", "label_smoothing"),
    ("training", "class_weights"), ("training", "early_stopping_patience"),
    ("training", "metric_for_best_model"), ("training", "seed"), ("data", "max_length"),
    ("data", "max_train_samples"), ("data", "samples_per_class"), ("data", "eval_samples_per_class"),
    ("data", "max_audio_seconds"),
)


def _hyperparameters(run: RunFolder) -> list[list[Any]]:
    rows = []
    for section, key in _HPARAMS:
        if section == "data" and key == "max_length" and run.recipe != "text_classification":
            continue
        value = (run.config.get(section) or {}).get(key)
        if value is None or value == "none" or (key == "early_stopping_patience" and value == 0):
            continue
        if key == "label_smoothing" and not value:
            continue
        rows.append([f"`{section}.{key}`", value])
    aug = (run.config.get("data") or {}).get("augmentation") or {}
    if run.recipe == "image_classification" and aug.get("enabled"):
        rows.append(["`data.augmentation`", ", ".join(f"{k}={v}" for k, v in aug.items() if k != "enabled")])
    return rows


# Strategy keys left out of the card when at these values (the base defaults say nothing), and
# `merge`, which is about export rather than training.
_QUIET_STRATEGY_KEYS = {"layer_lr_decay": 1.0, "head_lr_multiplier": 1.0}


def _strategy_settings(run: RunFolder) -> list[list[Any]]:
    rows = [[f"`strategy.{k}`", v] for k, v in run.strategy.items()
            if k not in ("name", "merge") and v is not None and _QUIET_STRATEGY_KEYS.get(k) != v]
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


def _metric(metrics: dict, split: str, name: str) -> float | None:
    v = metrics.get(f"{split}_{name}")
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def load_baseline(baseline: str | Path | dict | None, run: RunFolder) -> dict | None:
    """Baseline metrics: a dict, a scratch run folder or a metrics file; else the run's own
    `baseline_metrics.json` when it has one."""
    if isinstance(baseline, dict):
        return baseline
    path = Path(baseline) if baseline else run.path / "baseline_metrics.json"
    if path.is_dir():
        other = RunFolder.load(path)
        return {**other.metrics, "strategy": other.strategy_name}
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
    fam = run.family
    headers = ["model", "split"] + list(fam.metrics)
    rows, splits = [], []
    for split in ("eval", "test"):
        values = [_metric(run.metrics, split, m) for m in fam.metrics]
        if any(v is not None for v in values):
            splits.append(split)
            rows.append(["this model", split] + [_score(v) for v in values])
    if baseline:
        who = baseline.get("strategy") or "scratch"
        label = "scratch baseline (same architecture, random init)" if who == "scratch" else f"baseline ({who})"
        for split in splits:
            values = [_metric(baseline, split, m) for m in fam.metrics]
            if any(v is not None for v in values):
                rows.append([label, split] + [_score(v) for v in values])
    return headers, rows, splits


def _transfer_verdict(run: RunFolder, baseline: dict | None, splits: list[str]) -> str | None:
    """How the model compares with the baseline on its headline metric, when both were measured."""
    if not baseline or not splits:
        return None
    fam, split = run.family, ("test" if "test" in splits else "eval")
    metric = fam.metrics[0]
    ours, theirs = _metric(run.metrics, split, metric), _metric(baseline, split, metric)
    if ours is None or theirs is None:
        return None
    better = ours < theirs if fam.lower_is_better else ours > theirs
    word = "beats" if better else "does not beat"
    return f"On the {split} split this model {word} the baseline ({metric} {ours:.4f} against {theirs:.4f})."


def _eval_results(run: RunFolder, splits: list[str]) -> list[EvalResult]:
    fam = run.family
    results = []
    for split in splits:
        src = run.source(split) or run.source("train")
        carved = split == "eval" and run.source("eval") is None
        # huggingface_hub groups eval results by (task, dataset type/config/split/revision), so
        # every split needs its own split name or eval and test scores would merge.
        split_name = "held-out part of train" if carved else (
            (src or {}).get("split") or ("validation" if split == "eval" else "test"))
        hub = dataset_hub_id(str(src["name"])) if src else None
        if hub:
            ds = dict(dataset_type=hub, dataset_name=hub, dataset_config=src.get("config"),
                      dataset_revision=src.get("revision"), dataset_split=split_name)
        else:
            # Local data has no Hub id. The Hub requires dataset.type and dataset.name in a
            # model-index but does not resolve them; `local` names no dataset and no path.
            file = Path(str(src["name"])).name if src else "data"
            ds = dict(dataset_type="local", dataset_name=f"local data ({file})", dataset_split=split_name)
        for m in fam.metrics:
            v = _metric(run.metrics, split, m)
            if v is not None:
                results.append(EvalResult(task_type=fam.pipeline_tag, task_name=fam.task_name,
                                          metric_type=m, metric_value=round(v, 4),
                                          metric_name=f"{split} {m}", **ds))
    return results


def _example_input(run: RunFolder) -> str:
    return {"text_classification": "This was a wonderful film.",
            "image_classification": "path/to/image.jpg",
            "audio_classification": "path/to/audio.wav",
            "speech_recognition": "path/to/audio.wav"}[run.recipe]


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
    run = RunFolder.load(run_dir)
    fam = run.family
    base_line = load_baseline(baseline, run)
    base_meta = _base_card_metadata(run.base_name, run.base_revision)
    lic, lic_source = resolve_license(run, license, base_meta)
    if language is None:
        language = base_meta.get("language")
    base_hub = model_hub_id(run.base_name)
    hub_datasets = []
    for role in ("train", "eval", "test"):
        src = run.source(role)
        hub = dataset_hub_id(str(src["name"])) if src else None
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
    )
    if images is None:
        images = tuple(i for i in IMAGES if (run.path / i).is_file())
    m = run.metrics
    model_type = None
    if (run.path / "config.json").is_file():
        model_type = json.loads((run.path / "config.json").read_text()).get("model_type")
    trainable, frozen = m.get("trainable_parameters"), m.get("frozen_parameters")
    total = (trainable or 0) + (frozen or 0)
    labels = run.labels
    ctx = dict(
        model_title=name,
        model_ref=repo_id or f"your-username/{name}",
        base_ref=base_hub or "path/to/the/base/checkpoint",
        base_model_md=_describe_model(run.base_name, run.base_revision),
        base_is_hub=bool(base_hub),
        merged=not adapter,
        peft_type={"LORA": "LoRA", "ADALORA": "AdaLoRA", "LOHA": "LoHa", "LOKR": "LoKr"}.get(
            str(peft_type), peft_type),
        auto_class=fam.auto_class,
        strategy=run.strategy_name,
        strategy_summary=_strategy_summary(run.strategy_name),
        strategy_table=_md_table(["setting", "value"], _strategy_settings(run)) if _strategy_settings(run) else "",
        trainable=_fmt(trainable) if trainable is not None else "not recorded",
        frozen=_fmt(frozen) if frozen is not None else "not recorded",
        trainable_percent=f"{100 * trainable / total:.2f}" if trainable is not None and total else None,
        labels=labels,
        num_labels=len(labels),
        id2label=repr({i: n for i, n in enumerate(labels)}),
        train_source=_describe_source(run.source("train")),
        eval_source=(_describe_source(run.source("eval")) if run.source("eval")
                     else "held out from the training data (stratified)"),
        test_source=_describe_source(run.source("test")) if run.source("test") else None,
        train_size=m.get("train_size"),
        eval_size=m.get("eval_size"),
        test_size=m.get("test_size"),
        small_data=isinstance(m.get("train_size"), int) and m["train_size"] < 1000,
        hyperparameters_table=_md_table(["setting", "value"], _hyperparameters(run)),
        results_table=_md_table(headers, rows) if rows else "",
        has_baseline=bool(base_line),
        transfer_verdict=_transfer_verdict(run, base_line, splits),
        images=list(images),
        has_training_curves="training_curves.png" in images,
        has_confusion_matrix="confusion_matrix.png" in images,
        has_test_confusion_matrix="test_confusion_matrix.png" in images,
        train_runtime=_duration(m.get("train_runtime")),
        train_steps=m.get("train_steps"),
        hardware=m.get("hardware") or "not recorded in the run folder",
        license_source=lic_source,
        example_input=_example_input(run),
        max_length=(run.config.get("data") or {}).get("max_length"),
        # hf-transfer trains and scores Whisper classifiers pooling over real frames only; plain
        # transformers pools over the padding too (hf_transfer.models.whisper).
        whisper_pooling=run.recipe == "audio_classification" and model_type == "whisper",
        audio_window=m.get("audio_window_seconds"),
    )
    card = ModelCard.from_template(data, template_path=str(fam.template), **ctx)
    # Template conditionals leave runs of blank lines; Markdown treats them as one.
    return ModelCard(re.sub(r"\n{3,}", "\n\n", card.content))


# ---------------------------------------------------------------------------------------------
# Validation


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
                problems.append(f"base_model {b!r} is not a Hub model id (owner/name); describe local checkpoints in the text.")
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
        if not isinstance(lang, str) or not (_LANGUAGE.match(lang) or lang in _SPECIAL_LANGUAGES):
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
