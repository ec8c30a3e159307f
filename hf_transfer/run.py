"""Run a recipe end to end: `train`, and `evaluate` / `predict` on a finished run folder.

These are the few lines a user calls to reuse a recipe from Python:

    from hf_transfer import load_config, train
    metrics = train(load_config("recipes/configs/bert/sst2_full.yaml", ["training.epochs=1"]))
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from hf_transfer.config import TrainConfig, load_config, save_config
from hf_transfer.data.text import EpochSampler
from hf_transfer.errors import HFTransferError
from hf_transfer.strategies import build_strategy
from hf_transfer.tasks import get_task
from hf_transfer.utils import set_seed_all, setup_logging  # noqa: F401  (setup_logging: old import path)

logger = logging.getLogger("hf_transfer")


class RunContext:
    """What a strategy may look at before and after the model is built."""

    def __init__(self, cfg: TrainConfig, task, splits, output_dir: Path):
        from hf_transfer.engine.trainer import Trainer

        self.cfg = cfg
        self.task = task
        self.splits = splits
        self.output_dir = output_dir
        #: The engine's trainer, for a strategy whose `fit` trains with it (strategies sit beside
        #: the engine in the layering and do not import it).
        self.trainer_cls = Trainer


def _is_main() -> bool:
    from accelerate.state import PartialState
    from accelerate.utils import parse_flag_from_env

    # Same device choice as the Accelerator made later (`accelerate launch --cpu` sets this).
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU")).is_main_process


def train(cfg: TrainConfig, overwrite: bool = False) -> dict[str, Any]:
    """Train a run from a validated config and write its run folder.

    Args:
        cfg: The run's config.
        overwrite: Replace a finished (or interrupted) run in `cfg.output_dir` (also
            `overwrite_output_dir: true` in the config). Without it, such a folder is refused
            unless the run resumes (`training.resume_from_checkpoint`).

    Returns:
        The final metrics, also written to `<output_dir>/metrics.json`.
    """
    from hf_transfer.config import check_config
    from hf_transfer.files import check_output_dir, clear_previous_run
    from hf_transfer.paths import check_model_path
    from hf_transfer.models.layer_groups import layer_groups

    check_config(cfg)  # a config built in Python has not been through load_config's checks
    refuse_non_finite_settings(cfg)
    if cfg.stages:  # intermediate domains: one run per stage, in subfolders (hf_transfer.domain.stages)
        from hf_transfer.domain.stages import train_stages

        return train_stages(cfg, train, overwrite=overwrite)
    check_model_path(cfg.model.name_or_path)
    from hf_transfer.models.heads import load_config_checked

    # The checkpoint's config first: a name that is neither a folder nor a Hub id is said so here,
    # before a tokenizer or processor reports it as a network error.
    checkpoint = load_config_checked(cfg.model.name_or_path, cfg.model.revision, cfg.model.trust_remote_code)
    from hf_transfer.models.heads import check_checkpoint_fits_recipe

    # An image checkpoint in a text recipe: said here, before a tokenizer asks for sentencepiece.
    check_checkpoint_fits_recipe(checkpoint, cfg.recipe, cfg.model.name_or_path)
    out = Path(cfg.output_dir)
    overwrite = overwrite or getattr(cfg, "overwrite_output_dir", False)
    check_output_dir(out, overwrite, resuming=bool(cfg.training.resume_from_checkpoint))
    main = _is_main()
    out.mkdir(parents=True, exist_ok=True)
    setup_logging(out / "train.log" if main else None, main)
    logger.info("Run folder: %s", out.resolve())
    warn_if_launch_fell_back_to_one_process()
    if cfg.model.trust_remote_code:
        logger.warning("model.trust_remote_code=true: code shipped with '%s' will run (and travels with the "
                       "run folder: evaluate, predict and export run it too).", cfg.model.name_or_path)
    if cfg.export.push_to_hub:
        from hf_transfer.export.push import check_push_settings

        check_push_settings(cfg)  # no repo_id, token or licence: fail before training, not after
    from hf_transfer.engine.distributed import check_mixed_precision

    check_mixed_precision(cfg.training.mixed_precision)  # fp16 without a GPU: fail before loading anything

    set_seed_all(cfg.training.seed)
    task = get_task(cfg)
    task.load_processor()
    splits = task.load_splits()
    from hf_transfer.data.overlap import overlap_warning

    if (overlap := overlap_warning(task, splits)) and main:
        logger.warning(overlap)
    if cfg.data.normalize_from == "target":
        from hf_transfer.domain.adabn import normalize_from_target

        normalize_from_target(cfg, task)
    strategy = build_strategy(cfg.strategy)
    ctx = RunContext(cfg, task, splits, out)
    strategy.prepare(ctx)

    # Seed again right before building the model, so the seed alone controls the new head's
    # initialisation whatever data loading consumed.
    set_seed_all(cfg.training.seed)
    model = task.build_model(from_scratch=strategy.from_scratch)
    head_record = strategy.init_head(ctx, model)  # the new head from a probe (strategies.head_init)
    groups = layer_groups(model)
    adapted = strategy.apply(model, groups)
    if adapted is not model:
        groups = layer_groups(adapted)
    model = adapted
    from hf_transfer.domain import check_adaptation

    check_adaptation(cfg, strategy, model)  # adabn without batch norm, dann with feature extraction
    # Config, data and model are valid: only now does this run take over the folder. A rerun that
    # failed above left the previous run's config.yaml (and everything else) as it was.
    if main:
        if overwrite and not cfg.training.resume_from_checkpoint:
            removed = clear_previous_run(out)
            if removed:
                logger.info("--overwrite: removed the previous run's %s.", ", ".join(removed))
        save_run_config(cfg, out)
    info = strategy.describe(model)
    logger.info("Strategy %s: %s trainable / %s frozen parameters", strategy.name,
                f"{info['trainable_parameters']:,}", f"{info['frozen_parameters']:,}")

    if not strategy.trains_with_engine:
        metrics = strategy.fit(ctx, model, groups)
    else:
        metrics = _train_with_engine(cfg, task, splits, strategy, model, groups, out)
    metrics.update(strategy.describe(metrics.pop("_model", model)))
    metrics.update(head_record)
    metrics["strategy_summary"] = strategy.summary()  # the card reads it from metrics.json
    metrics.update(task.describe_data(splits))
    if main:
        _write_metrics(out, metrics)
        for line in summary_lines(metrics):
            logger.info("%s", line)
        from hf_transfer.files import respect_umask

        for p in out.iterdir():  # safetensors writes 600: the user's umask decides (644 under 022)
            if p.name != "checkpoints":
                respect_umask(p)
        if cfg.export.push_to_hub:
            from hf_transfer.export.push import maybe_push_after_training

            maybe_push_after_training(cfg.export, out)
    return metrics


def refuse_non_finite_settings(cfg: TrainConfig) -> None:
    """A NaN or infinite number anywhere in the config (`training.learning_rate=nan`) is refused
    by name, before any data or model loads; torch would otherwise fail deep inside the optimizer
    (nan) or train a NaN model (inf)."""
    import dataclasses
    import math

    from hf_transfer.errors import ConfigError

    def walk(value, key: str):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(
                f"{key}={value} is not a finite number: give a number (for training.learning_rate, a small "
                "positive one such as 2e-5), or remove the key to use the default.")
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            for f in dataclasses.fields(value):
                walk(getattr(value, f.name), f"{key}.{f.name}" if key else f.name)
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(v, f"{key}[{i}]")

    walk(cfg, "")


def warn_if_launch_fell_back_to_one_process() -> bool:
    """`accelerate launch --num_processes 2` without `--multi_gpu` on a machine with no GPU starts
    one ordinary process (its simple launcher sets MASTER_PORT but no WORLD_SIZE): say so, and how
    to get several CPU processes. Returns whether it warned."""
    env = os.environ
    if "ACCELERATE_USE_CPU" in env and "MASTER_PORT" in env and "WORLD_SIZE" not in env and not torch.cuda.is_available():
        logger.warning("accelerate launch asked for several processes, but without GPUs (and without --multi_gpu) "
                       "it runs this one process only. For several CPU processes: ACCELERATE_USE_CPU=1 "
                       "accelerate launch --multi_gpu --num_processes N -m hf_transfer train ...")
        return True
    return False


def save_run_config(cfg: TrainConfig, out: Path) -> None:
    """Write `config.yaml` atomically, local data paths made absolute, so that `evaluate` and
    `export` read the same files from any working folder."""
    import copy

    from hf_transfer.config import DataSource

    saved = copy.deepcopy(cfg)
    for role in ("train", "eval", "test", "target"):
        source = getattr(saved.data, role)
        if isinstance(source, DataSource) and source.name and not source.name.startswith("pkg://"):
            path = Path(source.name).expanduser()
            if not path.is_absolute() and path.exists():
                source.name = str(path.resolve())
    save_config(saved, out / "config.yaml")


def _train_with_engine(cfg, task, splits, strategy, model, groups, out) -> dict[str, Any]:
    from hf_transfer.engine.trainer import Trainer

    train_ds = task.preprocess(splits.train, train=True)
    eval_ds = task.preprocess(splits.eval, train=False) if splits.eval is not None else None
    lengths = task.lengths(train_ds) if cfg.data.group_by_length else None
    collate = task.collate
    if cfg.training.cache_frozen_prefix:
        from hf_transfer.models.layer_groups import layer_groups
        from hf_transfer.strategies.prefix_cache import (
            first_trainable_group, prefix_cache_blocker, prefix_cached_training)

        reason = ("the trainable set changes during training" if strategy.changes_trainable_set
                  else prefix_cache_blocker(model, groups, first_trainable_group(groups), cfg.data.augmentation.enabled))
        if reason is None:
            # The frozen part runs once per example; only the trainable top runs every epoch.
            model, train_ds, eval_ds, collate = prefix_cached_training(
                model, groups, train_ds, eval_ds, task,
                batch_size=cfg.training.eval_batch_size or cfg.training.batch_size)
            groups = layer_groups(model)
            logger.info("Frozen-prefix cache on: the frozen blocks ran once; training the top only.")
        else:
            logger.info("Frozen-prefix cache off: %s.", reason)
    sampler = EpochSampler(len(train_ds), cfg.training.seed, lengths, cfg.training.batch_size)
    from hf_transfer.domain import build_adaptation_hook

    hook = build_adaptation_hook(cfg, task, model, train_ds, collate)  # None unless adaptation.name is set
    trainer = Trainer(cfg.training, task, model, strategy, groups, train_dataset=train_ds, eval_dataset=eval_ds,
                      collate_fn=collate, train_sampler=sampler, output_dir=out, hook=hook)
    metrics = trainer.train()
    acc = trainer.accelerator
    device = torch.cuda.get_device_name(acc.device) if acc.device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    metrics["hardware"] = f"{acc.num_processes} x {device}" if acc.num_processes > 1 else device
    if splits.test is not None:
        test_ds = task.preprocess(splits.test, train=False)
        dl = trainer.accelerator.prepare(DataLoader(
            test_ds, batch_size=cfg.training.eval_batch_size or cfg.training.batch_size,
            collate_fn=task.collate))
        metrics.update(trainer.evaluate(dl, prefix="test"))
    acc = trainer.accelerator
    acc.wait_for_everyone()
    from hf_transfer.engine.distributed import final_model

    # FSDP: full weights gathered from the shards into a fresh copy on the main process.
    final = final_model(acc, trainer.model, lambda: _rebuild_model(task, strategy)) or trainer.unwrapped_model()
    if acc.is_main_process:
        task.before_save(final)
        strategy.save_model(final, out)
        task.save_processor(out)
        from hf_transfer.metrics.plots import plot_training_curves

        plot_training_curves(trainer.state.history, out / "training_curves.png")
        (out / "history.json").write_text(json.dumps(trainer.state.history, indent=1))
    acc.wait_for_everyone()
    acc.end_training()
    metrics["_model"] = final
    return metrics


def _rebuild_model(task, strategy):
    """A fresh copy of the run's model with the strategy applied (weights to be loaded into it)."""
    from hf_transfer.models.layer_groups import layer_groups

    model = task.build_model(from_scratch=True)
    return strategy.apply(model, layer_groups(model))


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min {secs} s"


