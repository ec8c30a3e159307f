"""The training engine: exact resume, interruption, gradient accumulation, bf16 on CPU,
weight-decay groups and layer-wise learning rates."""

import pytest
import torch
from safetensors.torch import load_file

from hf_transfer.config import load_config
from hf_transfer.engine.optim import build_param_groups, layerwise_lr_scales
from hf_transfer.errors import HFTransferError
from hf_transfer.run import train


def weights(run_dir):
    return load_file(str(run_dir / "model.safetensors"))


def assert_same_weights(a, b, atol=1e-6):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol), k


def run_cfg(text_overrides, tmp_path, name, *extra):
    return load_config(
        None,
        [o for o in text_overrides if not o.startswith("output_dir=")]
        + [f"output_dir={tmp_path / name}", "training.epochs=3", *extra],
    )


def test_resume_is_exact(text_overrides, tmp_path):
    """Stopped after step 4 (mid-epoch 0: 6 steps per epoch) and resumed == uninterrupted."""
    full = run_cfg(
        text_overrides,
        tmp_path,
        "full",
        "training.save_strategy=steps",
        "training.save_steps=4",
        "training.save_total_limit=10",
    )
    train(full)
    ckpts = sorted((tmp_path / "full" / "checkpoints").glob("step_*"), key=lambda p: int(p.name[5:]))
    assert [c.name for c in ckpts] == ["step_4", "step_8", "step_12", "step_16"]
    for step in (4, 8):  # mid-epoch and a later epoch
        resumed = run_cfg(
            text_overrides,
            tmp_path,
            f"resumed{step}",
            f"training.resume_from_checkpoint={tmp_path / 'full' / 'checkpoints' / f'step_{step}'}",
        )
        metrics = train(resumed)
        assert metrics["train_steps"] == 18
        assert_same_weights(weights(tmp_path / "full"), weights(tmp_path / f"resumed{step}"))


def test_interrupted_run_keeps_checkpoint_and_says_how_to_resume(text_overrides, tmp_path, crash_at_step, caplog):
    cfg = run_cfg(text_overrides, tmp_path, "run", "training.save_strategy=steps", "training.save_steps=3")
    with crash_at_step(7):
        train(cfg)
    ckpt = tmp_path / "run" / "checkpoints" / "step_6"
    assert (ckpt / "trainer_state.json").is_file()
    assert not list((tmp_path / "run" / "checkpoints").glob(".tmp*"))
    log = (tmp_path / "run" / "train.log").read_text()
    assert "step_6" in log and "training.resume_from_checkpoint=latest" in log

    resumed = run_cfg(
        text_overrides,
        tmp_path,
        "run",
        "training.save_strategy=steps",
        "training.save_steps=3",
        "training.resume_from_checkpoint=latest",
    )
    train(resumed)
    straight = run_cfg(text_overrides, tmp_path, "straight", "training.save_strategy=steps", "training.save_steps=3")
    train(straight)
    assert_same_weights(weights(tmp_path / "run"), weights(tmp_path / "straight"))


def test_resume_latest_without_checkpoint_is_a_clear_error(text_overrides, tmp_path):
    cfg = run_cfg(text_overrides, tmp_path, "none", "training.resume_from_checkpoint=latest")
    with pytest.raises(HFTransferError, match=r"resume_from_checkpoint=latest, but '.*' holds no checkpoint"):
        train(cfg)


