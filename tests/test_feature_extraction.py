"""`feature_extraction`: head-input features, the on-disk cache, classic classifiers, and a run
folder that predicts exactly like the fitted classifier."""

import json

import numpy as np
import pytest
import torch
import transformers as T
from transformers import AutoModelForSequenceClassification

from hf_transfer.config import load_config
from hf_transfer.models import features as features_mod
from hf_transfer.models.features import HeadInputCapture, locate_head_input
from hf_transfer.run import evaluate, train
from hf_transfer.strategies import feature_extraction as fe
from hf_transfer.strategies.feature_extraction import (
    EstimatorClassifier,
    FeatureExtractionConfig,
    LinearProbe,
    attach_feature_classifier,
    fit_classifier,
    write_into_head,
)


def _overrides(tiny_bert_dir, toy_text_data, tmp_path, cache, *extra):
    return [
        f"model.name_or_path={tiny_bert_dir}",
        f"data.train={toy_text_data['train']}",
        f"data.eval={toy_text_data['validation']}",
        f"output_dir={tmp_path / 'run'}",
        "training.report_to=[]",
        "strategy.name=feature_extraction",
        f"strategy.cache_dir={cache}",
        *extra,
    ]


def _eval_batches(run_dir, toy_text_data):
    """Tokenised eval split, in order, with labels: what `hf-transfer evaluate` feeds the model."""
    cfg = load_config(run_dir / "config.yaml")
    from hf_transfer.tasks import get_task

    task = get_task(cfg)
    task.load_processor()
    splits = task.load_splits()
    data = task.preprocess(splits.eval, train=False)
    return [task.collate([data[i] for i in range(s, min(s + 16, len(data)))]) for s in range(0, len(data), 16)]


# --------------------------------------------------------------------------- classifiers


@pytest.mark.parametrize("num_labels", [2, 3])
def test_logistic_regression_probe_equals_sklearn_predict_proba(num_labels):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    y = np.arange(120) % num_labels
    X = rng.normal(size=(120, 8)) * 5 + 3 + y[:, None] * rng.normal(size=8)
    probe = fit_classifier(FeatureExtractionConfig(C=0.5, standardize=True), X, y, num_labels)
    assert isinstance(probe, LinearProbe) and probe.weight.shape == (num_labels, 8)
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=1000, random_state=0)).fit(X, y)
    Xt = rng.normal(size=(40, 8)) * 5 + 3
    np.testing.assert_allclose(np.exp(probe.log_proba(Xt)), reference.predict_proba(Xt), atol=1e-6)
    np.testing.assert_array_equal(probe.predict(Xt), reference.predict(Xt))
    # The same numbers from a torch linear layer holding the probe (the model's head).
    head = torch.nn.Linear(8, num_labels)
    assert write_into_head(head, probe)
    probs = head(torch.as_tensor(Xt, dtype=torch.float32)).softmax(-1).detach().numpy()
    np.testing.assert_allclose(probs, reference.predict_proba(Xt), atol=1e-5)


def test_svm_and_knn_cover_every_label_and_knn_loss_is_finite():
    rng = np.random.default_rng(1)
    y = np.array([0, 2] * 20)  # label 1 never seen in training
    X = rng.normal(size=(40, 4)) + y[:, None]
    for kind in ("svm", "knn"):
        clf = fit_classifier(FeatureExtractionConfig(classifier=kind, k=3), X, y, 3)
        assert isinstance(clf, EstimatorClassifier)
        assert clf.logits(X).shape == (40, 3)
        assert set(clf.predict(X)) <= {0, 2}
    knn = fit_classifier(FeatureExtractionConfig(classifier="knn", k=3), X, y, 3)
    assert np.isfinite(knn.log_proba(X)).all()
    assert fit_classifier(FeatureExtractionConfig(classifier="svm"), X, y, 3).log_proba(X) is None


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TRANSFER_CACHE", raising=False)
    assert fe.cache_root(None).parts[-3:] == (".cache", "hf_transfer", "features")
    monkeypatch.setenv("HF_TRANSFER_CACHE", str(tmp_path / "env"))
    assert fe.cache_root(None) == tmp_path / "env" / "features"
    assert fe.cache_root(str(tmp_path / "mine")) == tmp_path / "mine"


