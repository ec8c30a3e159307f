"""Multi-label (`text_multilabel`, `image_multilabel`) and regression (`text_regression`,
`image_regression`) recipes: metrics on known data, thresholds, label formats, bad input, and
train / evaluate / predict / export round trips on tiny random models."""

import csv
import json
import random

import numpy as np
import pytest
import torch

from conftest import write_csv
from hf_transfer import load_config
from hf_transfer.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CUES = {
    "sports": "match goal team".split(),
    "politics": "vote election minister".split(),
    "weather": "rain sunny storm".split(),
}
FILL = "the a it was very really quite this".split()


def topic_rows(n, seed):
    """Sentences with 0-3 topic cue words; `label` the topics (`;`-separated), `score` a number
    that grows with the topics (learnable from the cue words)."""
    r = random.Random(seed)
    rows = []
    for _ in range(n):
        labels = [name for name in CUES if r.random() < 0.4]
        words = [r.choice(FILL) for _ in range(r.randint(2, 6))]
        for name in labels:
            words.insert(r.randint(0, len(words)), r.choice(CUES[name]))
        score = 2.0 * ("sports" in labels) + 1.0 * ("weather" in labels) + 0.1 * r.random()
        rows.append({"text": " ".join(words), "label": ";".join(labels), "score": round(score, 4)})
    return rows


@pytest.fixture(scope="module")
def topics(tmp_path_factory):
    d = tmp_path_factory.mktemp("topics")
    return {
        "train": write_csv(d / "train.csv", topic_rows(120, 1)),
        "eval": write_csv(d / "val.csv", topic_rows(40, 2)),
        "test": write_csv(d / "test.csv", topic_rows(40, 3)),
        "dir": d,
    }


def _overrides(recipe, model_dir, data, out, *extra):
    return [
        f"recipe={recipe}",
        f"model.name_or_path={model_dir}",
        f"data.train={data['train']}",
        f"data.eval={data['eval']}",
        f"data.test={data['test']}",
        f"output_dir={out}",
        "training.epochs=3",
        "training.batch_size=16",
        "training.learning_rate=0.003",
        "training.warmup_ratio=0.0",
        "training.report_to=[]",
        "data.label_column=" + ("score" if "regression" in recipe else "label"),
        *extra,
    ]


# ----------------------------------------------------------------------------------- metrics


def test_multilabel_metrics_on_known_data():
    from hf_transfer.metrics.multilabel import compute_multilabel_metrics

    refs = np.array([[1, 0], [1, 1], [0, 0]])
    pred = np.array([[1, 0], [0, 1], [0, 1]])
    probs = np.array([[0.9, 0.1], [0.4, 0.8], [0.2, 0.7]])
    m = compute_multilabel_metrics(pred, refs, probs, ["A b", "c"])
    # label 0: tp 1, fn 1 -> F1 2/3; label 1: tp 1, fp 1 -> F1 2/3; pooled: tp 2, fp 1, fn 1 -> 2/3
    assert m["f1_a_b"] == pytest.approx(2 / 3) and m["f1_c"] == pytest.approx(2 / 3)
    assert m["f1_macro"] == pytest.approx(2 / 3) and m["f1"] == m["f1_macro"]
    assert m["f1_micro"] == pytest.approx(2 / 3)
    assert m["subset_accuracy"] == pytest.approx(1 / 3) and m["accuracy"] == m["subset_accuracy"]
    assert m["hamming_loss"] == pytest.approx(2 / 6)
    # LRAP: row 0 -> 1; row 1 (both relevant) -> 1; row 2 (none relevant) -> 1 by convention
    assert m["lrap"] == pytest.approx(1.0)
    m2 = compute_multilabel_metrics(pred, refs, np.array([[0.1, 0.9], [0.4, 0.8], [0.2, 0.7]]), ["a", "c"])
    assert m2["lrap"] == pytest.approx((0.5 + 1 + 1) / 3)  # row 0: its label ranked 2nd -> 1/2
    assert m["empty_predictions"] == 0 and m["support_c"] == 1 and m["support_a_b"] == 2


