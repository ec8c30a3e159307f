"""Metrics against hand-computed values, and the files the plots write."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from sklearn.metrics import f1_score

from hf_transfer.metrics.classification import (
    compute_classification_metrics,
    label_keys,
    prefix_metrics,
    save_confusion_matrix,
    scalar_metrics,
)
from hf_transfer.metrics.plots import plot_confusion_matrix, plot_training_curves
from hf_transfer.metrics.speech import (
    character_error_rate,
    compute_asr_metrics,
    edit_distance,
    normalize_text,
    word_error_rate,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Four labels; "Big Bird!" occurs but is never predicted, "fish" never occurs at all.
LABELS = ["Cat", "dog", "Big Bird!", "fish"]
REFS = [0, 0, 0, 1, 1, 2, 2]
PREDS = [0, 0, 1, 1, 1, 0, 1]
# Rows = true, cols = predicted:
#   cat:      pred cat, cat, dog  -> [2, 1, 0, 0]
#   dog:      pred dog, dog       -> [0, 2, 0, 0]
#   big bird: pred cat, dog       -> [1, 1, 0, 0]
#   fish:     none                -> [0, 0, 0, 0]
EXPECTED_CM = [[2, 1, 0, 0], [0, 2, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]]


def _is_png(path) -> bool:
    data = path.read_bytes()
    return len(data) > 1000 and data.startswith(PNG_MAGIC)


# ---------------------------------------------------------------- classification


def test_classification_metrics_match_hand_computed_values():
    m = compute_classification_metrics(PREDS, REFS, LABELS)

    assert m["accuracy"] == pytest.approx(4 / 7)  # correct: 2 cats + 2 dogs
    # Per class: cat P = 2/3 (2 of 3 "cat" predictions right), R = 2/3; dog P = 2/4, R = 2/2;
    # big bird never predicted -> P = 0 (zero_division=0), R = 0/2; fish absent -> all 0.
    assert m["precision_cat"] == pytest.approx(2 / 3)
    assert m["recall_cat"] == pytest.approx(2 / 3)
    assert m["f1_cat"] == pytest.approx(2 / 3)
    assert m["precision_dog"] == pytest.approx(1 / 2)
    assert m["recall_dog"] == pytest.approx(1.0)
    assert m["f1_dog"] == pytest.approx(2 / 3)  # 2 * 0.5 * 1 / 1.5
    assert m["precision_big_bird"] == 0.0
    assert m["recall_big_bird"] == 0.0
    assert m["f1_big_bird"] == 0.0
    assert (m["precision_fish"], m["recall_fish"], m["f1_fish"]) == (0.0, 0.0, 0.0)

    # Macro means over the labels present (cat, dog, big bird), as evaluate's f1(average="macro").
    assert m["precision"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)  # 7/18
    assert m["recall"] == pytest.approx((2 / 3 + 1 + 0) / 3)  # 5/9
    assert m["f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)  # 4/9
    assert m["f1"] == pytest.approx(f1_score(REFS, PREDS, average="macro", zero_division=0))

    assert m["confusion_matrix"] == EXPECTED_CM
    json.dumps(m)  # plain Python types only


def test_perfect_predictions_and_logits_input():
    logits = np.eye(3)[[0, 1, 2, 2]] * 5.0  # argmax gives 0, 1, 2, 2
    m = compute_classification_metrics(logits, [0, 1, 2, 2], ["a", "b", "c"])
    assert m["accuracy"] == 1.0
    assert m["f1"] == 1.0
    assert m["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 0, 2]]


def test_classification_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="outside 0..1"):
        compute_classification_metrics([0, 2], [0, 1], ["a", "b"])
    with pytest.raises(ValueError, match="differ in length"):
        compute_classification_metrics([0], [0, 1], ["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        compute_classification_metrics([], [], ["a", "b"])


def test_label_keys_are_safe_and_distinct():
    assert label_keys(["Sci/Tech", "Very Positive", "A-B", "a b", "日本", "x"]) == [
        "sci_tech",
        "very_positive",
        "a_b",
        "a_b_3",
        "4",
        "x",
    ]


def test_prefix_and_scalar_metrics():
    m = compute_classification_metrics(PREDS, REFS, LABELS)
    eval_m = prefix_metrics(m, "eval")
    assert eval_m["eval_accuracy"] == m["accuracy"]
    assert "eval_confusion_matrix" in eval_m and "accuracy" not in eval_m
    assert prefix_metrics(eval_m, "eval_") == eval_m  # already prefixed: unchanged
    assert prefix_metrics({"a": 1}, "") == {"a": 1}

    scalars = scalar_metrics({**eval_m, "note": "x", "n": np.int64(3), "flag": True, "x": np.float32(0.5)})
    assert "eval_confusion_matrix" not in scalars and "note" not in scalars
    assert scalars["n"] == 3 and type(scalars["n"]) is int
    assert scalars["flag"] == 1 and scalars["x"] == 0.5
    assert scalars["eval_f1"] == pytest.approx(4 / 9)


def test_save_confusion_matrix_writes_json_and_png(tmp_path):
    json_path, png_path = save_confusion_matrix(EXPECTED_CM, LABELS, tmp_path / "run", stem="test_cm")
    assert json_path == tmp_path / "run" / "test_cm.json"
    assert json.loads(json_path.read_text(encoding="utf-8")) == {"labels": LABELS, "matrix": EXPECTED_CM}
    assert png_path == tmp_path / "run" / "test_cm.png" and _is_png(png_path)

    with pytest.raises(ValueError, match="does not match"):
        save_confusion_matrix(EXPECTED_CM, LABELS[:3], tmp_path)


def test_confusion_matrix_png_with_many_classes(tmp_path):
    # 30 classes exercises the vertical labels and blank zero cells; kept below 50 for speed.
    names = [f"class {i} with a rather long descriptive name" for i in range(30)]
    cm = np.diag(np.arange(1, 31))
    cm[0, 5] = 3
    assert _is_png(plot_confusion_matrix(cm, names, tmp_path / "cm30.png"))


# ---------------------------------------------------------------- speech


def _naive_levenshtein(a, b) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[:], i
        for j, y in enumerate(b, 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (x != y))
    return row[-1]


def test_edit_distance_known_and_random():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3
    assert edit_distance("abc", "") == 3
    assert edit_distance("flaw", "lawn") == 2
    assert edit_distance(["a", "b"], ["a", "b"]) == 0
    rng = random.Random(0)
    for _ in range(200):
        a = "".join(rng.choice("abc") for _ in range(rng.randint(0, 8)))
        b = "".join(rng.choice("abc") for _ in range(rng.randint(0, 8)))
        assert edit_distance(a, b) == _naive_levenshtein(a, b), (a, b)


def test_word_error_rate_known_strings():
    # Reference has 4 words, the prediction misses "on": 1 deletion / 4.
    assert word_error_rate(["the cat sat"], ["the cat sat on"]) == pytest.approx(1 / 4)
    # Reference has 3 words, the prediction adds "on": 1 insertion / 3.
    assert word_error_rate(["the cat sat on"], ["the cat sat"]) == pytest.approx(1 / 3)
    assert word_error_rate(["a b c"], ["a b c"]) == 0.0
    # More insertions than reference words: WER above 1.
    assert word_error_rate(["x y z"], ["a"]) == pytest.approx(3.0)


def test_word_error_rate_is_corpus_level():
    refs = ["the cat sat on the mat", "hello world"]  # 6 + 2 = 8 words
    preds = ["the cat sit on mat", "hello there world"]  # sat->sit, -"the"; +"there": 3 edits
    assert word_error_rate(preds, refs) == pytest.approx(3 / 8)  # not the mean (2/6 + 1/2) / 2


def test_character_error_rate_known_strings():
    assert character_error_rate(["sitting"], ["kitten"]) == pytest.approx(3 / 6)
    assert character_error_rate(["abd"], ["abc"]) == pytest.approx(1 / 3)
    # The space counts as a character (5 in "ab cd"); runs of whitespace count as one space.
    assert character_error_rate(["abcd"], ["ab cd"]) == pytest.approx(1 / 5)
    assert character_error_rate(["  ab   cd "], ["ab cd"]) == 0.0
    # Corpus level: (1 + 3) / (3 + 6).
    assert character_error_rate(["abd", "sitting"], ["abc", "kitten"]) == pytest.approx(4 / 9)


def test_empty_references():
    # An empty reference inside a corpus: its words are insertions against the corpus total.
    assert word_error_rate(["a b", "c"], ["a b", ""]) == pytest.approx(1 / 2)
    # No reference words at all: 0.0 if nothing was predicted either, else 1.0.
    assert word_error_rate([""], [""]) == 0.0
    assert word_error_rate(["x y"], [""]) == 1.0
    assert character_error_rate(["", " "], ["", ""]) == 0.0
    assert character_error_rate(["x"], [""]) == 1.0
    assert word_error_rate([], []) == 0.0


def test_speech_input_errors():
    with pytest.raises(ValueError, match="differ in length"):
        word_error_rate(["a"], ["a", "b"])
    with pytest.raises(TypeError):
        word_error_rate("a b", "a b")


def test_normalize_text_modes():
    text = "Hello,  World! It’s a well-known FACT; isn't it?"
    assert normalize_text(text, "none") == text
    assert normalize_text(text, "basic") == "hello world it's a well known fact isn't it"
    assert normalize_text("  snake_case\tand...dots ", "basic") == "snake case and dots"
    with pytest.raises(ValueError, match="unknown normalization mode"):
        normalize_text(text, "fancy")


def test_whisper_english_normalization(tmp_path):
    # Contractions expanded, titles spelled out, fillers dropped, numbers kept as digits.
    out = normalize_text("Mr. Smith won't pay $20, uh, OK?", "whisper_english")
    assert out == "mister smith will not pay $20 ok"
    # Spelling map from Whisper's normalizer.json, given as a file or as the folder holding it.
    (tmp_path / "normalizer.json").write_text(json.dumps({"colour": "color"}), encoding="utf-8")
    assert normalize_text("The colour.", "whisper_english", tmp_path / "normalizer.json") == "the color"
    assert normalize_text("The colour.", "whisper_english", tmp_path) == "the color"
    assert normalize_text("The colour.", "whisper_english", {"colour": "color"}) == "the color"
    # Without a map every other rule still applies; only the spelling stays.
    assert normalize_text("The colour.", "whisper_english") == "the colour"


def test_compute_asr_metrics_normalization_changes_score():
    preds = ["The cat sat on the mat."]
    refs = ["the cat sat on the mat"]
    assert compute_asr_metrics(preds, refs) == {"wer": 0.0, "cer": 0.0}
    raw = compute_asr_metrics(preds, refs, normalization="none")
    assert raw["wer"] == pytest.approx(2 / 6)  # "The" and "mat." differ
    assert raw["cer"] == pytest.approx(2 / 22)  # "T" substituted, "." inserted
    # Normalisation emptying a reference is handled (filler-only transcript).
    assert compute_asr_metrics(["um"], ["uh"], normalization="whisper_english") == {"wer": 0.0, "cer": 0.0}


# ---------------------------------------------------------------- training curves


def test_plot_training_curves(tmp_path):
    history = [{"step": s, "epoch": s / 10, "loss": 1.0 / s} for s in range(1, 21)]
    history += [
        {"step": 10, "epoch": 1.0, "eval_loss": 0.5, "eval_accuracy": 0.7, "eval_f1": 0.6},
        {"step": 20, "epoch": 2.0, "eval_loss": 0.4, "eval_accuracy": 0.8, "eval_f1": 0.75},
        {"train_runtime": 12.0, "train_loss": 0.3},  # summary record without a step: skipped
    ]
    out = plot_training_curves(history, tmp_path / "plots" / "training_curves.png")
    assert out == tmp_path / "plots" / "training_curves.png" and _is_png(out)


@pytest.mark.parametrize(
    "history",
    [
        [],
        [{"step": 1, "loss": 0.9}, {"step": 2, "loss": 0.8}],  # no evaluation yet
        [{"step": 5, "eval_accuracy": 0.5}],  # metrics without any loss
        [{"epoch": 1.0, "loss": "nan?"}, "not a record", {"step": None, "eval_loss": 1.0}],
    ],
    ids=["empty", "train-only", "eval-only", "junk"],
)
def test_plot_training_curves_tolerates_partial_history(tmp_path, history):
    assert _is_png(plot_training_curves(history, tmp_path / "curves.png"))
