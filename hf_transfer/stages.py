"""Staged fine-tuning: a config with `stages:` trains its stages in order, for example an
intermediate domain close to the target, then the target itself.

Each stage is a partial config laid over the top-level one (`data`, `strategy`, `training`,
`adaptation`, ...; `strategy` and `adaptation` are replaced whole when a stage gives them, since
their keys depend on the name). Stage 1 starts from `model.name_or_path`; every later stage from
the previous stage's body (`<stage>/body/`: the trained network without its task head), so each
stage gets a fresh head for its own labels. One run folder holds a subfolder per stage, a
`stages.json` progress record and a combined `metrics.json`.

Resume: the same command with `training.resume_from_checkpoint=latest` skips finished stages and
continues the interrupted one from its last checkpoint (or restarts it when it saved none).

```yaml
model: {name_or_path: sentence-transformers/all-MiniLM-L6-v2}
output_dir: runs/staged
stages:
  - name: reviews            # intermediate domain
    data: {train: data/reviews.csv}
    training: {epochs: 2, learning_rate: 5.0e-5}
  - name: target
    data: {train: data/target_small.csv}
    strategy: {name: partial, trainable_layers: 2}
    training: {epochs: 5, learning_rate: 2.0e-5}
```
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

from hf_transfer.config_checks import Stage, stage_configs
from hf_transfer.errors import ConfigError, HFTransferError
from hf_transfer.run_folder import RunFolder

logger = logging.getLogger("hf_transfer")

PROGRESS_FILE = "stages.json"

__all__ = ["PROGRESS_FILE", "Stage", "save_body", "stage_configs", "train_stages"]


def save_body(stage: Stage) -> Path:
    """Write the stage's trained network without its task head (plus its processor) to `body/`."""
    import shutil

    from hf_transfer.tasks import get_task

    cfg = copy.deepcopy(stage.cfg)
    cfg.model.name_or_path = str(stage.dir)
    task = get_task(cfg)
    model = task.auto_model_cls.from_pretrained(stage.dir)
    body = model.base_model
    out = stage.body_dir
    if out.exists():
        shutil.rmtree(out)
    if body is model:
        # No separable backbone (a custom head layout): the next stage loads the whole model and
        # swaps the head (reinitialised when its labels differ).
        logger.info(
            "Stage %s: %s has no separate backbone; the next stage starts from the whole model.",
            stage.name,
            type(model).__name__,
        )
        model.save_pretrained(out)
    else:
        body.save_pretrained(out)
    task.load_processor()
    task.save_processor(out)
    return out


def _read_progress(out: Path) -> dict:
    path = out / PROGRESS_FILE
    return json.loads(path.read_text()) if path.is_file() else {"completed": {}}


def _scalars(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) or v is None}


def _is_main() -> bool:
    from accelerate.state import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU")).is_main_process


def train_stages(cfg, overwrite: bool = False) -> dict[str, Any]:
    """Train every stage in order into one run folder; returns the combined metrics.

    Args:
        cfg: The staged config.
        overwrite: Replace a staged run already in `output_dir`.
    """
    from hf_transfer.run import train
    from hf_transfer.utils import setup_logging

    out = Path(cfg.output_dir)
    main = _is_main()
    resuming = bool(cfg.training.resume_from_checkpoint)
    progress = _read_progress(out)
    if progress["completed"] and not (resuming or overwrite):
        raise ConfigError(
            f"output_dir '{out}' holds a staged run ({', '.join(progress['completed'])} done). Continue it with "
            "training.resume_from_checkpoint=latest, replace it with --overwrite, or choose another output_dir."
        )
    if overwrite and not resuming:
        progress = {"completed": {}}
    out.mkdir(parents=True, exist_ok=True)
    stages = stage_configs(cfg)
    if main:
        RunFolder(out).write_config(cfg)
    results: dict[str, dict] = {}
    for stage in stages:
        setup_logging(RunFolder(out).log_path if main else None, main)
        done = progress["completed"].get(stage.name)
        if resuming and done is not None and (stage.body_dir / "config.json").is_file():
            logger.info("Stage %d/%d (%s): finished earlier, not repeated.", stage.index + 1, len(stages), stage.name)
            results[stage.name] = done
            continue
        ckpts = stage.dir / "checkpoints"
        has_ckpt = ckpts.is_dir() and any(p.name.startswith("step_") for p in ckpts.iterdir())
        stage.cfg.training.resume_from_checkpoint = "latest" if resuming and has_ckpt else None
        logger.info(
            "Stage %d/%d (%s): %s from %s%s",
            stage.index + 1,
            len(stages),
            stage.name,
            stage.cfg.strategy.name,
            stage.cfg.model.name_or_path,
            " (resuming its last checkpoint)" if stage.cfg.training.resume_from_checkpoint else "",
        )
        try:
            metrics = train(stage.cfg, overwrite=overwrite or resuming)
        except HFTransferError as e:
            raise type(e)(f"Stage {stage.index + 1} ({stage.name}): {e}") from e
        if main:
            save_body(stage)
        results[stage.name] = _scalars(metrics)
        progress["completed"][stage.name] = results[stage.name]
        if main:
            (out / PROGRESS_FILE).write_text(json.dumps(progress, indent=2, default=str))
    last = results[stages[-1].name]
    combined = {k: v for k, v in last.items() if k.startswith(("eval_", "test_"))}
    combined["stages"] = [{"name": s.name, "output_dir": str(s.dir), **results[s.name]} for s in stages]
    combined["final_model"] = str(stages[-1].dir)
    if main:
        RunFolder(out).write_metrics(combined)
        logger.info("Staged run finished: %d stages; final model in %s", len(stages), stages[-1].dir)
    return combined
