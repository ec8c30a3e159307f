"""Training budgets derived from the data size and the strategy, unless set explicitly."""

import json

import pytest

from hf_transfer.config import TrainingConfig, load_config
from hf_transfer.engine.budget import DEFAULT_LEARNING_RATES, DEFAULT_MIN_STEPS, resolve_budget
from hf_transfer.run import train
from hf_transfer.strategies import StrategyConfig, build_strategy


def strategy(name):
    from hf_transfer.strategies import strategy_config_class

    return build_strategy(strategy_config_class(name)())


def test_defaults_raise_the_epochs_to_min_steps_with_the_strategy_learning_rate():
    b = resolve_budget(TrainingConfig(), strategy("lora"), steps_per_epoch=4)  # 64 examples at batch 16
    assert b.total_steps >= DEFAULT_MIN_STEPS and b.total_steps % 4 == 0 and b.epochs == b.total_steps // 4
    assert b.learning_rate == DEFAULT_LEARNING_RATES["lora"]
    assert b.epochs_per_eval == 5  # 13 epochs evaluated about as often as the default 3
    assert "raised" in b.sources["total_steps"] and b.sources["learning_rate"] == "default of strategy lora"
    assert b.warmup_steps == int(0.1 * b.total_steps)
    # Large data: the default 3 epochs already exceed min_steps.
    big = resolve_budget(TrainingConfig(), strategy("full"), steps_per_epoch=100)
    assert big.total_steps == 300 and big.epochs_per_eval == 1
    assert {DEFAULT_LEARNING_RATES[n] for n in ("full", "lora", "freeze", "scratch")} == {5e-5, 1e-3, 3e-3, 3e-4}


def test_explicit_settings_win():
    t = TrainingConfig(epochs=2, learning_rate=1e-2)
    b = resolve_budget(t, strategy("freeze"), steps_per_epoch=4)
    assert (b.total_steps, b.learning_rate) == (8, 1e-2)   # no min_steps with explicit epochs
    assert b.sources["learning_rate"] == "training.learning_rate"
    b = resolve_budget(TrainingConfig(epochs=2, min_steps=20), strategy("freeze"), steps_per_epoch=4)
    assert b.total_steps == 20                               # unless min_steps is set too
    assert resolve_budget(TrainingConfig(max_steps=7), strategy("full"), 4).total_steps == 7
    assert resolve_budget(TrainingConfig(min_steps=0), strategy("full"), 4).total_steps == 12


def test_auto_uses_its_choice_learning_rate():
    s = strategy("auto")
    s.delegate = strategy("lora")
    lr, why = resolve_budget(TrainingConfig(), s, 4).learning_rate, resolve_budget(TrainingConfig(), s, 4).sources
    assert lr == DEFAULT_LEARNING_RATES["lora"] and "auto" in why["learning_rate"]


def test_budget_in_metrics_and_evaluations_spaced(text_overrides, tmp_path):
    overrides = [o for o in text_overrides if not o.startswith(("training.epochs=", "training.learning_rate="))]
    cfg = load_config(None, overrides + ["strategy.name=freeze", "training.min_steps=24", "training.save_strategy=no"])
    m = train(cfg)  # 96 examples at batch 16: 6 steps per epoch, 3 epochs = 18 < 24 -> 4 epochs
    assert m["train_steps"] == 24 and m["budget"]["epochs"] == 4
    assert m["budget"]["learning_rate"] == DEFAULT_LEARNING_RATES["freeze"]
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())["budget"]
    assert saved["sources"]["learning_rate"] == "default of strategy freeze"
    evals = [r for r in json.loads((tmp_path / "run" / "history.json").read_text()) if "eval_loss" in r]
    assert len(evals) == 2  # every 2nd of the 4 epochs, not after each


def test_config_validation():
    with pytest.raises(Exception, match="min_steps"):
        load_config(None, ["model.name_or_path=m", "data.train=x.csv", "training.min_steps=-1"])
    assert load_config(None, ["model.name_or_path=m", "data.train=x.csv"]).training.learning_rate is None
