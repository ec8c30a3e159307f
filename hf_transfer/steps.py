"""The named steps of one training run, in the order `hf_transfer.run.train` calls them.

Each step takes the values it needs (a settings section of the config, a path, the task), not the
whole config, so a reader sees what a step depends on from its signature:

1. `check_settings`: every cross-key check, non-finite numbers, the checkpoint fits the recipe,
   push settings, precision; nothing loads yet.
2. `open_run_folder`: refuse a folder holding another run, start the log.
3. `load_data`: the task, its processor and its splits (target normalisation included).
4. `build_model`: the strategy prepares, the model is built, its head initialised, the strategy
   applied (freezing, PEFT wrapping).
5. `take_over_folder`: only now, with config, data and model valid, the run writes `config.yaml`
   (and `--overwrite` removes the previous run's files).
6. `fit`: the strategy's own fit, or the engine (`fit_with_engine`: the frozen-prefix cache, the
   adaptation hook, the Trainer, the test split, the model saved).
7. `write_results`: `metrics.json`, confusion matrices, the summary in the log.
8. `push`: to the Hub when `export.push_to_hub` is set.

Staged configs (`stages:`) run these steps once per stage (`hf_transfer.stages`).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from torch.utils.data import DataLoader

from hf_transfer.config import DataConfig, ExportConfig, ModelConfig, TrainConfig, TrainingConfig
from hf_transfer.run_folder import RunFolder
from hf_transfer.utils import set_seed_all, setup_logging

logger = logging.getLogger("hf_transfer")


def is_main_process() -> bool:
    """Whether this process writes the run folder (the same device choice the Accelerator makes
    later: `accelerate launch --cpu` sets ACCELERATE_USE_CPU)."""
    from accelerate.state import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU")).is_main_process


# 1. Settings ----------------------------------------------------------------------------------
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
                "positive one such as 2e-5), or remove the key to use the default."
            )
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


def check_checkpoint(model: ModelConfig, recipe: str) -> None:
    """The checkpoint's config first: a name that is neither a folder nor a Hub id is said so
    here, before a tokenizer or processor reports it as a network error; an image checkpoint in a
    text recipe is said here, before a tokenizer asks for sentencepiece."""
    from hf_transfer.models.heads import check_checkpoint_fits_recipe, load_config_checked
    from hf_transfer.paths import check_model_path

    check_model_path(model.name_or_path)
    checkpoint = load_config_checked(model.name_or_path, model.revision, model.trust_remote_code)
    check_checkpoint_fits_recipe(checkpoint, recipe, model.name_or_path)


def check_before_loading(cfg: TrainConfig) -> None:
    """Push settings (no repo id, token or licence: the licence needs the base model's card) and
    the precision (fp16 without a GPU): fail before training, not after."""
    if cfg.export.push_to_hub:
        from hf_transfer.export.push import check_push_settings

        check_push_settings(cfg)
    from hf_transfer.engine.distributed import check_mixed_precision

    check_mixed_precision(cfg.training.mixed_precision)


# 2. The run folder ----------------------------------------------------------------------------
def open_run_folder(output_dir: str, *, overwrite: bool, resuming: bool, main: bool, model: ModelConfig) -> RunFolder:
    """The run folder, refused when it holds another run (unless overwriting or resuming); the
    log file starts here."""
    run = RunFolder(output_dir)
    run.check_writable(overwrite, resuming=resuming)
    run.path.mkdir(parents=True, exist_ok=True)
    setup_logging(run.log_path if main else None, main)
    logger.info("Run folder: %s", run.path.resolve())
    warn_if_launch_fell_back_to_one_process()
    if model.trust_remote_code:
        logger.warning(
            "model.trust_remote_code=true: code shipped with '%s' will run (and travels with the "
            "run folder: evaluate, predict and export run it too).",
            model.name_or_path,
        )
    return run


def warn_if_launch_fell_back_to_one_process() -> bool:
    """`accelerate launch --num_processes 2` without `--multi_gpu` on a machine with no GPU starts
    one ordinary process (its simple launcher sets MASTER_PORT but no WORLD_SIZE): say so, and how
    to get several CPU processes. Returns whether it warned."""
    env = os.environ
    if (
        "ACCELERATE_USE_CPU" in env
        and "MASTER_PORT" in env
        and "WORLD_SIZE" not in env
        and not torch.cuda.is_available()
    ):
        logger.warning(
            "accelerate launch asked for several processes, but without GPUs (and without --multi_gpu) "
            "it runs this one process only. For several CPU processes: ACCELERATE_USE_CPU=1 "
            "accelerate launch --multi_gpu --num_processes N -m hf_transfer train ..."
        )
        return True
    return False


# 3. Data --------------------------------------------------------------------------------------
def load_data(cfg: TrainConfig, *, main: bool):
    """The recipe's task with its processor loaded, and its splits. Returns `(task, splits)`."""
    from hf_transfer.data.overlap import overlap_warning
    from hf_transfer.tasks import get_task

    set_seed_all(cfg.training.seed)
    task = get_task(cfg)
    task.load_processor()
    splits = task.load_splits()
    if (overlap := overlap_warning(task, splits)) and main:
        logger.warning(overlap)
    if cfg.data.normalize_from == "target":
        from hf_transfer.domain.adabn import normalize_from_target

        normalize_from_target(cfg, task)
    return task, splits


# 4. Model and strategy ------------------------------------------------------------------------
def build_model(task, strategy, ctx, seed: int):
    """Build the model, initialise its new head and apply the strategy.

    Returns:
        `(model, groups, head_record)`: the model as the strategy left it (PEFT-wrapped, frozen
        parts), its layer groups, and what the head initialisation did (for metrics.json).
    """
    from hf_transfer.models.layer_groups import layer_groups

    strategy.prepare(ctx)
    # Seed again right before building the model, so the seed alone controls the new head's
    # initialisation whatever data loading consumed.
    set_seed_all(seed)
    model = task.build_model(from_scratch=strategy.from_scratch)
    head_record = strategy.init_head(ctx, model)  # the new head from a probe (strategies.head_init)
    groups = layer_groups(model)
    adapted = strategy.apply(model, groups)
    if adapted is not model:
        groups = layer_groups(adapted)
    return adapted, groups, head_record


# 5. Taking over the folder --------------------------------------------------------------------
def take_over_folder(run: RunFolder, cfg: TrainConfig, *, clear: bool, main: bool) -> None:
    """Config, data and model are valid: only now does this run take over the folder. A rerun
    that failed before this left the previous run's config.yaml (and everything else) as it was."""
    if not main:
        return
    if clear:
        removed = run.clear_previous_run()
        if removed:
            logger.info("--overwrite: removed the previous run's %s.", ", ".join(removed))
    run.write_config(cfg)


# 6. Fitting -----------------------------------------------------------------------------------
def fit_with_engine(
    task,
    splits,
    strategy,
    model,
    groups,
    run: RunFolder,
    *,
    training: TrainingConfig,
    data: DataConfig,
    adaptation_hook_factory,
) -> dict[str, Any]:
    """Train with the engine's Trainer, score the test split, save the model and the history.

    Args:
        adaptation_hook_factory: `(model, train_ds, collate) -> hook or None`: the domain
            adaptation hook for `adaptation.name` (built once the datasets exist).
    """
    from hf_transfer.data.text import EpochSampler
    from hf_transfer.engine.distributed import final_model
    from hf_transfer.engine.trainer import Trainer

    train_ds = task.preprocess(splits.train, train=True)
    eval_ds = task.preprocess(splits.eval, train=False) if splits.eval is not None else None
    lengths = task.lengths(train_ds) if data.group_by_length else None
    eval_batch_size = training.eval_batch_size or training.batch_size
    collate = task.collate
    if training.cache_frozen_prefix:
        model, groups, train_ds, eval_ds, collate = cache_frozen_prefix(
            task,
            strategy,
            model,
            groups,
            train_ds,
            eval_ds,
            collate,
            augmentation=data.augmentation.enabled,
            batch_size=eval_batch_size,
        )
    sampler = EpochSampler(len(train_ds), training.seed, lengths, training.batch_size)
    hook = adaptation_hook_factory(model, train_ds, collate)  # None unless adaptation.name is set
    trainer = Trainer(
        training,
        task,
        model,
        strategy,
        groups,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        collate_fn=collate,
        train_sampler=sampler,
        output_dir=run.path,
        hook=hook,
    )
    metrics = trainer.train()
    acc = trainer.accelerator
    metrics["hardware"] = hardware(acc)
    if splits.test is not None:
        dl = acc.prepare(
            DataLoader(task.preprocess(splits.test, train=False), batch_size=eval_batch_size, collate_fn=task.collate)
        )
        metrics.update(trainer.evaluate(dl, prefix="test"))
    acc.wait_for_everyone()
    # FSDP: full weights gathered from the shards into a fresh copy on the main process.
    final = final_model(acc, trainer.model, lambda: rebuild_model(task, strategy)) or trainer.unwrapped_model()
    if acc.is_main_process:
        task.before_save(final)
        strategy.save_model(final, run.path)
        task.save_processor(run.path)
        run.write_history(trainer.state.history)
    acc.wait_for_everyone()
    acc.end_training()
    metrics["_model"] = final
    return metrics


def cache_frozen_prefix(
    task, strategy, model, groups, train_ds, eval_ds, collate, *, augmentation: bool, batch_size: int
):
    """The frozen bottom of the network run once per example, so only the trainable top runs
    every epoch (`training.cache_frozen_prefix`); everything unchanged when the cache does not
    apply (the log says why). Returns `(model, groups, train_ds, eval_ds, collate)`."""
    from accelerate.state import PartialState

    from hf_transfer.models.layer_groups import layer_groups
    from hf_transfer.strategies.prefix_cache import PrefixCachedModel, setup_prefix_cache

    # Every process caches the whole split on the device the engine trains on (Accelerate shards
    # the batches afterwards).
    cache = setup_prefix_cache(
        model,
        groups,
        task,
        [train_ds, eval_ds],
        batch_size=batch_size,
        augmentation=augmentation,
        changes_trainable_set=strategy.changes_trainable_set,
        device=PartialState().device,
        log_name="Training: ",
    )
    if cache is None:
        return model, groups, train_ds, eval_ds, collate
    model = PrefixCachedModel(model, cache.plan)
    train_ds, eval_ds = cache.datasets
    logger.info("Frozen-prefix cache on: the frozen blocks ran once; training the top only.")
    return model, layer_groups(model), train_ds, eval_ds, cache.collate


def hardware(acc) -> str:
    """Where the run trained, for metrics.json and the card."""
    device = torch.cuda.get_device_name(acc.device) if acc.device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    return f"{acc.num_processes} x {device}" if acc.num_processes > 1 else device


def rebuild_model(task, strategy):
    """A fresh copy of the run's model with the strategy applied (weights to be loaded into it)."""
    from hf_transfer.models.layer_groups import layer_groups

    model = task.build_model(from_scratch=True)
    return strategy.apply(model, layer_groups(model))


# 7. Results -----------------------------------------------------------------------------------
def write_results(run: RunFolder, metrics: dict[str, Any]) -> None:
    """metrics.json and the confusion matrices; the summary and final metrics in the log; the
    folder's files readable as the user's umask says (safetensors writes 600)."""
    from hf_transfer.files import respect_umask

    clean = run.write_metrics(metrics)
    scalars = {
        k: v
        for k, v in clean.items()
        if k.startswith(("eval_", "test_")) and isinstance(v, float) and k.count("_") == 1
    }
    logger.info("Final metrics: %s", ", ".join(f"{k}={v:.4f}" for k, v in sorted(scalars.items())))
    for line in summary_lines(metrics):
        logger.info("%s", line)
    for p in run.path.iterdir():
        if p.name != "checkpoints":
            respect_umask(p)


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
    scored = [
        f"{verb} on {metrics[key]:,} rows"
        for verb, key in (("evaluated", "eval_size"), ("tested", "test_size"))
        if isinstance(metrics.get(key), int)
    ]
    lines = [line + ("; " + ", ".join(scored) if scored else "") + "."]
    before = metrics.get("eval_size_before_cut")
    if isinstance(before, int) and isinstance(metrics.get("eval_size"), int):
        n = metrics["eval_size"]
        lines.append(
            f"Smaller eval split: {before:,} rows {metrics.get('eval_origin', '')}, cut to {n:,} by "
            f"{metrics.get('eval_cut_by')}; each eval row moves accuracy by {100 / max(n, 1):.1f} points. "
            "Unset it to evaluate on every row."
        )
    return lines


# 8. Push --------------------------------------------------------------------------------------
def push(run: RunFolder, export: ExportConfig) -> None:
    """Push the finished run to the Hub (`export.push_to_hub`)."""
    from hf_transfer.export.push import maybe_push_after_training

    maybe_push_after_training(export, run.path)
