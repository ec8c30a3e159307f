"""ONNX export (`hf-transfer export --format onnx [--quantize int8]`): the graph reproduces the run's
PyTorch logits for text, image and audio classification runs, LoRA runs and feature-classifier runs
(encoder + pooling + classifier in one graph); int8 agreement and accuracies land in the folder's
card; evaluate and predict run the exported folder; bad inputs get clear errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from test_image_classification import image_folder, tiny_vit_dir  # noqa: E402,F401  (fixtures)
from test_speech import tiny_whisper, tones  # noqa: E402,F401  (fixtures)

from hf_transfer.errors import ExportError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _train(overrides):
    from hf_transfer.config import load_config
    from hf_transfer.run import train

    return train(load_config(None, overrides))


def _text(tiny_bert_dir, toy_text_data, out, *extra):
    return [
        f"model.name_or_path={tiny_bert_dir}",
        f"data.train={toy_text_data['train']}",
        f"data.eval={toy_text_data['validation']}",
        f"output_dir={out}",
        "training.epochs=3",
        "training.batch_size=16",
        "training.learning_rate=0.003",
        "training.warmup_ratio=0.0",
        "training.report_to=[]",
        "training.save_strategy=no",
        *extra,
    ]


@pytest.fixture(scope="module")
def text_run(tiny_bert_dir, toy_text_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx-text") / "run"
    _train(_text(tiny_bert_dir, toy_text_data, out))
    return out


def _pytorch_logits(run_dir, inputs):
    """The run's logits as `hf-transfer evaluate` computes them (feature classifier included)."""
    from hf_transfer.config import load_config
    from hf_transfer.run import load_run_model
    from hf_transfer.run_folder import RunFolder
    from hf_transfer.tasks import get_task

    cfg = load_config(Path(run_dir) / "config.yaml")
    cfg.model.name_or_path = str(run_dir)
    task = get_task(cfg)
    task.load_processor()
    model = load_run_model(RunFolder(run_dir), task)
    with torch.no_grad():
        return model(**task.predict_inputs(inputs)).logits.float().numpy(), task


def _onnx_logits(folder, task, inputs, file=None):
    from hf_transfer.export.onnx import OnnxClassifier

    return OnnxClassifier(folder, file=file).run(dict(task.predict_inputs(inputs)))


SENTENCES = [
    "a wonderful gripping film",
    "the plot was dull and the acting awful",
    "ok",
    "brilliant",
    "this movie is really the worst thing I have seen in a long while, boring",
]


def test_text_run_exports_with_int8_and_serves(text_run, tmp_path, capsys, monkeypatch):
    from hf_transfer.cli import main
    from hf_transfer.run import evaluate, predict

    out = tmp_path / "onnx"
    assert main(["export", str(text_run), str(out), "--format", "onnx", "--quantize", "int8"]) == 0
    printed = capsys.readouterr().out
    assert "served file: model_int8.onnx" in printed and "fp32 parity: largest logit difference" in printed
    spec = json.loads((out / "onnx_export.json").read_text())
    assert spec["model_file"] == "model_int8.onnx" and spec["labels"] == ["negative", "positive"]
    assert set(spec["inputs"]) >= {"input_ids", "attention_mask"}
    parity = spec["parity"]
    assert parity["fp32_max_abs_diff"] <= 1e-4 and parity["int8_agreement"] >= 0.99 and parity["eval_examples"] == 32
    card = (out / "README.md").read_text()
    assert "library_name: onnx" in card and "| ONNX int8 |" in card
    assert not (out / "model.safetensors").exists() and (out / "tokenizer_config.json").is_file()
    # The card's snippet runs as written in the folder, with onnxruntime and the tokenizer only.
    import re

    monkeypatch.chdir(out)
    scope = {}
    exec(re.search(r"```python\n(.*?)```", card, re.S).group(1), scope)
    assert scope["logits"].shape == (1, 2)

    # New sentences of other lengths and batch sizes than the trace's: the fp32 graph matches PyTorch.
    ref, task = _pytorch_logits(text_run, SENTENCES)
    np.testing.assert_allclose(_onnx_logits(out, task, SENTENCES, file="model.onnx"), ref, atol=1e-4)
    np.testing.assert_allclose(_onnx_logits(out, task, SENTENCES[:1], file="model.onnx"), ref[:1], atol=1e-4)

    # evaluate runs the served (int8) graph: its accuracy is the one the card states.
    metrics = evaluate(out, split="eval")
    assert metrics["eval_accuracy"] == pytest.approx(parity["accuracy"]["onnx_int8"])
    torch_metrics = evaluate(text_run, split="eval")
    assert parity["accuracy"]["pytorch"] == pytest.approx(torch_metrics["eval_accuracy"])
    rows = predict(out, SENTENCES[:2], top_k=2)
    assert [r["label"] for r in rows] == [predict(text_run, [s])[0]["label"] for s in SENTENCES[:2]]
    assert abs(sum(t["score"] for t in rows[0]["top"]) - 1.0) < 1e-3


