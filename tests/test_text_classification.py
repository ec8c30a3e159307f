"""The text-classification recipe end to end on a tiny BERT: head swap, learning, run folder,
evaluate/predict, and the bad-input errors."""

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertForSequenceClassification

from conftest import toy_sentences, write_csv
from hf_transfer.config import load_config
from hf_transfer.errors import DataError, HFTransferError
from hf_transfer.models.heads import load_for_classification
from hf_transfer.run import evaluate, predict, train
from tiny_models import bert_config

# ---------------------------------------------------------------- head swap


def test_head_swap_from_bare_backbone(tiny_bert_dir):
    model = load_for_classification(
        AutoModelForSequenceClassification, str(tiny_bert_dir), {0: "neg", 1: "pos", 2: "mixed"}
    )
    assert model.classifier.out_features == 3
    assert model.config.id2label == {0: "neg", 1: "pos", 2: "mixed"}
    assert model.config.label2id == {"neg": 0, "pos": 1, "mixed": 2}
    assert set(model.hf_transfer_new_weights) == {"classifier.weight", "classifier.bias"}
    from transformers import BertModel  # backbone weights come from the checkpoint

    bare = BertModel.from_pretrained(tiny_bert_dir)
    assert torch.equal(
        model.bert.encoder.layer[0].attention.self.query.weight, bare.encoder.layer[0].attention.self.query.weight
    )


def test_head_swap_replaces_head_for_other_labels_even_with_same_size(tmp_path):
    torch.manual_seed(0)
    old = BertForSequenceClassification(
        bert_config(num_labels=2, id2label={0: "cat", 1: "dog"}, label2id={"cat": 0, "dog": 1})
    )
    old.save_pretrained(tmp_path / "ckpt")
    # Different label names, same count: the old head must not be reused silently.
    model = load_for_classification(AutoModelForSequenceClassification, str(tmp_path / "ckpt"), {0: "neg", 1: "pos"})
    assert not torch.equal(model.classifier.weight, old.classifier.weight)
    assert set(model.hf_transfer_new_weights) == {"classifier.weight", "classifier.bias"}
    # Different count: mismatched sizes are re-initialised.
    model3 = load_for_classification(
        AutoModelForSequenceClassification, str(tmp_path / "ckpt"), {0: "a", 1: "b", 2: "c"}
    )
    assert model3.classifier.out_features == 3
    # Same labels (reloading a trained run): the head is kept.
    same = load_for_classification(AutoModelForSequenceClassification, str(tmp_path / "ckpt"), {0: "cat", 1: "dog"})
    assert torch.equal(same.classifier.weight, old.classifier.weight)
    assert same.hf_transfer_new_weights == []


# ---------------------------------------------------------------- a whole run


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_bert_dir, toy_text_data):
    out = tmp_path_factory.mktemp("runs") / "run"
    cfg = load_config(
        None,
        [
            f"model.name_or_path={tiny_bert_dir}",
            f"data.train={toy_text_data['train']}",
            f"data.eval={toy_text_data['validation']}",
            f"data.test={toy_text_data['test']}",
            f"output_dir={out}",
            "training.epochs=8",
            "training.learning_rate=0.003",
            "training.report_to=[tensorboard]",
            "training.logging_steps=1",
            "training.save_strategy=no",
            # The loss must fall from chance: a random head (the probe-initialised one is tested in
            # test_head_init.py; on this random backbone it starts at chance too, but need not).
            "strategy.head_init=random",
        ],
    )
    return out, train(cfg)


def test_run_learns_and_writes_metrics(trained_run):
    out, metrics = trained_run
    history = json.loads((out / "history.json").read_text())
    losses = [h["loss"] for h in history if "loss" in h]
    assert losses[-1] < 0.5 * losses[0], losses
    assert metrics["eval_accuracy"] >= 0.9
    saved = json.loads((out / "metrics.json").read_text())
    for key in (
        "eval_accuracy",
        "eval_f1",
        "eval_loss",
        "eval_precision",
        "eval_recall",
        "eval_precision_negative",
        "eval_recall_positive",
        "train_runtime",
        "train_samples_per_second",
        "test_accuracy",
        "test_f1",
        "test_loss",
    ):
        assert key in saved, key
    assert saved["labels"] == ["negative", "positive"]
    cm = json.loads((out / "confusion_matrix.json").read_text())
    assert cm["labels"] == ["negative", "positive"] and sum(map(sum, cm["matrix"])) == 32
    for f in (
        "config.yaml",
        "model.safetensors",
        "tokenizer.json",
        "training_curves.png",
        "confusion_matrix.png",
        "train.log",
    ):
        assert (out / f).is_file(), f
    assert any((out / "logs").rglob("events.out.tfevents*")), "no TensorBoard events"


def test_run_folder_loads_without_hf_transfer(trained_run):
    out, metrics = trained_run
    from transformers import AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.id2label == {0: "negative", 1: "positive"}
    with torch.no_grad():
        logits = model(
            **tok(["a great wonderful film", "a terrible boring film"], return_tensors="pt", padding=True)
        ).logits
    assert logits.argmax(-1).tolist() == [1, 0]


