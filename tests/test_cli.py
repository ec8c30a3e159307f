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
    overrides = [o for o in text_overrides if not o.startswith("output_dir=")] + [f"output_dir={out}",
                 "training.epochs=6", "training.learning_rate=0.003", "training.save_strategy=no"]
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
