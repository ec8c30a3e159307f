"""Turn a run folder into a self-contained, Hub-ready model folder, and prove it loads.

The export holds only what a user of the model needs: safetensors weights (merged, or the PEFT
adapter kept unmerged), config with label names, tokenizer or processor, README.md card and the
card's images; for a run whose classifier lives beside the model, that classifier as safetensors +
JSON (and SetFit's files for the SetFit layout). It is assembled from an allow-list, so
checkpoints/, logs, train.log, config.yaml (local paths) and anything else in the run folder never
reach it. Nothing is unpickled on the way.

Before it reports success the export is reloaded the way its card tells users to load it (plain
transformers, or peft on the base model) and its logits on a few inputs are compared with the
run folder's model. A folder that does not reload to the same model is an error, not a warning:
it is the one thing a model repository must get right.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from hf_transfer.errors import ExportError
from hf_transfer.export.card import build_card, recipe_of
from hf_transfer.export.card_checks import model_hub_id, validate_card
from hf_transfer.paths import resolve
from hf_transfer.run_folder import FEATURE_CLASSIFIER_FILE, PICKLED_CLASSIFIER_FILES, RunFolder

logger = logging.getLogger(__name__)

__all__ = ["export_run", "feature_layout", "merge_setting", "verify_export"]

WEIGHT_FILES = ("model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json")
MODEL_CONFIG_FILES = ("config.json", "generation_config.json")
PROCESSOR_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
    "*.tiktoken",
    "normalizer.json",
    "preprocessor_config.json",
    "processor_config.json",
    "feature_extractor_config.json",
    "image_processor_config.json",
    "chat_template.jinja",
    "chat_template.json",
)
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")

# Merging an adapter into the weights reorders float additions; differences stay far below this.
DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-3

_PROBE_TEXTS = (
    "This was a wonderful film.",
    "The service was slow and the food was cold.",
    "ok",
)


def _matching(folder: Path, patterns: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and any(fnmatch.fnmatch(p.name, pat) for pat in patterns))


def _is_export(folder: Path) -> bool:
    """An earlier export, which may be replaced: its README carries the hf-transfer tag."""
    readme = folder / "README.md"
    if not readme.is_file():
        return False
    from huggingface_hub.repocard import metadata_load

    try:
        tags = (metadata_load(readme) or {}).get("tags") or []
    except Exception:
        return False
    return "hf-transfer" in tags


def _auto_class(run: RunFolder) -> Any:
    import transformers

    return getattr(transformers, recipe_of(run).auto_class)


def _remote(run: RunFolder) -> dict:
    """`trust_remote_code=True` for runs trained with it (their config.yaml says so), else nothing."""
    return {"trust_remote_code": True} if run.config.model.trust_remote_code else {}


def _load_base(run: RunFolder, auto, **kwargs):
    name = resolve(run.base_name)
    try:
        return auto.from_pretrained(name, revision=run.base_revision, **kwargs, **_remote(run))
    except (OSError, ValueError) as e:
        raise ExportError(
            f"Cannot load the base model '{run.base_name}' to check the adapter against it: {e}"
        ) from None


def _label_kwargs(run: RunFolder) -> dict:
    labels = run.labels
    if run.recipe == "speech_recognition" or not labels:
        return {}
    id2label = dict(enumerate(labels))
    return dict(
        num_labels=len(labels),
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        ignore_mismatched_sizes=True,
    )


def _load_peft(run: RunFolder, adapter_dir: Path, auto):
    from peft import PeftModel

    base = _load_base(run, auto, **_label_kwargs(run))
    return PeftModel.from_pretrained(base, adapter_dir)


def load_run_model(run: RunFolder):
    """The model a run folder holds, as a plain transformers model (an adapter-only run is merged)."""
    if _matching(run.path, WEIGHT_FILES) or (run.path / "pytorch_model.bin").is_file():
        try:
            return _auto_class(run).from_pretrained(run.path, **_remote(run)).eval()
        except Exception as e:
            from hf_transfer.files import check_weights

            check_weights(run.path)  # a truncated model.safetensors: name it
            if not isinstance(e, (OSError, ValueError)):
                raise
            raise ExportError(f"The run's model in '{run.path}' does not load: {e}") from None
    adapter = run.adapter_dir
    if adapter is None:
        raise ExportError(
            f"'{run.path}' holds no trained model (no model.safetensors, no adapter). Did training "
            "finish? Resume it with training.resume_from_checkpoint=latest."
        )
    return _load_peft(run, adapter, _auto_class(run)).merge_and_unload().eval()


# ---------------------------------------------------------------------------------------------
# Probe inputs


def _eval_texts(run: RunFolder, n: int = 4) -> list[str] | list[tuple[str, str]]:
    """A few rows of the run's eval (else train) data, when it is a local file still on disk."""
    import pandas as pd

    from hf_transfer.data.labels import TEXT_CANDIDATES

    data = run.config.data
    for role in ("eval", "train"):
        src = run.source(role)
        if not src:
            continue
        try:
            path = Path(resolve(src.name)).expanduser()
        except Exception:
            continue
        if not path.is_file():
            continue
        suffix = path.suffix.lower()
        try:
            if suffix in (".csv", ".tsv"):
                df = pd.read_csv(path, nrows=n, sep="\t" if suffix == ".tsv" else ",", encoding=src.encoding or "utf-8")
            elif suffix == ".jsonl":
                df = pd.read_json(path, lines=True, nrows=n)
            elif suffix == ".parquet":
                df = pd.read_parquet(path).head(n)
            else:
                continue
        except Exception:
            continue
        col = data.text_column or next((c for c in TEXT_CANDIDATES if c in df.columns), None)
        if col not in df.columns:
            continue
        texts = [str(t) for t in df[col].tolist()]
        pair = data.text_pair_column
        if pair and pair in df.columns:
            return list(zip(texts, [str(t) for t in df[pair].tolist()]))
        return texts
    return []


