"""Two processes on CPU (gloo) through `accelerate launch`: same weights on every rank."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).parent / "scripts" / "ddp_train.py"


def launch(overrides, nproc=2, timeout=900):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", str(nproc),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(SCRIPT), *overrides]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


@pytest.mark.slow
def test_two_processes_end_with_identical_weights(text_overrides, tmp_path, tiny_bert_dir):
    out = tmp_path / "ddp"
    overrides = [o for o in text_overrides if not o.startswith("output_dir=")] + [
        f"output_dir={out}", "training.epochs=2", "training.batch_size=8", "training.save_strategy=no"]
    launch(overrides)
    r0 = load_file(str(out / "rank0_of2.safetensors"))
    r1 = load_file(str(out / "rank1_of2.safetensors"))
    assert r0.keys() == r1.keys()
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    # And training did something: the weights moved away from the checkpoint.
    from transformers import BertModel

    base = BertModel.from_pretrained(tiny_bert_dir).state_dict()
    key = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(r0[f"bert.{key}"], base[key])
    assert (out / "metrics.json").is_file()