# --------------------------------------------------------------------------- head input


def _tiny(cls, config_cls, **kw):
    torch.manual_seed(0)
    base = dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, vocab_size=100, num_labels=3
    )
    base.update(kw)
    return cls(config_cls(**base)).eval()


def test_features_are_what_the_head_sees():
    ids = torch.randint(5, 100, (4, 9))
    # BERT: one linear head; its input is the pooler output.
    bert = _tiny(T.BertForSequenceClassification, T.BertConfig)
    spec = locate_head_input(bert)
    assert spec.linear == "classifier"
    with HeadInputCapture(bert, spec) as cap, torch.no_grad():
        bert(input_ids=ids)
        x, mode = cap.features()
        assert mode == "none"
        torch.testing.assert_close(x, bert.bert(input_ids=ids).pooler_output)
    # RoBERTa: classifier.dense + out_proj take the whole sequence; text pooling = first token.
    roberta = _tiny(T.RobertaForSequenceClassification, T.RobertaConfig, max_position_embeddings=40)
    spec = locate_head_input(roberta)
    assert spec.linear is None and spec.candidates == ["classifier"]
    with HeadInputCapture(roberta, spec) as cap, torch.no_grad():
        roberta(input_ids=ids)
        x, mode = cap.features()
        assert mode == "first_token"
        torch.testing.assert_close(x, roberta.roberta(input_ids=ids).last_hidden_state[:, 0])
    # DistilBERT: pre_classifier is the head's entry; its input is the [CLS] hidden state.
    distil = T.DistilBertForSequenceClassification(
        T.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=37, vocab_size=100, num_labels=3)
    ).eval()
    spec = locate_head_input(distil)
    assert spec.linear is None and set(spec.candidates) == {"pre_classifier", "classifier"}
    with HeadInputCapture(distil, spec) as cap, torch.no_grad():
        distil(input_ids=ids)
        x, _ = cap.features()
        assert cap.module_name == "pre_classifier"
        torch.testing.assert_close(x, distil.distilbert(input_ids=ids).last_hidden_state[:, 0])


# --------------------------------------------------------------------------- whole runs


@pytest.mark.parametrize("classifier", ["logistic_regression", "linear"])
def test_run_folder_predicts_exactly_like_the_fitted_classifier(classifier, tiny_bert_dir, toy_text_data, tmp_path):
    # pooling=pooler: BERT's head reads the pooler output, so the fit can live in the head itself.
    metrics = train(
        load_config(
            None,
            _overrides(
                tiny_bert_dir,
                toy_text_data,
                tmp_path,
                tmp_path / "cache",
                f"strategy.classifier={classifier}",
                "strategy.epochs=30",
                "strategy.pooling=pooler",
                "strategy.C=1.0",
                "strategy.standardize=true",
            ),
        )
    )
    out = tmp_path / "run"
    info = json.loads((out / fe.SPEC_FILE).read_text())
    assert info["head_written"] and info["layout"] == "head" and info["features"]["pooling"] == "pooler"
    assert not (out / fe.CLASSIFIER_FILE).exists()
    assert metrics["head_written"] and metrics["feature_cache_hit"] is False
    for key in ("eval_accuracy", "eval_f1", "eval_loss", "train_runtime", "train_samples_per_second"):
        assert key in metrics, key
    assert metrics["eval_accuracy"] >= 0.6
    assert evaluate(out, split="eval")["eval_loss"] == pytest.approx(metrics["eval_loss"], abs=1e-4)

    # Plain transformers, nothing from hf_transfer: same predictions and log loss as the fit.
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    logits, labels = [], []
    with torch.no_grad():
        for batch in _eval_batches(out, toy_text_data):
            labels.append(batch.pop("labels"))
            logits.append(model(**batch).logits)
    logits, labels = torch.cat(logits), torch.cat(labels)
    accuracy = (logits.argmax(-1) == labels).float().mean().item()
    loss = torch.nn.functional.cross_entropy(logits, labels).item()
    assert accuracy == pytest.approx(metrics["eval_accuracy"])
    # The float32 head against the float64 fit. The tiny random model's pooler outputs vary by
    # ~3e-4 around means of ~0.1, so the folded scaler makes float32 cancel ~300x: 1e-4, not 1e-7.
    assert loss == pytest.approx(metrics["eval_loss"], abs=1e-4)

    if classifier == "logistic_regression":
        # And the probabilities are scikit-learn's predict_proba on the cached features.
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        cached = sorted((tmp_path / "cache").glob("*.safetensors"), key=lambda p: p.stat().st_mtime)
        train_x, train_y, meta = fe.load_cached(cached[0])
        eval_x, eval_y, _ = fe.load_cached(cached[1])
        assert torch.equal(eval_y, labels)
        reference = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=42))
        reference.fit(train_x.double().numpy(), train_y.numpy())
        expected = reference.predict_proba(eval_x.double().numpy())
        np.testing.assert_allclose(logits.softmax(-1).numpy(), expected, atol=1e-4)
        np.testing.assert_array_equal(logits.argmax(-1).numpy(), expected.argmax(1))