def summary_lines(metrics: dict[str, Any]) -> list[str]:
    """What a finished run did, in words: rows trained on, epochs and steps, how long, rows
    evaluated (and tested), and an eval split cut by `data.eval_samples_per_class` /
    `data.max_eval_samples`. Logged at the end of `train` and printed by `hf-transfer train`."""
    parts = []
    if isinstance(metrics.get("train_size"), int):
        parts.append(f"Trained on {metrics['train_size']:,} rows")
    else:
        parts.append("Trained")
    epoch, steps = metrics.get("epoch"), metrics.get("train_steps")
    if isinstance(epoch, (int, float)) and epoch:
        parts.append(f"for {epoch:g} epoch{'' if epoch == 1 else 's'}")
    if isinstance(steps, int) and steps:
        parts.append(f"({steps:,} step{'' if steps == 1 else 's'})")
    if isinstance(metrics.get("train_runtime"), (int, float)):
        parts.append(f"in {_duration(float(metrics['train_runtime']))}")
    line = " ".join(parts)
    scored = [f"{verb} on {metrics[key]:,} rows" for verb, key in (("evaluated", "eval_size"), ("tested", "test_size"))
              if isinstance(metrics.get(key), int)]
    lines = [line + ("; " + ", ".join(scored) if scored else "") + "."]
    before = metrics.get("eval_size_before_cut")
    if isinstance(before, int) and isinstance(metrics.get("eval_size"), int):
        n = metrics["eval_size"]
        lines.append(f"Smaller eval split: {before:,} rows {metrics.get('eval_origin', '')}, cut to {n:,} by "
                     f"{metrics.get('eval_cut_by')}; each eval row moves accuracy by {100 / max(n, 1):.1f} points. "
                     "Unset it to evaluate on every row.")
    return lines


