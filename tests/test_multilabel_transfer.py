"""Label sets and numbers on the transfer strategies: the new head starts from a one-vs-rest or
ridge probe, `contrastive` pairs rows by label overlap, `feature_extraction` keeps its linear model
through `models.feature_run` and refits on the carved eval rows."""

import json

import numpy as np
import pytest
import torch
from test_multilabel_regression import _overrides, topic_rows, topics  # noqa: F401  (the topics fixture)

from conftest import write_csv
from hf_transfer import load_config
from hf_transfer.errors import ConfigError, DataError
from tiny_models import sentence_transformers_copy

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _built(cfg):
    from hf_transfer.tasks import get_task

    task = get_task(cfg)
    task.load_processor()
    splits = task.load_splits()
    return task, splits, task.build_model()


def _pooled(model, tokenizer, texts, max_length):
    """The head's input computed independently: BERT's pooler output, eval mode."""
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        return model.bert(**enc).pooler_output.double().numpy(), enc


# ----------------------------------------------------------------------------- head init


def test_sigmoid_head_starts_as_the_one_vs_rest_probe(tiny_bert_dir, topics, tmp_path):  # noqa: F811
    from sklearn.linear_model import LogisticRegression

    from hf_transfer.run import RunContext
    from hf_transfer.strategies.base import build_strategy

    cfg = load_config(
        None, _overrides("text_multilabel", tiny_bert_dir, topics, tmp_path / "run", "strategy.name=full")
    )
    task, splits, model = _built(cfg)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    record = build_strategy(cfg.strategy).init_head(RunContext(cfg, task, splits, tmp_path), model)
    assert record["head_init"] == "probe" and record["head_init_examples"] == len(splits.train)
    assert "one-vs-rest" in record["head_init_probe"]
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert changed == {"classifier.weight", "classifier.bias"}  # the body is untouched

    # The probe computed independently: scikit-learn's balanced logistic regression per label.
    texts = list(splits.train["text"])
    Y = np.asarray(list(splits.train["labels"])).astype(int)
    X, enc = _pooled(model, task.processor, texts, cfg.data.max_length)
    expected = np.stack(
        [
            LogisticRegression(class_weight="balanced", max_iter=1000).fit(X, Y[:, j]).predict_proba(X)[:, 1]
            for j in range(Y.shape[1])
        ],
        1,
    )
    with torch.no_grad():
        got = torch.sigmoid(model(**enc).logits).double().numpy()
    np.testing.assert_allclose(got, expected, atol=2e-3)
    # ... and not the prior biases the head had before
    assert not torch.allclose(before["classifier.bias"], model.classifier.bias)


def test_regression_head_stays_random(tiny_bert_dir, topics, tmp_path):  # noqa: F811
    from hf_transfer.run import RunContext
    from hf_transfer.strategies.base import build_strategy

    cfg = load_config(
        None, _overrides("text_regression", tiny_bert_dir, topics, tmp_path / "run", "strategy.name=full")
    )
    task, splits, model = _built(cfg)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    strategy = build_strategy(cfg.strategy)
    record = strategy.init_head(RunContext(cfg, task, splits, tmp_path), model)
    assert record["head_init"] == "random" and "numeric target" in record["head_init_reason"]
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    assert strategy.refit_head(2, model) is False


def test_random_head_init_keeps_the_prior_biases(tiny_bert_dir, topics, tmp_path):  # noqa: F811
    from hf_transfer.run import RunContext
    from hf_transfer.strategies.base import build_strategy

    cfg = load_config(
        None,
        _overrides(
            "text_multilabel",
            tiny_bert_dir,
            topics,
            tmp_path / "run",
            "strategy.name=full",
            "strategy.head_init=random",
        ),
    )
    task, splits, model = _built(cfg)
    before = model.classifier.bias.detach().clone()
    assert (
        build_strategy(cfg.strategy).init_head(RunContext(cfg, task, splits, tmp_path), model)["head_init"] == "random"
    )
    assert torch.equal(before, model.classifier.bias)


# ----------------------------------------------------------------------------- contrastive pairs

LABEL_SETS = np.array(
    [
        [1, 0, 0],
        [1, 0, 0],
        [1, 1, 0],
        [1, 1, 1],
        [0, 1, 0],
        [0, 0, 1],
        [0, 0, 0],
        [0, 0, 0],
        [0, 1, 1],
        [1, 0, 1],
    ]
)


def _jaccard(a, b):
    union = (a | b).sum()
    return 1.0 if union == 0 else (a & b).sum() / union