#: Recipes whose inputs are texts, probed through the export's tokenizer.


def _probe_inputs(run: RunFolder, folder: Path, config) -> dict[str, torch.Tensor]:
    """Inputs built by the exported folder's own processor (which proves that it loads)."""
    import numpy as np

    from hf_transfer.registry import recipe_modality

    recipe = run.recipe
    modality = recipe_modality(recipe, "audio")
    rng = np.random.default_rng(0)
    try:
        if modality == "text":
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(folder, **_remote(run))
            rows = _eval_texts(run)
            limit = min(
                int(run.config.data.max_length or 512), int(getattr(config, "max_position_embeddings", 0) or 512)
            )
            if rows and isinstance(rows[0], tuple):
                a, b = zip(*rows)
                return dict(tok(list(a), list(b), padding=True, truncation=True, max_length=limit, return_tensors="pt"))
            texts = list(rows) + list(_PROBE_TEXTS)
            return dict(tok(texts, padding=True, truncation=True, max_length=limit, return_tensors="pt"))
        if modality == "image":
            from PIL import Image
            from transformers import AutoImageProcessor

            proc = AutoImageProcessor.from_pretrained(folder, **_remote(run))
            images = [
                Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)),
                Image.fromarray(np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1))).convert("RGB"),
            ]
            return {"pixel_values": proc(images, return_tensors="pt")["pixel_values"]}
        from transformers import AutoFeatureExtractor

        fe = AutoFeatureExtractor.from_pretrained(folder, **_remote(run))
        sr = int(getattr(fe, "sampling_rate", 16000))
        t = np.arange(sr, dtype=np.float32) / sr
        clips = [
            0.1 * rng.standard_normal(sr).astype(np.float32),
            0.5 * np.sin(2 * math.pi * 440 * t).astype(np.float32),
        ]
        feats = dict(fe(clips, sampling_rate=sr, return_tensors="pt", padding=True))
        main = "input_features" if "input_features" in feats else "input_values"
        inputs = {main: feats[main]}
        if recipe == "speech_recognition" and getattr(config, "is_encoder_decoder", False):
            start = config.decoder_start_token_id if config.decoder_start_token_id is not None else 0
            inputs["decoder_input_ids"] = torch.tensor([[start, 1, 2]] * len(clips))
        return inputs
    except (OSError, ValueError) as e:
        what = "tokenizer" if modality == "text" else "processor"
        raise ExportError(
            f"The export's {what} does not load ({e}). The run folder must hold the {what} the "
            "model was trained with; retrain, or copy its files from the base model into the run folder."
        ) from None


# ---------------------------------------------------------------------------------------------
# Reload check


def _logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits.float()