def _write_metrics(out: Path, metrics: dict[str, Any]) -> None:
    from hf_transfer.metrics.classification import save_confusion_matrix

    labels = metrics.get("labels")
    for prefix in ("eval", "test"):
        cm = metrics.pop(f"{prefix}_confusion_matrix", None)
        if cm is not None and labels:
            save_confusion_matrix(cm, labels, out, stem="confusion_matrix" if prefix == "eval" else "test_confusion_matrix")
    clean = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool, list, dict)) or v is None}
    (out / "metrics.json").write_text(json.dumps(clean, indent=2, default=str))
    scalars = {k: v for k, v in clean.items() if k.startswith(("eval_", "test_")) and isinstance(v, float) and k.count("_") == 1}
    logger.info("Final metrics: %s", ", ".join(f"{k}={v:.4f}" for k, v in sorted(scalars.items())))


def load_run_config(run_dir: str | Path) -> TrainConfig:
    """The config a run was trained with (its `config.yaml`)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise HFTransferError(
            f"'{run_dir}' is not a run folder (no config.yaml). Give the output_dir of a finished "
            "`hf-transfer train`."
        )
    return load_config(path)


_MODEL_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                  "pytorch_model.bin.index.json")


def open_finished_run(run_dir: str | Path) -> TrainConfig:
    """The config of a run folder that holds a trained model, checked before anything loads.

    The run's `model.trust_remote_code` travels with it (its `config.yaml`): a run trained with
    remote code is evaluated, predicted and exported with it too, and the log says that code runs.

    Raises:
        HFTransferError: Not a run folder, or training never finished (no model saved yet).
    """
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    if _is_onnx(run_dir):  # an ONNX export (hf_transfer.export.onnx): its graph is the model
        return cfg
    if not (run_dir / "config.json").is_file() or not any((run_dir / w).is_file() for w in _MODEL_WEIGHTS):
        ckpts = sorted((run_dir / "checkpoints").glob("step_*")) if (run_dir / "checkpoints").is_dir() else []
        state = (f"It holds checkpoints ({', '.join(p.name for p in ckpts)}) of a run that was interrupted: "
                 f"finish it with `hf-transfer train {run_dir / 'config.yaml'} "
                 "training.resume_from_checkpoint=latest`." if ckpts else
                 "No checkpoint was saved either: train it again.")
        raise HFTransferError(f"'{run_dir}' has no trained model yet (training did not finish). {state}")
    if cfg.model.trust_remote_code:
        logger.warning("model.trust_remote_code=true in %s: code shipped with the model will run.",
                       run_dir / "config.yaml")
    return cfg


def _is_onnx(run_dir: Path) -> bool:
    from hf_transfer.export.onnx import is_onnx_export

    return is_onnx_export(run_dir)


def _load_run_model(run_dir: Path, task, allow_pickle: bool = False):
    from hf_transfer.files import check_weights

    if _is_onnx(run_dir):
        from hf_transfer.export.onnx import OnnxClassifier

        return OnnxClassifier(run_dir).eval()

    from hf_transfer.strategies.static import is_static_run, load_static_classifier

    if is_static_run(run_dir):  # a static embedding table and a linear head, no transformer
        return load_static_classifier(run_dir)
    remote = task.cfg.model.trust_remote_code
    try:
        model = task.auto_model_cls.from_pretrained(run_dir, trust_remote_code=remote)
    except Exception as e:
        check_weights(run_dir)  # a damaged weights file: say which
        if isinstance(e, (OSError, ValueError)):
            raise HFTransferError(f"The model in '{run_dir}' does not load: {type(e).__name__}: {e}") from None
        raise
    # A strategy that keeps part of the model beside it (a feature-extraction run's scikit-learn
    # classifier) registered a loader that puts it back.
    from hf_transfer.run_folder import RunFolder, apply_model_loaders

    return apply_model_loaders(RunFolder(run_dir, allow_pickle=allow_pickle), model).eval()


def _run_labels(run_dir: Path) -> list[str] | None:
    """Label names in id order: the run's metrics.json (what it trained on), else its model config."""
    try:
        labels = json.loads((run_dir / "metrics.json").read_text()).get("labels")
        if isinstance(labels, list) and labels:
            return [str(x) for x in labels]
    except (OSError, ValueError):
        pass
    try:
        id2label = json.loads((run_dir / "config.json").read_text()).get("id2label") or {}
        return [str(id2label[str(i)]) for i in range(len(id2label))] or None
    except (OSError, ValueError, KeyError):
        return None