@pytest.mark.parametrize("n_pairs", [40, 1001])
def test_label_set_pairs_follow_the_overlap_rule(n_pairs):
    from hf_transfer.strategies.contrastive import sample_label_set_pairs

    Y = LABEL_SETS.astype(bool)
    pairs = sample_label_set_pairs(Y, n_pairs, seed=3)
    assert pairs.shape == (n_pairs, 3) and pairs[:, 2].sum() == n_pairs // 2
    for i, j, t in pairs:
        a, b = Y[int(i)], Y[int(j)]
        assert int(i) != int(j)
        if t == 1.0:
            assert _jaccard(a, b) >= 0.5  # same set (two empty ones included) or enough overlap
        else:
            assert not (a & b).any() and (a | b).any()  # disjoint
    # every qualifying positive pair is used before any repeats
    n = len(Y)
    qualifying = {(i, j) for i in range(n) for j in range(i + 1, n) if _jaccard(Y[i], Y[j]) >= 0.5}
    used = [tuple(sorted((int(i), int(j)))) for i, j, t in pairs if t == 1.0]
    if len(used) <= len(qualifying):
        assert len(set(used)) == len(used)
    else:
        assert set(used) == qualifying
    # a pair of half-overlapping sets ({a,b} / {a,c}: Jaccard 1/3) is neither positive nor negative
    assert (2, 9) not in {tuple(sorted((int(i), int(j)))) for i, j, _ in pairs}


def test_label_set_pairs_stricter_rule_and_sampled_path(monkeypatch):
    from hf_transfer.strategies import contrastive

    Y = LABEL_SETS.astype(bool)
    strict = contrastive.sample_label_set_pairs(Y, 200, seed=0, min_jaccard=1.0)
    for i, j, t in strict:
        if t == 1.0:
            assert (Y[int(i)] == Y[int(j)]).all()
    monkeypatch.setattr(contrastive, "_ENUMERATE_LIMIT", 5)  # more candidates than that: drawn at random
    drawn = contrastive.sample_label_set_pairs(Y, 300, seed=1)
    assert drawn[:, 2].sum() == 150
    for i, j, t in drawn:
        a, b = Y[int(i)], Y[int(j)]
        assert (_jaccard(a, b) >= 0.5) if t == 1.0 else (not (a & b).any() and (a | b).any())


def test_label_sets_without_a_pair_are_clear_errors():
    from hf_transfer.strategies.contrastive import check_label_sets

    with pytest.raises(DataError, match="same label set"):
        check_label_sets(np.array([[1, 0], [1, 0], [1, 0]]))
    with pytest.raises(DataError, match="no negative pair"):
        check_label_sets(np.array([[1, 1], [1, 0], [1, 1]]))
    with pytest.raises(DataError, match="no positive pair"):
        check_label_sets(np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 1]]), 0.6)
    check_label_sets(LABEL_SETS)


def test_contrastive_is_refused_for_numbers_only(tiny_bert_dir, topics, tmp_path):  # noqa: F811
    with pytest.raises(ConfigError, match="contrastive.*numeric targets"):
        load_config(None, _overrides("text_regression", tiny_bert_dir, topics, tmp_path, "strategy.name=contrastive"))
    cfg = load_config(None, _overrides("text_multilabel", tiny_bert_dir, topics, tmp_path, "strategy.name=contrastive"))
    assert cfg.strategy.min_jaccard == 0.5
    with pytest.raises(ConfigError, match="min_jaccard"):
        load_config(
            None,
            _overrides(
                "text_multilabel",
                tiny_bert_dir,
                topics,
                tmp_path,
                "strategy.name=contrastive",
                "strategy.min_jaccard=0",
            ),
        )


def test_contrastive_end_to_end_pass_is_refused_for_label_sets(tiny_bert_dir, topics, tmp_path):  # noqa: F811
    from hf_transfer.run import train

    cfg = load_config(
        None,
        _overrides(
            "text_multilabel",
            tiny_bert_dir,
            topics,
            tmp_path / "con",
            "strategy.name=contrastive",
            "strategy.end_to_end_epochs=2",
        ),
    )
    with pytest.raises(ConfigError, match="end_to_end_epochs.*single-label head"):
        train(cfg)
    assert not (tmp_path / "con" / "model.safetensors").exists()  # refused before training


def test_contrastive_multilabel_run_round_trip(tiny_bert_dir, topics, tmp_path):  # noqa: F811
    from hf_transfer.run import evaluate, predict, train

    out = tmp_path / "con"
    metrics = train(
        load_config(
            None,
            _overrides(
                "text_multilabel",
                tiny_bert_dir,
                topics,
                out,
                "strategy.name=contrastive",
                "strategy.num_pairs=64",
                "training.learning_rate=0.0001",
            ),
        )
    )
    assert metrics["contrastive_pairs"] == 64 and metrics["contrastive_positive_pairs"] == 32
    assert "end_to_end_steps" not in metrics  # label sets: no end-to-end pass
    assert "Jaccard >= 0.5" in metrics["contrastive_pair_rule"]
    assert metrics["classifier"] == "one_vs_rest_logistic_regression"
    assert 0.0 <= metrics["test_f1_macro"] <= 1.0
    info = json.loads((out / "feature_classifier.json").read_text())
    assert info["layout"] == "beside" and not list(out.glob("*.pkl"))
    assert json.loads((out / "classifier.json").read_text())["output"] == "sigmoid"
    assert evaluate(out)["test_f1_macro"] == pytest.approx(metrics["test_f1_macro"], abs=1e-6)
    assert len(predict(out, ["the match", "rain"])) == 2