def verify_export(run_dir: str | Path, export_dir: str | Path, atol: float = DEFAULT_ATOL) -> float:
    """Reload `export_dir` as its card says and compare its logits with the run folder's model.

    Merged exports load with plain transformers (`AutoModelFor<task>`); unmerged ones with
    peft's `PeftModel` on the base model.

    Returns:
        The largest absolute logit difference.

    Raises:
        ExportError: The folder does not load, its label names differ from the run's, or its
            logits differ beyond tolerance.
    """
    run = RunFolder.open(run_dir, needs_metrics=True, error=ExportError)
    folder = Path(export_dir)
    reference = load_run_model(run)
    inputs = _probe_inputs(run, folder, reference.config)
    beside = feature_layout(run)
    if beside:
        # The classifier beside the model, on both sides: read from safetensors + JSON, never unpickled.
        from hf_transfer.models.feature_run import attach_feature_classifier

        reference = attach_feature_classifier(run.path, reference)
    unmerged = (folder / "adapter_config.json").is_file()
    try:
        if unmerged:
            exported = _load_peft(run, folder, _auto_class(run)).eval()
        else:
            exported = _auto_class(run).from_pretrained(folder, **_remote(run)).eval()
    except (OSError, ValueError, RuntimeError) as e:
        how = "peft on its base model" if unmerged else "plain transformers"
        raise ExportError(f"The export in '{folder}' does not load with {how}: {e}") from None
    if beside:
        exported = attach_feature_classifier(folder, exported)
    if run.labels and not unmerged:
        names = [exported.config.id2label[i] for i in range(len(exported.config.id2label))]
        if names != run.labels:
            raise ExportError(f"The export's label names {names} differ from the run's {run.labels}.")
    ref, got = _logits(reference, inputs), _logits(exported, inputs)
    if ref.shape != got.shape:
        raise ExportError(f"The export's outputs have shape {tuple(got.shape)}, the run's {tuple(ref.shape)}.")
    diff = float((ref - got).abs().max())
    if not torch.allclose(got, ref, atol=atol, rtol=DEFAULT_RTOL):
        hint = ""
        if unmerged and run.recipe != "speech_recognition":
            saved = json.loads((folder / "adapter_config.json").read_text()).get("modules_to_save")
            if not saved:
                hint = (
                    " The adapter holds no classification head (its modules_to_save is empty): the "
                    "new head was not saved with it. Export merged weights instead (drop --no-merge)."
                )
        raise ExportError(
            f"The exported model does not reproduce the run's outputs (largest logit difference "
            f"{diff:.3g}, tolerance {atol:g}).{hint}"
        )
    logger.info("Reload check passed: logits match the run's model (max difference %.2g).", diff)
    return diff


# ---------------------------------------------------------------------------------------------
# Export


def _ensure_label_names(config_path: Path, labels: list[str]) -> None:
    """Write the run's label names into config.json when it only has LABEL_0-style ones."""
    cfg = json.loads(config_path.read_text())
    id2label = cfg.get("id2label") or {}
    if labels and [id2label.get(str(i)) for i in range(len(labels))] != labels:
        if len(id2label) not in (0, len(labels)):
            raise ExportError(f"config.json has {len(id2label)} labels but the run recorded {len(labels)}.")
        cfg["id2label"] = {str(i): n for i, n in enumerate(labels)}
        cfg["label2id"] = {n: i for i, n in enumerate(labels)}
        config_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


#: What a run whose classifier lives beside the model adds to the export: the classifier (tensors +
#: JSON), the feature description, and the sentence-transformers / SetFit files of the `setfit`
#: layout (SetFit's `model_head.pkl` too, for SetFit users: hf_transfer never reads it).
FEATURE_FILES = (
    "feature_classifier.json",
    "classifier.safetensors",
    "classifier.json",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "config_setfit.json",
    "model_head.pkl",
)
FEATURE_FOLDERS = ("1_Pooling", "2_Normalize")


def feature_layout(run: RunFolder) -> str | None:
    """`setfit` or `beside` when the run's classifier lives beside the model, else None."""
    return run.feature_layout


def _copy_feature_classifier(run_dir: Path, out: Path) -> None:
    for f in _matching(run_dir, FEATURE_FILES):
        shutil.copyfile(f, out / f.name)
    for d in FEATURE_FOLDERS:
        if (run_dir / d).is_dir():
            shutil.copytree(run_dir / d, out / d)