def test_thresholds_maximise_each_labels_f1():
    from hf_transfer.metrics.multilabel import cross_fitted_predictions, tune_thresholds

    probs = np.array([[0.30, 0.9], [0.35, 0.8], [0.10, 0.7], [0.20, 0.6]])
    refs = np.array([[1, 0], [1, 0], [0, 0], [0, 0]])
    t = tune_thresholds(probs, refs)
    # label 0: every threshold in (0.20, 0.30] separates perfectly; 0.30 is the closest to 0.5
    assert t[0] == pytest.approx(0.30)
    assert t[1] == 0.5  # no positive example: the default stays
    assert tune_thresholds(probs, refs, min_positives=3)[0] == 0.5  # 2 positives: too few to move it
    pred, folds = cross_fitted_predictions(np.tile(probs, (3, 1)), np.tile(refs, (3, 1)), folds=3)
    assert folds == 3 and pred.shape == (12, 2) and pred.dtype == bool


def test_regression_metrics_on_known_data():
    from hf_transfer.metrics.regression import compute_regression_metrics

    m = compute_regression_metrics(np.array([1, 2, 3, 5.0]), np.array([1, 2, 3, 4.0]))
    assert m["mse"] == pytest.approx(0.25) and m["rmse"] == pytest.approx(0.5) and m["mae"] == pytest.approx(0.25)
    assert m["r2"] == pytest.approx(1 - 1 / 5) and m["spearman"] == pytest.approx(1.0)
    assert np.isnan(compute_regression_metrics(np.ones(3), np.array([1, 2, 3.0]))["spearman"])


# ----------------------------------------------------------------------------- label formats


def _splits(tiny_bert_dir, tmp_path, train, *extra, recipe="text_multilabel"):
    from hf_transfer.tasks import get_task

    cfg = load_config(
        None,
        [
            f"recipe={recipe}",
            f"model.name_or_path={tiny_bert_dir}",
            f"data.train={train}",
            f"output_dir={tmp_path / 'run'}",
            "data.eval_fraction=0.25",
            *extra,
        ],
    )
    task = get_task(cfg)
    return task, task.load_splits()


def test_three_label_formats_encode_the_same(tiny_bert_dir, tmp_path):
    rows = [
        {"text": "goal and vote", "label": "sports;politics"},
        {"text": "rain", "label": "weather"},
        {"text": "nothing", "label": ""},
        {"text": "team", "label": "sports"},
    ]
    sep = write_csv(tmp_path / "sep.csv", rows)
    listed = tmp_path / "list.jsonl"
    listed.write_text(
        "\n".join(json.dumps({"text": r["text"], "tags": [x for x in r["label"].split(";") if x]}) for r in rows)
    )
    cols = write_csv(
        tmp_path / "cols.csv",
        [
            {"text": r["text"], **{n: int(n in r["label"].split(";")) for n in ("politics", "sports", "weather")}}
            for r in rows
        ],
    )
    got = []
    for train, extra in (
        (sep, ["data.label_column=label"]),
        (listed, ["data.label_column=tags"]),
        (cols, ["data.label_columns=[politics,sports,weather]"]),
    ):
        task, splits = _splits(tiny_bert_dir, tmp_path, train, *extra, "data.eval_fraction=0.25")
        assert task.labels.names == ["politics", "sports", "weather"]
        both = {
            text: label
            for text, label in zip(
                list(splits.train["text"]) + list(splits.eval["text"]),
                list(splits.train["labels"]) + list(splits.eval["labels"]),
            )
        }
        got.append(both)
    assert got[0] == got[1] == got[2]
    assert got[0]["goal and vote"] == [1.0, 1.0, 0.0] and got[0]["nothing"] == [0.0, 0.0, 0.0]
    assert sum(task.empty_rows.values()) == 1  # the row without a label is kept and counted


def test_label_outside_declared_set_names_file_and_row(tiny_bert_dir, tmp_path):
    train = write_csv(
        tmp_path / "train.csv",
        [
            {"text": "a", "label": "x"},
            {"text": "b", "label": "y"},
            {"text": "c", "label": "x;zz"},
            {"text": "d", "label": "y"},
        ],
    )
    with pytest.raises(DataError) as e:
        _splits(tiny_bert_dir, tmp_path, train, "data.label_names=[x,y]")
    msg = str(e.value)
    assert "'zz'" in msg and "row 3" in msg and str(train) in msg and "data.label_names" in msg
    # an eval label the train split never had
    ev = write_csv(tmp_path / "eval.csv", [{"text": "e", "label": "x"}, {"text": "f", "label": "w"}])
    with pytest.raises(DataError, match=r"eval split .*eval.csv.* label 'w' at row 2"):
        _splits(tiny_bert_dir, tmp_path, train, f"data.eval={ev}", "data.label_names=[x,y,zz]")