# ----------------------------------------------------------------------------- feature runs


def test_feature_run_of_label_sets_goes_through_feature_run(tiny_bert_dir, topics, tmp_path, monkeypatch):  # noqa: F811
    from hf_transfer.models import feature_run
    from hf_transfer.run import evaluate, train

    calls = []
    real = feature_run.save_feature_run

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(feature_run, "save_feature_run", spy)
    import hf_transfer.strategies.feature_targets as ft

    monkeypatch.setattr(ft, "save_feature_run", spy)
    out = tmp_path / "fe"
    # normalised features are not the head's input: the classifier stays beside the model
    metrics = train(
        load_config(
            None,
            _overrides(
                "text_multilabel",
                tiny_bert_dir,
                topics,
                out,
                "strategy.name=feature_extraction",
                "strategy.normalize=true",
                f"strategy.cache_dir={tmp_path / 'cache'}",
            ),
        )
    )
    assert len(calls) == 1 and calls[0]["head_written"] is False
    info = json.loads((out / "feature_classifier.json").read_text())
    assert info["layout"] == "beside" and info["classifier"] == "one_vs_rest_logistic_regression"
    assert not list(out.glob("*.pkl")) and not (out / "modules.json").exists()
    settings = json.loads((out / "classifier.json").read_text())
    assert settings["output"] == "sigmoid" and settings["labels"] == ["politics", "sports", "weather"]
    stored = feature_run.load_classifier(out)
    assert stored.log_proba(np.zeros((1, stored.t["weight"].shape[1]))) is None  # no softmax over labels
    assert evaluate(out)["test_f1_macro"] == pytest.approx(metrics["test_f1_macro"], abs=1e-6)


def test_target_probe_is_a_linear_probe_without_softmax():
    from hf_transfer.errors import ModelError
    from hf_transfer.models.probe import LinearProbe, classifier_state
    from hf_transfer.models.target_probe import fit_multilabel, fit_ridge

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    Y = np.stack([X[:, 0] > 0, X[:, 1] > 0.5], 1).astype(int)
    probe, _, _ = fit_multilabel(X, Y, tune=False)
    assert isinstance(probe, LinearProbe) and probe.output == "sigmoid"
    assert probe.log_proba(X) is None
    assert (probe.predict(X) == (probe.logits(X) >= 0)).all()
    with pytest.raises(ModelError, match="no scikit-learn single-label form"):
        probe.to_sklearn()
    ridge = fit_ridge(X, X[:, 0] * 2 + 1)
    assert ridge.output == "identity" and ridge.predict(X).shape == (60,)
    assert classifier_state(ridge)[1]["output"] == "identity"


def test_feature_extraction_refits_on_the_carved_eval_rows(tiny_bert_dir, tmp_path):
    from hf_transfer.run import train

    train_csv = write_csv(tmp_path / "train.csv", topic_rows(100, 5))
    base = [
        "recipe=text_multilabel",
        f"model.name_or_path={tiny_bert_dir}",
        f"data.train={train_csv}",
        "data.label_column=label",
        "strategy.name=feature_extraction",
        "training.report_to=[]",
        f"strategy.cache_dir={tmp_path / 'cache'}",
    ]
    carved = train(load_config(None, base + [f"output_dir={tmp_path / 'a'}"]))
    assert carved["refit_rows"] == 100  # 90 training + the 10 carved eval rows
    assert "refit" in json.loads((tmp_path / "a" / "feature_classifier.json").read_text())
    given = train(load_config(None, base + [f"output_dir={tmp_path / 'b'}", f"data.eval={train_csv}"]))
    assert "refit_rows" not in given


def test_thresholds_are_tuned_from_enough_rows_only():
    from hf_transfer.models.target_probe import MIN_TUNING_ROWS, fit_multilabel

    rng = np.random.default_rng(1)
    X = rng.normal(size=(MIN_TUNING_ROWS, 3))
    Y = np.stack([X[:, 0] + 0.8 * rng.normal(size=len(X)) > -0.5, X[:, 1] > 0], 1).astype(int)
    _, t_small, rec_small = fit_multilabel(X[: MIN_TUNING_ROWS - 1], Y[: MIN_TUNING_ROWS - 1])
    assert (t_small == 0.5).all() and f"from {MIN_TUNING_ROWS} rows on" in rec_small["threshold_selection"]
    _, t_big, rec_big = fit_multilabel(X, Y)
    assert "cross-validation" in rec_big["threshold_selection"] and (t_big != 0.5).any()