def _write_adapter(run: RunFolder, adapter: Path, out: Path) -> None:
    for name in ADAPTER_FILES:
        if not (adapter / name).is_file():
            raise ExportError(f"The run's adapter folder '{adapter}' has no {name}.")
    shutil.copyfile(adapter / "adapter_model.safetensors", out / "adapter_model.safetensors")
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    # Where peft (and the Hub's model tree) will look for the base: its Hub id. A local or pkg://
    # base stays a local path, which `validate_card` refuses to push.
    cfg["base_model_name_or_path"] = model_hub_id(run.base_name) or resolve(run.base_name)
    cfg["revision"] = run.base_revision
    (out / "adapter_config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def _replace_folder(tmp: Path, out: Path) -> None:
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def merge_setting(run: RunFolder, merge_adapter: bool | None = None) -> bool:
    """Ship merged weights? The argument when given, else the run's config: false when either
    `strategy.merge` (PEFT strategies) or `export.merge_adapter` is false."""
    if merge_adapter is not None:
        return merge_adapter
    strategy_merge = getattr(run.config.strategy, "merge", None)  # PEFT strategies' setting
    export_merge = run.config.export.merge_adapter
    return strategy_merge is not False and export_merge is not False


def export_run(
    run_dir: str | Path,
    out_dir: str | Path,
    merge_adapter: bool | None = None,
    baseline: str | Path | dict | None = None,
    license: str | None = None,
    *,
    language: str | list[str] | None = None,
    repo_id: str | None = None,
    atol: float = DEFAULT_ATOL,
) -> Path:
    """Write a Hub-ready folder for a finished run and check that it reloads to the same model.

    Args:
        run_dir: The run folder (`output_dir` of `hf-transfer train`).
        out_dir: Folder to write. An earlier export there is replaced; any other non-empty
            folder is refused.
        merge_adapter: For PEFT runs, ship merged weights (plain transformers). False ships the
            adapter alone, to be loaded with peft on the base model. None: the run's
            `strategy.merge` / `export.merge_adapter` (merged unless one of them is false).
        baseline: Scratch-baseline metrics for the results table: a run folder, a metrics JSON
            file or a dict (default: the run's `baseline_metrics.json`, if any).
        license: Licence id for the card (overrides `export.license` and the base model's).
        language: Language code(s) for the card (default: the base model's).
        repo_id: Hub repository the export is meant for (named in the card's usage snippet).
        atol: Tolerance of the reload check on logits.

    Returns:
        `out_dir`. Card problems that would stop a push are logged as warnings.

    Raises:
        ExportError: Not a finished run, `out_dir` is not replaceable, or the export does not
            reload to the run's model.
    """
    run = RunFolder.open(run_dir, needs_metrics=True, error=ExportError)
    out = Path(out_dir)
    beside = feature_layout(run)  # a classifier kept beside the model (models.feature_run)
    if beside and not (run.path / FEATURE_CLASSIFIER_FILE).is_file():
        raise ExportError(
            f"'{run.path}' keeps its classifier only as a pickle ({', '.join(PICKLED_CLASSIFIER_FILES)}, written by "
            "an older hf-transfer): export does not unpickle files. Train the run again; the classifier is then "
            f"stored as {FEATURE_CLASSIFIER_FILE} + classifier.json and exports with the model."
        )
    if out.resolve() == run.path.resolve():
        raise ExportError("The export folder must not be the run folder itself; give another OUT_DIR.")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not _is_export(out))):
        raise ExportError(
            f"'{out}' exists and is not an earlier hf-transfer export; choose another folder or remove it."
        )
    adapter = run.adapter_dir
    merge_adapter = merge_setting(run, merge_adapter)
    merged = merge_adapter or adapter is None
    if not merge_adapter and adapter is None:
        logger.warning("The run has no PEFT adapter: exporting its full weights (--no-merge has no effect).")
    if _remote(run):
        logger.warning(
            "model.trust_remote_code=true in the run's config.yaml: the model's own code "
            "(its *.py files) will run to check the export, and ships with it."
        )

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if merged:
            weights = _matching(run.path, WEIGHT_FILES)
            if weights:
                # A remote-code model ships its code (configuration_*.py, modeling_*.py) too.
                code = _matching(run.path, ("*.py",)) if _remote(run) else []
                for f in _matching(run.path, MODEL_CONFIG_FILES) + weights + code:
                    shutil.copyfile(f, tmp / f.name)
            else:  # adapter-only run, or .bin weights: save merged safetensors
                load_run_model(run).save_pretrained(tmp)
            if run.labels and run.recipe != "speech_recognition":
                _ensure_label_names(tmp / "config.json", run.labels)
        else:
            _write_adapter(run, adapter, tmp)
        for f in _matching(run.path, PROCESSOR_FILES):
            shutil.copyfile(f, tmp / f.name)
        if beside:
            _copy_feature_classifier(run.path, tmp)
        images = run.images()
        for name in images:
            shutil.copyfile(run.path / name, tmp / name)
        card = build_card(
            run.path,
            merged=merged,
            repo_id=repo_id,
            model_name=None if repo_id else out.name,
            baseline=baseline,
            license=license,
            language=language,
            images=images,
        )
        card.save(tmp / "README.md")
        verify_export(run.path, tmp, atol=atol)
        from hf_transfer.files import respect_umask

        respect_umask(tmp)  # mkdtemp's 700 and safetensors' 600 would follow the rename
        _replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for problem in validate_card(out / "README.md"):
        logger.warning("Model card: %s (push will refuse the card until this is fixed)", problem)
    logger.info("Exported %s to %s", run.path, out)
    return out
