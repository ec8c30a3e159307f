"""`static`: model2vec distillation of the checkpoint, a classifier on it, a pickle-free run folder."""

import json

import numpy as np
import pytest
import torch

from hf_transfer.config import load_config
from hf_transfer.errors import ConfigError

pytest.importorskip("model2vec")


def test_static_trains_saves_safetensors_and_evaluates_and_predicts(
    text_overrides, tmp_path, one_torch_thread, monkeypatch
):
    from safetensors.torch import load_file

    from hf_transfer.run import evaluate, predict, train
    from hf_transfer.strategies.static import StaticClassifier

    monkeypatch.setenv("HF_TRANSFER_CACHE", str(tmp_path / "cache"))
    cfg = load_config(None, text_overrides + ["strategy.name=static", "strategy.pca_dims=16"])
    metrics = train(cfg)
    run = tmp_path / "run"
    assert metrics["strategy"] == "static"
    assert metrics["eval_texts_per_second"] > 0 and metrics["static_distill_seconds"] >= 0
    assert not list(run.glob("*.pkl")) and not list(run.glob("*.joblib"))
    tensors = load_file(str(run / "model.safetensors"))
    assert tensors["embeddings"].shape[1] == 16 and tensors["head.weight"].shape == (2, 16)
    assert json.loads((run / "config.json").read_text())["model_type"] == "hf_transfer_static"
    # the special tokens count for nothing
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(run)
    assert not tensors["known"][tok.all_special_ids].any()
    # evaluate reads the folder back and gives the training run's figure
    again = evaluate(run, split="eval")
    assert again["eval_accuracy"] == pytest.approx(metrics["eval_accuracy"])
    out = predict(run, ["a wonderful brilliant film", "an awful boring film"])
    assert len(out) == 2 and {o["label"] for o in out} <= {"positive", "negative"}
    # the head is scikit-learn's logistic regression on the saved table's mean-pooled embeddings
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    model = StaticClassifier.from_run(run)
    train_rows = pd.read_csv(cfg.data.train.name)
    enc = tok(list(train_rows.text), return_tensors="pt", padding=True)
    X = model.embed(enc["input_ids"], enc["attention_mask"]).double().numpy()
    lr = LogisticRegression(C=metrics["C"], max_iter=1000).fit(X, (train_rows.label == "positive").astype(int))
    w = model.head.weight.detach().double().numpy()
    np.testing.assert_allclose(w[1] - w[0], lr.coef_[0], rtol=1e-3, atol=1e-3)
    # a second run reuses the distilled model from the cache
    cfg2 = load_config(
        None, text_overrides + ["strategy.name=static", "strategy.pca_dims=16", f"output_dir={tmp_path / 'run2'}"]
    )
    m2 = train(cfg2)
    assert m2["eval_accuracy"] == pytest.approx(metrics["eval_accuracy"])
    x = model.embed(tok(["good"], return_tensors="pt")["input_ids"])
    assert torch.allclose(x.norm(dim=-1), torch.ones(1))


def test_static_refuses_images(tmp_path):
    from types import SimpleNamespace

    from hf_transfer.strategies.base import build_strategy
    from hf_transfer.strategies.static import StaticConfig

    ctx = SimpleNamespace(cfg=SimpleNamespace(recipe="image_classification"))
    with pytest.raises(ConfigError, match="text classification"):
        build_strategy(StaticConfig()).prepare(ctx)


def test_static_settings_are_checked():
    with pytest.raises(ConfigError, match="pca_dims"):
        load_config(None, ["model.name_or_path=x", "data.train=y", "strategy.name=static", "strategy.pca_dims=1"])
