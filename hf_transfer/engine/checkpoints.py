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
from collections.abc import Callable
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


class Checkpoints:
    """The checkpoint folder of one training run (`checkpoints/`): resumable checkpoints and the
    best weights so far. Everything it reads is given here or passed to each call.

    Args:
        accelerator: The run's Accelerator (every process takes part in a save or a load).
        folder: The run folder's `checkpoints/`.
        save_total_limit: Checkpoints kept (the newest); 0 or less keeps every one.
        check_weights: Called before any weights are written; raises when they are not finite.
    """

    def __init__(self, accelerator, folder: Path, save_total_limit: int, check_weights: Callable[[], None]):
        self.accelerator = accelerator
        self.folder = Path(folder)
        self.save_total_limit = save_total_limit
        self.check_weights = check_weights

    @property
    def best_path(self) -> Path:
        return self.folder / "best.safetensors"

    def found(self) -> list[Path]:
        """The complete checkpoints (`step_N` with its state file), oldest first."""
        if not self.folder.is_dir():
            return []
        found = [p for p in self.folder.glob("step_*") if (p / STATE_FILE).is_file()]
        return sorted(found, key=lambda p: int(p.name.split("_")[1]))

    def save(self, state: TrainerState, strategy, elapsed: Callable[[], float]) -> Path:
        """Save a resumable checkpoint atomically: written aside, then renamed into place.

        Args:
            state: The progress to record (its `strategy_state` is set from `strategy`).
            strategy: The transfer strategy (its schedule's `state_dict`).
            elapsed: Training seconds of this process so far (added to `state.train_runtime` in
                the file only).
        """
        acc = self.accelerator
        self.check_weights()  # a checkpoint is never written with NaN or infinite weights
        final = self.folder / f"step_{state.global_step}"
        tmp = self.folder / f".tmp_step_{state.global_step}"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        # Every process writes into `tmp` (its RNG state, FSDP shards): all must finish before the
        # main process renames it.
        acc.wait_for_everyone()
        if acc.is_main_process:
            state.strategy_state = strategy.state_dict()
            before = state.train_runtime
            state.train_runtime = before + elapsed()
            (tmp / STATE_FILE).write_text(json.dumps(state.__dict__, indent=1, default=float))
            state.train_runtime = before
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            for old in self.found()[: -self.save_total_limit] if self.save_total_limit > 0 else []:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return final

    def resolve(self, spec: str) -> Path:
        """The checkpoint `training.resume_from_checkpoint` names: `latest` or a folder."""
        if spec == "latest":
            found = self.found()
            if not found:
                raise HFTransferError(
                    f"training.resume_from_checkpoint=latest, but '{self.folder}' holds no checkpoint. "
                    "Start without resume_from_checkpoint, or point it at a checkpoint folder."
                )
            return found[-1]
        path = Path(spec)
        if not (path / STATE_FILE).is_file():
            raise HFTransferError(
                f"'{spec}' is not a checkpoint folder (no {STATE_FILE}). Checkpoints are in "
                f"'{self.folder}' as step_N; or use training.resume_from_checkpoint=latest."
            )
        return path

    def load(self, path: Path, *, model, optimizer, strategy, groups: list) -> TrainerState:
        """Restore the checkpoint at `path` into `model` (prepared), `optimizer` and `strategy`;
        returns the progress it recorded."""
        state = TrainerState(**json.loads((path / STATE_FILE).read_text()))
        strategy.load_state_dict(state.strategy_state)
        # Re-apply the schedule's freezing for every epoch already started, so requires_grad
        # matches what the uninterrupted run had at this point.
        unwrapped = self.accelerator.unwrap_model(model)
        for epoch in range(state.epoch + 1):
            strategy.on_epoch_start(epoch, unwrapped, groups)
        from hf_transfer.engine.distributed import prime_optimizer_for_resume

        prime_optimizer_for_resume(self.accelerator, optimizer)  # FSDP sharded: keep the AdamW moments
        self.accelerator.load_state(str(path))
        # The best weights so far live beside the checkpoints; bring them along when resuming
        # from another run folder's checkpoint.
        best = path.parent / "best.safetensors"
        own = self.best_path
        if best.is_file() and best.resolve() != own.resolve() and self.accelerator.is_main_process:
            own.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(best, own)
        logger.info("Resumed from %s (step %d, epoch %d)", path, state.global_step, state.epoch)
        return state

    def save_best(self, model) -> None:
        """Write `model`'s weights (prepared; gathered under FSDP) as the best so far."""
        from safetensors.torch import save_file, save_model

        from hf_transfer.engine.distributed import gather_state_dict, uses_fsdp

        acc = self.accelerator
        self.check_weights()
        acc.wait_for_everyone()
        path = self.best_path
        if uses_fsdp(acc):  # full weights gathered from the shards (every process takes part)
            state = gather_state_dict(acc, model)
            if state is not None:
                self.folder.mkdir(parents=True, exist_ok=True)
                save_file({k: v.contiguous().clone() for k, v in state.items()}, str(path))
        elif acc.is_main_process:
            self.folder.mkdir(parents=True, exist_ok=True)
            save_model(acc.unwrap_model(model), str(path))
        acc.wait_for_everyone()

    def load_best(self, model) -> bool:
        """Load the best weights so far into `model` (prepared). False when none were saved."""
        from safetensors.torch import load_file, load_model

        from hf_transfer.engine.distributed import load_full_state_dict, uses_fsdp

        path = self.best_path
        if not path.is_file():
            return False
        if uses_fsdp(self.accelerator):
            load_full_state_dict(self.accelerator, model, load_file(str(path)))
        else:
            load_model(self.accelerator.unwrap_model(model), str(path))
        return True
