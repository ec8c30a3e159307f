"""Run a recipe end to end: `train`, and `evaluate` / `predict` / `export_onnx` on a finished
run folder.

These are the few lines a user calls to reuse a recipe from Python:

    from hf_transfer import load_config, train
    metrics = train(load_config("recipes/configs/bert/sst2_full.yaml", ["training.epochs=1"]))

`train` is a list of named steps (`hf_transfer.steps`, whose docstring walks through them); a
staged config runs them once per stage (`hf_transfer.stages`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from hf_transfer import steps
from hf_transfer.config import TrainConfig
from hf_transfer.errors import HFTransferError
from hf_transfer.run_folder import RunFolder
from hf_transfer.steps import summary_lines  # noqa: F401  (printed by `hf-transfer train`)
from hf_transfer.strategies import build_strategy
from hf_transfer.strategies.base import RunContext
from hf_transfer.tasks import get_task
from hf_transfer.utils import set_seed_all, setup_logging

logger = logging.getLogger("hf_transfer")


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
    from hf_transfer.domain import build_adaptation_hook, check_adaptation

    check_config(cfg)  # a config built in Python has not been through load_config's checks
    steps.refuse_non_finite_settings(cfg)
    if cfg.stages:  # intermediate domains: one run per stage, in subfolders
        from hf_transfer.stages import train_stages

        return train_stages(cfg, overwrite=overwrite)
    steps.check_checkpoint(cfg.model, cfg.recipe)
    overwrite = overwrite or getattr(cfg, "overwrite_output_dir", False)
    resuming = bool(cfg.training.resume_from_checkpoint)
    main = steps.is_main_process()
    run = steps.open_run_folder(cfg.output_dir, overwrite=overwrite, resuming=resuming, main=main, model=cfg.model)
    steps.check_before_loading(cfg)

    task, splits = steps.load_data(cfg, main=main)
    strategy = build_strategy(cfg.strategy)
    ctx = RunContext(cfg, task, splits, run.path)
    model, groups, head_record = steps.build_model(task, strategy, ctx, seed=cfg.training.seed)
    check_adaptation(cfg.adaptation.name, strategy, model)  # adabn without batch norm, dann with features
    steps.take_over_folder(run, cfg, clear=overwrite and not resuming, main=main)
    info = strategy.describe(model)
    logger.info(
        "Strategy %s: %s trainable / %s frozen parameters",
        strategy.name,
        f"{info['trainable_parameters']:,}",
        f"{info['frozen_parameters']:,}",
    )

    if strategy.trains_with_engine:
        metrics = steps.fit_with_engine(
            task,
            splits,
            strategy,
            model,
            groups,
            run,
            training=cfg.training,
            data=cfg.data,
            adaptation_hook_factory=lambda m, ds, collate: build_adaptation_hook(cfg, task, m, ds, collate),
        )
    else:
        metrics = strategy.fit(ctx, model, groups)
    metrics.update(strategy.describe(metrics.pop("_model", model)))
    metrics.update(head_record)
    metrics["strategy_summary"] = strategy.summary()  # the card reads it from metrics.json
    metrics.update(task.describe_data(splits))
    if main:
        steps.write_results(run, metrics)
        if cfg.export.push_to_hub:
            steps.push(run, cfg.export)
    return metrics


def open_finished_run(run_dir: str | Path) -> RunFolder:
    """The run folder of a trained model, checked before anything loads (`RunFolder.open`).

    The run's `model.trust_remote_code` travels with it (its `config.yaml`): a run trained with
    remote code is evaluated, predicted and exported with it too, and the log says that code runs.

    Raises:
        HFTransferError: Not a run folder, or training never finished (no model saved yet).
    """
    from hf_transfer.config import check_config

    run = RunFolder.open(run_dir)
    check_config(run.config, f"'{run.config_path}'")  # as load_config checks it
    if not run.is_onnx_export and run.config.model.trust_remote_code:
        logger.warning("model.trust_remote_code=true in %s: code shipped with the model will run.", run.config_path)
    return run


def load_run_model(run: RunFolder, task, allow_pickle: bool = False):
    """The trained model of a run folder, ready for evaluation: an ONNX export's session, a
    static run's table and head, or the transformers model with a feature classifier kept beside
    it put back (`models.feature_run.attach_feature_classifier`)."""
    from hf_transfer.files import check_weights
    from hf_transfer.models.feature_run import attach_feature_classifier

    if run.is_onnx_export:
        from hf_transfer.export.onnx import OnnxClassifier

        return OnnxClassifier(run.path).eval()
    if run.is_static:  # a static embedding table and a linear head, no transformer
        from hf_transfer.strategies.static import load_static_classifier

        return load_static_classifier(run.path)
    try:
        model = task.auto_model_cls.from_pretrained(run.path, trust_remote_code=task.cfg.model.trust_remote_code)
    except Exception as e:
        check_weights(run.path)  # a damaged weights file: say which
        if isinstance(e, (OSError, ValueError)):
            raise HFTransferError(f"The model in '{run.path}' does not load: {type(e).__name__}: {e}") from None
        raise
    return attach_feature_classifier(run.path, model, allow_pickle=allow_pickle).eval()


def _task_for(run: RunFolder):
    """The run's task, built from its config with the run folder as the checkpoint."""
    cfg = run.config
    cfg.model.name_or_path = str(run.path)
    task = get_task(cfg)
    task.load_processor()
    return task