def test_label_columns_must_be_zero_one(tiny_bert_dir, tmp_path):
    train = write_csv(
        tmp_path / "cols.csv",
        [
            {"text": "a", "p": 1, "q": 0},
            {"text": "b", "p": 0, "q": 2},
            {"text": "c", "p": 1, "q": 1},
            {"text": "d", "p": 0, "q": 1},
        ],
    )
    with pytest.raises(DataError, match=r"Label column 'q' .*cols.csv.* found 2 at row 2"):
        _splits(tiny_bert_dir, tmp_path, train, "data.label_columns=[p,q]")


@pytest.mark.parametrize(
    "value, expected",
    [
        ("abc", r"must hold finite numbers; found 'abc' at row 3"),
        ("", r"no target at row 3"),
        ("inf", r"found inf at row 3"),
    ],
)
def test_bad_regression_targets_name_the_row(tiny_bert_dir, tmp_path, value, expected):
    rows = [{"text": t, "score": s} for t, s in (("a", "1.5"), ("b", "2"), ("c", value), ("d", "0.5"))]
    train = tmp_path / "train.csv"
    with train.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["text", "score"])
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(DataError, match=expected):
        _splits(tiny_bert_dir, tmp_path, train, "data.label_column=score", recipe="text_regression")


def test_constant_regression_target_is_refused(tiny_bert_dir, tmp_path):
    train = write_csv(tmp_path / "c.csv", [{"text": t, "score": 3} for t in "abcdef"])
    with pytest.raises(DataError, match=r"target column 'score' of the train split .*c.csv.* is constant \(3 in all"):
        _splits(tiny_bert_dir, tmp_path, train, "data.label_column=score", recipe="text_regression")


def test_single_label_only_settings_are_refused(tiny_bert_dir, topics, tmp_path):
    with pytest.raises(ConfigError, match="contrastive.*numeric targets"):
        load_config(None, _overrides("text_regression", tiny_bert_dir, topics, tmp_path, "strategy.name=contrastive"))
    with pytest.raises(ConfigError, match="samples_per_class need classes"):
        load_config(None, _overrides("text_regression", tiny_bert_dir, topics, tmp_path, "data.samples_per_class=8"))
    cfg = load_config(None, _overrides("text_regression", tiny_bert_dir, topics, tmp_path))
    assert cfg.training.metric_for_best_model == "rmse"


# ----------------------------------------------------------------------------- end to end


def _pipeline_labels(pipe, texts):
    thresholds = pipe.model.config.thresholds
    return [
        [s["label"] for s in sorted(row, key=lambda s: -s["score"]) if s["score"] >= thresholds[s["label"]]]
        for row in pipe(texts, top_k=None)
    ]