def test_export_refuses_other_folders_and_bad_options(text_run, tmp_path, capsys):
    from hf_transfer.cli import main
    from hf_transfer.run import export_onnx

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="exists and is not an earlier ONNX export"):
        export_onnx(text_run, busy)
    assert (busy / "notes.txt").read_text() == "mine"
    assert main(["export", str(text_run), str(tmp_path / "x"), "--quantize", "int8"]) != 0
    assert "--quantize and --min-int8-agreement apply to --format onnx only" in capsys.readouterr().err
    with pytest.raises(ExportError, match="not supported"):
        export_onnx(text_run, tmp_path / "y", quantize="int4")
    out = export_onnx(text_run, tmp_path / "ok").folder
    with pytest.raises(ExportError, match="already an ONNX export"):
        export_onnx(out, tmp_path / "again")


def test_missing_packages_give_the_install_line(text_run, tmp_path, monkeypatch):
    from hf_transfer.run import export_onnx

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as when not installed
    with pytest.raises(
        ExportError, match=r"need onnxruntime, which is not installed: pip install 'hf-transfer-toolkit\[onnx\]'"
    ):
        export_onnx(text_run, tmp_path / "onnx")
    assert not (tmp_path / "onnx").exists()


def test_int8_below_the_agreement_floor_writes_nothing(text_run, tmp_path, monkeypatch):
    from hf_transfer.export import onnx as onnx_export
    from hf_transfer.run import export_onnx

    with pytest.raises(ExportError, match="--min-int8-agreement must be between 0 and 1, got 1.5"):
        export_onnx(text_run, tmp_path / "onnx", quantize="int8", min_agreement=1.5)
    run = onnx_export.OnnxClassifier.run

    def bad_int8(self, inputs):  # a quantization that flips every label
        logits = run(self, inputs)
        return -logits if self.file == onnx_export.INT8_FILE else logits

    monkeypatch.setattr(onnx_export.OnnxClassifier, "run", bad_int8)
    with pytest.raises(
        ExportError,
        match=r"int8 model agrees with PyTorch on 0.00% of the eval labels, below the 99% "
        r"required; accuracy .* \(PyTorch\) vs .* \(int8\)\. Serve the fp32",
    ):
        export_onnx(text_run, tmp_path / "onnx", quantize="int8")
    assert not (tmp_path / "onnx").exists() and not list(tmp_path.glob(".onnx.*"))
    r = export_onnx(text_run, tmp_path / "onnx", quantize="int8", min_agreement=0.0)  # accepted when asked
    assert (
        r.int8_agreement == 0.0
        and "| int8 predicted labels equal to PyTorch's, 32 eval examples | 0.00% |"
        in (r.folder / "README.md").read_text()
    )


def test_lora_run_exports_merged(tiny_bert_dir, toy_text_data, tmp_path):
    from hf_transfer.run import export_onnx

    run = tmp_path / "lora"
    _train(_text(tiny_bert_dir, toy_text_data, run, "strategy.name=lora", "strategy.r=4"))
    r = export_onnx(run, tmp_path / "onnx")
    assert r.fp32_max_abs_diff <= 1e-4
    ref, task = _pytorch_logits(run, SENTENCES)
    np.testing.assert_allclose(_onnx_logits(r.folder, task, SENTENCES), ref, atol=1e-4)


