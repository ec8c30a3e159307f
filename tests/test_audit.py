"""`hf-transfer audit`: planted label errors, duplicates, conflicts and leaks are found by row; the
fix file; bad inputs; the one-line overlap warning of `train`."""

import csv
import json
import logging
import random
from pathlib import Path

import numpy as np
import pytest

from conftest import FILLER, NEGATIVE, POSITIVE, write_csv
from hf_transfer.config import load_config
from hf_transfer.data_audit import checks
from hf_transfer.errors import HFTransferError

pytest.importorskip("cleanlab")

FLIPS = [5, 17, 30, 44, 61, 77, 90, 103, 131, 150]


def strong_sentences(n: int, seed: int):
    """Toy sentiment with three to five cue words per sentence: separable on the tiny model's
    embedding-layer features, so wrong labels stand out."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = ("negative", "positive")[i % 2]
        cues = POSITIVE if label == "positive" else NEGATIVE
        words = [rng.choice(cues) for _ in range(rng.randint(3, 5))] + [
            rng.choice(FILLER) for _ in range(rng.randint(0, 2))
        ]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def _other(label):
    return "positive" if label == "negative" else "negative"


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """160 training rows: 10 labels flipped, an exact duplicate (case changed), a conflicting
    duplicate (whitespace changed, other label); 40 eval rows, two of them training rows."""
    d = tmp_path_factory.mktemp("audit-data")
    train = strong_sentences(160, seed=1)
    for i in FLIPS:
        train[i]["label"] = _other(train[i]["label"])
    train[156] = {"text": train[3]["text"].upper(), "label": train[3]["label"]}
    train[158] = {"text": "  " + train[8]["text"].replace(" ", "   ") + " ", "label": _other(train[8]["label"])}
    ev = strong_sentences(40, seed=2)
    ev[0] = dict(train[20])
    ev[1] = {"text": train[21]["text"].title(), "label": train[21]["label"]}
    return {"train": write_csv(d / "train.csv", train), "eval": write_csv(d / "eval.csv", ev), "dir": d}


def _cfg(tiny_bert_dir, data, tmp_path, *extra):
    return load_config(
        None,
        [
            f"model.name_or_path={tiny_bert_dir}",
            f"data.train={data['train']}",
            f"data.eval={data['eval']}",
            f"output_dir={tmp_path / 'run'}",
            "training.report_to=[]",
            "strategy.name=feature_extraction",
            "strategy.layers=[0]",
            f"strategy.cache_dir={tmp_path / 'cache'}",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def audit_tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("audit")


@pytest.fixture(scope="module")
def report(tiny_bert_dir, planted, audit_tmp, one_torch_thread):
    from hf_transfer.data_audit import audit

    return audit(_cfg(tiny_bert_dir, planted, audit_tmp), audit_tmp / "audit", fix="drop")


def test_planted_label_errors_found_by_source_row(report):
    flagged = {r["row"] for r in report["label_issues"] if r["split"] == "train"}
    found = flagged & set(FLIPS)
    assert len(found) >= 8, (sorted(flagged), FLIPS)
    assert len(flagged - set(FLIPS) - {158, 8}) <= 3, sorted(flagged)
    for r in report["label_issues"]:
        if r["row"] in FLIPS and r["split"] == "train":
            assert r["suggested"] != r["given"]
            assert 0 <= r["score"] < 0.5
    scores = [r["score"] for r in report["label_issues"]]
    assert scores == sorted(scores)  # most suspicious first
    assert set(report["label_noise"]) == {"negative", "positive"}


def test_duplicates_conflicts_and_leaks(report):
    dups = {tuple(g["rows"]): g for g in report["duplicates"]}
    assert dups[(3, 156)]["kind"] == "exact" and dups[(3, 156)]["labels"][0] == dups[(3, 156)]["labels"][1]
    assert (8, 158) in dups
    conflict_rows = [tuple(c["rows"]) for c in report["conflicts"]]
    assert (8, 158) in conflict_rows and (3, 156) not in conflict_rows
    leaks = {(lk["eval_row"], lk["train_row"]): lk for lk in report["leaks"]}
    assert (0, 20) in leaks and (1, 21) in leaks
    assert leaks[(1, 21)]["kind"] == "exact" and leaks[(1, 21)]["similarity"] == 1.0
    assert len(report["leaks"]) <= 4


def test_report_files_and_json_contract(report):
    files = report["files"]
    data = json.loads(open(files["json"]).read())
    for key in ("label_issues", "duplicates", "conflicts", "leaks"):
        assert isinstance(data[key], list)
    assert set(data["label_issues"][0]) >= {"split", "row", "given", "suggested", "score"}
    assert set(data["leaks"][0]) >= {"eval_row", "train_row", "similarity"}
    md = open(files["markdown"]).read()
    assert "## Likely label errors" in md and "## Leaks (" in md
    assert open(files["plot"], "rb").read(4) == b"\x89PNG"
    assert data["class_balance"]["train"]["counts"] == {"negative": 80, "positive": 80}


def test_features_shared_with_the_cache_train_uses(report, tiny_bert_dir, planted, audit_tmp):
    """One forward pass: `feature_extraction`, `rank` and `shift` read what the audit cached."""
    from hf_transfer.tasks.features import features_for_config

    feats = features_for_config(_cfg(tiny_bert_dir, planted, audit_tmp), roles=("train", "eval"))
    assert feats["train"].cache_hit and feats["eval"].cache_hit
    assert report["seconds"]["features_cached"] is False


def test_fix_file_drops_flagged_rows_and_keeps_the_source(report, planted):
    rows = list(csv.DictReader(open(report["files"]["clean"])))
    source = list(csv.DictReader(open(planted["train"])))
    assert len(source) == 160  # never modified
    fix = report["fix"]
    assert len(rows) == 160 - fix["dropped"] == fix["rows_out"]
    dropped = set(fix["dropped_rows"])
    flagged = {r["row"] for r in report["label_issues"] if r["split"] == "train"}
    assert flagged <= dropped
    assert 156 in dropped and 3 not in dropped  # one copy kept
    assert {8, 158} <= dropped  # conflicting, no majority
    assert {20, 21} <= dropped  # leaked into eval
    assert [r["text"] for r in rows] == [s["text"] for i, s in enumerate(source) if i not in dropped]


def test_relabel_fix_and_cli(tiny_bert_dir, planted, tmp_path, capsys, one_torch_thread):
    from hf_transfer.cli import main

    out = tmp_path / "audit"
    args = [
        "audit",
        "--fix",
        "relabel",
        "-o",
        str(out),
        "--no-plot",
        str(_write_yaml(tiny_bert_dir, planted, tmp_path)),
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "Likely label errors:" in printed and f"data.train={out / 'clean.csv'}" in printed
    data = json.loads((out / "audit.json").read_text())
    rows = list(csv.DictReader(open(out / "clean.csv")))
    fix = data["fix"]
    assert fix["relabelled"] >= 8 and len(rows) == 160 - fix["dropped"]
    source = list(csv.DictReader(open(planted["train"])))
    by_text = {r["text"]: r["label"] for r in rows}
    for row, label in fix["relabelled_rows"].items():
        assert by_text[source[int(row)]["text"]] == label != source[int(row)]["label"]
    assert not (out / "audit.png").exists()


def _write_yaml(tiny_bert_dir, data, tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(
        "recipe: text_classification\n"
        f"output_dir: {tmp_path / 'run'}\n"
        f"model: {{name_or_path: {tiny_bert_dir}}}\n"
        f"data: {{train: {data['train']}, eval: {data['eval']}}}\n"
        f"strategy: {{name: feature_extraction, layers: [0], cache_dir: {tmp_path / 'cache'}}}\n"
        "training: {report_to: []}\n"
    )
    return path


# ------------------------------------------------------------------------------ bad input


def test_single_class_class_with_one_row_and_no_eval(tiny_bert_dir, tmp_path, one_torch_thread):
    from hf_transfer.data_audit import audit

    rows = strong_sentences(40, seed=3)
    one = [dict(r, label="negative") for r in rows]
    cfg = load_config(
        None,
        [
            f"model.name_or_path={tiny_bert_dir}",
            f"data.train={write_csv(tmp_path / 'one.csv', one)}",
            f"output_dir={tmp_path / 'run'}",
            "training.report_to=[]",
        ],
    )
    with pytest.raises(HFTransferError, match=r"single value \('negative'\) in the train split"):
        audit(cfg, tmp_path / "a1", fix="none")

    rows[7]["label"] = "neutral"
    rows[12] = dict(rows[10])
    cfg.data.train.name = str(write_csv(tmp_path / "single.csv", rows))
    report = audit(cfg, tmp_path / "a2", fix="none")
    notes = " ".join(report["notes"])
    assert "single row: 'neutral'" in notes and "No separate eval split" in notes
    assert all(r["row"] != 7 for r in report["label_issues"])
    assert report["rows"] == {"train": 40}  # the rows a run would carve for eval are audited with train
    assert report["leaks"] == [] and [g["rows"] for g in report["duplicates"]] == [[10, 12]]
    assert "clean" not in report["files"]


def test_blank_rows_counted_by_row(tiny_bert_dir, tmp_path, one_torch_thread):
    from hf_transfer.data_audit import audit

    rows = strong_sentences(40, seed=4)
    rows[4]["text"] = "   "
    rows[9]["text"] = ""
    rows[11]["text"] = "good"
    cfg = load_config(
        None,
        [
            f"model.name_or_path={tiny_bert_dir}",
            f"data.train={write_csv(tmp_path / 't.csv', rows)}",
            f"output_dir={tmp_path / 'run'}",
            "training.report_to=[]",
            "data.max_length=6",
        ],
    )
    report = audit(cfg, tmp_path / "a", fix="none", plots=False)
    assert report["skipped"]["train"]["count"] == 2 and report["skipped"]["train"]["rows"] == [4, 9]
    lengths = report["text_lengths"]["train"]
    assert 11 in [r["row"] for r in lengths["very_short"]]
    over = {r["row"] for r in lengths["over_max_length"]}
    assert over and all(len(rows[r]["text"].split()) >= 4 for r in over)


def test_bad_settings_are_clear_errors(tiny_bert_dir, planted, tmp_path):
    from hf_transfer.data_audit import audit

    with pytest.raises(HFTransferError, match="--fix must be one of drop, relabel, none"):
        audit(_cfg(tiny_bert_dir, planted, tmp_path), tmp_path, fix="delete")
    with pytest.raises(HFTransferError, match="cosine similarity"):
        audit(_cfg(tiny_bert_dir, planted, tmp_path), tmp_path, near_threshold=1.5)
    with pytest.raises(HFTransferError, match="--folds must be at least 2"):
        audit(_cfg(tiny_bert_dir, planted, tmp_path), tmp_path, folds=1)
    with pytest.raises(HFTransferError, match="recipe masked_lm is not one"):
        audit(_cfg(tiny_bert_dir, planted, tmp_path, "recipe=masked_lm"), tmp_path)


def test_missing_cleanlab_says_how_to_install(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_cleanlab(name, *a, **kw):
        if name.startswith("cleanlab"):
            raise ImportError("No module named 'cleanlab'")
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_cleanlab)
    with pytest.raises(HFTransferError, match=r"pip install 'hf-transfer-toolkit\[audit\]'"):
        checks.require_cleanlab()


# ------------------------------------------------------------------------------ checks on arrays


def test_near_pairs_groups_and_best_matches():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 16))
    X[10] = X[3] + 0.01 * rng.normal(size=16)
    X[20] = X[3] + 0.01 * rng.normal(size=16)
    U = checks.unit_rows(X)
    pairs = checks.near_pairs(U, 0.99)
    assert {(a, b) for a, b, _ in pairs} == {(3, 10), (3, 20), (10, 20)}
    assert checks.groups_from_pairs(50, pairs) == [[3, 10, 20]]
    Q = checks.unit_rows(np.stack([X[7] + 0.01 * rng.normal(size=16), rng.normal(size=16)]))
    assert [(q, i) for q, i, _ in checks.best_matches(Q, U, 0.99)] == [(0, 7)]


def test_out_of_fold_probabilities_leave_out_single_row_classes():
    rng = np.random.default_rng(0)
    y = np.array([0] * 20 + [1] * 20 + [2])
    X = rng.normal(size=(41, 4)) + np.eye(4)[y] * 4
    oof = checks.out_of_fold_probabilities(X, y, 3)
    assert oof.left_out_classes == [2] and len(oof.rows) == 40 and oof.folds == 5
    assert (oof.probs.argmax(1) == y[oof.rows]).mean() > 0.9
    np.testing.assert_allclose(oof.probs.sum(1), 1, atol=1e-6)


# ------------------------------------------------------------------------------ train's warning


def test_overlap_warning_text(tiny_bert_dir, tmp_path):
    from hf_transfer.data.overlap import overlap_warning
    from hf_transfer.tasks import get_task

    rows = strong_sentences(30, seed=5)
    ev = strong_sentences(10, seed=6)
    ev[2] = {"text": "  " + rows[4]["text"].upper(), "label": rows[4]["label"]}
    cfg = load_config(
        None,
        [
            f"model.name_or_path={tiny_bert_dir}",
            f"data.train={write_csv(tmp_path / 'a.csv', rows)}",
            f"data.eval={write_csv(tmp_path / 'b.csv', ev)}",
            f"output_dir={tmp_path / 'r'}",
        ],
    )
    task = get_task(cfg)
    task.load_processor()
    splits = task.load_splits()
    msg = overlap_warning(task, splits)
    assert msg.startswith("1 of 10 eval rows also appear in the training data") and "hf-transfer audit" in msg
    ev[2] = strong_sentences(1, seed=99)[0] | {"text": "gripping different words here"}
    cfg.data.eval.name = str(write_csv(tmp_path / "c.csv", ev))
    task = get_task(cfg)
    task.load_processor()
    assert overlap_warning(task, task.load_splits()) is None


def test_train_logs_the_overlap_warning(text_overrides, toy_text_data, tmp_path, caplog, one_torch_thread):
    from hf_transfer.run import train

    src = list(csv.DictReader(open(toy_text_data["validation"])))
    train_rows = list(csv.DictReader(open(toy_text_data["train"])))
    leaked = write_csv(tmp_path / "train.csv", train_rows + src[:3])
    overrides = [o for o in text_overrides if not o.startswith("data.train=")] + [
        f"data.train={leaked}",
        "strategy.name=feature_extraction",
        "training.epochs=1",
    ]
    with caplog.at_level(logging.WARNING, logger="hf_transfer"):
        train(load_config(None, overrides))
    lines = [r.getMessage() for r in caplog.records if "also appear in the training data" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("3 of 32 eval rows")


def test_image_folder_exact_duplicates_by_bytes(tmp_path):
    from PIL import Image

    from hf_transfer.data.overlap import content_key, exact_groups

    paths = []
    for i, color in enumerate([(255, 0, 0), (0, 255, 0), (255, 0, 0)]):
        p = tmp_path / f"{i}.png"
        Image.new("RGB", (4, 4), color).save(p)
        paths.append(str(p))
    keys = [content_key({"path": p, "bytes": None}) for p in paths]
    assert exact_groups(keys) == [[0, 2]]
    assert content_key({"path": str(tmp_path / "missing.png"), "bytes": None}) is None


# ------------------------------------------------------------------------------ image folders


def test_image_folder_audit(tmp_path, one_torch_thread):
    """Exact duplicates and leaks by file bytes, a corrupt file counted, clean.csv of image paths."""
    import shutil

    from PIL import Image

    from hf_transfer.data_audit import audit
    from tiny_models import save_vit

    model = save_vit(tmp_path / "vit")
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for split, n in (("train", 8), ("validation", 4)):
        for channel, name in enumerate(("blue", "green", "red")):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                a = rng.integers(0, 90, (24, 24, 3)).astype(np.uint8)
                a[..., 2 - channel if name != "green" else 1] = rng.integers(160, 256, (24, 24))
                Image.fromarray(a).save(d / f"{i}.png")
    shutil.copy(root / "train/red/0.png", root / "train/red/9_copy.png")
    shutil.copy(root / "validation/green/1.png", root / "train/green/9_leak.png")
    (root / "train/blue/9_corrupt.png").write_bytes(b"not a png")
    cfg = load_config(
        None,
        [
            "recipe=image_classification",
            f"model.name_or_path={model}",
            f"data.train={root}",
            f"data.eval={root}",
            f"output_dir={tmp_path / 'run'}",
            "training.report_to=[]",
            "strategy.name=feature_extraction",
            f"strategy.cache_dir={tmp_path / 'cache'}",
        ],
    )
    report = audit(cfg, tmp_path / "audit", fix="drop")
    files = sorted(str(p.resolve()) for p in (root / "train").rglob("*.png"))  # the folder's row order
    row = {Path(f).relative_to(root.resolve() / "train").as_posix(): i for i, f in enumerate(files)}
    assert report["skipped"]["train"]["count"] == 1
    groups = [g["rows"] for g in report["duplicates"] if g["kind"] == "exact"]
    assert [row["red/0.png"], row["red/9_copy.png"]] in groups
    leaks = [(lk["eval_row"], lk["train_row"], lk["kind"]) for lk in report["leaks"]]
    assert (1 + 4 * 1, row["green/9_leak.png"], "exact") in leaks  # validation/green/1.png: row 5 of validation
    clean = list(csv.DictReader(Path(report["files"]["clean"]).read_text().splitlines()))
    kept = {Path(r["image"]).relative_to(root.resolve() / "train").as_posix() for r in clean}
    assert "red/9_copy.png" not in kept and "red/0.png" in kept and "green/9_leak.png" not in kept
    assert {r["label"] for r in clean} <= {"blue", "green", "red"}


def test_python_api_takes_a_config_path(tiny_bert_dir, planted, tmp_path, one_torch_thread):
    import hf_transfer
    import hf_transfer.data_audit  # noqa: F401  (the package does not shadow the function)

    report = hf_transfer.audit(_write_yaml(tiny_bert_dir, planted, tmp_path), tmp_path / "out", fix="none", plots=False)
    assert report["rows"] == {"train": 160, "eval": 40} and (tmp_path / "out" / "audit.json").is_file()


def test_label_sets_are_refused_with_the_recipes_it_audits(tmp_path, tiny_bert_dir):
    """A multi-label config is not audited as if it had one class per row: one clear line."""
    import pandas as pd

    import hf_transfer

    pd.DataFrame({"text": [f"t {i}" for i in range(12)], "labels": ["a;b", "a", "b"] * 4}).to_csv(
        tmp_path / "ml.csv", index=False
    )
    (tmp_path / "ml.yaml").write_text(
        f"recipe: text_multilabel\noutput_dir: {tmp_path / 'run'}\nmodel:\n  name_or_path: {tiny_bert_dir}\n"
        f"data:\n  train: {tmp_path / 'ml.csv'}\n  label_column: labels\n"
    )
    cfg = load_config(tmp_path / "ml.yaml")
    with pytest.raises(HFTransferError, match=r"audits classification data; recipe text_multilabel is not one"):
        hf_transfer.audit(cfg, tmp_path / "audit")
