"""RunFolder: the one reader and writer of a run's records, and the one definition of "finished"."""

from __future__ import annotations

import json

import pytest

from hf_transfer.config import config_from_dict
from hf_transfer.errors import ConfigError, ExportError, HFTransferError
from hf_transfer.registry import available_recipes, recipe_info
from hf_transfer.run_folder import RUN_ARTIFACTS, RunFolder


def _cfg(tmp_path, **data):
    return config_from_dict(
        {
            "model": {"name_or_path": "m"},
            "output_dir": str(tmp_path / "run"),
            "data": {"train": data.get("train", "t.csv")},
        }
    )


def test_a_folder_without_config_is_not_a_run(tmp_path):
    with pytest.raises(HFTransferError, match="is not a run folder"):
        RunFolder.open(tmp_path)


def test_finished_means_a_saved_model_and_the_error_names_checkpoints(tmp_path):
    run = RunFolder(tmp_path)
    run.write_config(_cfg(tmp_path))
    (tmp_path / "checkpoints" / "step_4").mkdir(parents=True)
    with pytest.raises(HFTransferError, match=r"no trained model yet .* checkpoints \(step_4\)"):
        RunFolder.open(tmp_path)
    assert RunFolder.open(tmp_path, finished=False).config.model.name_or_path == "m"
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert RunFolder.open(tmp_path).has_model
    # Model cards and pushes need the metrics too; the error class is the caller's.
    with pytest.raises(ExportError, match="has no metrics.json"):
        RunFolder.open(tmp_path, needs_metrics=True, error=ExportError)


def test_an_onnx_export_is_finished_without_weights(tmp_path):
    RunFolder(tmp_path).write_config(_cfg(tmp_path))
    (tmp_path / "onnx_export.json").write_text("{}")
    assert not RunFolder(tmp_path).has_model
    (tmp_path / "model.onnx").write_bytes(b"graph")
    run = RunFolder.open(tmp_path)
    assert run.is_onnx_export and run.has_model and not run.is_static


def test_write_config_makes_local_data_paths_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.csv").write_text("text,label\na,x\n")
    RunFolder(tmp_path / "run").path.mkdir()
    run = RunFolder(tmp_path / "run")
    run.write_config(_cfg(tmp_path, train="train.csv"))
    assert run.config.data.train.name == str((tmp_path / "train.csv").resolve())


def test_write_metrics_keeps_json_values_and_writes_confusion_matrices(tmp_path):
    run = RunFolder(tmp_path)
    written = run.write_metrics(
        {"labels": ["a", "b"], "eval_accuracy": 0.75, "eval_confusion_matrix": [[1, 0], [1, 2]], "_model": object()}
    )
    assert written == {"labels": ["a", "b"], "eval_accuracy": 0.75}
    assert json.loads(run.metrics_path.read_text()) == written
    assert json.loads((tmp_path / "confusion_matrix.json").read_text())
    assert (tmp_path / "confusion_matrix.png").is_file()
    assert not list(tmp_path.glob("*.tmp"))  # written aside and renamed
    assert run.metrics.score("eval", "accuracy") == 0.75 and run.labels == ["a", "b"]


def test_labels_fall_back_to_the_model_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"id2label": {"0": "neg", "1": "pos"}}))
    assert RunFolder(tmp_path).labels == ["neg", "pos"]
    assert RunFolder(tmp_path / "missing").labels == []


def test_check_writable_refuses_another_run_unless_overwriting_or_resuming(tmp_path):
    run = RunFolder(tmp_path)
    run.check_writable(overwrite=False, resuming=False)  # empty: fine
    run.write_metrics({"eval_accuracy": 1.0})
    with pytest.raises(ConfigError, match="holds a finished run"):
        run.check_writable(overwrite=False, resuming=False)
    run.check_writable(overwrite=True, resuming=False)
    run.metrics_path.unlink()
    (tmp_path / "checkpoints" / "step_2").mkdir(parents=True)
    with pytest.raises(ConfigError, match="checkpoints of an interrupted run"):
        run.check_writable(overwrite=False, resuming=False)
    run.check_writable(overwrite=False, resuming=True)


def test_clear_previous_run_removes_only_run_artifacts(tmp_path):
    run = RunFolder(tmp_path)
    for name in ("metrics.json", "model.safetensors", "model-00001-of-00002.safetensors", "notes.txt"):
        (tmp_path / name).write_text("x")
    (tmp_path / "checkpoints" / "step_1").mkdir(parents=True)
    removed = run.clear_previous_run()
    assert sorted(removed) == ["checkpoints", "metrics.json", "model-00001-of-00002.safetensors", "model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert "checkpoints" in RUN_ARTIFACTS


def test_every_built_in_recipe_says_what_goes_in_and_comes_out():
    facts = {name: (recipe_info(name).modality, recipe_info(name).targets) for name in available_recipes()}
    assert facts["text_classification"] == ("text", "class")
    assert facts["image_multilabel"] == ("image", "label_set")
    assert facts["text_regression"] == ("text", "number")
    assert facts["token_classification"] == ("text", "tags")
    assert facts["speech_recognition"] == ("audio", "text")
    assert facts["masked_lm"] == ("text", "text")
    assert all(m in ("text", "image", "audio") for m, _ in facts.values()), facts