def test_gradient_accumulation_matches_larger_batch(text_overrides, tmp_path):
    """batch 16 x 1 and batch 8 x 2 take the same optimizer steps (loss averaged per example)."""
    common = [
        "training.epochs=1",
        "training.save_strategy=no",
        "data.group_by_length=false",
        "training.eval_strategy=no",
        "training.max_grad_norm=0",
    ]
    a = run_cfg(text_overrides, tmp_path, "a", *common, "training.batch_size=16")
    b = run_cfg(
        text_overrides, tmp_path, "b", *common, "training.batch_size=8", "training.gradient_accumulation_steps=2"
    )
    # Dropout draws differ between the two batchings; switch it off to compare the arithmetic.
    import transformers

    orig = transformers.BertConfig.__init__

    def no_dropout(self, *args, **kw):
        orig(self, *args, **kw)
        self.hidden_dropout_prob = 0.0
        self.attention_probs_dropout_prob = 0.0

    transformers.BertConfig.__init__ = no_dropout
    try:
        train(a)
        train(b)
    finally:
        transformers.BertConfig.__init__ = orig
    assert_same_weights(weights(tmp_path / "a"), weights(tmp_path / "b"), atol=1e-5)


def test_bf16_on_cpu(text_overrides, tmp_path):
    cfg = run_cfg(
        text_overrides,
        tmp_path,
        "bf16",
        "training.mixed_precision=bf16",
        "training.max_steps=3",
        "training.save_strategy=no",
    )
    metrics = train(cfg)
    assert metrics["train_steps"] == 3
    w = weights(tmp_path / "bf16")
    assert all(t.dtype == torch.float32 for t in w.values())  # master weights stay fp32
    assert all(torch.isfinite(t).all() for t in w.values())


def test_early_stopping(text_overrides, tmp_path):
    # A learning rate of ~0 never improves the metric: patience 1 stops after the second eval.
    cfg = run_cfg(
        text_overrides,
        tmp_path,
        "es",
        "training.learning_rate=1e-12",
        "training.epochs=6",
        "training.early_stopping_patience=1",
        "training.metric_for_best_model=loss",
        "training.early_stopping_threshold=0.01",
        "training.save_strategy=no",
    )
    metrics = train(cfg)
    assert metrics["stopped_early"] is True
    assert metrics["train_steps"] == 12  # two epochs of six steps
    assert metrics["best_step"] == 6


def test_weight_decay_groups_and_layerwise_lr(tiny_bert_dir):
    from transformers import AutoModelForSequenceClassification

    from hf_transfer.models.layer_groups import layer_groups

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    groups = layer_groups(model)
    scales = layerwise_lr_scales(groups, decay=0.5, head_multiplier=10.0)
    kinds = [g.kind for g in groups]
    assert kinds == ["stem", "block", "block", "top", "head"]
    assert scales == [0.125, 0.25, 0.5, 1.0, 10.0]
    pg = build_param_groups(model, groups, scales, base_lr=1e-3, weight_decay=0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    placed = [names[id(p)] for g in pg for p in g["params"]]
    assert sorted(placed) == sorted(names.values())  # every parameter exactly once
    for g in pg:
        for p in g["params"]:
            n = names[id(p)]
            no_decay = n.endswith("bias") or "LayerNorm" in n
            assert (g["weight_decay"] == 0.0) == no_decay, n
        assert g["lr"] == pytest.approx(1e-3 * g["lr_scale"])


def test_recalibrate_batchnorm_gives_exact_statistics():
    from hf_transfer.engine.trainer import recalibrate_batchnorm

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3, momentum=0.9))
    data = [torch.randn(8, 4) * 3 + 1 for _ in range(5)]
    with torch.no_grad():
        feats = torch.cat([model[0](x) for x in data])
    model.eval()
    assert recalibrate_batchnorm(model, data, model) == 1
    bn = model[1]
    assert torch.allclose(bn.running_mean, feats.mean(0), atol=1e-5)
    # Cumulative average of per-batch unbiased variances, as BatchNorm accumulates them.
    per_batch = torch.stack([model[0](x).var(0, unbiased=True) for x in data]).detach()
    assert torch.allclose(bn.running_var, per_batch.mean(0), atol=1e-5)
    assert bn.momentum == 0.9 and not model.training
    assert recalibrate_batchnorm(torch.nn.Linear(2, 2), data, lambda b: None) == 0


