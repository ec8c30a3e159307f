"""Feature classifiers are stored as safetensors + JSON and read back without unpickling anything:
every classifier kind the probe fits gives the same logits after the round trip, a run folder is
evaluated with pickle loading switched off, and an older folder that has only a pickle is refused
unless the user says they trust it."""

import json
import pickle

import numpy as np
import pytest

from hf_transfer.config import load_config
from hf_transfer.errors import ModelError
from hf_transfer.models import feature_run
from hf_transfer.models.probe import StoredClassifier, classifier_state, fit_classifier
from hf_transfer.run import evaluate, predict, train
from hf_transfer.strategies.feature_extraction import FeatureExtractionConfig


def _data(num_labels: int, absent: bool):
    rng = np.random.default_rng(num_labels)
    labels = [c for c in range(num_labels) if not (absent and c == 1)]
    y = np.array(labels * 30)
    X = rng.normal(size=(len(y), 6)) * 3 + 1 + y[:, None] * rng.normal(size=6)
    return X, y, rng.normal(size=(50, 6)) * 3 + 1


CASES = [
    dict(classifier="logistic_regression", C=0.5),
    dict(classifier="logistic_regression", C=0.5, standardize=True),
    dict(classifier="linear", epochs=5, standardize=True),
    dict(classifier="svm", svm_kernel="linear"),
    dict(classifier="svm", svm_kernel="rbf", standardize=True),
    dict(classifier="svm", svm_kernel="rbf"),
    dict(classifier="knn", k=5),
    dict(classifier="knn", k=3, standardize=True),
]