def test_second_identical_run_reads_the_cache_and_never_runs_the_backbone(
    tiny_bert_dir, toy_text_data, tmp_path, monkeypatch
):
    cache = tmp_path / "cache"
    first = train(load_config(None, _overrides(tiny_bert_dir, toy_text_data, tmp_path, cache)))
    assert first["feature_cache_hit"] is False
    assert len(list(cache.glob("*.safetensors"))) == 2  # train and eval
    stamps = {p: p.stat().st_mtime_ns for p in cache.glob("*.safetensors")}

    def no_backbone(*args, **kwargs):
        raise AssertionError("the backbone ran although the features were cached")

    monkeypatch.setattr(features_mod.FeatureExtractor, "__call__", no_backbone)
    second = train(
        load_config(None, _overrides(tiny_bert_dir, toy_text_data, tmp_path, cache, f"output_dir={tmp_path / 'run2'}"))
    )
    assert second["feature_cache_hit"] is True
    assert {p: p.stat().st_mtime_ns for p in cache.glob("*.safetensors")} == stamps
    same = [k for k in first if k.startswith("eval_")]
    assert {k: first[k] for k in same} == {k: second[k] for k in same}

    # Anything the features depend on changes the key: here the tokenisation length.
    monkeypatch.undo()
    third = train(
        load_config(
            None,
            _overrides(
                tiny_bert_dir, toy_text_data, tmp_path, cache, "data.max_length=8", f"output_dir={tmp_path / 'run3'}"
            ),
        )
    )
    assert third["feature_cache_hit"] is False
    assert len(list(cache.glob("*.safetensors"))) == 4


def test_svm_is_saved_beside_the_model_and_used_when_the_run_is_loaded(tiny_bert_dir, toy_text_data, tmp_path):
    metrics = train(
        load_config(
            None, _overrides(tiny_bert_dir, toy_text_data, tmp_path, tmp_path / "cache", "strategy.classifier=svm")
        )
    )
    out = tmp_path / "run"
    info = json.loads((out / fe.SPEC_FILE).read_text())
    # Masked-mean features (the tiny BERT has no trained pooler) are not the head's input.
    assert info["head_written"] is False and info["layout"] == "setfit" and (out / fe.SETFIT_HEAD_FILE).is_file()
    assert metrics["eval_loss"] == 0.0  # no probabilities: documented
    model = attach_feature_classifier(out, AutoModelForSequenceClassification.from_pretrained(out).eval())
    assert isinstance(model, fe.FeatureClassifierModel) and model.config.num_labels == 2
    correct = total = 0
    with torch.no_grad():
        for batch in _eval_batches(out, toy_text_data):
            labels = batch.pop("labels")
            correct += (model(**batch).logits.argmax(-1) == labels).sum().item()
            total += len(labels)
    assert correct / total == pytest.approx(metrics["eval_accuracy"])


