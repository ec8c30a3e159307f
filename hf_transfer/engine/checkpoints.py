"""Checkpoints of a training run: resumable state saved atomically, and the best weights so far.

A checkpoint is `checkpoints/step_N/`: `accelerator.save_state` (model, optimizer, scheduler, RNG,
FSDP shards) plus `trainer_state.json` (epoch, step in epoch, best metric, history, the strategy's
schedule). It is written to a hidden folder and renamed into place, so an interrupted save never
leaves a half-written `step_N`; only then are the oldest beyond `training.save_total_limit`
removed.

Accelerate's own rotation (`ProjectConfiguration(automatic_checkpoint_naming=True,
total_limit=N)`) does not fit this scheme: it deletes the oldest checkpoints *before* writing the
new one (a crash in between leaves fewer intact checkpoints than the limit promises), names folders
by save count rather than optimizer step, writes in place (no atomic rename), and counts every
entry of the folder, including `best.safetensors`, as a checkpoint.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from accelerate.logging import get_logger

from hf_transfer.errors import HFTransferError

logger = get_logger(__name__)  # Accelerate's: the main process logs, once

STATE_FILE = "trainer_state.json"


@dataclass
class TrainerState:
    """Progress that a checkpoint records besides Accelerate's own state."""

    global_step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0  # optimizer steps already done in `epoch`
    best_metric: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    history: list[dict] = field(default_factory=list)
    strategy_state: dict = field(default_factory=dict)
    stopped_early: bool = False
    # Training seconds of earlier processes of this run (up to the checkpoint resumed from).
    train_runtime: float = 0.0


class Checkpointing:
    """The checkpoint half of `hf_transfer.engine.trainer.Trainer` (which it is mixed into): it
    reads the trainer's `accelerator`, `state`, `strategy`, `model`, `groups`, `tc` and `ckpt_dir`,
    and calls its `check_weights_finite` before writing weights."""

    def _checkpoints(self) -> list[Path]:
        if not self.ckpt_dir.is_dir():
            return []
        found = [p for p in self.ckpt_dir.glob("step_*") if (p / STATE_FILE).is_file()]
        return sorted(found, key=lambda p: int(p.name.split("_")[1]))

    def save_checkpoint(self) -> Path:
        """Save a resumable checkpoint atomically: written aside, then renamed into place."""
        acc = self.accelerator
        self.check_weights_finite()  # a checkpoint is never written with NaN or infinite weights
        final = self.ckpt_dir / f"step_{self.state.global_step}"
        tmp = self.ckpt_dir / f".tmp_step_{self.state.global_step}"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        # Every process writes into `tmp` (its RNG state, FSDP shards): all must finish before the
        # main process renames it.
        acc.wait_for_everyone()
        if acc.is_main_process:
            self.state.strategy_state = self.strategy.state_dict()
            before = self.state.train_runtime
            self.state.train_runtime = before + (time.time() - self._start if getattr(self, "_start", None) else 0.0)
            (tmp / STATE_FILE).write_text(json.dumps(self.state.__dict__, indent=1, default=float))
            self.state.train_runtime = before
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            for old in self._checkpoints()[: -self.tc.save_total_limit] if self.tc.save_total_limit > 0 else []:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return final

    def resolve_checkpoint(self, spec: str) -> Path:
        if spec == "latest":
            found = self._checkpoints()
            if not found:
                raise HFTransferError(
                    f"training.resume_from_checkpoint=latest, but '{self.ckpt_dir}' holds no checkpoint. "
                    "Start without resume_from_checkpoint, or point it at a checkpoint folder."
                )
            return found[-1]
        path = Path(spec)
        if not (path / STATE_FILE).is_file():
            raise HFTransferError(
                f"'{spec}' is not a checkpoint folder (no {STATE_FILE}). Checkpoints are in "
                f"'{self.ckpt_dir}' as step_N; or use training.resume_from_checkpoint=latest."
            )
        return path

    def load_checkpoint(self, path: Path) -> None:
        saved = json.loads((path / STATE_FILE).read_text())
        self.state = TrainerState(**saved)
        self.strategy.load_state_dict(self.state.strategy_state)
        # Re-apply the schedule's freezing for every epoch already started, so requires_grad
        # matches what the uninterrupted run had at this point.
        model = self.accelerator.unwrap_model(self.model)
        for epoch in range(self.state.epoch + 1):
            self.strategy.on_epoch_start(epoch, model, self.groups)
        from hf_transfer.engine.distributed import prime_optimizer_for_resume

        prime_optimizer_for_resume(self.accelerator, self.optimizer)  # FSDP sharded: keep the AdamW moments
        self.accelerator.load_state(str(path))
        # The best weights so far live beside the checkpoints; bring them along when resuming
        # from another run folder's checkpoint.
        best = path.parent / "best.safetensors"
        own = self.ckpt_dir / "best.safetensors"
        if best.is_file() and best.resolve() != own.resolve() and self.accelerator.is_main_process:
            own.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(best, own)
        logger.info("Resumed from %s (step %d, epoch %d)", path, self.state.global_step, self.state.epoch)

    def _save_best(self) -> None:
        from safetensors.torch import save_file, save_model

        from hf_transfer.engine.distributed import gather_state_dict, uses_fsdp

        acc = self.accelerator
        self.check_weights_finite()
        acc.wait_for_everyone()
        path = self.ckpt_dir / "best.safetensors"
        if uses_fsdp(acc):  # full weights gathered from the shards (every process takes part)
            state = gather_state_dict(acc, self.model)
            if state is not None:
                self.ckpt_dir.mkdir(parents=True, exist_ok=True)
                save_file({k: v.contiguous().clone() for k, v in state.items()}, str(path))
        elif acc.is_main_process:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            save_model(acc.unwrap_model(self.model), str(path))
        acc.wait_for_everyone()

    def _load_best(self) -> None:
        from safetensors.torch import load_model

        from safetensors.torch import load_file

        from hf_transfer.engine.distributed import load_full_state_dict, uses_fsdp

        path = self.ckpt_dir / "best.safetensors"
        if path.is_file():
            if uses_fsdp(self.accelerator):
                load_full_state_dict(self.accelerator, self.model, load_file(str(path)))
            else:
                load_model(self.accelerator.unwrap_model(self.model), str(path))
            logger.info("Loaded the best model (step %s, %s=%.4f).", self.state.best_step, self.tc.metric_for_best_model, self.state.best_metric)