def test_evaluate_and_predict(trained_run):
    out, metrics = trained_run
    again = evaluate(out)
    assert again["eval_accuracy"] == pytest.approx(metrics["eval_accuracy"])
    assert again["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    texts = ["a great wonderful film", "a terrible boring film", "the plot was gripping"]
    rows = predict(out, texts, top_k=2)
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    with torch.no_grad():
        probs = model(**tok(texts, return_tensors="pt", padding=True)).logits.softmax(-1)
    assert [r["label"] for r in rows] == [model.config.id2label[i] for i in probs.argmax(-1).tolist()]
    assert rows[0]["label"] == "positive" and rows[1]["label"] == "negative"
    assert rows[0]["score"] == pytest.approx(float(probs[0].max()), abs=1e-4)
    assert len(rows[0]["top"]) == 2


def test_scratch_baseline_starts_from_random_weights(tiny_bert_dir, toy_text_data, tmp_path):
    from transformers import BertModel

    cfg = load_config(
        None,
        [
            f"model.name_or_path={tiny_bert_dir}",
            f"data.train={toy_text_data['train']}",
            f"output_dir={tmp_path / 'scratch'}",
            "strategy.name=scratch",
            "training.max_steps=1",
            "training.report_to=[]",
            "training.learning_rate=1e-9",
            "training.warmup_ratio=0",
        ],
    )
    train(cfg)
    trained = AutoModelForSequenceClassification.from_pretrained(tmp_path / "scratch")
    base = BertModel.from_pretrained(tiny_bert_dir)
    w = trained.bert.encoder.layer[0].output.dense.weight
    assert not torch.allclose(w, base.encoder.layer[0].output.dense.weight, atol=1e-3)


def test_class_weights_balanced_and_eval_carved(tiny_bert_dir, tmp_path):
    rows = toy_sentences(60, seed=5)
    rows = [r for r in rows if r["label"] == "positive"][:10] + [r for r in rows if r["label"] == "negative"]
    path = write_csv(tmp_path / "skewed.csv", rows)
    from hf_transfer.tasks import get_task

    cfg = load_config(
        None,
        [
            f"model.name_or_path={tiny_bert_dir}",
            f"data.train={path}",
            "training.class_weights=balanced",
            "data.eval_fraction=0.25",
        ],
    )
    task = get_task(cfg)
    splits = task.load_splits()
    assert len(splits.eval) == 10 and len(splits.train) == 30
    # Stratified: the 1:3 ratio holds in both parts.
    assert sorted(splits.eval["labels"]).count(1) in (2, 3)
    w = task.class_weights.tolist()
    counts = [splits.train["labels"].count(0), splits.train["labels"].count(1)]
    assert w == pytest.approx([30 / (2 * counts[0]), 30 / (2 * counts[1])])
    assert w[1] > w[0]


# ---------------------------------------------------------------- bad input


def _cfg(tiny_bert_dir, tmp_path, *extra):
    return load_config(
        None,
        [
            f"model.name_or_path={tiny_bert_dir}",
            f"output_dir={tmp_path / 'run'}",
            "training.report_to=[]",
            "training.max_steps=1",
            *extra,
        ],
    )


def test_missing_label_column(tiny_bert_dir, tmp_path, toy_text_data):
    cfg = _cfg(tiny_bert_dir, tmp_path, f"data.train={toy_text_data['train']}", "data.label_column=sentiment")
    with pytest.raises(DataError, match=r"Label column 'sentiment'.*columns are: text, label.*data.label_column"):
        train(cfg)


def test_ambiguous_label_column(tiny_bert_dir, tmp_path):
    rows = [{"text": r["text"], "label": r["label"], "class": r["label"]} for r in toy_sentences(20)]
    path = write_csv(tmp_path / "amb.csv", rows)
    with pytest.raises(DataError, match=r"Several columns could hold the label.*data.label_column"):
        train(_cfg(tiny_bert_dir, tmp_path, f"data.train={path}"))


def test_eval_label_never_seen_in_train(tiny_bert_dir, tmp_path, toy_text_data):
    rows = toy_sentences(10, labels=("negative", "positive", "mixed"))
    path = write_csv(tmp_path / "val.csv", rows)
    cfg = _cfg(tiny_bert_dir, tmp_path, f"data.train={toy_text_data['train']}", f"data.eval={path}")
    with pytest.raises(DataError, match=r"labels never seen in train: 'mixed'"):
        train(cfg)


def test_empty_split(tiny_bert_dir, tmp_path, toy_text_data):
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    cfg = _cfg(tiny_bert_dir, tmp_path, f"data.train={toy_text_data['train']}", f"data.eval={empty}")
    with pytest.raises(DataError, match="empty"):
        train(cfg)


def test_path_that_does_not_exist(tiny_bert_dir, tmp_path):
    cfg = _cfg(tiny_bert_dir, tmp_path, "data.train=./no/such/file.csv")
    with pytest.raises(DataError, match=r"local path './no/such/file.csv' does not exist"):
        train(cfg)


def test_model_that_does_not_exist(tmp_path, toy_text_data):
    cfg = load_config(
        None,
        [
            f"model.name_or_path={tmp_path / 'nothing'}",
            f"data.train={toy_text_data['train']}",
            f"output_dir={tmp_path / 'run'}",
        ],
    )
    with pytest.raises(HFTransferError, match="local path .* does not exist"):
        train(cfg)


def test_filter_and_per_class(tiny_bert_dir, tmp_path, toy_text_data):
    from hf_transfer.tasks import get_task

    cfg = _cfg(
        tiny_bert_dir,
        tmp_path,
        f"data.train={toy_text_data['train']}",
        "data.samples_per_class=5",
        f"data.eval={toy_text_data['validation']}",
    )
    splits = get_task(cfg).load_splits()
    assert sorted(splits.train["labels"]) == [0] * 5 + [1] * 5
    bad = _cfg(tiny_bert_dir, tmp_path, f"data.train={toy_text_data['train']}", "data.filter=colour == 'red'")
    with pytest.raises(DataError, match="data.filter"):
        get_task(bad).load_splits()