def test_text_multilabel_full_round_trip(tiny_bert_dir, topics, tmp_path):
    from transformers import pipeline

    from hf_transfer.export.export import export_run
    from hf_transfer.run import evaluate, predict, train

    out = tmp_path / "run"
    metrics = train(load_config(None, _overrides("text_multilabel", tiny_bert_dir, topics, out, "training.epochs=6")))
    for key in ("eval_f1_macro", "eval_f1_micro", "eval_subset_accuracy", "eval_lrap", "test_f1_macro", "test_lrap"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["eval_f1_politics"] >= 0 and metrics["empty_label_rows"]["train"] > 0
    saved = json.loads((out / "thresholds.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    assert config["thresholds"] == saved["thresholds"] == metrics["thresholds"]
    assert set(saved["thresholds"]) == {"politics", "sports", "weather"}
    assert "eval split" in saved["selection"]
    # evaluate applies the stored thresholds to the test split: the same scores as training
    again = evaluate(out)
    assert again["test_f1_macro"] == pytest.approx(metrics["test_f1_macro"], abs=1e-6)
    texts = ["the match and the vote", "it was rain", "quite"]
    ours = predict(out, texts)
    exported = export_run(out, tmp_path / "export", license="apache-2.0")
    pipe = pipeline("text-classification", model=str(exported))
    assert _pipeline_labels(pipe, texts) == [r["labels"] for r in ours]
    for row, theirs in zip(ours, pipe(texts, top_k=None)):
        for s in theirs:
            assert row["scores"][s["label"]] == pytest.approx(s["score"], abs=1e-5)
    card = (exported / "README.md").read_text()
    assert "pipeline_tag: text-classification" in card and "## Decision thresholds" in card
    assert "f1_macro" in card


def test_text_multilabel_feature_extraction_learns_and_tunes_by_cv(tiny_bert_dir, topics, tmp_path):
    from hf_transfer.run import evaluate, predict, train

    out = tmp_path / "fe"
    metrics = train(
        load_config(
            None,
            _overrides(
                "text_multilabel",
                tiny_bert_dir,
                topics,
                out,
                "strategy.name=feature_extraction",
                f"strategy.cache_dir={tmp_path / 'cache'}",
            ),
        )
    )
    assert metrics["test_f1_macro"] > 0.7  # the cue words are linearly visible in the features
    assert "120 training rows" in metrics["threshold_selection"]  # too few to tune: 0.5
    assert set(metrics["thresholds"].values()) == {0.5}
    many = dict(topics, train=write_csv(tmp_path / "many.csv", topic_rows(420, 7)))
    tuned = train(
        load_config(
            None,
            _overrides(
                "text_multilabel",
                tiny_bert_dir,
                many,
                tmp_path / "fe2",
                "strategy.name=feature_extraction",
                f"strategy.cache_dir={tmp_path / 'cache'}",
            ),
        )
    )
    assert "cross-validation over the 420 training rows" in tuned["threshold_selection"]
    assert metrics["classifier"] == "one_vs_rest_logistic_regression"
    assert evaluate(out)["test_f1_macro"] == pytest.approx(metrics["test_f1_macro"])
    rows = predict(out, ["the match and the vote", "the the"])
    assert "sports" in rows[0]["labels"] and "politics" in rows[0]["labels"]


def test_text_regression_full_round_trip(tiny_bert_dir, topics, tmp_path):
    from transformers import pipeline

    from hf_transfer.export.export import export_run
    from hf_transfer.run import evaluate, predict, train

    out = tmp_path / "reg"
    metrics = train(
        load_config(
            None,
            _overrides(
                "text_regression", tiny_bert_dir, topics, out, "training.epochs=6", "training.regression_loss=huber"
            ),
        )
    )
    assert metrics["regression_loss"] == "huber" and metrics["budget"]
    scaling = json.loads((out / "target_scaling.json").read_text())
    y = np.array([float(r["score"]) for r in csv.DictReader(open(topics["train"]))])
    assert scaling["std"] > 0.5 and abs(scaling["mean"] - y.mean()) < 0.3  # of the train rows after the eval carve
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == "regression" and config["id2label"] == {"0": "score"}
    # the saved model outputs the original units: evaluate (no scaling applied) gives the training scores
    again = evaluate(out)
    for k in ("eval_rmse", "test_rmse", "test_r2", "test_spearman"):
        assert again[k] == pytest.approx(metrics[k], abs=1e-5)
    assert metrics["test_r2"] > 0.3  # it learned the number, in its units
    texts = ["the match", "it was rain", "the vote"]
    ours = predict(out, texts)
    exported = export_run(out, tmp_path / "reg_export", license="apache-2.0")
    pipe = pipeline("text-classification", model=str(exported))
    theirs = pipe(texts)
    assert [t["label"] for t in theirs] == ["score"] * 3
    assert [t["score"] for t in theirs] == pytest.approx([r["score"] for r in ours], abs=1e-5)
    card = (exported / "README.md").read_text()
    assert "lower is" in card and "- rmse" in card and "Target:** `score`" in card


def test_text_regression_feature_extraction_is_ridge(tiny_bert_dir, topics, tmp_path):
    from hf_transfer.run import evaluate, train

    out = tmp_path / "ridge"
    metrics = train(
        load_config(
            None,
            _overrides(
                "text_regression",
                tiny_bert_dir,
                topics,
                out,
                "strategy.name=feature_extraction",
                f"strategy.cache_dir={tmp_path / 'cache'}",
            ),
        )
    )
    assert metrics["classifier"] == "ridge" and metrics["alpha"] > 0
    assert metrics["test_r2"] > 0.5
    assert evaluate(out)["test_rmse"] == pytest.approx(metrics["test_rmse"])


def test_auto_measures_label_sets(tiny_bert_dir, topics, tmp_path, monkeypatch):
    from hf_transfer.run import train

    monkeypatch.setenv("HF_TRANSFER_CACHE", str(tmp_path / "cache"))
    metrics = train(
        load_config(None, _overrides("text_multilabel", tiny_bert_dir, topics, tmp_path / "auto", "strategy.name=auto"))
    )
    assert metrics["auto_choice"] in ("feature_extraction", "partial", "full", "freeze")
    assert metrics["auto_similarity_score"] is not None and "eval_f1_macro" in metrics


# ----------------------------------------------------------------------------- images


@pytest.fixture(scope="module")
def tiny_vit_dir(tmp_path_factory):
    from transformers import ViTForImageClassification

    from tiny_models import save_vit

    return save_vit(tmp_path_factory.mktemp("tiny-vit-ml"), ViTForImageClassification, num_labels=10)


@pytest.fixture(scope="module")
def colour_images(tmp_path_factory):
    """Images with red and/or green present (labels) and a brightness (regression target)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(0)
    files = {}
    for split, n in (("train", 40), ("eval", 12), ("test", 12)):
        rows = []
        for i in range(n):
            red, green = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
            a = rng.integers(0, 60, (24, 24, 3)).astype(np.uint8)
            if red:
                a[..., 0] = 220
            if green:
                a[..., 1] = 220
            path = root / f"{split}_{i}.png"
            Image.fromarray(a).save(path)
            rows.append(
                {
                    "image": path.name,
                    "label": ";".join(n for n, on in (("red", red), ("green", green)) if on),
                    "score": float(a.mean()),
                }
            )
        files[split] = write_csv(root / f"{split}.csv", rows)
    return files


@pytest.mark.parametrize("recipe", ["image_multilabel", "image_regression"])
def test_image_recipes_round_trip(tiny_vit_dir, colour_images, tmp_path, recipe):
    from transformers import pipeline

    from hf_transfer.export.export import export_run
    from hf_transfer.run import evaluate, predict, train

    out = tmp_path / recipe
    metrics = train(load_config(None, _overrides(recipe, tiny_vit_dir, colour_images, out, "training.epochs=2")))
    key = "test_f1_macro" if recipe == "image_multilabel" else "test_rmse"
    assert evaluate(out)[key] == pytest.approx(metrics[key], abs=1e-5)
    image = str(colour_images["test"].parent / "test_0.png")
    ours = predict(out, [image])[0]
    exported = export_run(out, tmp_path / f"{recipe}_export", license="apache-2.0")
    pipe = pipeline("image-classification", model=str(exported))
    theirs = pipe(image, top_k=None)
    if recipe == "image_multilabel":
        assert {s["label"]: pytest.approx(s["score"], abs=1e-5) for s in theirs} == ours["scores"]
    else:
        assert theirs[0]["score"] == pytest.approx(ours["score"], abs=1e-5)


# ----------------------------------------------------------------------------- rank


def test_logme_scores_label_sets_and_numbers():
    from hf_transfer.selection.metrics import logme_targets, score

    rng = np.random.default_rng(0)
    y = rng.normal(size=200)
    informative = np.c_[y + 0.1 * rng.normal(size=200), rng.normal(size=(200, 4))]
    noise = rng.normal(size=(200, 5))
    assert logme_targets(informative, y) > logme_targets(noise, y)
    Y = (rng.random((200, 3)) < 0.4).astype(float)
    assert score("logme", np.c_[Y + 0.1 * rng.normal(size=(200, 3)), noise], Y) > score("logme", noise, Y)
    with pytest.raises(ValueError, match="'knn' scores class labels"):
        score("knn", noise, Y)


def test_rank_uses_logme_for_targets(tiny_bert_dir, topics, tmp_path):
    from hf_transfer.errors import HFTransferError
    from hf_transfer.selection.rank import rank_candidates

    cfg = load_config(None, _overrides("text_regression", tiny_bert_dir, topics, tmp_path / "r"))
    report = rank_candidates(cfg, [str(tiny_bert_dir)], repeats=1)
    assert report.metrics == ["logme"] and report.default_metric == "logme"
    assert np.isfinite(report.results[0].scores["logme"])
    with pytest.raises(HFTransferError, match="rank it with --metrics logme"):
        rank_candidates(cfg, [str(tiny_bert_dir)], metrics=["knn"])


# ----------------------------------------------------------------------------- compare


@pytest.mark.parametrize("recipe, metric", [("text_multilabel", "f1"), ("text_regression", "rmse")])
def test_compare_runs_strategies_and_the_plain_baseline(tiny_bert_dir, topics, tmp_path, monkeypatch, recipe, metric):
    import yaml

    from hf_transfer.study import plan_study, run_study

    monkeypatch.setenv("HF_TRANSFER_CACHE", str(tmp_path / "cache"))
    config = tmp_path / "study.yaml"
    raw = {
        "recipe": recipe,
        "model": {"name_or_path": str(tiny_bert_dir)},
        "output_dir": str(tmp_path / "unused"),
        "data": {
            "train": str(topics["train"]),
            "eval": str(topics["eval"]),
            "label_column": "score" if recipe == "text_regression" else "label",
        },
        "training": {"epochs": 1, "report_to": [], "learning_rate": 0.003},
    }
    config.write_text(yaml.safe_dump(raw))
    study = plan_study(
        config,
        strategies="feature_extraction,freeze",
        sizes="30,60",
        seeds="0",
        baselines="logreg",
        out_dir=tmp_path / "s",
    )
    assert study.metric == metric  # a regression study judges RMSE, not the classification default
    report = run_study(study, echo=lambda line: None)
    rows = json.loads((tmp_path / "s" / "study.json").read_text())
    text = json.dumps(rows)
    assert f"eval_{metric}" in text or metric in text
    cells = sorted((tmp_path / "s" / "cells").iterdir())
    assert len(cells) == 6
    base = json.loads(next(c for c in cells if c.name.startswith("logreg__n60")).joinpath("metrics.json").read_text())
    key = "eval_f1_macro" if recipe == "text_multilabel" else "eval_rmse"
    assert base["strategy"] == "logreg" and np.isfinite(base[key])
    assert report is not None
    with pytest.raises(ConfigError, match="per-class"):
        plan_study(config, strategies="freeze", sizes="4", per_class=True, out_dir=tmp_path / "s2")


def test_new_head_starts_at_the_label_base_rates(tiny_bert_dir, tmp_path):
    train = write_csv(
        tmp_path / "t.csv",
        [{"text": f"w{i}", "label": "a" if i % 4 == 0 else ("a;b" if i == 1 else "")} for i in range(40)],
    )
    task, splits = _splits(tiny_bert_dir, tmp_path, train, "data.label_column=label")
    task.load_processor()
    model = task.build_model()
    y = np.asarray(list(splits.train["labels"]))
    p = np.clip(y.mean(0), 1e-3, 1 - 1e-3)
    assert torch.allclose(model.classifier.bias.double(), torch.as_tensor(np.log(p / (1 - p))), atol=1e-6)
    assert model.config.problem_type == "multi_label_classification"


from test_export import hub  # noqa: E402,F401  (the stand-in Hub fixture)


def test_push_a_multilabel_run_to_a_stand_in_hub(tiny_bert_dir, topics, tmp_path, hub):  # noqa: F811
    from hf_transfer.export.push import push_run
    from hf_transfer.run import train

    out = tmp_path / "push"
    train(load_config(None, _overrides("text_multilabel", tiny_bert_dir, topics, out, "training.epochs=1")))
    result = push_run(out, "alice/tiny-topics", license="mit")
    stored = hub.repos["alice/tiny-topics"]["main"]
    assert "README.md" in result.uploaded and "model.safetensors" in stored
    config = json.loads(stored["config.json"])
    assert config["problem_type"] == "multi_label_classification" and set(config["thresholds"]) == set(CUES)
    assert b"pipeline_tag: text-classification" in stored["README.md"]
