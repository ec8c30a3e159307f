"""Domain shift and adaptation: the shift statistics on constructed features, `hf-transfer shift`,
DANN and AdaBN inside the engine, target-image normalisation, continued masked-LM pretraining,
staged runs with resume, and the bad inputs (no target, a target of another modality, AdaBN
without batch norm, a model with no masked-LM form). Tiny local models only."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import toy_sentences, write_csv
from hf_transfer.cli import main as cli_main
from hf_transfer.config import load_config
from hf_transfer.errors import ConfigError, DataError, ModelError
from hf_transfer.run import train

# Tiny models run ~20x slower with 2 threads when other processes load the cores.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _overrides(text_overrides, tmp_path, name, *extra):
    return [o for o in text_overrides if not o.startswith("output_dir=")] + [f"output_dir={tmp_path / name}", *extra]


@pytest.fixture
def unlabelled_target(tmp_path) -> Path:
    """Target-domain text: the same kind of sentences, shouted, without labels."""
    return write_csv(tmp_path / "target.csv", [{"text": r["text"].upper() + " !!"} for r in toy_sentences(40, seed=5)])


# ----------------------------------------------------------------------------- shift statistics


def test_shift_tests_on_two_halves_of_one_set_find_no_shift():
    from hf_transfer.domain.shift import domain_classifier_test, mmd_test

    X = np.random.default_rng(0).normal(size=(400, 32))
    a, b = X[:200], X[200:]
    d = domain_classifier_test(a, b, seed=0)
    assert d["ci_low"] <= 0.5 <= d["ci_high"], d
    assert mmd_test(a, b, permutations=200, seed=0)["p_value"] > 0.05


def test_shift_tests_detect_a_constructed_shift():
    from hf_transfer.domain.shift import domain_classifier_test, mmd_test

    rng = np.random.default_rng(1)
    a = rng.normal(size=(200, 32))
    b = rng.normal(size=(200, 32)) + np.r_[np.full(4, 0.6), np.zeros(28)]  # 4 of 32 features moved
    d = domain_classifier_test(a, b, seed=0)
    assert d["auc"] > 0.7 and d["ci_low"] > 0.6, d
    assert mmd_test(a, b, permutations=200, seed=0)["p_value"] < 0.01


def test_black_box_shift_estimation_recovers_target_priors():
    from hf_transfer.domain.shift import black_box_shift_estimation

    rng = np.random.default_rng(2)
    ys = rng.integers(0, 3, 1500)
    means = np.eye(3) * 3.0
    Xs = rng.normal(size=(1500, 3)) + means[ys]
    yt = rng.choice(3, 1500, p=[0.6, 0.3, 0.1])
    Xt = rng.normal(size=(1500, 3)) + means[yt]
    r = black_box_shift_estimation(Xs, ys, Xt, 3, seed=0)
    np.testing.assert_allclose(r["target_priors_estimated"], [0.6, 0.3, 0.1], atol=0.05)
    np.testing.assert_allclose(r["source_priors"], [1 / 3] * 3, atol=0.05)


def test_shift_command_writes_report_and_exits_zero(text_overrides, tmp_path, toy_text_data, capsys):
    cfg_path = tmp_path / "run.yaml"
    import yaml

    raw = {
        "model": {"name_or_path": text_overrides[0].split("=", 1)[1]},
        "data": {"train": str(toy_text_data["train"])},
        "output_dir": str(tmp_path / "run"),
        "training": {"report_to": []},
    }
    cfg_path.write_text(yaml.safe_dump(raw))
    target = write_csv(tmp_path / "labelled_target.csv", toy_sentences(40, seed=9))
    out = tmp_path / "shift"
    assert cli_main(["shift", str(cfg_path), "--target", str(target), "-o", str(out), "--permutations", "50"]) == 0
    printed = capsys.readouterr().out
    assert "SHIFT" in printed and "AUC" in printed
    report = json.loads((out / "shift.json").read_text())
    assert {"domain_classifier", "mmd", "label_shift", "per_class", "least_like_training", "verdict"} <= set(report)
    assert len(report["per_class"]) == 2 and report["label_shift"]["target_priors_true"] == [0.5, 0.5]
    assert (out / "shift.png").stat().st_size > 1000 and "least like training" in (out / "shift.md").read_text()


# ----------------------------------------------------------------------------- DANN


def test_gradient_reversal_and_lambda_schedule():
    from hf_transfer.domain.dann import dann_lambda, grad_reverse

    x = torch.ones(3, requires_grad=True)
    (grad_reverse(x, 0.5) * 2).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), -1.0))
    assert dann_lambda(0.0) == 0.0 and abs(dann_lambda(1.0) - 2 / (1 + np.exp(-10)) + 1) < 1e-9
    assert 0.98 < dann_lambda(0.5) < 0.99 and dann_lambda(0.5, lambda_max=0.1) < 0.1


def test_dann_trains_with_target_batches_and_logs_domain_accuracy(text_overrides, tmp_path, unlabelled_target):
    plain = train(load_config(None, _overrides(text_overrides, tmp_path, "plain", "training.save_strategy=no")))
    cfg = load_config(
        None,
        _overrides(
            text_overrides,
            tmp_path,
            "dann",
            "training.save_strategy=no",
            "adaptation.name=dann",
            f"data.target={unlabelled_target}",
            "adaptation.target_batch_size=8",
        ),
    )
    metrics = train(cfg)
    history = json.loads((tmp_path / "dann" / "history.json").read_text())
    logged = [r for r in history if "domain_accuracy" in r]
    assert len(logged) == metrics["train_steps"]  # logging_steps=1
    assert all(0.0 <= r["domain_accuracy"] <= 1.0 for r in logged)
    assert logged[0]["dann_lambda"] == 0.0 and logged[-1]["dann_lambda"] > 0.5
    # The reversed domain gradient changes the body: the weights differ from the plain run's.
    from safetensors.torch import load_file

    a, b = (
        load_file(str(tmp_path / "plain" / "model.safetensors")),
        load_file(str(tmp_path / "dann" / "model.safetensors")),
    )
    assert set(a) == set(b)  # no domain classifier in the saved model
    assert not torch.allclose(
        a["bert.encoder.layer.0.attention.self.query.weight"], b["bert.encoder.layer.0.attention.self.query.weight"]
    )
    assert "eval_accuracy" in plain and "eval_accuracy" in metrics


@pytest.mark.slow  # three training runs
def test_dann_resumed_mid_epoch_equals_uninterrupted(text_overrides, tmp_path, unlabelled_target, crash_at_step):
    """The target order depends only on (seed, epoch, pass), the lambda ramp on the step, and the
    domain classifier is checkpointed: a resumed DANN run ends with the same weights."""
    from safetensors.torch import load_file

    extra = (
        "adaptation.name=dann",
        f"data.target={unlabelled_target}",
        "adaptation.target_batch_size=8",
        "training.save_strategy=steps",
        "training.save_steps=3",
        "training.epochs=2",
    )
    with crash_at_step(5):
        train(load_config(None, _overrides(text_overrides, tmp_path, "run", *extra)))
    train(
        load_config(None, _overrides(text_overrides, tmp_path, "run", *extra, "training.resume_from_checkpoint=latest"))
    )
    train(load_config(None, _overrides(text_overrides, tmp_path, "straight", *extra)))
    a, b = (
        load_file(str(tmp_path / "run" / "model.safetensors")),
        load_file(str(tmp_path / "straight" / "model.safetensors")),
    )
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


def test_dann_without_target_is_a_config_error(text_overrides, tmp_path):
    with pytest.raises(ConfigError, match="data.target"):
        load_config(None, _overrides(text_overrides, tmp_path, "x", "adaptation.name=dann"))


def test_target_of_another_modality_is_refused(text_overrides, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(folder / f"{i}.png")
    cfg = load_config(None, _overrides(text_overrides, tmp_path, "x", "adaptation.name=dann", f"data.target={folder}"))
    with pytest.raises(DataError, match="holds images .* trains on text"):
        train(cfg)


# ----------------------------------------------------------------------------- AdaBN and normalisation


def test_adabn_on_a_model_without_batch_norm_says_what_to_do(text_overrides, tmp_path, unlabelled_target):
    cfg = load_config(
        None, _overrides(text_overrides, tmp_path, "x", "adaptation.name=adabn", f"data.target={unlabelled_target}")
    )
    with pytest.raises(ModelError, match="has no batch norm.*adaptation.name=dann"):
        train(cfg)


def _coloured_folder(root: Path, n: int, tint=None, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    for label, channel in (("red", 0), ("blue", 2)):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            a = rng.integers(0, 90, (16, 16, 3)).astype(np.uint8)
            a[..., channel] = rng.integers(160, 256, (16, 16))
            if tint is not None:
                a = np.clip(a.astype(int) + tint, 0, 255).astype(np.uint8)
            Image.fromarray(a).save(root / label / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def tiny_resnet_dir(tmp_path_factory) -> Path:
    from tiny_models import save_resnet

    return save_resnet(
        tmp_path_factory.mktemp("tiny-resnet"), image_size=16, num_channels=3, layer_type="basic", num_labels=3
    )


def _image_overrides(model_dir, train_dir, tmp_path, name, *extra):
    return [
        f"model.name_or_path={model_dir}",
        "recipe=image_classification",
        f"data.train={train_dir}",
        f"output_dir={tmp_path / name}",
        "training.epochs=1",
        "training.batch_size=8",
        "training.report_to=[]",
        "training.save_strategy=no",
        "training.learning_rate=0.01",
        *extra,
    ]


def test_adabn_recomputes_batch_norm_statistics_on_target(tiny_resnet_dir, tmp_path):
    from safetensors.torch import load_file

    train_dir = _coloured_folder(tmp_path / "src", 8)
    target = tmp_path / "tgt"
    target.mkdir()
    for i in range(12):  # unlabelled, much brighter
        Image.fromarray(np.full((16, 16, 3), 230, np.uint8)).save(target / f"{i}.png")
    train(load_config(None, _image_overrides(tiny_resnet_dir, train_dir, tmp_path, "plain")))
    train(
        load_config(
            None,
            _image_overrides(
                tiny_resnet_dir, train_dir, tmp_path, "adabn", "adaptation.name=adabn", f"data.target={target}"
            ),
        )
    )
    a = load_file(str(tmp_path / "plain" / "model.safetensors"))
    b = load_file(str(tmp_path / "adabn" / "model.safetensors"))
    stats = [k for k in a if k.endswith("running_mean")]
    weights = [k for k in a if k.endswith("convolution.weight")]
    assert stats and weights
    assert all(torch.equal(a[k], b[k]) for k in weights)  # same training
    assert not torch.allclose(a[stats[0]], b[stats[0]])  # statistics from the target


def test_normalize_from_target_sets_processor_mean_and_std(tiny_resnet_dir, tmp_path):
    train_dir = _coloured_folder(tmp_path / "src", 4)
    target = tmp_path / "tgt"
    target.mkdir()
    colour = (51, 102, 204)
    for i in range(5):
        Image.fromarray(np.tile(np.array(colour, np.uint8), (16, 16, 1))).save(target / f"{i}.png")
    train(
        load_config(
            None,
            _image_overrides(
                tiny_resnet_dir,
                train_dir,
                tmp_path,
                "norm",
                "data.normalize_from=target",
                f"data.target={target}",
                "training.epochs=0.5",
            ),
        )
    )
    saved = json.loads((tmp_path / "norm" / "preprocessor_config.json").read_text())
    np.testing.assert_allclose(saved["image_mean"], [c / 255 for c in colour], atol=1e-3)
    assert max(saved["image_std"]) < 1e-3


def test_normalize_from_target_needs_images(text_overrides, tmp_path, unlabelled_target):
    with pytest.raises(ConfigError, match="recomputes image normalisation"):
        load_config(
            None,
            _overrides(text_overrides, tmp_path, "x", "data.normalize_from=target", f"data.target={unlabelled_target}"),
        )


# ----------------------------------------------------------------------------- continued pretraining


def test_pretrain_mlm_loss_falls_and_train_takes_the_checkpoint(tiny_bert_dir, tmp_path, toy_text_data, caplog):
    import yaml

    texts = write_csv(tmp_path / "texts.csv", [{"text": r["text"]} for r in toy_sentences(160, seed=11)])
    cfg_path = tmp_path / "mlm.yaml"
    cfg_path.write_text(
        yaml.safe_dump(
            {
                "model": {"name_or_path": str(tiny_bert_dir)},
                "data": {"train": str(texts)},
                "output_dir": str(tmp_path / "mlm"),
                "training": {
                    "epochs": 4,
                    "learning_rate": 0.002,
                    "batch_size": 16,
                    "report_to": [],
                    "save_strategy": "no",
                    "warmup_ratio": 0.0,
                },
            }
        )
    )
    caplog.set_level("INFO", logger="hf_transfer")
    assert cli_main(["pretrain", str(cfg_path)]) == 0
    assert "Added a masked-LM head" in caplog.text  # the bare BERT checkpoint has none
    history = json.loads((tmp_path / "mlm" / "history.json").read_text())
    losses = [r["eval_loss"] for r in history if "eval_loss" in r]
    assert len(losses) == 4 and losses[-1] < losses[0] - 0.5, losses
    cfg = load_config(
        None,
        [
            f"model.name_or_path={tmp_path / 'mlm'}",
            f"data.train={toy_text_data['train']}",
            f"output_dir={tmp_path / 'clf'}",
            "training.epochs=1",
            "training.report_to=[]",
            "training.save_strategy=no",
        ],
    )
    assert "eval_accuracy" in train(cfg)


def test_pretrain_on_a_model_with_no_masked_lm_form_is_a_clear_error(tiny_bert_dir, tmp_path):
    import shutil

    from tiny_models import vit_config

    folder = tmp_path / "vit-with-tokenizer"
    shutil.copytree(tiny_bert_dir, folder)
    (folder / "model.safetensors").unlink()
    vit_config(num_hidden_layers=1, image_size=224, patch_size=16).save_pretrained(folder)
    texts = write_csv(tmp_path / "texts.csv", [{"text": r["text"]} for r in toy_sentences(20)])
    cfg = load_config(
        None,
        [
            "recipe=masked_lm",
            f"model.name_or_path={folder}",
            f"data.train={texts}",
            f"output_dir={tmp_path / 'x'}",
            "training.report_to=[]",
        ],
    )
    with pytest.raises(ModelError, match="no masked-language-model form"):
        train(cfg)


# ----------------------------------------------------------------------------- stages


def _stages_cfg(tiny_bert_dir, toy_text_data, tmp_path, stage2_data, *extra):
    import yaml

    path = tmp_path / "stages.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model": {"name_or_path": str(tiny_bert_dir)},
                "output_dir": str(tmp_path / "staged"),
                "training": {
                    "epochs": 2,
                    "batch_size": 16,
                    "learning_rate": 0.001,
                    "report_to": [],
                    "warmup_ratio": 0.0,
                    "save_strategy": "steps",
                    "save_steps": 2,
                },
                "stages": [
                    {
                        "name": "intermediate",
                        "data": {"train": str(toy_text_data["train"]), "eval": str(toy_text_data["validation"])},
                    },
                    {
                        "name": "target",
                        "data": {"train": str(stage2_data), "eval": str(stage2_data)},
                        "strategy": {"name": "partial", "trainable_layers": 1},
                        "training": {"epochs": 3},
                    },
                ],
            }
        )
    )
    return load_config(path, list(extra))


def test_stages_run_in_order_and_an_interrupted_stage_2_resumes_alone(
    tiny_bert_dir, toy_text_data, tmp_path, monkeypatch, caplog
):
    from hf_transfer.engine.trainer import Trainer

    stage2 = write_csv(tmp_path / "stage2.csv", toy_sentences(48, seed=4, labels=("bad", "good")))
    cfg = _stages_cfg(tiny_bert_dir, toy_text_data, tmp_path, stage2)
    original = Trainer._optimizer_step

    def crash_in_stage_2(self, window):
        if "02_target" in str(self.output_dir) and self.state.global_step == 5:
            raise RuntimeError("simulated crash")
        return original(self, window)

    monkeypatch.setattr(Trainer, "_optimizer_step", crash_in_stage_2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg)
    stage1 = tmp_path / "staged" / "01_intermediate"
    assert (stage1 / "body" / "config.json").is_file()
    assert json.loads((stage1 / "body" / "config.json").read_text())["architectures"] == ["BertModel"]
    stamp = os.stat(stage1 / "model.safetensors").st_mtime_ns

    monkeypatch.setattr(Trainer, "_optimizer_step", original)
    caplog.set_level("INFO", logger="hf_transfer")
    metrics = train(
        _stages_cfg(tiny_bert_dir, toy_text_data, tmp_path, stage2, "training.resume_from_checkpoint=latest")
    )
    assert os.stat(stage1 / "model.safetensors").st_mtime_ns == stamp  # stage 1 not repeated
    assert "(intermediate): finished earlier, not repeated" in caplog.text
    assert "Resumed from" in caplog.text and "step_4" in caplog.text
    combined = json.loads((tmp_path / "staged" / "metrics.json").read_text())
    assert [s["name"] for s in combined["stages"]] == ["intermediate", "target"]
    assert combined["eval_accuracy"] == metrics["eval_accuracy"]
    final = json.loads((tmp_path / "staged" / "02_target" / "config.json").read_text())
    assert sorted(final["id2label"].values()) == ["bad", "good"]  # a fresh head for stage 2's labels


def test_stage_config_errors_name_the_stage(tiny_bert_dir, toy_text_data, tmp_path):
    import yaml

    path = tmp_path / "bad.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model": {"name_or_path": str(tiny_bert_dir)},
                "stages": [{"data": {"train": str(toy_text_data["train"])}}, {"training": {"epochz": 2}}],
            }
        )
    )
    with pytest.raises(ConfigError, match=r"epochz.* in stages\[1\] of"):
        load_config(path)


@pytest.mark.slow
def test_dann_under_two_processes_keeps_ranks_identical(text_overrides, tmp_path, unlabelled_target):
    """Two CPU processes (gloo): target batches sharded like source batches, one forward per
    micro-batch, the domain classifier all-reduced: every rank ends with the same weights."""
    from test_multiprocess import common, launch, rank_weights

    out = tmp_path / "ddp_dann"
    launch(
        common(text_overrides, out) + ["training.epochs=2", "adaptation.name=dann", f"data.target={unlabelled_target}"]
    )
    rank_weights(out)
    history = json.loads((out / "history.json").read_text())
    assert any("domain_accuracy" in r for r in history)


def test_two_stages_with_one_name_are_refused_before_anything_trains(tiny_bert_dir, toy_text_data, tmp_path):
    import yaml

    path = tmp_path / "dup.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model": {"name_or_path": str(tiny_bert_dir)},
                "output_dir": str(tmp_path / "run"),
                "stages": [
                    {"name": "target", "data": {"train": str(toy_text_data["train"])}},
                    {"name": "target", "data": {"train": str(toy_text_data["train"])}},
                ],
            }
        )
    )
    with pytest.raises(ConfigError, match=r"stages\[1\] of .* is named 'target', like stages\[0\]"):
        load_config(path)
    # A default name ("stage2") taken by another stage is the same clash.
    path.write_text(
        yaml.safe_dump(
            {
                "model": {"name_or_path": str(tiny_bert_dir)},
                "output_dir": str(tmp_path / "run"),
                "stages": [
                    {"name": "stage2", "data": {"train": str(toy_text_data["train"])}},
                    {"data": {"train": str(toy_text_data["train"])}},
                ],
            }
        )
    )
    with pytest.raises(ConfigError, match="named 'stage2', like stages"):
        load_config(path)
    assert not (tmp_path / "run").exists()


def test_pretrain_on_a_tiny_file_masks_every_eval_text(tiny_bert_dir, tmp_path, capsys):
    """A held-out split of short texts, masked with a small probability: the random draw masks
    none of them, so the eval loss used to be NaN (and the run reported success). Each eval text
    now gets one masked token at least, and the loss is a number."""
    import math

    import yaml

    texts = write_csv(tmp_path / "texts.csv", [{"text": r["text"]} for r in toy_sentences(12, seed=11)])
    held = write_csv(tmp_path / "held.csv", [{"text": t} for t in ("good film", "bad plot", "fine")])
    cfg_path = tmp_path / "mlm.yaml"
    cfg_path.write_text(
        yaml.safe_dump(
            {
                "model": {"name_or_path": str(tiny_bert_dir)},
                "data": {"train": str(texts), "eval": str(held), "mlm_probability": 0.01},
                "output_dir": str(tmp_path / "mlm"),
                "training": {"epochs": 1, "batch_size": 4, "report_to": [], "save_strategy": "no", "warmup_ratio": 0.0},
            }
        )
    )
    assert cli_main(["pretrain", str(cfg_path)]) == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "mlm" / "metrics.json").read_text())
    assert metrics["eval_masked_tokens"] >= 3 and math.isfinite(metrics["eval_loss"]), metrics


def test_pretrain_refuses_a_file_too_small_to_hold_texts_out(tiny_bert_dir, tmp_path):
    one = write_csv(tmp_path / "one.csv", [{"text": "a single line"}, {"text": "  "}])
    cfg = load_config(
        None,
        [
            "recipe=masked_lm",
            f"model.name_or_path={tiny_bert_dir}",
            f"data.train={one}",
            f"output_dir={tmp_path / 'x'}",
            "training.report_to=[]",
        ],
    )
    with pytest.raises(DataError, match=r"data.train holds 1 non-blank text\(s\): too few to hold any out"):
        train(cfg)