def evaluate(run_dir: str | Path, split: str = "auto", allow_pickle: bool = False) -> dict[str, Any]:
    """Metrics of a finished run on its eval split (`eval`), its test split (`test`), or both (`auto`).

    `allow_pickle`: read an older feature-extraction run's pickled classifier (runs code from the
    file: only for run folders you trust); current run folders need no pickle."""
    from hf_transfer.engine.trainer import new_accelerator, run_evaluation

    run_dir = Path(run_dir)
    setup_logging(None)
    cfg = open_finished_run(run_dir)
    cfg.model.name_or_path = str(run_dir)
    set_seed_all(cfg.training.seed)
    task = get_task(cfg)
    task.load_processor()
    # Load only the splits evaluated (train only when the eval split is carved from it).
    task.only_roles = {"eval": ("eval",), "test": ("test",), "auto": ("eval", "test")}[split]
    task.known_labels = _run_labels(run_dir)
    splits = task.load_splits()
    model = _load_run_model(run_dir, task, allow_pickle)
    acc = new_accelerator(cfg.training, run_dir)
    acc.trackers = []
    model = acc.prepare(model)
    wanted = {"eval": [("eval", splits.eval)], "test": [("test", splits.test)],
              "auto": [("eval", splits.eval), ("test", splits.test)]}[split]
    metrics: dict[str, Any] = {}
    for prefix, ds in wanted:
        if ds is None:
            if split != "auto":
                raise HFTransferError(f"The run's config has no {prefix} split (data.{prefix}).")
            continue
        dl = acc.prepare(DataLoader(task.preprocess(ds, train=False),
                                    batch_size=cfg.training.eval_batch_size or cfg.training.batch_size,
                                    collate_fn=task.collate))
        metrics.update(run_evaluation(acc, model, dl, task, prefix))
    return metrics