# --------------------------------------------------------------------------- layouts, C selection


def test_setfit_layout_loads_in_setfit_and_in_hf_transfer_alike(tiny_bert_dir, toy_text_data, tmp_path):
    """Mean-pooled text features are not BERT's head input: the run is a SetFit folder."""
    from setfit import SetFitModel

    from hf_transfer.run import predict

    metrics = train(load_config(None, _overrides(tiny_bert_dir, toy_text_data, tmp_path, tmp_path / "cache")))
    out = tmp_path / "run"
    written = json.loads((out / "metrics.json").read_text())
    assert written["run_layout"] == "setfit" and written["feature_pooling"] == "mean"
    assert written["C"] > 0
    assert "cross-validation" in written["C_selection"] and written["cv_folds"] == 5
    for f in ("modules.json", "1_Pooling/config.json", "model_head.pkl", "config_setfit.json"):
        assert (out / f).is_file(), f
    assert evaluate(out, split="eval")["eval_accuracy"] == pytest.approx(metrics["eval_accuracy"])

    texts = ["a great and wonderful film", "the worst and most boring plot"]
    ours = predict(out, texts, top_k=2)
    setfit = SetFitModel.from_pretrained(str(out), device="cpu")
    assert setfit.labels == ["negative", "positive"]
    assert list(setfit.predict(texts)) == [r["label"] for r in ours]
    probs = setfit.predict_proba(texts)
    probs = probs.numpy() if hasattr(probs, "numpy") else np.asarray(probs)
    for row, p in zip(ours, probs):
        by_label = {t["label"]: t["score"] for t in row["top"]}
        assert by_label["positive"] == pytest.approx(float(p[1]), abs=1e-3)

    # The export ships the classifier beside the model (safetensors + JSON) and SetFit's files.
    from hf_transfer.export.export import export_run

    export_run(out, tmp_path / "export", license="mit")
    assert SetFitModel.from_pretrained(str(tmp_path / "export"), device="cpu").labels == ["negative", "positive"]


def test_several_layers_are_saved_beside_the_model_and_reloaded(tiny_bert_dir, toy_text_data, tmp_path):
    metrics = train(
        load_config(
            None,
            _overrides(
                tiny_bert_dir,
                toy_text_data,
                tmp_path,
                tmp_path / "cache",
                "strategy.layers=mean",
                "strategy.combine=concat",
            ),
        )
    )
    out = tmp_path / "run"
    info = json.loads((out / fe.SPEC_FILE).read_text())
    assert info["layout"] == "beside" and info["feature_dim"] == 64 and (out / fe.CLASSIFIER_TENSORS_FILE).is_file()
    assert not (out / fe.CLASSIFIER_FILE).exists()  # no pickle
    assert not (out / "modules.json").exists()
    assert evaluate(out, split="eval")["eval_loss"] == pytest.approx(metrics["eval_loss"], abs=1e-4)


def test_a_layer_the_model_lacks_fails_before_any_feature_is_computed(
    tiny_bert_dir, toy_text_data, tmp_path, monkeypatch
):
    from hf_transfer.errors import ConfigError

    def no_extract(*a, **k):
        raise AssertionError("features were computed")

    monkeypatch.setattr(fe, "extract", no_extract)
    with pytest.raises(ConfigError, match="this model has 2 layers"):
        train(
            load_config(
                None, _overrides(tiny_bert_dir, toy_text_data, tmp_path, tmp_path / "cache", "strategy.layers=[5]")
            )
        )