def evaluate(run_dir: str | Path, split: str = "auto", allow_pickle: bool = False) -> dict[str, Any]:
    """Metrics of a finished run on its eval split (`eval`), its test split (`test`), or both (`auto`).

    `allow_pickle`: read an older feature-extraction run's pickled classifier (runs code from the
    file: only for run folders you trust); current run folders need no pickle."""
    from hf_transfer.engine.trainer import new_accelerator, run_evaluation

    setup_logging(None)
    run = open_finished_run(run_dir)
    cfg = run.config
    set_seed_all(cfg.training.seed)
    task = _task_for(run)
    # Load only the splits evaluated (train only when the eval split is carved from it).
    task.only_roles = {"eval": ("eval",), "test": ("test",), "auto": ("eval", "test")}[split]
    task.known_labels = run.labels or None
    splits = task.load_splits()
    model = load_run_model(run, task, allow_pickle)
    acc = new_accelerator(cfg.training, run.path)
    acc.trackers = []
    model = acc.prepare(model)
    wanted = {
        "eval": [("eval", splits.eval)],
        "test": [("test", splits.test)],
        "auto": [("eval", splits.eval), ("test", splits.test)],
    }[split]
    metrics: dict[str, Any] = {}
    for prefix, ds in wanted:
        if ds is None:
            if split != "auto":
                raise HFTransferError(f"The run's config has no {prefix} split (data.{prefix}).")
            continue
        dl = acc.prepare(
            DataLoader(
                task.preprocess(ds, train=False),
                batch_size=cfg.training.eval_batch_size or cfg.training.batch_size,
                collate_fn=task.collate,
            )
        )
        metrics.update(run_evaluation(acc, model, dl, task, prefix))
    return metrics


def predict(run_dir: str | Path, inputs: list[str], top_k: int = 1, allow_pickle: bool = False) -> list[dict[str, Any]]:
    """Predict labels for raw inputs (texts, or image/audio file paths, by recipe); `allow_pickle`
    as in `evaluate`."""
    from hf_transfer.errors import ConfigError

    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ConfigError(f"top_k must be at least 1, got {top_k!r}: how many labels to return per input.")
    setup_logging(None)
    run = open_finished_run(run_dir)
    task = _task_for(run)
    model = load_run_model(run, task, allow_pickle)
    return task.predict(model, inputs, top_k=top_k)


def export_onnx(
    run_dir: str | Path,
    out_dir: str | Path,
    quantize: str | None = None,
    *,
    batch_size: int = 32,
    min_agreement: float | None = None,
):
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
    if RunFolder(run_dir).is_onnx_export:
        raise ExportError(f"'{run_dir}' is already an ONNX export; give the run folder it came from.")
    check_out_dir(run_dir, out_dir, quantize)
    if min_agreement is not None and not 0.0 <= min_agreement <= 1.0:
        raise ExportError(f"--min-int8-agreement must be between 0 and 1, got {min_agreement}.")
    run = open_finished_run(run_dir)
    cfg = run.config
    if cfg.recipe not in ("text_classification", "image_classification", "audio_classification"):
        raise ExportError(
            f"ONNX export covers text, image and audio classification runs; '{run_dir}' is a "
            f"{cfg.recipe} run. Export it with --format hub."
        )
    set_seed_all(cfg.training.seed)
    task = _task_for(run)
    task.only_roles = ("eval", "test")
    task.known_labels = run.labels or None
    splits = task.load_splits()
    ds = splits.eval if splits.eval is not None else splits.test
    if ds is None or len(ds) == 0:
        raise ExportError(f"'{run_dir}' has no eval or test split to check the ONNX model on (data.eval).")
    model = load_run_model(run, task)
    data = task.preprocess(ds, train=False)
    sample = task.model_inputs(next(iter(DataLoader(data, batch_size=8, collate_fn=task.collate))))

    def batches():
        for batch in DataLoader(data, batch_size=batch_size, collate_fn=task.collate):
            yield task.model_inputs(batch), batch["labels"]

    return write_onnx(
        model,
        run_dir,
        out_dir,
        sample_inputs=sample,
        eval_batches=batches,
        recipe=cfg.recipe,
        labels=run.labels,
        quantize=quantize,
        min_agreement=MIN_INT8_AGREEMENT if min_agreement is None else min_agreement,
    )