def predict(run_dir: str | Path, inputs: list[str], top_k: int = 1, allow_pickle: bool = False) -> list[dict[str, Any]]:
    """Predict labels for raw inputs (texts, or image/audio file paths, by recipe); `allow_pickle`
    as in `evaluate`."""
    from hf_transfer.errors import ConfigError

    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ConfigError(f"top_k must be at least 1, got {top_k!r}: how many labels to return per input.")
    run_dir = Path(run_dir)
    setup_logging(None)
    cfg = open_finished_run(run_dir)
    cfg.model.name_or_path = str(run_dir)
    task = get_task(cfg)
    task.load_processor()
    model = _load_run_model(run_dir, task, allow_pickle)
    return task.predict(model, inputs, top_k=top_k)


def export_onnx(run_dir: str | Path, out_dir: str | Path, quantize: str | None = None, *,
                batch_size: int = 32, min_agreement: float | None = None):
    """ONNX export of a finished classification run, checked against PyTorch on its eval split.

    The model is loaded as `evaluate` loads it (merged weights for PEFT runs; the feature
    classifier put back for feature-extraction and contrastive runs) and handed to
    `hf_transfer.export.onnx.export_onnx` with a few eval rows for the trace and the eval split
    for the accuracy and int8 agreement figures.

    Returns:
        `hf_transfer.export.onnx.OnnxExport`: the folder, the file served by default and the figures.
    """
    from hf_transfer.errors import ExportError
    from hf_transfer.export.onnx import MIN_INT8_AGREEMENT, check_out_dir, require_onnx
    from hf_transfer.export.onnx import export_onnx as write_onnx

    require_onnx()
    run_dir = Path(run_dir)
    if _is_onnx(run_dir):
        raise ExportError(f"'{run_dir}' is already an ONNX export; give the run folder it came from.")
    check_out_dir(run_dir, out_dir, quantize)
    if min_agreement is not None and not 0.0 <= min_agreement <= 1.0:
        raise ExportError(f"--min-int8-agreement must be between 0 and 1, got {min_agreement}.")
    cfg = open_finished_run(run_dir)
    if cfg.recipe not in ("text_classification", "image_classification", "audio_classification"):
        raise ExportError(f"ONNX export covers text, image and audio classification runs; '{run_dir}' is a "
                          f"{cfg.recipe} run. Export it with --format hub.")
    cfg.model.name_or_path = str(run_dir)
    set_seed_all(cfg.training.seed)
    task = get_task(cfg)
    task.load_processor()
    task.only_roles = ("eval", "test")
    task.known_labels = _run_labels(run_dir)
    splits = task.load_splits()
    ds = splits.eval if splits.eval is not None else splits.test
    if ds is None or len(ds) == 0:
        raise ExportError(f"'{run_dir}' has no eval or test split to check the ONNX model on (data.eval).")
    model = _load_run_model(run_dir, task)
    data = task.preprocess(ds, train=False)
    sample = task.model_inputs(next(iter(DataLoader(data, batch_size=8, collate_fn=task.collate))))

    def batches():
        for batch in DataLoader(data, batch_size=batch_size, collate_fn=task.collate):
            yield task.model_inputs(batch), batch["labels"]

    return write_onnx(model, run_dir, out_dir, sample_inputs=sample, eval_batches=batches, recipe=cfg.recipe,
                      labels=_run_labels(run_dir) or [], quantize=quantize,
                      min_agreement=MIN_INT8_AGREEMENT if min_agreement is None else min_agreement)
