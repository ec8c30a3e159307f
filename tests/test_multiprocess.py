"""Two processes on CPU (gloo) through `accelerate launch`: same weights on every rank, for plain
fine-tuning and for gradual unfreezing (parameters unfrozen after DDP wrapped the model)."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import launch_cpu_processes

SCRIPT = Path(__file__).parent / "scripts" / "ddp_train.py"


def launch(overrides, nproc=2, timeout=900):
    return launch_cpu_processes(SCRIPT, overrides, nproc, timeout)


def rank_weights(out):
    r0 = load_file(str(out / "rank0_of2.safetensors"))
    r1 = load_file(str(out / "rank1_of2.safetensors"))
    assert r0.keys() == r1.keys()
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"ranks differ at {k}"
    return r0


def base_weights(tiny_bert_dir):
    from transformers import BertModel

    return {f"bert.{k}": v for k, v in BertModel.from_pretrained(tiny_bert_dir).state_dict().items()}


def common(text_overrides, out):
    return [o for o in text_overrides if not o.startswith("output_dir=")] + [
        f"output_dir={out}",
        "training.batch_size=8",
        "training.save_strategy=no",
    ]


@pytest.mark.slow
def test_two_processes_end_with_identical_weights(text_overrides, tmp_path, tiny_bert_dir):
    out = tmp_path / "ddp"
    launch(common(text_overrides, out) + ["training.epochs=2"])
    weights = rank_weights(out)
    key = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(weights[key], base_weights(tiny_bert_dir)[key])  # it trained
    saved = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(saved[k], weights[k]) for k in saved)
    assert (out / "metrics.json").is_file()


@pytest.mark.slow
def test_gradual_unfreeze_under_ddp(text_overrides, tmp_path, tiny_bert_dir):
    """Blocks unfrozen in epochs 1 and 2 train, identically on both ranks (they are all-reduced)."""
    out = tmp_path / "gradual"
    launch(
        common(text_overrides, out)
        + ["strategy.name=gradual_unfreeze", "training.epochs=3", "training.load_best_model_at_end=false"]
    )
    weights = rank_weights(out)
    for k, v in base_weights(tiny_bert_dir).items():
        if k.startswith("bert.embeddings."):
            assert torch.equal(weights[k], v), k  # never unfrozen in 3 epochs
        elif k.startswith(("bert.encoder.layer.0.", "bert.encoder.layer.1.", "bert.pooler.")):
            assert not torch.equal(weights[k], v), k  # layer.1 unfrozen at epoch 1, layer.0 at epoch 2


@pytest.fixture
def dropout_free_bert_dir(tmp_path):
    """The tiny BERT with dropout off: the only randomness left is the data order, which the seed fixes."""
    from tiny_models import save_bert

    return save_bert(tmp_path / "tiny-bert-no-dropout", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@pytest.mark.slow
def test_two_processes_train_the_same_model_as_one(text_overrides, tmp_path, dropout_free_bert_dir):
    """DDP on 2 CPU processes with batches of 4 ends with the weights of one process with batches of
    8: each step sees the same 8 examples (Accelerate shards the seeded batch order), and the loss is
    summed per example and divided by the window's example count across processes, so the gradients
    are the same up to the order of float additions."""
    from hf_transfer.config import load_config
    from hf_transfer.run import train

    base = [
        o for o in text_overrides if not o.startswith(("output_dir=", "model.name_or_path=", "training.batch_size="))
    ]
    base += [
        f"model.name_or_path={dropout_free_bert_dir}",
        "training.epochs=1",
        "training.save_strategy=no",
        "data.group_by_length=false",
        "training.load_best_model_at_end=false",
    ]
    ddp_out, single_out = tmp_path / "ddp", tmp_path / "single"
    launch(base + [f"output_dir={ddp_out}", "training.batch_size=4"])
    single = train(load_config(None, base + [f"output_dir={single_out}", "training.batch_size=8"]))
    ddp = rank_weights(ddp_out)
    one = load_file(str(single_out / "model.safetensors"))
    key = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(one[key], base_weights(dropout_free_bert_dir)[key])  # it trained
    assert single["train_steps"] == 12  # 96 examples / 8 per step
    for k, v in one.items():
        assert torch.allclose(ddp[k], v, atol=1e-5, rtol=1e-4), f"DDP and one process differ at {k}"
