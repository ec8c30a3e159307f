"""Launched by test_strategies.py as two CPU processes (torchrun + ACCELERATE_USE_CPU, gloo).

Trains with `hf_transfer.run.train` from `a.b=value` overrides (argv), and afterwards every rank
saves its own final weights to `$HF_TRANSFER_TEST_DUMP/rank{N}.pt`, so the test can check that the
ranks agree. The dump hook lives only here: it wraps `Trainer.train` in this process.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402

from hf_transfer.config import load_config  # noqa: E402
from hf_transfer.engine import trainer as trainer_mod  # noqa: E402
from hf_transfer.run import train  # noqa: E402

_original_train = trainer_mod.Trainer.train


def _train_and_dump(self):
    metrics = _original_train(self)
    acc = self.accelerator
    out = Path(os.environ["HF_TRANSFER_TEST_DUMP"])
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in self.unwrapped_model().state_dict().items()}
    torch.save({"state_dict": state, "world_size": acc.num_processes}, out / f"rank{acc.process_index}.pt")
    return metrics


trainer_mod.Trainer.train = _train_and_dump


def _end_training_keep_group(self):
    # Trainer.train calls accelerator.end_training(), which destroys the process group, and
    # run.train still evaluates the test split and calls wait_for_everyone() afterwards, so every
    # multi-process run fails at that barrier. Until the engine ends training after those steps,
    # this script finishes the trackers here and destroys the group itself once train() returns.
    for tracker in self.trackers:
        tracker.finish()


Accelerator.end_training = _end_training_keep_group

if __name__ == "__main__":
    from accelerate.state import PartialState
    from accelerate.utils import parse_flag_from_env

    # run.train's first PartialState() call does not pass cpu=True, which on a CPU-only machine
    # would leave each process on its own; initialise the process group for CPU here first.
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    train(load_config(None, sys.argv[1:]))
    state.destroy_process_group()