@pytest.mark.parametrize(
    "extra",
    [
        ("strategy.name=feature_extraction",),  # setfit layout
        ("strategy.name=feature_extraction", "strategy.classifier=knn", "strategy.k=3"),
        (
            "strategy.name=feature_extraction",
            "strategy.classifier=svm",
            "strategy.standardize=true",
            "strategy.layers=mean",
        ),
        ("strategy.name=contrastive", "strategy.C=1.0", "strategy.num_pairs=48"),
    ],
    ids=["logistic", "knn", "linear-svm-scaled-mean-layers", "contrastive"],
)
def test_feature_classifier_runs_are_one_graph(extra, tiny_bert_dir, toy_text_data, tmp_path):
    from hf_transfer.run import evaluate, export_onnx

    run = tmp_path / "run"
    _train(_text(tiny_bert_dir, toy_text_data, run, *extra, "strategy.use_cache=false"))
    layout = json.loads((run / "feature_classifier.json").read_text())["layout"]
    assert layout in ("setfit", "beside")
    r = export_onnx(run, tmp_path / "onnx", quantize="int8", min_agreement=0.9)
    assert r.fp32_max_abs_diff <= 1e-4
    ref, task = _pytorch_logits(run, SENTENCES)
    got = _onnx_logits(r.folder, task, SENTENCES, file="model.onnx")
    np.testing.assert_allclose(got, ref, atol=1e-4)
    # One session answers end to end: the graph's only output is the classifier's logits.
    import onnx

    graph = onnx.load(str(r.folder / "model.onnx")).graph
    assert [o.name for o in graph.output] == ["logits"] and {i.name for i in graph.input} <= {
        "input_ids",
        "attention_mask",
        "token_type_ids",
    }
    assert evaluate(r.folder, split="eval")["eval_accuracy"] == pytest.approx(r.accuracy["onnx_int8"])


def test_classifier_without_a_torch_form_is_named(tiny_bert_dir, toy_text_data, tmp_path):
    from hf_transfer.run import export_onnx

    run = tmp_path / "run"
    _train(
        _text(
            tiny_bert_dir,
            toy_text_data,
            run,
            "strategy.name=feature_extraction",
            "strategy.classifier=svm",
            "strategy.svm_kernel=rbf",
            "strategy.use_cache=false",
        )
    )
    with pytest.raises(
        ExportError, match=r"feature classifier is an SVM with an RBF kernel \(svm\), which has no ONNX form here"
    ):
        export_onnx(run, tmp_path / "onnx")


def test_image_run(tiny_vit_dir, image_folder, tmp_path):  # noqa: F811
    from PIL import Image

    from hf_transfer.run import evaluate, export_onnx, predict

    run = tmp_path / "run"
    _train(
        [
            "recipe=image_classification",
            f"model.name_or_path={tiny_vit_dir}",
            f"data.train={image_folder}",
            f"data.eval={image_folder}",
            f"output_dir={run}",
            "training.epochs=2",
            "training.batch_size=8",
            "training.report_to=[]",
            "training.save_strategy=no",
            "training.learning_rate=0.003",
        ]
    )
    r = export_onnx(run, tmp_path / "onnx", quantize="int8", min_agreement=0.8)
    assert r.fp32_max_abs_diff <= 1e-4 and (r.folder / "preprocessor_config.json").is_file()
    files = sorted(str(p) for p in (image_folder / "test").rglob("*.png"))[:4]
    ref, task = _pytorch_logits(run, files)
    np.testing.assert_allclose(_onnx_logits(r.folder, task, files, file="model.onnx"), ref, atol=1e-4)
    assert evaluate(r.folder, split="eval")["eval_accuracy"] == pytest.approx(r.accuracy["onnx_int8"])
    big = tmp_path / "big.jpg"
    Image.new("RGB", (300, 200), (250, 10, 10)).save(big)
    assert predict(r.folder, [str(big)])[0]["label"] in ("red", "green", "blue")


def test_audio_run(tiny_whisper, tones, tmp_path):  # noqa: F811
    from hf_transfer.run import evaluate, export_onnx

    run = tmp_path / "run"
    _train(
        [
            "recipe=audio_classification",
            f"model.name_or_path={tiny_whisper}",
            f"data.train={tones['train']}",
            f"data.eval={tones['test']}",
            f"output_dir={run}",
            "training.epochs=2",
            "training.batch_size=8",
            "training.learning_rate=0.003",
            "training.warmup_ratio=0.0",
            "training.report_to=[]",
            "training.save_strategy=no",
        ]
    )
    r = export_onnx(run, tmp_path / "onnx")
    assert r.fp32_max_abs_diff <= 1e-4
    clips = sorted(str(p) for p in (tones["root"] / "clips").glob("test_*.wav"))[:3]
    ref, task = _pytorch_logits(run, clips)
    np.testing.assert_allclose(_onnx_logits(r.folder, task, clips), ref, atol=1e-4)
    assert evaluate(r.folder, split="eval")["eval_accuracy"] == pytest.approx(r.accuracy["onnx_fp32"])
