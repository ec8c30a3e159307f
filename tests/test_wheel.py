"""Reuse from another repository, end to end: hf_transfer's wheel in a fresh virtual environment,
used from an unrelated folder, and a separately installed package that adds a strategy and a
recipe through the entry point groups (examples/hf_transfer_example_plugin).

The environment is made with `--system-site-packages` so torch and the other dependencies are
reused (the wheel is installed with `--no-deps`); the checks below make sure `hf_transfer` is the
wheel's copy, not this checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
PLUGIN = REPO / "examples" / "hf_transfer_example_plugin"

pytestmark = pytest.mark.slow


def _run(cmd, cwd, env, timeout=900, ok=True):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if ok:
        assert proc.returncode == 0, (
            f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A fresh virtual environment holding hf_transfer's wheel; (python, hf-transfer, env)."""
    root = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    # The build backend comes from PyPI unless it is already installed here.
    isolation = ["--no-build-isolation"] if _has("hatchling") else []
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-w", root / "dist", REPO], root, env)
    wheel = next((root / "dist").glob("hf_transfer_toolkit-*.whl"))
    # No pip of its own: the system's pip (and setuptools, for the plugin) run inside it and install
    # into it; venv's bundled setuptools may be too old to build a wheel.
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", root / "venv"], root, env)
    bindir = root / "venv" / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / "python"
    _run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--ignore-installed", wheel], root, env)
    return python, bindir / "hf-transfer", env


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory, tiny_bert_dir, toy_text_data):
    """An unrelated folder ("another repository") with its own data and config."""
    other = tmp_path_factory.mktemp("other-repo")
    for split in ("train", "validation"):
        shutil.copy(toy_text_data[split], other / f"{split}.csv")
    return other


def _tiny(tiny_bert_dir, *extra):
    return [
        f"model.name_or_path={tiny_bert_dir}",
        "data.train=train.csv",
        "data.eval=validation.csv",
        "data.test=null",
        "data.text_column=text",
        "data.label_column=label",
        "data.max_length=32",
        "training.epochs=null",
        "training.max_steps=6",
        "training.batch_size=16",
        "training.learning_rate=0.003",
        "training.report_to=[]",
        "training.save_strategy=no",
        "training.early_stopping_patience=0",
        *extra,
    ]


def test_the_wheel_is_what_runs(venv, elsewhere):
    python, _, env = venv
    where = _run([python, "-c", "import hf_transfer; print(hf_transfer.__file__)"], elsewhere, env).stdout.strip()
    assert str(python.parent.parent) in where and str(REPO) not in where


def test_ls_cp_and_train_a_shipped_config(venv, elsewhere, tiny_bert_dir):
    python, hf_transfer, env = venv
    out = _run([hf_transfer, "ls"], elsewhere, env).stdout
    assert "bert/sst2_full" in out and "text_classification" in out and "lora" in out
    _run([hf_transfer, "cp", "bert/sst2_full", "sst2.yaml"], elsewhere, env)
    assert (elsewhere / "sst2.yaml").read_text().startswith("# hf-transfer train")
    _run([hf_transfer, "train", "sst2.yaml", *_tiny(tiny_bert_dir, "output_dir=runs/sst2")], elsewhere, env)
    metrics = json.loads((elsewhere / "runs" / "sst2" / "metrics.json").read_text())
    assert "eval_accuracy" in metrics
    # `python -m hf_transfer` and `hf-transfer` are the same command.
    a = _run([hf_transfer, "--help"], elsewhere, env).stdout
    b = _run([python, "-m", "hf_transfer", "--help"], elsewhere, env).stdout
    assert a == b and "compare" in a and "e.g. hf-transfer train" in a