def test_C_is_cross_validated_and_falls_back_with_a_single_example_class():
    from hf_transfer.models.probe import C_GRID, FALLBACK_C, choose_C

    rng = np.random.default_rng(0)
    y = np.arange(40) % 2
    X = rng.normal(size=(40, 20)) + y[:, None] * 0.8
    probe = fit_classifier(FeatureExtractionConfig(), X, y, 2)
    assert probe.selection["C"] in C_GRID and probe.selection["cv_folds"] == 5
    C, record = choose_C(X, y)
    assert C == probe.selection["C"]
    assert set(record) >= {"cv_best_C", "cv_log_loss", "cv_accuracy", "cv_log_loss_default", "cv_accuracy_default"}
    one = np.array([0, 0, 0, 1])
    probe = fit_classifier(FeatureExtractionConfig(), rng.normal(size=(4, 3)), one, 2)
    assert probe.selection["C"] == FALLBACK_C and "single" in probe.selection["C_selection"]


def test_C_moves_off_the_default_only_when_cross_validation_shows_it_clearly():
    from sklearn.linear_model import LogisticRegression

    from hf_transfer.models.probe import DEFAULT_C, choose_C

    rng = np.random.default_rng(0)
    # 400 noise dimensions, the signal in 3: the default C fits the noise; a strong regularisation wins.
    y = np.arange(300) % 3
    X = rng.normal(size=(300, 400))
    X[:, :3] += np.eye(3)[y] * 1.5
    C, record = choose_C(X, y)
    assert C < 0.1 and "better than the default" in record["C_selection"]
    assert (
        record["cv_accuracy"] > record["cv_accuracy_default"] and record["cv_log_loss"] < record["cv_log_loss_default"]
    )

    # Features on a tiny scale: the default over-regularises; a weak regularisation wins.
    Z = rng.normal(size=(900, 10))
    yz = (Z[:, 0] + 0.3 * Z[:, 1] > 0).astype(int)
    C, record = choose_C(Z[:300] * 1e-3, yz[:300])
    assert C > 10 * DEFAULT_C
    acc = {
        c: (
            LogisticRegression(C=c, max_iter=1000).fit(Z[:300] * 1e-3, yz[:300]).predict(Z[300:] * 1e-3) == yz[300:]
        ).mean()
        for c in (C, DEFAULT_C)
    }
    assert acc[C] > acc[DEFAULT_C] + 0.1  # the choice is right on fresh data, too

    # Eight examples a class: too few to cross-validate, the default stays (even with a signal a
    # weak regularisation would fit).
    y8 = np.arange(40) % 5
    E = rng.normal(size=(40, 64)) + 0.6 * np.eye(5)[y8] @ rng.normal(size=(5, 64))
    E /= np.linalg.norm(E, axis=1, keepdims=True)  # sentence-embedding-like: unit length
    C, record = choose_C(E, y8)
    assert C == DEFAULT_C and record["cv_folds"] == 0 and "fewer than 16" in record["C_selection"]
    # Sixteen a class: cross-validated; on unit-length embeddings with this little signal the
    # lowest log loss asks for a weaker regularisation, the evidence stays within two standard
    # errors, the default is kept.
    y16 = np.arange(80) % 5
    E = rng.normal(size=(80, 64)) + 0.6 * np.eye(5)[y16] @ rng.normal(size=(5, 64))
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    C, record = choose_C(E, y16)
    assert C == DEFAULT_C and record["cv_folds"] == 5 and "kept" in record["C_selection"]


def test_linear_probe_as_sklearn_predicts_the_same_probabilities():
    rng = np.random.default_rng(2)
    for k in (2, 3):
        y = np.arange(60) % k
        X = rng.normal(size=(60, 5)) + y[:, None]
        probe = fit_classifier(FeatureExtractionConfig(C=1.0), X, y, k)
        np.testing.assert_allclose(probe.to_sklearn().predict_proba(X), np.exp(probe.log_proba(X)), atol=1e-8)
