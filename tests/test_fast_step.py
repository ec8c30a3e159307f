"""The engine's faster optimizer step: fused AdamW where torch has it, with the same training as
torch's one-tensor-at-a-time AdamW (losses and weights within float tolerance)."""

import pytest
import torch
from safetensors.torch import load_file

import hf_transfer.engine.trainer as engine
from hf_transfer.config import load_config
from hf_transfer.engine.optim import new_adamw
from hf_transfer.run import train


def test_auto_picks_fused_adamw_on_cpu_and_each_name_is_honoured():
    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(2))]
    groups = lambda: [{"params": params, "weight_decay": 0.01, "name": "g"}]  # noqa: E731
    assert new_adamw(groups(), 1e-3, "auto").defaults["fused"] is True
    assert new_adamw(groups(), 1e-3, "fused").defaults["fused"] is True
    assert new_adamw(groups(), 1e-3, "foreach").defaults["foreach"] is True
    loop = new_adamw(groups(), 1e-3, "for-loop").defaults
    assert loop["foreach"] is False and not loop["fused"]
    plain = new_adamw(groups(), 1e-3, "default").defaults
    assert plain["foreach"] is None and plain["fused"] is None
    with pytest.raises(ValueError, match="auto, default, fused, foreach or for-loop, got 'fast'"):
        new_adamw(groups(), 1e-3, "fast")


def test_auto_keeps_torch_default_when_a_parameter_cannot_be_fused():
    params = [
        torch.nn.Parameter(torch.randn(3)),
        torch.nn.Parameter(torch.ones(2, dtype=torch.long), requires_grad=False),
    ]
    opt = new_adamw([{"params": params}], 1e-3, "auto")
    assert opt.defaults["fused"] is None


def _run(text_overrides, tmp_path, name, implementation, monkeypatch):
    """A tiny full fine-tune with the engine's AdamW forced to `implementation`; its step losses."""
    original = engine.new_adamw
    chosen = []

    def forced(groups, lr, impl):
        opt = original(groups, lr, implementation if impl == "auto" else impl)
        chosen.append(opt)
        return opt

    losses = []
    step = engine.Trainer._optimizer_step

    def record(self, window):
        loss = step(self, window)
        losses.append(loss)
        return loss

    monkeypatch.setattr(engine, "new_adamw", forced)
    monkeypatch.setattr(engine.Trainer, "_optimizer_step", record)
    cfg = load_config(
        None,
        [o for o in text_overrides if not o.startswith("output_dir=")]
        + [f"output_dir={tmp_path / name}", "training.epochs=2", "training.save_strategy=no"],
    )
    metrics = train(cfg)
    monkeypatch.undo()
    return losses, metrics, load_file(str(tmp_path / name / "model.safetensors")), chosen[0]


def test_fused_adamw_trains_like_the_for_loop_one(text_overrides, tmp_path, monkeypatch):
    fused_losses, fused_m, fused_w, fused_opt = _run(text_overrides, tmp_path, "fused", "auto", monkeypatch)
    loop_losses, loop_m, loop_w, loop_opt = _run(text_overrides, tmp_path, "loop", "for-loop", monkeypatch)
    assert fused_opt.defaults["fused"] is True and loop_opt.defaults["foreach"] is False
    assert len(fused_losses) == len(loop_losses) == fused_m["train_steps"] == 12
    # Same dropout draws, same batches: only the optimizer's float rounding differs.
    assert fused_losses == pytest.approx(loop_losses, abs=1e-5)
    # A real comparison: both optimizers stepped 12 times and the updates changed the losses.
    for opt in (fused_opt, loop_opt):
        assert {float(st["step"]) for st in opt.state.values()} == {12.0}
    assert max(fused_losses) - min(fused_losses) > 1e-3
    assert fused_m["eval_loss"] == pytest.approx(loop_m["eval_loss"], abs=1e-5)
    assert fused_m["eval_accuracy"] == loop_m["eval_accuracy"]
    assert fused_w.keys() == loop_w.keys()
    for k in fused_w:
        assert torch.allclose(fused_w[k], loop_w[k], atol=1e-5), k
