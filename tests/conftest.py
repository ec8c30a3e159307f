"""Shared fixtures: tiny random models built locally (tests/tiny_models.py), toy data. Offline."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")

import random
from pathlib import Path

import pytest

POSITIVE = "good great excellent wonderful lovely fun brilliant gripping beautiful best amazing".split()
NEGATIVE = "bad awful terrible boring dull worst poor weak ugly horrible bland".split()
FILLER = "the a film movie story plot actor acting scene is was it this very really quite".split()


def toy_sentences(n: int, seed: int = 0, labels=("negative", "positive")):
    """Learnable toy sentiment: each sentence holds one or two cue words of its class."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        cues = POSITIVE if label == labels[-1] else NEGATIVE
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 12))]
        for _ in range(rng.randint(1, 2)):
            words.insert(rng.randint(0, len(words)), rng.choice(cues))
        rows.append({"text": " ".join(words), "label": label})
    return rows


def write_csv(path: Path, rows) -> Path:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A bare BERT backbone (no head) with the tiny tokenizer: like a Hub base checkpoint."""
    from tiny_models import save_bert

    return save_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def toy_text_data(tmp_path_factory) -> dict:
    """train/validation/test csv files of learnable toy sentiment."""
    d = tmp_path_factory.mktemp("toy-text")
    return {
        "train": write_csv(d / "train.csv", toy_sentences(96, seed=1)),
        "validation": write_csv(d / "validation.csv", toy_sentences(32, seed=2)),
        "test": write_csv(d / "test.csv", toy_sentences(32, seed=3)),
        "dir": d,
    }


@pytest.fixture
def text_overrides(tiny_bert_dir, toy_text_data, tmp_path):
    """Overrides for a fast text-classification run on the tiny model and toy data."""
    return [
        f"model.name_or_path={tiny_bert_dir}",
        f"data.train={toy_text_data['train']}",
        f"data.eval={toy_text_data['validation']}",
        f"output_dir={tmp_path / 'run'}",
        "training.epochs=2",
        "training.batch_size=16",
        "training.learning_rate=0.001",
        "training.warmup_ratio=0.0",
        "training.report_to=[]",
        "training.logging_steps=1",
    ]


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a test module (tiny models run far slower with 2 threads on a busy machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def free_port() -> int:
    """A free TCP port on the loopback interface for a process group's rendezvous."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_cpu_processes(script, overrides, nproc=2, timeout=900):
    """`accelerate launch` with several CPU processes: the torchrun launcher (`--multi_gpu`) plus
    ACCELERATE_USE_CPU, which makes Accelerate use gloo on CPU (`--cpu` alone needs MPI)."""
    import os
    import subprocess
    import sys

    env = dict(
        os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", ACCELERATE_USE_CPU="1"
    )
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        str(nproc),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        str(script),
        *overrides,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


@pytest.fixture
def crash_at_step(monkeypatch):
    """`with crash_at_step(n): train(...)`: the engine raises right before optimizer step n + 1,
    as a killed process would stop; the patch is undone when the block ends."""
    from contextlib import contextmanager

    from hf_transfer.engine.trainer import Trainer

    original = Trainer._optimizer_step

    @contextmanager
    def crash(step: int):
        def failing(self, window):
            if self.state.global_step == step:
                raise RuntimeError("simulated crash")
            return original(self, window)

        monkeypatch.setattr(Trainer, "_optimizer_step", failing)
        try:
            with pytest.raises(RuntimeError, match="simulated crash"):
                yield
        finally:
            monkeypatch.setattr(Trainer, "_optimizer_step", original)

    return crash
