"""Config precedence and every config error."""

from pathlib import Path

import pytest
import yaml

from hf_transfer import recipes_dir
from hf_transfer.config import DataSource, TrainConfig, load_config, save_config
from hf_transfer.errors import ConfigError

BASE = ["model.name_or_path=some/model", "data.train=data.csv"]


def write(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / "run.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_defaults_then_yaml_then_overrides(tmp_path):
    p = write(
        tmp_path,
        {
            "model": {"name_or_path": "a/b"},
            "data": {"train": "x.csv"},
            "training": {"epochs": 5, "learning_rate": 1e-4},
        },
    )
    cfg = load_config(p, ["training.epochs=2"])
    assert cfg.training.epochs == 2.0  # override beats YAML
    assert cfg.training.learning_rate == 1e-4  # YAML beats default
    assert cfg.training.batch_size == TrainConfig().training.batch_size  # default kept
    assert cfg.data.train == DataSource(name="x.csv")  # string shorthand


def test_override_values_are_typed(tmp_path):
    cfg = load_config(
        None,
        BASE
        + [
            "training.class_weights=[1, 2.5]",
            "training.max_steps=7",
            "training.learning_rate=1e-3",
            "data.train.split=train[:50%]",
            "training.report_to=[]",
        ],
    )
    assert cfg.training.class_weights == [1.0, 2.5]
    assert cfg.training.max_steps == 7
    assert cfg.training.learning_rate == pytest.approx(1e-3)  # YAML 1.1 reads 1e-3 as a string
    assert cfg.data.train == DataSource(name="data.csv", split="train[:50%]")
    assert cfg.training.report_to == []


def test_unknown_key_names_key_file_and_suggestion(tmp_path):
    p = write(
        tmp_path, {"model": {"name_or_path": "a/b"}, "data": {"train": "x.csv"}, "training": {"learning_rte": 0.1}}
    )
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "training.learning_rte" in msg and str(p) in msg and "training.learning_rate" in msg


def test_unknown_override_key_names_command_line():
    with pytest.raises(ConfigError, match=r"training\.epoch'.*command-line override.*Did you mean 'training\.epochs'"):
        load_config(None, BASE + ["training.epoch=3"])


@pytest.mark.parametrize(
    "override,expected",
    [
        ("training.epochs=many", "training.epochs"),
        ("training.batch_size=2.5", "training.batch_size"),
        ("training.mixed_precision=fp8", "training.mixed_precision"),
        ("training.class_weights=heavy", "training.class_weights"),
        ("model.trust_remote_code=maybe", "model.trust_remote_code"),
        ("data=3", "data"),
    ],
)
def test_wrong_types(override, expected):
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.")):
        load_config(None, BASE + [override])


def test_unknown_strategy_suggests():
    with pytest.raises(ConfigError, match="Did you mean 'full'"):
        load_config(None, BASE + ["strategy.name=ful"])


def test_strategy_settings_checked_against_chosen_strategy():
    with pytest.raises(ConfigError, match="strategy.layer_lr_decy"):
        load_config(None, BASE + ["strategy.layer_lr_decy=0.9"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_required_and_range_checks():
    with pytest.raises(ConfigError, match="model.name_or_path is empty"):
        load_config(None, ["data.train=x.csv"])
    with pytest.raises(ConfigError, match="data.train is empty"):
        load_config(None, ["model.name_or_path=a/b"])
    with pytest.raises(ConfigError, match="eval_fraction"):
        load_config(None, BASE + ["data.eval_fraction=1.5"])
    with pytest.raises(ConfigError, match="batch_size"):
        load_config(None, BASE + ["training.batch_size=0"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, BASE + ["training.epochs"])


def test_trust_remote_code_defaults_off():
    assert load_config(None, BASE).model.trust_remote_code is False


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(None, BASE + ["training.epochs=2", "data.eval=val.csv"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg


def test_every_shipped_yaml_loads_and_starts_with_its_command():
    configs = sorted((recipes_dir() / "configs").rglob("*.yaml"))
    assert configs, "no shipped configs found"
    for path in configs:
        first = path.read_text().splitlines()[0]
        assert first.startswith("# ") and ("hf-transfer" in first or "python" in first), path
        load_config(path)


@pytest.mark.parametrize(
    "override",
    [
        "training.learning_rate=inf",
        "training.learning_rate=.nan",
        "training.learning_rate=-.inf",
        "training.weight_decay=nan",
        "training.max_grad_norm=.inf",
        "adaptation.lambda_max=nan",
        "strategy.name=lora",
        "data.max_audio_seconds=inf",
    ],
)
def test_non_finite_numbers_are_refused_anywhere_in_the_schema(override):
    overrides = BASE + [override]
    if override == "strategy.name=lora":  # a strategy's own settings class goes through the same check
        overrides.append("strategy.dropout=.inf")
    key = overrides[-1].partition("=")[0]
    with pytest.raises(
        ConfigError, match=rf"^{key} must be a finite number, got .* \(in command-line override '{key}="
    ):
        load_config(None, overrides)


def test_non_finite_number_in_a_yaml_file_names_the_file(tmp_path):
    path = write(
        tmp_path,
        {"model": {"name_or_path": "a/b"}, "data": {"train": "x.csv"}, "training": {"learning_rate": float("inf")}},
    )
    with pytest.raises(
        ConfigError, match=r"training.learning_rate must be a finite number, got inf \(in '.*run.yaml'\)"
    ):
        load_config(path)


@pytest.mark.parametrize("ratio", ["5", "1", "1.0", "-0.1"])
def test_warmup_ratio_is_bounded(ratio):
    with pytest.raises(ConfigError, match=r"training.warmup_ratio must be at least 0 and below 1 .*got"):
        load_config(None, BASE + [f"training.warmup_ratio={ratio}"])
    assert load_config(None, BASE + ["training.warmup_ratio=0.99"]).training.warmup_ratio == 0.99
    assert load_config(None, BASE + ["training.warmup_ratio=0"]).training.warmup_ratio == 0.0