def test_python_api_with_a_config_held_elsewhere(venv, elsewhere, tiny_bert_dir):
    python, _, env = venv
    cfg = {
        "recipe": "text_classification",
        "output_dir": "runs/api",
        "strategy": {"name": "partial", "trainable_layers": 1},
    }
    (elsewhere / "configs").mkdir(exist_ok=True)
    (elsewhere / "configs" / "run.yaml").write_text(yaml.safe_dump(cfg))
    script = elsewhere / "train_it.py"
    script.write_text(
        "import json, sys\n"
        "from hf_transfer import load_config, predict, train\n"
        "metrics = train(load_config('configs/run.yaml', sys.argv[1:]))\n"
        "rows = predict('runs/api', ['a great wonderful film'])\n"
        "print(json.dumps({'strategy': metrics['strategy'], 'label': rows[0]['label']}))\n"
    )
    out = _run([python, script, *_tiny(tiny_bert_dir)], elsewhere, env).stdout
    shown = json.loads(out.strip().splitlines()[-1])
    assert shown["strategy"] == "partial" and shown["label"] in ("positive", "negative")


def test_a_plugin_package_adds_a_strategy_and_a_recipe(venv, elsewhere, tiny_bert_dir):
    python, hf_transfer, env = venv
    before = _run([hf_transfer, "ls"], elsewhere, env).stdout
    assert "bitfit" not in before and "tweet_classification" not in before
    isolation = ["--no-build-isolation"] if _has("setuptools") else []
    _run([python, "-m", "pip", "install", "--quiet", "--no-deps", *isolation, PLUGIN], elsewhere, env)

    out = _run([hf_transfer, "ls"], elsewhere, env).stdout
    assert "tweet_classification" in out and "plugin: hf-transfer-example-plugin" in out
    assert [line for line in out.splitlines() if line.strip().startswith("bitfit")], out

    # Config validation knows the plugin's settings class: a typo is a clear error.
    bad = _run(
        [
            hf_transfer,
            "train",
            "sst2.yaml",
            *_tiny(tiny_bert_dir, "strategy.name=bitfit", "strategy.train_layer_nrom=true", "output_dir=runs/bad"),
        ],
        elsewhere,
        env,
        ok=False,
    )
    assert bad.returncode == 2 and "train_layer_nrom" in bad.stderr and "train_layer_norm" in bad.stderr
    assert "Traceback" not in bad.stderr

    # The plugin's recipe with the plugin's strategy trains; only biases (and the head) changed.
    (elsewhere / "tweets.yaml").write_text(yaml.safe_dump({"recipe": "tweet_classification"}))
    _run(
        [
            hf_transfer,
            "train",
            "tweets.yaml",
            *_tiny(tiny_bert_dir, "strategy.name=bitfit", "strategy.train_layer_norm=true", "output_dir=runs/bitfit"),
        ],
        elsewhere,
        env,
    )
    metrics = json.loads((elsewhere / "runs" / "bitfit" / "metrics.json").read_text())
    assert metrics["strategy"] == "bitfit" and 0 < metrics["trainable_parameters"] < metrics["frozen_parameters"]
    saved = yaml.safe_load((elsewhere / "runs" / "bitfit" / "config.yaml").read_text())
    assert saved["recipe"] == "tweet_classification" and saved["strategy"]["train_layer_norm"] is True
    check = (
        "import sys\n"
        "from safetensors.torch import load_file\n"
        "from transformers import AutoModel\n"
        "base = AutoModel.from_pretrained(sys.argv[1]).state_dict()\n"
        "tuned = load_file('runs/bitfit/model.safetensors')\n"
        "changed = sorted(k for k, v in base.items() if 'bert.' + k in tuned and not (tuned['bert.' + k] == v).all())\n"
        "print('\\n'.join(changed))\n"
    )
    changed = _run([python, "-c", check, tiny_bert_dir], elsewhere, env).stdout.split()
    assert changed and all(k.endswith(".bias") or "LayerNorm.weight" in k for k in changed), changed
    predicted = _run([hf_transfer, "predict", "runs/bitfit", "@someone a great film https://t.co/x"], elsewhere, env)
    assert json.loads(predicted.stdout.splitlines()[0])["label"] in ("positive", "negative")

    # compare runs the plugin's strategy beside a built-in one.
    _run(
        [
            hf_transfer,
            "compare",
            "tweets.yaml",
            *_tiny(tiny_bert_dir),
            "--strategies",
            "freeze,bitfit",
            "--sizes",
            "8",
            "--per-class",
            "--seeds",
            "0",
            "-o",
            "studies/plugin",
        ],
        elsewhere,
        env,
    )
    study = (elsewhere / "studies" / "plugin" / "study.csv").read_text()
    assert "bitfit" in study and "freeze" in study
