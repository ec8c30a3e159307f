"""Training budgets derived from the data size and the strategy, unless set explicitly."""

import json

import pytest

from hf_transfer.config import TrainingConfig, load_config
from hf_transfer.engine.budget import DEFAULT_LEARNING_RATES, DEFAULT_MIN_STEPS, resolve_budget
from hf_transfer.errors import ConfigError
from hf_transfer.run import train
from hf_transfer.strategies import build_strategy


def strategy(name):
    from hf_transfer.strategies import strategy_config_class

    return build_strategy(strategy_config_class(name)(name=name))


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
    assert (b.total_steps, b.learning_rate) == (8, 1e-2)  # no min_steps with explicit epochs
    assert b.sources["learning_rate"] == "training.learning_rate"
    b = resolve_budget(TrainingConfig(epochs=2, min_steps=20), strategy("freeze"), steps_per_epoch=4)
    assert b.total_steps == 20  # unless min_steps is set too
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
    with pytest.raises(ConfigError, match=r"training.min_steps must be 0 \(off\) or more, got -1"):
        load_config(None, ["model.name_or_path=m", "data.train=x.csv", "training.min_steps=-1"])
    assert load_config(None, ["model.name_or_path=m", "data.train=x.csv"]).training.learning_rate is None


def test_convolutional_networks_get_ten_times_the_backbone_rates():
    """A batch-normalised CNN fine-tuned at a transformer's 5e-5 stays at chance for a small-data
    budget; the backbone-training strategies scale their default for it, the head-only ones do not."""
    from hf_transfer.engine.budget import CONV_LR_MULTIPLIER

    for name in ("full", "partial", "lp_ft", "scratch"):
        b = resolve_budget(TrainingConfig(), strategy(name), 4, model="efficientnet")
        assert b.learning_rate == pytest.approx(DEFAULT_LEARNING_RATES[name] * CONV_LR_MULTIPLIER)
        assert "convolutional network (efficientnet)" in b.sources["learning_rate"]
        assert (
            resolve_budget(TrainingConfig(), strategy(name), 4, model="bert").learning_rate
            == DEFAULT_LEARNING_RATES[name]
        )
    assert (
        resolve_budget(TrainingConfig(), strategy("freeze"), 4, model="resnet").learning_rate
        == DEFAULT_LEARNING_RATES["freeze"]
    )
    assert resolve_budget(TrainingConfig(learning_rate=1e-5), strategy("full"), 4, model="resnet").learning_rate == 1e-5
    s = strategy("auto")
    s.delegate = strategy("full")
    assert resolve_budget(TrainingConfig(), s, 4, model="convnext").learning_rate == pytest.approx(5e-4)


def test_a_convolutional_run_records_the_scaled_rate(tmp_path):
    """Through the engine: the model's family reaches the budget (metrics.json says why)."""
    import numpy as np
    from PIL import Image
    from transformers import EfficientNetConfig, EfficientNetForImageClassification, ViTImageProcessor

    from hf_transfer.config import config_from_dict

    model_dir = tmp_path / "effnet"
    cfg = EfficientNetConfig(image_size=32, width_coefficient=0.25, depth_coefficient=0.2, hidden_dim=320, num_labels=2)
    EfficientNetForImageClassification(cfg).save_pretrained(model_dir)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(model_dir)
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("validation", 4)):
        for label in ("a", "b"):
            (tmp_path / "img" / split / label).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
                    tmp_path / "img" / split / label / f"{i}.png"
                )
    raw = {
        "recipe": "image_classification",
        "output_dir": str(tmp_path / "run"),
        "model": {"name_or_path": str(model_dir)},
        "data": {"train": str(tmp_path / "img" / "train"), "eval": str(tmp_path / "img" / "validation")},
        "strategy": {"name": "full"},
        "training": {"max_steps": 2, "batch_size": 8, "report_to": [], "save_strategy": "no", "eval_strategy": "no"},
    }
    m = train(config_from_dict(raw, "test"))
    assert m["budget"]["learning_rate"] == pytest.approx(DEFAULT_LEARNING_RATES["full"] * 10)
    assert "convolutional" in m["budget"]["sources"]["learning_rate"]


def test_many_classes_get_at_least_four_steps_per_class():
    # 24 classes x 8 examples at batch 16: 12 steps an epoch; 50 steps would be 5 epochs, 96 is 8.
    b = resolve_budget(TrainingConfig(), strategy("full"), steps_per_epoch=12, num_classes=24)
    assert b.total_steps == 96 and b.epochs == 8 and "4 per class" in b.sources["total_steps"]
    # few classes: the plain minimum; explicit settings win
    assert resolve_budget(TrainingConfig(), strategy("full"), 12, num_classes=2).total_steps == 60
    assert resolve_budget(TrainingConfig(min_steps=20), strategy("full"), 12, num_classes=24).total_steps == 36
    assert resolve_budget(TrainingConfig(epochs=1), strategy("full"), 12, num_classes=24).total_steps == 12
