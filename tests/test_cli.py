"""The `hf-transfer` command line: ls, cp, train, evaluate, predict, layers, and clear errors."""

import json
import subprocess
import sys

from hf_transfer.cli import main


def test_ls_lists_recipes_and_configs(capsys):
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    assert "text_classification" in out and "bert/sst2_full" in out and "minilm/tweets_full" in out


def test_cp_copies_and_refuses_to_overwrite(tmp_path, capsys):
    dest = tmp_path / "my_run.yaml"
    assert main(["cp", "bert/sst2_full", str(dest)]) == 0
    assert dest.read_text().startswith("# hf-transfer train")
    assert main(["cp", "bert/sst2_full", str(dest)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["cp", "bert/sst2_fulll", str(tmp_path / "x.yaml")]) == 2
    assert "Did you mean: bert/sst2_full" in capsys.readouterr().err


def test_train_evaluate_predict(text_overrides, tmp_path, capsys):
    out = tmp_path / "cli-run"
    overrides = [o for o in text_overrides if not o.startswith("output_dir=")] + [
        f"output_dir={out}",
        "training.epochs=6",
        "training.learning_rate=0.003",
        "training.save_strategy=no",
    ]
    cfg = tmp_path / "run.yaml"
    cfg.write_text("recipe: text_classification\n")
    assert main(["train", str(cfg), *overrides]) == 0
    shown = json.loads(capsys.readouterr().out.split("Run folder")[0])
    assert shown["eval_accuracy"] >= 0.8
    assert main(["evaluate", str(out), "--split", "eval"]) == 0
    assert json.loads(capsys.readouterr().out)["eval_accuracy"] == shown["eval_accuracy"]
    assert main(["predict", str(out), "a great wonderful film"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert row["label"] in ("positive", "negative") and 0 <= row["score"] <= 1


def test_config_error_is_one_clear_line(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("model: {name_or_path: x}\ndata: {train: t.csv}\ntraining: {epocs: 2}\n")
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "training.epocs" in err and "training.epochs" in err and "Traceback" not in err


def test_layers_prints_groups(tiny_bert_dir, capsys):
    assert main(["layers", str(tiny_bert_dir)]) == 0
    out = capsys.readouterr().out
    assert "embeddings" in out and "encoder.layer.1" in out and "head" in out


def test_python_dash_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "hf_transfer", "ls"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "bert/sst2_full" in proc.stdout


# ---------------------------------------------------------------- first use (issue 14, items 12-18)


def test_version_and_closed_pipe_are_quiet():
    out = subprocess.run(
        [sys.executable, "-m", "hf_transfer", "--version"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and out.stdout.startswith("hf-transfer ")
    # `hf-transfer ls | head -1`: the reader is gone before the first write.
    proc = subprocess.Popen([sys.executable, "-m", "hf_transfer", "ls"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and "BrokenPipe" not in err and "Traceback" not in err, err


def test_ls_lists_only_commands_the_installed_package_has(capsys):
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    assert "bench/" not in out and "python " not in out
    assert "hf-transfer train NAME" in out
    # Configs whose data a source-checkout benchmark writes say so instead of naming the script.
    assert "whisper/digits_cls_full      [data: prepared by a benchmark of the source repository]" in out


def test_layers_detects_the_task_from_the_config(tmp_path, capsys):
    from transformers import ViTModel

    from tiny_models import vit_config

    ViTModel(vit_config()).save_pretrained(tmp_path / "vit")  # no processor: the config alone says "image"
    assert main(["layers", str(tmp_path / "vit")]) == 0
    out = capsys.readouterr().out
    assert "AutoModelForImageClassification (from model_type 'vit'" in out and "ViTForImageClassification" in out
    assert main(["layers", str(tmp_path / "vit"), "--auto-class", "AutoModelForImageClasification"]) == 2
    err = capsys.readouterr().err
    assert "Did you mean: AutoModelForImageClassification" in err and "Traceback" not in err
    assert main(["layers", str(tmp_path / "vit"), "--auto-class", "Nonsense"]) == 2
    assert "not a transformers Auto class" in capsys.readouterr().err
    assert main(["layers", str(tmp_path / "vit"), "--auto-class", "AutoModelForSequenceClassification"]) == 2
    err = capsys.readouterr().err
    assert "hf-transfer would use AutoModelForImageClassification" in err and len(err) < 600


def test_no_load_report_table_and_no_progress_escapes(text_overrides, tmp_path, capfd, monkeypatch):
    """One line of our own about the new weights; no transformers LOAD REPORT table; no
    progress-bar cursor codes when stderr is not a terminal (as here, captured)."""
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    cfg = tmp_path / "run.yaml"
    cfg.write_text("recipe: text_classification\n")
    assert main(["train", str(cfg), *text_overrides, "training.epochs=1"]) == 0
    err = capfd.readouterr().err
    assert "New (randomly initialised) weights for the 2 labels: classifier.bias, classifier.weight" in err
    assert "LOAD REPORT" not in err
    assert "\x1b[" not in err and "it/s]" not in err, err[-2000:]


def test_load_report_filter_is_what_silences_transformers(tiny_bert_dir):
    import logging

    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    from hf_transfer.quiet import _FILTER, quiet_libraries

    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    hf_logging.get_logger("transformers").addHandler(handler)
    logger = hf_logging.get_logger("transformers.modeling_utils")
    try:
        logger.removeFilter(_FILTER)
        AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
        assert any("LOAD REPORT" in m for m in seen)  # what users saw on every run
        seen.clear()
        quiet_libraries()
        AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
        assert not any("LOAD REPORT" in m for m in seen)
    finally:
        hf_logging.get_logger("transformers").removeHandler(handler)
        quiet_libraries()


def test_overwrite_flag_and_readme_first_use_lines(text_overrides, tmp_path, capsys):
    from pathlib import Path

    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text("{}")  # a finished run
    cfg = tmp_path / "run.yaml"
    cfg.write_text("recipe: text_classification\n")
    assert main(["train", str(cfg), *text_overrides]) == 2
    assert "--overwrite" in capsys.readouterr().err
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    two_gpus = [line for line in readme.splitlines() if "accelerate launch --num_processes 2" in line]
    assert two_gpus and all("without GPUs: one process" in line for line in two_gpus)