# ----------------------------------------------------------------------------- refit at the last epoch


def test_probe_fits_the_raw_head_input_of_a_sentence_transformers_checkpoint(tiny_bert_dir, topics, tmp_path):  # noqa: F811
    from hf_transfer.models.target_probe import fit_multilabel
    from hf_transfer.run import RunContext
    from hf_transfer.strategies.base import build_strategy

    st = sentence_transformers_copy(tiny_bert_dir, tmp_path)
    cfg = load_config(None, _overrides("text_multilabel", st, topics, tmp_path / "run", "strategy.name=full"))
    task, splits, model = _built(cfg)
    assert (
        build_strategy(cfg.strategy).init_head(RunContext(cfg, task, splits, tmp_path), model)["head_init"] == "probe"
    )
    X, enc = _pooled(model, task.processor, list(splits.train["text"]), cfg.data.max_length)
    probe, _, _ = fit_multilabel(X, np.asarray(list(splits.train["labels"])), tune=False)
    with torch.no_grad():
        got = model(**enc).logits.double().numpy()
    np.testing.assert_allclose(got, probe.logits(X), atol=2e-3)
    # the weights themselves, not only the logits (on these near-constant features the biases dominate)
    np.testing.assert_allclose(model.classifier.weight.detach().double().numpy(), probe.weight, rtol=0.02, atol=1e-4)


def test_head_is_fitted_again_on_the_trained_body_at_the_last_epoch(tiny_bert_dir, topics, tmp_path):  # noqa: F811
    from hf_transfer.models.target_probe import fit_multilabel
    from hf_transfer.run import train

    out = tmp_path / "run"
    cfg = load_config(
        None,
        _overrides(
            "text_multilabel",
            tiny_bert_dir,
            topics,
            out,
            "strategy.name=full",
            "training.epochs=3",
            "training.save_strategy=no",
        ),
    )
    metrics = train(cfg)
    assert metrics["head_refits"] == 1 and metrics["head_refit_epoch"] == 2
    assert metrics["budget"]["epochs_per_eval"] == 3  # evaluated after the refit only
    assert [r["step"] for r in json.loads((out / "history.json").read_text()) if "eval_loss" in r] == [
        metrics["train_steps"]
    ]
    assert "0.5" in metrics["threshold_selection"] and set(metrics["thresholds"].values()) == {0.5}
    # the saved head is the balanced probe of the saved body: the body did not move after the refit
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hf_transfer.tasks import get_task

    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    task = get_task(cfg)
    task.load_processor()
    splits = task.load_splits()
    X, enc = _pooled(model, AutoTokenizer.from_pretrained(out), list(splits.train["text"]), cfg.data.max_length)
    probe, _, _ = fit_multilabel(X, np.asarray(list(splits.train["labels"])), tune=False)
    with torch.no_grad():
        got = model(**enc).logits.double().numpy()
    np.testing.assert_allclose(got, probe.logits(X), atol=0.05)  # 1/3 of an epoch of head steps at a tiny rate


def test_a_one_epoch_run_and_a_random_head_are_not_refitted(tiny_bert_dir, topics, tmp_path):  # noqa: F811
    from hf_transfer.run import train

    one = train(
        load_config(
            None,
            _overrides(
                "text_multilabel",
                tiny_bert_dir,
                topics,
                tmp_path / "a",
                "strategy.name=full",
                "training.epochs=1",
                "training.save_strategy=no",
            ),
        )
    )
    assert "head_refits" not in one and one["head_init"] == "probe"
    rnd = train(
        load_config(
            None,
            _overrides(
                "text_multilabel",
                tiny_bert_dir,
                topics,
                tmp_path / "b",
                "strategy.name=full",
                "strategy.head_init=random",
                "training.save_strategy=no",
            ),
        )
    )
    assert "head_refits" not in rnd and rnd["budget"]["epochs_per_eval"] == 1
    assert "per-label F1 on the eval split" in rnd["threshold_selection"]  # a calibrated head: tuned on eval


def test_lora_head_copy_is_fitted_again(tiny_bert_dir, topics, tmp_path):  # noqa: F811
    from hf_transfer.run import train

    metrics = train(
        load_config(
            None,
            _overrides(
                "text_multilabel",
                tiny_bert_dir,
                topics,
                tmp_path / "run",
                "strategy.name=lora",
                "training.epochs=2",
                "training.save_strategy=no",
            ),
        )
    )
    assert metrics["head_init"] == "probe"
    assert metrics["head_refits"] == 1 and metrics["head_refit_epoch"] == 1  # the trained copy under PEFT