@pytest.mark.parametrize("num_labels,absent", [(2, False), (3, False), (4, True)])
@pytest.mark.parametrize("settings", CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_every_classifier_kind_round_trips_through_safetensors_and_json(settings, num_labels, absent, tmp_path):
    from safetensors.numpy import load_file, save_file

    X, y, Xt = _data(num_labels, absent)
    clf = fit_classifier(FeatureExtractionConfig(**settings), X, y, num_labels)
    tensors, meta = classifier_state(clf)
    save_file(tensors, str(tmp_path / "c.safetensors"))
    (tmp_path / "c.json").write_text(json.dumps(meta))
    stored = StoredClassifier(load_file(str(tmp_path / "c.safetensors")), json.loads((tmp_path / "c.json").read_text()))
    np.testing.assert_allclose(stored.logits(Xt), clf.logits(Xt), rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(stored.logits(Xt).argmax(1), clf.logits(Xt).argmax(1))
    expected = clf.log_proba(Xt)
    if expected is None:
        assert stored.log_proba(Xt) is None
    else:
        np.testing.assert_allclose(stored.log_proba(Xt), expected, rtol=1e-9, atol=1e-9)
    assert stored.kind == settings["classifier"]
    if settings["classifier"] != "knn" and settings.get("svm_kernel") != "rbf":  # linear: weights counted
        assert stored.num_parameters() == clf.num_parameters() > 0


def test_a_classifier_it_cannot_store_is_refused_by_name():
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler
    from sklearn.svm import SVC

    from hf_transfer.models.probe import EstimatorClassifier

    X, y, _ = _data(2, False)
    for est in (make_pipeline(MinMaxScaler(), SVC()).fit(X, y), SVC(kernel="poly").fit(X, y)):
        with pytest.raises(ModelError, match="cannot be stored without pickle"):
            classifier_state(EstimatorClassifier(est, 2, kind="svm"))


# ------------------------------------------------------------------------------------ whole runs


def _overrides(tiny_bert_dir, toy_text_data, tmp_path, *extra):
    return [
        f"model.name_or_path={tiny_bert_dir}",
        f"data.train={toy_text_data['train']}",
        f"data.eval={toy_text_data['validation']}",
        f"output_dir={tmp_path / 'run'}",
        "training.report_to=[]",
        "strategy.name=feature_extraction",
        f"strategy.cache_dir={tmp_path / 'cache'}",
        *extra,
    ]


def _refuse_unpickling(monkeypatch) -> None:
    """From here on, any unpickling fails the test."""
    import joblib

    def refuse(*a, **k):
        raise AssertionError("a pickle was loaded")

    monkeypatch.setattr(joblib, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)


@pytest.mark.parametrize(
    "extra,layout",
    [
        (["strategy.classifier=svm"], "setfit"),
        (["strategy.classifier=svm", "strategy.svm_kernel=rbf"], "setfit"),
        (["strategy.classifier=knn", "strategy.k=3"], "setfit"),
        (["strategy.layers=mean", "strategy.combine=concat"], "beside"),
    ],
)
def test_a_run_folder_is_evaluated_without_unpickling_anything(
    tiny_bert_dir, toy_text_data, tmp_path, extra, layout, monkeypatch
):
    metrics = train(load_config(None, _overrides(tiny_bert_dir, toy_text_data, tmp_path, *extra)))
    out = tmp_path / "run"
    assert json.loads((out / feature_run.SPEC_FILE).read_text())["layout"] == layout
    assert (out / "classifier.safetensors").is_file() and (out / "classifier.json").is_file()
    assert not (out / "classifier.joblib").exists()
    settings = json.loads((out / "classifier.json").read_text())
    assert settings["labels"] == ["negative", "positive"] and settings["kind"] == metrics["classifier"]
    # SetFit's own head is still written for SetFit users; hf_transfer never reads it.
    assert (out / "model_head.pkl").is_file() == (layout == "setfit")

    _refuse_unpickling(monkeypatch)
    again = evaluate(out, split="eval")
    assert again["eval_accuracy"] == pytest.approx(metrics["eval_accuracy"])
    if metrics["eval_loss"]:
        assert again["eval_loss"] == pytest.approx(metrics["eval_loss"], abs=1e-4)
    assert predict(out, ["a great and wonderful film"])[0]["label"] in ("negative", "positive")


class _Planted:
    """A pickle that runs code when loaded: it writes a file."""

    marker = None

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_an_older_run_folder_with_only_a_pickle_is_refused_unless_trusted(
    tiny_bert_dir, toy_text_data, tmp_path, capsys
):
    from hf_transfer.cli import main

    train(load_config(None, _overrides(tiny_bert_dir, toy_text_data, tmp_path, "strategy.classifier=svm")))
    out = tmp_path / "run"
    (out / "classifier.safetensors").unlink()
    (out / "classifier.json").unlink()  # as an older hf-transfer left it: model_head.pkl only
    assert main(["evaluate", str(out), "--split", "eval"]) == 2
    err = capsys.readouterr().err
    assert "keeps its classifier only as a pickle (model_head.pkl" in err and "--trust-pickle" in err, err
    assert main(["evaluate", str(out), "--split", "eval", "--trust-pickle"]) == 0
    assert json.loads(capsys.readouterr().out)["eval_accuracy"] >= 0.0

    # A planted pickle never runs without the flag.
    marker = tmp_path / "code-ran"
    _Planted.marker = marker
    (out / "model_head.pkl").write_bytes(pickle.dumps(_Planted()))
    assert main(["predict", str(out), "a fine film"]) == 2
    assert not marker.exists()


def test_export_of_a_feature_classifier_run_ships_safetensors_and_says_so_on_the_card(
    tiny_bert_dir, toy_text_data, tmp_path, monkeypatch
):
    from transformers import AutoModelForSequenceClassification

    from hf_transfer.errors import ExportError
    from hf_transfer.export.export import export_run
    from hf_transfer.models.feature_run import attach_feature_classifier

    train(load_config(None, _overrides(tiny_bert_dir, toy_text_data, tmp_path, "strategy.classifier=svm")))
    run, out = tmp_path / "run", tmp_path / "export"
    _refuse_unpickling(monkeypatch)
    export_run(run, out, license="mit")  # the reload check runs without unpickling anything
    for name in (
        "classifier.safetensors",
        "classifier.json",
        "feature_classifier.json",
        "model.safetensors",
        "modules.json",
        "1_Pooling/config.json",
        "config_setfit.json",
        "model_head.pkl",
        "README.md",
    ):
        assert (out / name).is_file(), name
    card = (out / "README.md").read_text()
    assert "classifier.safetensors" in card and "attach_feature_classifier" in card
    assert "model_head.pkl" in card and "pickle" in card and "--trust-pickle" in card
    assert "SetFitModel.from_pretrained" in card and "only from a repository you trust" in card

    # The export predicts like the run, loaded the pickle-free way.
    import torch
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    inputs = dict(tok(["a great film", "a dull plot"], return_tensors="pt", padding=True))
    with torch.no_grad():
        got = attach_feature_classifier(out, AutoModelForSequenceClassification.from_pretrained(out))(**inputs).logits
        ref = attach_feature_classifier(run, AutoModelForSequenceClassification.from_pretrained(run))(**inputs).logits
    assert torch.allclose(got, ref)

    # An older run folder whose classifier is only a pickle is not exported (and not unpickled).
    (run / "classifier.safetensors").unlink()
    with pytest.raises(ExportError, match="only as a pickle"):
        export_run(run, tmp_path / "export2")