def test_a_diverging_run_stops_naming_the_step_and_the_learning_rate(text_overrides, tmp_path):
    """learning_rate=1e6: the loss turns NaN after a few steps. The run stops there with an error,
    keeps its last checkpoint (finite weights), and writes no model or metrics as a finished run."""
    from hf_transfer.errors import TrainingError

    cfg = run_cfg(
        text_overrides,
        tmp_path,
        "run",
        "training.learning_rate=1e6",
        "training.save_strategy=steps",
        "training.save_steps=1",
    )
    with pytest.raises(
        TrainingError,
        match=r"Training diverged at step \d+: the training loss is nan\. The likely "
        r"cause is a learning rate too high .*: 1e\+06 \(training\.learning_rate\)"
        r".*holds finite weights and is kept\. No model was written",
    ):
        train(cfg)
    run = tmp_path / "run"
    assert not (run / "model.safetensors").exists() and not (run / "metrics.json").exists()
    ckpts = sorted((run / "checkpoints").glob("step_*"), key=lambda p: int(p.name[5:]))
    assert ckpts, "the checkpoint before the divergence is kept"
    for name, tensor in load_file(str(ckpts[-1] / "model.safetensors")).items():
        assert torch.isfinite(tensor).all(), name
    assert "Training diverged" in (run / "train.log").read_text()


def test_checkpoints_work_from_what_they_are_given(tmp_path):
    """`Checkpoints` needs no trainer: an Accelerator, a folder, a limit and a weight check."""
    from types import SimpleNamespace

    from hf_transfer.config import TrainingConfig
    from hf_transfer.engine.checkpoints import STATE_FILE, Checkpoints, TrainerState
    from hf_transfer.engine.trainer import new_accelerator
    from hf_transfer.errors import HFTransferError

    acc = new_accelerator(TrainingConfig(report_to=[]), tmp_path)
    torch.manual_seed(0)
    model = acc.prepare(torch.nn.Linear(3, 2))
    optimizer = acc.prepare(torch.optim.AdamW(model.parameters(), lr=0.1))
    checked, replayed, restored = [], [], []
    strategy = SimpleNamespace(
        state_dict=lambda: {"depth": 2},
        load_state_dict=restored.append,
        on_epoch_start=lambda epoch, m, groups: replayed.append(epoch),
    )
    ckpts = Checkpoints(acc, tmp_path / "checkpoints", 2, lambda: checked.append(True))
    with pytest.raises(HFTransferError, match="holds no checkpoint"):
        ckpts.resolve("latest")
    state = TrainerState(epoch=1, train_runtime=5.0)
    for step in (1, 2, 3):
        state.global_step = step
        ckpts.save(state, strategy, elapsed=lambda: 2.5)
    assert [p.name for p in ckpts.found()] == ["step_2", "step_3"] and len(checked) == 3  # the oldest removed
    assert state.train_runtime == 5.0 and state.strategy_state == {"depth": 2}
    assert ckpts.resolve("latest") == tmp_path / "checkpoints" / "step_3"
    with pytest.raises(HFTransferError, match="not a checkpoint folder"):
        ckpts.resolve(str(tmp_path))
    saved = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    loaded = ckpts.load(ckpts.resolve("latest"), model=model, optimizer=optimizer, strategy=strategy, groups=[])
    assert torch.equal(model.weight, saved)
    assert (loaded.global_step, loaded.epoch, loaded.train_runtime) == (3, 1, 7.5)  # this process's seconds added
    assert restored == [{"depth": 2}] and replayed == [0, 1]  # the schedule replayed up to the saved epoch
    assert (tmp_path / "checkpoints" / "step_3" / STATE_FILE).is_file()
    ckpts.save_best(model)
    with torch.no_grad():
        model.weight.zero_()
    assert ckpts.load_best(model) and torch.equal(model.weight, saved) and len(checked) == 4
