"""Strategies and recipes from other installed packages (entry point groups `hf_transfer.strategies`
and `hf_transfer.recipes`), without pip: a `*.dist-info` folder on the path is what an installed
package looks like to `importlib.metadata`. tests/test_wheel.py does the same with real installs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PLUGIN_SRC = REPO / "examples" / "hf_transfer_example_plugin" / "src"


def _site(tmp_path: Path, entry_points: str, name: str = "demo-plugin") -> Path:
    site = tmp_path / "site"
    dist = site / f"{name.replace('-', '_')}-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(entry_points)
    return site


def _hf_transfer(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        PYTHONPATH=os.pathsep.join([str(site), str(REPO), os.environ.get("PYTHONPATH", "")]),
    )
    return subprocess.run(
        [sys.executable, "-m", "hf_transfer", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_entry_points_register_a_strategy_and_a_recipe(tmp_path):
    site = _site(
        tmp_path,
        "[hf_transfer.strategies]\nbitfit = hf_transfer_example_plugin.bitfit\n\n"
        "[hf_transfer.recipes]\ntweet_classification = hf_transfer_example_plugin.tweets\n",
        name="hf-transfer-example-plugin",
    )
    shutil.copytree(PLUGIN_SRC / "hf_transfer_example_plugin", site / "hf_transfer_example_plugin")
    out = _hf_transfer(site, "ls", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(line.split()[:1] == ["bitfit"] and "[plugin: hf-transfer-example-plugin]" in line for line in lines)
    assert any(line.split()[:2] == ["tweet_classification", "text-classification"] for line in lines)
    # Validation knows the plugin's settings class.
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        "recipe: tweet_classification\nmodel: {name_or_path: x}\ndata: {train: t.csv}\n"
        "strategy: {name: bitfit, train_layer_nrom: true}\n"
    )
    bad = _hf_transfer(site, "train", str(cfg), cwd=tmp_path)
    assert bad.returncode == 2 and "strategy.train_layer_nrom" in bad.stderr and "train_layer_norm" in bad.stderr
    # compare checks its strategy names against the same registry.
    cfg.write_text("recipe: tweet_classification\nmodel: {name_or_path: x}\ndata: {train: t.csv}\n")
    study = _hf_transfer(site, "compare", str(cfg), "--strategies", "bitfitt", "--sizes", "4", cwd=tmp_path)
    assert study.returncode == 2 and "Did you mean 'bitfit'" in study.stderr


def test_a_broken_plugin_is_named_and_does_not_break_the_installation(tmp_path):
    site = _site(tmp_path, "[hf_transfer.strategies]\nbroken = no_such_module_anywhere\n")
    out = _hf_transfer(site, "ls", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (
        "! plugin broken (hf_transfer.strategies, package demo-plugin) failed to load: ModuleNotFoundError"
        in out.stdout
    )
    assert "full" in out.stdout and "Traceback" not in out.stderr


def test_a_function_entry_point_is_called(tmp_path):
    site = _site(tmp_path, "[hf_transfer.recipes]\nmine = my_recipes:register\n")
    (site / "my_recipes.py").write_text(
        "def register():\n"
        "    from hf_transfer.registry import register_task\n"
        "    from hf_transfer.tasks.text_classification import TextClassificationTask\n"
        "    register_task('my_recipe', 'text-classification', modality='text')"
        "(type('MyTask', (TextClassificationTask,), {}))\n"
    )
    out = _hf_transfer(site, "ls", cwd=tmp_path)
    assert out.returncode == 0 and any(line.split()[:1] == ["my_recipe"] for line in out.stdout.splitlines()), (
        out.stdout
    )


def test_a_plugin_that_takes_a_built_in_name_is_refused_and_named(tmp_path):
    site = _site(tmp_path, "[hf_transfer.strategies]\nthief = thief_strategy\n")
    (site / "thief_strategy.py").write_text(
        "from hf_transfer.strategies import Strategy, StrategyConfig, register_strategy\n"
        "@register_strategy('full', StrategyConfig)\n"
        "class Thief(Strategy):\n"
        "    pass\n"
    )
    out = _hf_transfer(site, "ls", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (
        "! plugin thief (hf_transfer.strategies, package demo-plugin) failed to load: ConfigError: "
        "Strategy 'full' is registered twice" in out.stdout
    )
    # The built-in keeps its name.
    full = [line for line in out.stdout.splitlines() if line.split()[:1] == ["full"]]
    assert full and "plugin" not in full[0]


def test_registering_a_name_twice_is_refused_in_process():
    from hf_transfer.errors import ConfigError
    from hf_transfer.registry import register_strategy, register_task, strategy_class, task_class
    from hf_transfer.strategies import Strategy, StrategyConfig

    full = strategy_class("full")
    with pytest.raises(ConfigError, match="Strategy 'full' is registered twice"):
        register_strategy("full", StrategyConfig)(type("Other", (Strategy,), {}))
    assert strategy_class("full") is full
    register_strategy("full", full.config_cls)(full)  # the same registration again is not a duplicate
    with pytest.raises(ConfigError, match="registered twice"):
        register_strategy("full", type("OtherSettings", (StrategyConfig,), {}))(full)  # other settings: refused
    text = task_class("text_classification")
    with pytest.raises(ConfigError, match="Recipe 'text_classification' is registered twice"):
        register_task("text_classification", "text-classification")(type("Other", (text,), {}))
    assert task_class("text_classification") is text
