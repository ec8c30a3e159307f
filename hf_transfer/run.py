"""Run a recipe end to end: `train`, and `evaluate` / `predict` on a finished run folder.

These are the few lines a user calls to reuse a recipe from Python:

    from hf_transfer import load_config, train
    metrics = train(load_config("recipes/configs/bert/sst2_full.yaml", ["training.epochs=1"]))
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from hf_transfer.config import TrainConfig, load_config, save_config
from hf_transfer.data.text import EpochSampler
from hf_transfer.errors import HFTransferError
from hf_transfer.models.heads import set_seed_all
from hf_transfer.strategies import build_strategy
from hf_transfer.tasks import get_task

logger = logging.getLogger("hf_transfer")


class RunContext:
    """What a strategy may look at before and after the model is built."""

    def __init__(self, cfg: TrainConfig, task, splits, output_dir: Path):
        self.cfg = cfg
        self.task = task
        self.splits = splits
        self.output_dir = output_dir


def setup_logging(log_file: Path | None = None, main_process: bool = True) -> None:
    """Log to the console (main process) and to `log_file`."""
    root = logging.getLogger("hf_transfer")
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        if getattr(h, "_hf_transfer", False):
            root.removeHandler(h)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    if main_process:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(fmt)
        console._hf_transfer = True
        root.addHandler(console)
    if log_file is not None:
        fh = logging.FileHandler(log_file)
        fh.setFormatter(fmt)
        fh._hf_transfer = True
        root.addHandler(fh)


def _is_main() -> bool:
    from accelerate.state import PartialState
    from accelerate.utils import parse_flag_from_env

    # Same device choice as the Accelerator made later (`accelerate launch --cpu` sets this).
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU")).is_main_process


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train a run from a validated config and write its run folder.

    Returns:
        The final metrics, also written to `<output_dir>/metrics.json`.
    """
    from hf_transfer.engine.trainer import Trainer
    from hf_transfer.models.layer_groups import layer_groups

    out = Path(cfg.output_dir)
    main = _is_main()
    out.mkdir(parents=True, exist_ok=True)
    setup_logging(out / "train.log" if main else None, main)
    if main:
        save_config(cfg, out / "config.yaml")
    logger.info("Run folder: %s", out.resolve())
    if cfg.export.push_to_hub:
        from hf_transfer.export.push import check_push_settings

        check_push_settings(cfg)  # no repo_id, token or licence: fail before training, not after
    from hf_transfer.engine.distributed import check_mixed_precision

    check_mixed_precision(cfg.training.mixed_precision)  # fp16 without a GPU: fail before loading anything

    set_seed_all(cfg.training.seed)
    task = get_task(cfg)
    task.load_processor()
    splits = task.load_splits()
    strategy = build_strategy(cfg.strategy)
    ctx = RunContext(cfg, task, splits, out)
    strategy.prepare(ctx)

    # Seed again right before building the model, so the seed alone controls the new head's
    # initialisation whatever data loading consumed.
    set_seed_all(cfg.training.seed)
    model = task.build_model(from_scratch=strategy.from_scratch)
    groups = layer_groups(model)
    adapted = strategy.apply(model, groups)
    if adapted is not model:
        groups = layer_groups(adapted)
    model = adapted
    info = strategy.describe(model)
    logger.info("Strategy %s: %s trainable / %s frozen parameters", strategy.name,
                f"{info['trainable_parameters']:,}", f"{info['frozen_parameters']:,}")

    if not strategy.trains_with_engine:
        metrics = strategy.fit(ctx, model, groups)
    else:
        metrics = _train_with_engine(cfg, task, splits, strategy, model, groups, out)
    described = metrics.pop("_described", None)  # FSDP: counted on the gathered weights
    metrics.update(described or strategy.describe(metrics.pop("_model", model)))
    metrics.pop("_model", None)
    metrics.update(task.describe_data(splits))
    if main:
        _write_metrics(out, metrics)
        if cfg.export.push_to_hub:
            from hf_transfer.export.push import maybe_push_after_training

            maybe_push_after_training(cfg, out)
    return metrics


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

        reason = ("the trainable set changes during training" if getattr(strategy, "changes_trainable_set", False)
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
    trainer = Trainer(cfg, task, model, strategy, groups, train_ds, eval_ds, collate, sampler, out)
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
    final = trainer.unwrapped_model()
    from hf_transfer.engine.distributed import full_weights, uses_fsdp

    with full_weights(acc, trainer.model):  # FSDP: full weights gathered on every process
        if uses_fsdp(acc):
            metrics["_described"] = strategy.describe(final)
        if acc.is_main_process:
            strategy.save_model(final, out)
    if acc.is_main_process:
        task.save_processor(out)
        from hf_transfer.metrics.plots import plot_training_curves

        plot_training_curves(trainer.state.history, out / "training_curves.png")
        (out / "history.json").write_text(json.dumps(trainer.state.history, indent=1))
    acc.wait_for_everyone()
    acc.end_training()
    metrics["_model"] = final
    return metrics


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


def _load_run_model(run_dir: Path, task):
    try:
        model = task.auto_model_cls.from_pretrained(run_dir)
    except OSError as e:
        raise HFTransferError(
            f"'{run_dir}' has no trained model yet ({e}). Did training finish? Resume it with "
            "training.resume_from_checkpoint=latest."
        ) from None
    # svm / knn / multi-module-head feature-extraction runs keep their classifier beside the model.
    from hf_transfer.strategies.feature_extraction import attach_feature_classifier

    return attach_feature_classifier(run_dir, model).eval()


def evaluate(run_dir: str | Path, split: str = "auto") -> dict[str, Any]:
    """Metrics of a finished run on its eval split (`eval`), its test split (`test`), or both (`auto`)."""
    from hf_transfer.engine.trainer import new_accelerator, run_evaluation

    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    cfg.model.name_or_path = str(run_dir)
    setup_logging(None)
    set_seed_all(cfg.training.seed)
    task = get_task(cfg)
    task.load_processor()
    splits = task.load_splits()
    model = _load_run_model(run_dir, task)
    acc = new_accelerator(cfg, run_dir)
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


def predict(run_dir: str | Path, inputs: list[str], top_k: int = 1) -> list[dict[str, Any]]:
    """Predict labels for raw inputs (texts, or image/audio file paths, by recipe)."""
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    cfg.model.name_or_path = str(run_dir)
    task = get_task(cfg)
    task.load_processor()
    model = _load_run_model(run_dir, task)
    if hasattr(task, "predict"):  # tasks whose output is not one label (transcription)
        return task.predict(model, inputs, top_k=top_k)
    id2label = model.config.id2label
    results = []
    with torch.no_grad():
        batch = task.predict_inputs(inputs)
        probs = model(**batch).logits.float().softmax(-1)
        for text, p in zip(inputs, probs):
            scores, ids = p.topk(min(top_k, p.numel()))
            results.append({
                "input": text,
                "label": id2label[int(ids[0])],
                "score": round(float(scores[0]), 4),
                "top": [{"label": id2label[int(i)], "score": round(float(s), 4)} for s, i in zip(scores, ids)],
            })
    return results
