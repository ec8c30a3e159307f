"""The new head starts as a logistic regression fitted on what it reads (`strategy.head_init`)."""

import json

import numpy as np
import pytest
import torch

from hf_transfer.config import load_config
from hf_transfer.errors import ConfigError


def _head_input_probe(run_cfg):
    """What the head-init should produce, computed independently: pooler output of the pretrained
    model on the training split, scikit-learn's default logistic regression."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(run_cfg.model.name_or_path)
    model = AutoModelForSequenceClassification.from_pretrained(run_cfg.model.name_or_path, num_labels=2).eval()
    train = pd.read_csv(run_cfg.data.train.name)
    enc = tok(list(train.text), padding=True, truncation=True, max_length=run_cfg.data.max_length, return_tensors="pt")
    with torch.no_grad():
        pooled = model.bert(**enc).pooler_output.double().numpy()
    y = (train.label == "positive").to_numpy().astype(int)  # labels sorted: negative 0, positive 1
    return LogisticRegression(max_iter=1000).fit(pooled, y), pooled, y


def test_head_weights_equal_the_probe_after_init(text_overrides, tmp_path, one_torch_thread):
    from hf_transfer.strategies import RunContext
    from hf_transfer.strategies.base import build_strategy
    from hf_transfer.tasks import get_task

    cfg = load_config(None, text_overrides + ["strategy.name=full"])
    task = get_task(cfg)
    task.load_processor()
    splits = task.load_splits()
    model = task.build_model()
    before = model.classifier.weight.detach().clone()
    record = build_strategy(cfg.strategy).init_head(RunContext(cfg, task, splits, tmp_path), model)
    assert record["head_init"] == "probe" and record["head_init_examples"] == 96
    lr, X, y = _head_input_probe(cfg)
    # binary: the probe's two rows are -w/2 and +w/2 (the same softmax as sigmoid(w.x + b))
    w = model.classifier.weight.detach().double().numpy()
    b = model.classifier.bias.detach().double().numpy()
    np.testing.assert_allclose(w[1] - w[0], lr.coef_[0], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(b[1] - b[0], lr.intercept_[0], rtol=1e-3, atol=1e-4)
    assert not torch.allclose(before, model.classifier.weight)
    # the head now predicts as the probe does
    assert record["head_init_train_accuracy"] == pytest.approx(float(np.mean(lr.predict(X) == y)), abs=1e-3)


def test_probe_reads_the_raw_head_input_of_a_sentence_transformers_checkpoint(
    text_overrides, tiny_bert_dir, tmp_path, one_torch_thread
):
    """A sentence-transformers folder L2-normalises its features by convention; the head reads the
    raw pooler output, so the probe must be fitted on that (else every logit is off by |x|)."""
    from sklearn.linear_model import LogisticRegression

    from conftest import NEGATIVE, POSITIVE
    from hf_transfer.strategies import RunContext
    from hf_transfer.strategies.base import build_strategy
    from hf_transfer.tasks import get_task
    from tiny_models import save_related_bert, sentence_transformers_copy

    related = save_related_bert(tmp_path / "related", POSITIVE, NEGATIVE)  # features that separate
    st = sentence_transformers_copy(related, tmp_path)
    cfg = load_config(None, text_overrides + ["strategy.name=full", f"model.name_or_path={st}"])
    task = get_task(cfg)
    task.load_processor()
    splits = task.load_splits()
    model = task.build_model()
    record = build_strategy(cfg.strategy).init_head(RunContext(cfg, task, splits, tmp_path), model)
    lr, X, y = _head_input_probe(cfg)
    assert record["head_init_train_accuracy"] > 0.8  # the probe learned something
    unit = LogisticRegression(max_iter=1000).fit(X / np.linalg.norm(X, axis=1, keepdims=True), y)
    assert not np.allclose(unit.coef_[0], lr.coef_[0], rtol=0.05)  # the two fits are told apart
    w = model.classifier.weight.detach().double().numpy()
    b = model.classifier.bias.detach().double().numpy()
    np.testing.assert_allclose(w[1] - w[0], lr.coef_[0], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(b[1] - b[0], lr.intercept_[0], rtol=1e-3, atol=1e-4)


def test_random_head_init_leaves_the_head_alone(text_overrides, tmp_path, one_torch_thread):
    from hf_transfer.strategies import RunContext
    from hf_transfer.strategies.base import build_strategy
    from hf_transfer.tasks import get_task

    cfg = load_config(None, text_overrides + ["strategy.name=full", "strategy.head_init=random"])
    task = get_task(cfg)
    task.load_processor()
    splits = task.load_splits()
    model = task.build_model()
    before = model.classifier.weight.detach().clone()
    record = build_strategy(cfg.strategy).init_head(RunContext(cfg, task, splits, tmp_path), model)
    assert record == {"head_init": "random", "head_init_reason": "strategy.head_init=random"}
    assert torch.equal(before, model.classifier.weight)


def test_head_init_is_checked():
    with pytest.raises(ConfigError, match="head_init"):
        load_config(None, ["model.name_or_path=x", "data.train=y", "strategy.name=full", "strategy.head_init=zeros"])


@pytest.mark.parametrize("name", ["full", "lora"])
def test_run_with_probe_head_saves_and_loads_with_plain_transformers(name, text_overrides, tmp_path, one_torch_thread):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hf_transfer.run import train

    cfg = load_config(
        None, text_overrides + [f"strategy.name={name}", "training.save_strategy=no", "training.epochs=1"]
    )
    metrics = train(cfg)
    assert metrics["head_init"] == "probe"
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["head_init"] == "probe" and saved["head_init_examples"] == 96
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "run")
    with torch.no_grad():
        logits = model(**tok(["a great film", "a dull film"], return_tensors="pt", padding=True)).logits
    assert logits.shape == (2, 2)


def test_scratch_and_feature_strategies_do_not_init_a_head(text_overrides, tmp_path, one_torch_thread):
    from hf_transfer.strategies import RunContext
    from hf_transfer.strategies.base import build_strategy
    from hf_transfer.tasks import get_task

    for name in ("scratch", "feature_extraction"):
        cfg = load_config(None, text_overrides + [f"strategy.name={name}"])
        task = get_task(cfg)
        task.load_processor()
        splits = task.load_splits()
        model = task.build_model()
        before = model.classifier.weight.detach().clone()
        assert build_strategy(cfg.strategy).init_head(RunContext(cfg, task, splits, tmp_path), model) == {}
        assert torch.equal(before, model.classifier.weight)


def test_only_single_label_classification_heads_are_probed(text_overrides, tmp_path, one_torch_thread):
    from types import SimpleNamespace

    from hf_transfer.strategies.head_init import init_head_from_probe
    from hf_transfer.tasks import get_task

    cfg = load_config(None, text_overrides + ["strategy.name=full"])
    task = get_task(cfg)
    task.load_processor()
    splits = task.load_splits()
    model = task.build_model()
    before = model.classifier.weight.detach().clone()
    ctx = SimpleNamespace(
        cfg=SimpleNamespace(recipe="speech_recognition", training=cfg.training, model=cfg.model),
        task=task,
        splits=splits,
    )
    assert init_head_from_probe(ctx, model)["head_init"] == "random"
    model.config.problem_type = "multi_label_classification"
    record = init_head_from_probe(SimpleNamespace(cfg=cfg, task=task, splits=splits), model)
    assert record["head_init"] == "random" and "single-label" in record["head_init_reason"]
    assert torch.equal(before, model.classifier.weight)
