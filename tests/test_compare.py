"""`hf-transfer compare`: nested stratified subsamples, interval arithmetic, verdicts, resume, bad input."""

import json
import math
import time

import numpy as np
import pytest
import yaml
from scipy import stats as scipy_stats

from hf_transfer.cli import main
from hf_transfer.errors import ConfigError, HFTransferError
from hf_transfer.study import plan_study, run_study
from hf_transfer.study.report import verdicts
from hf_transfer.study.sampling import nested_subsamples, stratified_order
from hf_transfer.study.stats import paired_difference, summarize, t_critical

# ------------------------------------------------------------------------------------------------
# Subsamples


def test_per_class_subsamples_are_nested_balanced_and_seeded():
    labels = np.array([0] * 30 + [1] * 50 + [2] * 20)
    np.random.default_rng(0).shuffle(labels)
    a = nested_subsamples(labels, [2, 8, 16], seed=0, per_class=True)
    for k, idx in a.items():
        assert np.bincount(labels[idx], minlength=3).tolist() == [k, k, k]
        assert len(set(idx)) == len(idx)
    assert set(a[2]) <= set(a[8]) <= set(a[16])
    assert nested_subsamples(labels, [2, 8, 16], seed=0, per_class=True) == a  # reproducible
    b = nested_subsamples(labels, [8], seed=1, per_class=True)
    assert b[8] != a[8]
    # A size's set does not depend on which other sizes are asked for.
    assert nested_subsamples(labels, [8], seed=0, per_class=True)[8] == a[8]


def test_total_subsamples_are_nested_and_stratified():
    labels = np.array([0] * 900 + [1] * 90 + [2] * 10)
    np.random.default_rng(1).shuffle(labels)
    sizes = [3, 10, 50, 200, 1000]
    subs = nested_subsamples(labels, sizes, seed=3, per_class=False)
    share = np.bincount(labels) / len(labels)
    for small, large in zip(sizes, sizes[1:]):
        assert set(subs[small]) <= set(subs[large])
    for n, idx in subs.items():
        counts = np.bincount(labels[idx], minlength=3)
        assert counts.sum() == n and counts.min() >= 1  # every class present
        # Within a row of the proportional share, once every class's share is at least one row
        # (below that, the one-row-per-class rule moves up to K - 1 rows).
        tolerance = 1.5 if (n * share).min() >= 1 else len(share) - 1
        assert np.all(np.abs(counts - n * share) <= tolerance), (n, counts, n * share)
    order = stratified_order(labels, seed=3)
    assert sorted(order.tolist()) == list(range(len(labels)))


# ------------------------------------------------------------------------------------------------
# Intervals


@pytest.mark.parametrize("values", [[0.7, 0.75], [0.61, 0.66, 0.64], [0.9, 0.8, 0.85, 0.87, 0.91]])
def test_interval_matches_scipy(values):
    s = summarize(values)
    x = np.asarray(values)
    low, high = scipy_stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=scipy_stats.sem(x))
    assert s.mean == pytest.approx(x.mean())
    assert s.sd == pytest.approx(x.std(ddof=1))
    assert (s.low, s.high) == pytest.approx((low, high))
    # By hand, with tabulated critical values.
    table = {1: 12.7062, 2: 4.3027, 4: 2.7764}
    half = table[len(x) - 1] * x.std(ddof=1) / math.sqrt(len(x))
    assert s.half_width == pytest.approx(half, rel=1e-4)


def test_one_value_has_no_interval_and_paired_difference_pairs_by_seed():
    s = summarize([0.5])
    assert s.n == 1 and math.isnan(s.sd) and not s.has_interval
    assert t_critical(2) == pytest.approx(4.302653, rel=1e-6)
    d = paired_difference({0: 0.8, 1: 0.9, 2: 0.7, 5: 0.1}, {0: 0.6, 1: 0.65, 2: 0.55})
    diffs = np.array([0.2, 0.25, 0.15])
    low, high = scipy_stats.t.interval(0.95, 2, loc=diffs.mean(), scale=scipy_stats.sem(diffs))
    assert d.n == 3 and (d.mean, d.low, d.high) == pytest.approx((diffs.mean(), low, high))


# ------------------------------------------------------------------------------------------------
# Verdicts on a constructed table


def _rows(label, runs, size, values, kind="train", chosen=""):
    return [
        {"strategy": label, "runs": runs, "kind": kind, "size": size, "seed": s, "chosen": chosen, "eval_accuracy": v}
        for s, v in enumerate(values)
    ]


def test_verdicts_negative_transfer_and_transfer_beyond_interval():
    rows = (
        _rows("scratch", "scratch", 8, [0.60, 0.62, 0.61])
        + _rows("full", "full", 8, [0.50, 0.52, 0.49])
        + _rows("partial", "partial", 8, [0.80, 0.83, 0.81])
        + _rows("lora", "lora", 8, [0.66, 0.67, 0.65])
        + _rows("feature_extraction", "feature_extraction", 8, [0.62, 0.63, 0.60])
        + _rows("logreg", "logreg", 8, [0.70, 0.71, 0.69], kind="logreg")
        + _rows("auto", "auto", 8, [0.64, 0.64, 0.64], chosen="feature_extraction")
        + _rows("scratch", "scratch", 64, [0.70, 0.72, 0.71])
        + _rows("full", "full", 64, [0.90, 0.91, 0.92])
    )
    v = verdicts(rows, "accuracy")
    assert v["scratch"] == "scratch" and v["frozen_reference"] == "logreg"
    best = {b["size"]: b for b in v["best"]}
    assert best[8]["strategy"] == "partial" and best[64]["strategy"] == "full"
    vs = {(t["strategy"], t["size"]): t for t in v["transfer_vs_scratch"]}
    assert vs[("partial", 8)]["beats_scratch_beyond_interval"]
    assert vs[("full", 64)]["beats_scratch_beyond_interval"]
    assert not vs[("full", 8)]["beats_scratch_beyond_interval"]
    assert vs[("full", 8)]["gain"] == pytest.approx(np.mean([0.50, 0.52, 0.49]) - np.mean([0.60, 0.62, 0.61]))
    alarms = {(n["strategy"], n["size"], n["against"]) for n in v["negative_transfer"]}
    # full at 8 is worse than scratch (beyond the interval) and than the frozen baseline;
    # lora is above scratch but below the frozen baseline; partial and full at 64 are fine;
    # feature_extraction (frozen itself) and auto (which chose it) are not judged against the frozen baseline.
    assert alarms == {("full", 8, "scratch"), ("full", 8, "logreg"), ("lora", 8, "logreg")}
    worse = next(n for n in v["negative_transfer"] if n["strategy"] == "full" and n["against"] == "scratch")
    assert worse["beyond_interval"]


def test_verdicts_lower_is_better_metric():
    rows = [
        dict(r, eval_loss=r.pop("eval_accuracy"))
        for r in _rows("scratch", "scratch", 8, [0.5, 0.52]) + _rows("full", "full", 8, [0.7, 0.72])
    ]
    v = verdicts(rows, "loss", higher_is_better=False)
    assert v["best"][0]["strategy"] == "scratch"
    assert [(n["strategy"], n["against"]) for n in v["negative_transfer"]] == [("full", "scratch")]
    assert v["transfer_vs_scratch"][0]["gain"] == pytest.approx(-0.2)


# ------------------------------------------------------------------------------------------------
# Bad input: clear errors before any run


@pytest.fixture
def study_config(tmp_path, tiny_bert_dir, toy_text_data, monkeypatch):
    monkeypatch.setenv("HF_TRANSFER_CACHE", str(tmp_path / "cache"))
    cfg = tmp_path / "study.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "recipe": "text_classification",
                "model": {"name_or_path": str(tiny_bert_dir)},
                "data": {"train": str(toy_text_data["train"]), "eval": str(toy_text_data["validation"])},
                "training": {
                    "epochs": 1,
                    "batch_size": 16,
                    "learning_rate": 0.003,
                    "warmup_ratio": 0.0,
                    "report_to": [],
                    "save_strategy": "no",
                },
            }
        )
    )
    return cfg


@pytest.mark.parametrize(
    "args, message",
    [
        (["--strategies", "ful,scratch", "--sizes", "4"], "Did you mean 'full'"),
        (["--strategies", "full", "--sizes", "4", "--baselines", "logrg"], "Did you mean 'logreg'"),
        (["--strategies", "logreg", "--sizes", "4"], "--baselines logreg"),
        (["--strategies", "full", "--sizes", "4", "--jobs", "0"], "--jobs must be at least 1"),
        (["--strategies", "full", "--sizes", "4", "--metric", "acuracy"], "Did you mean 'accuracy'"),
        (["--strategies", "full", "--sizes", "49", "--per-class"], "more than class"),
        (["--strategies", "full", "--sizes", "97"], "more than the training pool holds (96 rows"),
        (["--strategies", "full", "--sizes", "1"], "fewer than the 2 classes"),
        (["--strategies", "full", "--sizes", "4,x"], "'x' is not one"),
        (["--strategies", "full", "--sizes", "4", "--set", "fulll:training.epochs=2"], "Did you mean 'full'"),
        (["--strategies", "full", "--sizes", "4", "--set", "full:training.epoch=2"], "training.epochs"),
    ],
)
def test_bad_input_fails_before_any_run(study_config, tmp_path, capsys, args, message):
    out = tmp_path / "study-out"
    assert main(["compare", str(study_config), *args, "-o", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not (out / "cells").exists()


def test_setfit_baseline_needs_the_package(study_config, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "setfit" else real(name, *a))
    with pytest.raises(HFTransferError, match="setfit package, which is not installed"):
        plan_study(study_config, strategies="full", sizes="4", baselines="setfit", out_dir=tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_setfit_baseline_is_text_only(tmp_path, monkeypatch):
    from hf_transfer.config import TrainConfig
    from hf_transfer.study.compare import check_baselines

    cfg = TrainConfig()
    cfg.recipe = "image_classification"
    with pytest.raises(HFTransferError, match="text only"):
        check_baselines(["setfit"], cfg)


# ------------------------------------------------------------------------------------------------
# End to end on the tiny model: a study, its files, a rerun that skips, a killed cell, a new config


def _cell_mtimes(study):
    return {c.dir.name: (c.dir / "metrics.json").stat().st_mtime_ns for c in study.cells}


def test_study_end_to_end_resume_and_refusals(study_config, tmp_path):
    out = tmp_path / "study"
    kw = dict(strategies="scratch", sizes="4,8", per_class=True, seeds="0,1", out_dir=out)
    study = plan_study(study_config, **kw)
    assert len(study.cells) == 4 and not out.exists()  # planning writes nothing
    lines = []
    report = run_study(study, echo=lines.append)
    assert report["finished"] == 4 and not report["failed_cells"]
    assert len([x for x in lines if x.startswith("[")]) == 4 and "ETA" in lines[0]
    for name in ("study.csv", "study.md", "study.json", "study.png", "study.yaml"):
        assert (out / name).is_file(), name
    rows = (out / "study.csv").read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith("strategy,runs,kind,size,per_class,seed,train_size,seconds")
    # The same eval split everywhere; nested, balanced training sets per seed.
    for seed in (0, 1):
        cfgs = {
            c.size: yaml.safe_load((c.dir / "cell.yaml").read_text())
            for c in study.cells
            if c.seed == seed and c.label == "scratch"
        }
        assert set(cfgs[4]["data"]["train_indices"]) < set(cfgs[8]["data"]["train_indices"])
    metrics = [json.loads((c.dir / "metrics.json").read_text()) for c in study.cells]
    assert {m["eval_size"] for m in metrics} == {32}
    assert sorted({m["train_size"] for m in metrics}) == [8, 16]
    saved = json.loads((out / "study.json").read_text())
    assert {b["size"] for b in saved["verdicts"]["best"]} == {4, 8}
    # Every cell recorded its eval predictions (in eval order): the intervals are the paired bootstrap.
    assert {len(m["eval_predictions"]) for m in metrics} == {32}
    assert len({tuple(m["eval_references"]) for m in metrics}) == 1
    assert {b["interval"] for b in saved["verdicts"]["best"]} == {"bootstrap"}
    assert all(0 <= s["low"] <= s["mean"] <= s["high"] <= 1 for s in saved["summary"])
    assert "Verdicts" in (out / "study.md").read_text()

    # Second invocation: every cell skipped.
    before = _cell_mtimes(study)
    lines = []
    start = time.perf_counter()
    run_study(plan_study(study_config, **kw), echo=lines.append)
    assert time.perf_counter() - start < 10
    assert _cell_mtimes(study) == before
    assert lines[0].startswith("4 of 4 cells already finished")

    # A killed cell (no metrics.json, a half-written folder): only it runs again.
    killed = study.cells[2]
    (killed.dir / "metrics.json").unlink()
    (killed.dir / "study_cell.json").unlink()
    lines = []
    run_study(plan_study(study_config, **kw), echo=lines.append)
    after = _cell_mtimes(study)
    assert [k for k in after if after[k] != before[k]] == [killed.dir.name]
    assert lines[0].startswith("3 of 4 cells already finished")

    # Another config in the same folder is refused; so is a finished cell with other settings.
    with pytest.raises(ConfigError, match="different config .*training.epochs"):
        plan_study(study_config, ["training.epochs=2"], **kw)
    with pytest.raises(ConfigError, match="finished with other settings"):
        plan_study(study_config, sets=["scratch:training.learning_rate=0.01"], **kw)
    from hf_transfer.study.compare import cell_status

    changed = plan_study(study_config, sets=["scratch:training.learning_rate=0.01"], rerun_changed=True, **kw)
    assert {cell_status(c)[0] for c in changed.cells} == {"changed"}
    # More seeds and sizes with the same config extend the study.
    bigger = plan_study(study_config, **{**kw, "seeds": "0,1,2"})
    assert len(bigger.cells) == 6


def test_negative_transfer_alarm_end_to_end(tmp_path, tiny_bert_dir, toy_text_data, monkeypatch):
    """A "pretrained" checkpoint made useless (every embedding zero: all inputs look alike) against
    scratch: its frozen features score chance while scratch learns the toy task."""
    import shutil

    import torch
    from transformers import BertModel

    monkeypatch.setenv("HF_TRANSFER_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "broken-pretrained"
    model = BertModel.from_pretrained(tiny_bert_dir)
    with torch.no_grad():
        for p in model.embeddings.parameters():
            p.zero_()
    model.save_pretrained(bad)
    for f in tiny_bert_dir.iterdir():
        if not (bad / f.name).exists():
            shutil.copy(f, bad / f.name)
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "recipe": "text_classification",
                "model": {"name_or_path": str(bad)},
                "data": {"train": str(toy_text_data["train"]), "eval": str(toy_text_data["validation"])},
                "training": {
                    "epochs": 8,
                    "batch_size": 16,
                    "learning_rate": 0.003,
                    "warmup_ratio": 0.0,
                    "report_to": [],
                    "save_strategy": "no",
                },
            }
        )
    )
    study = plan_study(
        cfg,
        strategies="feature_extraction,scratch",
        sizes="48",
        per_class=True,
        seeds="0,1",
        out_dir=tmp_path / "study",
    )
    report = run_study(study, echo=lambda _: None)
    alarms = report["verdicts"]["negative_transfer"]
    assert [(a["strategy"], a["against"]) for a in alarms] == [("feature_extraction", "scratch")]
    assert alarms[0]["mean"] == pytest.approx(0.5) and alarms[0]["reference_mean"] > 0.75
    assert "NEGATIVE TRANSFER" in (tmp_path / "study" / "study.md").read_text()


@pytest.mark.slow
def test_worker_processes_and_baselines(study_config, tmp_path, capsys):
    """--jobs 2: cells in worker processes; logreg and setfit baselines on the same splits."""
    out = tmp_path / "study"
    rc = main(
        [
            "compare",
            str(study_config),
            "--strategies",
            "feature_extraction",
            "--sizes",
            "4",
            "--per-class",
            "--seeds",
            "0,1",
            "--baselines",
            "logreg,setfit",
            "--set",
            "setfit:num_iterations=2",
            "--jobs",
            "2",
            "-o",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert rc == 0, printed
    rows = (out / "study.csv").read_text().splitlines()
    assert len(rows) == 7
    for cell in (out / "cells").iterdir():
        m = json.loads((cell / "metrics.json").read_text())
        assert m["train_size"] == 8 and m["eval_size"] == 32, cell.name
    assert "| logreg |" in printed and "| setfit |" in printed


def test_ctrl_c_keeps_finished_cells_and_the_next_run_resumes(study_config, tmp_path, monkeypatch):
    from hf_transfer.study import cells as cells_mod

    out = tmp_path / "study"
    kw = dict(strategies="scratch", sizes="4", per_class=True, seeds="0,1", out_dir=out)
    real = cells_mod.run_cell
    calls = []

    def interrupted_second(cell_dir):
        calls.append(cell_dir)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(cell_dir)

    monkeypatch.setattr(cells_mod, "run_cell", interrupted_second)
    lines = []
    with pytest.raises(KeyboardInterrupt):
        run_study(plan_study(study_config, **kw), echo=lines.append)
    assert "Interrupted" in lines[-1]
    assert (out / "study.csv").read_text().count("\n") == 2  # header + the finished cell
    monkeypatch.setattr(cells_mod, "run_cell", real)
    lines = []
    report = run_study(plan_study(study_config, **kw), echo=lines.append)
    assert lines[0].startswith("1 of 2 cells already finished") and report["finished"] == 2


def test_interrupted_cell_with_a_checkpoint_resumes_from_it(study_config, tmp_path):
    out = tmp_path / "study"
    kw = dict(strategies="scratch", sizes="4", per_class=True, seeds="0", out_dir=out)
    study = plan_study(study_config, ["training.save_strategy=epoch", "training.epochs=2"], **kw)
    run_study(study, echo=lambda _: None)
    cell = study.cells[0]
    assert any((cell.dir / "checkpoints").iterdir())
    (cell.dir / "metrics.json").unlink()  # killed after its last checkpoint, before the end
    lines = []
    report = run_study(
        plan_study(study_config, ["training.save_strategy=epoch", "training.epochs=2"], **kw), echo=lines.append
    )
    assert report["finished"] == 1
    log = (cell.dir / "cell.log").read_text()
    assert "resuming from its latest checkpoint" in log and "Resumed from" in log
    assert yaml.safe_load((cell.dir / "config.yaml").read_text())["training"]["resume_from_checkpoint"] == "latest"


def test_ctrl_c_while_a_cell_tokenizes_stops_the_study(study_config, tmp_path, monkeypatch, capsys):
    """Ctrl-C pressed as the first cell starts tokenizing. The interrupt arrives in whatever runs
    next: datasets hashing the tokenize closure (its slowest step, under a bare `except:` that
    swallowed the interrupt), else the tokenizer itself. Either way the study stops: exit 130,
    and the message that the same command resumes."""
    import datasets
    from datasets import fingerprint
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

    interrupt = {"pending": False, "delivered": 0}

    def deliver():
        if interrupt["pending"]:
            interrupt["pending"] = False
            interrupt["delivered"] += 1
            raise KeyboardInterrupt

    real_map, real_update, real_call = datasets.Dataset.map, fingerprint.Hasher.update, PreTrainedTokenizerBase.__call__

    def map_(self, function=None, *args, **kwargs):
        if getattr(function, "__name__", "") == "tok" and not interrupt["delivered"]:
            interrupt["pending"] = True  # the key is pressed now
        return real_map(self, function, *args, **kwargs)

    def update(self, value):
        if callable(value) and not isinstance(value, type):
            deliver()
        return real_update(self, value)

    def call(self, *args, **kwargs):
        deliver()
        return real_call(self, *args, **kwargs)

    monkeypatch.setattr(datasets.Dataset, "map", map_)
    monkeypatch.setattr(fingerprint.Hasher, "update", update)
    monkeypatch.setattr(PreTrainedTokenizerBase, "__call__", call)
    out = tmp_path / "study"
    rc = main(
        [
            "compare",
            str(study_config),
            "--strategies",
            "scratch",
            "--sizes",
            "4",
            "--per-class",
            "--seeds",
            "0,1",
            "-o",
            str(out),
        ]
    )
    printed = capsys.readouterr()
    assert interrupt["delivered"] == 1
    assert rc == 130, printed.out
    assert (
        "Interrupted. Finished cells are kept" in printed.out and "run the same command again to resume" in printed.out
    )
    assert not list((out / "cells").glob("*/metrics.json"))  # no cell ran to the end after the interrupt


def test_tokenizing_is_fingerprinted_without_hashing_the_tokenizer(tiny_bert_dir, monkeypatch):
    """The tokenize step names its result itself (same data and settings, same fingerprint), so
    datasets never hashes the closure or the tokenizer."""
    import datasets
    from datasets import fingerprint
    from transformers import AutoTokenizer

    from hf_transfer.data.text import tokenize_split

    hashed = []
    real_update = fingerprint.Hasher.update
    monkeypatch.setattr(
        fingerprint.Hasher,
        "update",
        lambda self, value: (hashed.append(type(value).__name__), real_update(self, value))[1],
    )
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    ds = datasets.Dataset.from_dict({"text": ["a good film", "a bad film"], "labels": [1, 0]})
    a, b = tokenize_split(ds, tok, "text", 16), tokenize_split(ds, tok, "text", 16)
    assert a._fingerprint == b._fingerprint != tokenize_split(ds, tok, "text", 8)._fingerprint
    assert (
        list(a["input_ids"]) == list(b["input_ids"]) and "function" not in hashed and type(tok).__name__ not in hashed
    )


def test_a_resumed_cell_counts_the_seconds_of_the_attempt_it_resumed(study_config, tmp_path):
    """s/run of a resumed cell is the whole training time: the interrupted attempt's seconds up to
    its checkpoint (kept in the checkpoint's trainer state) plus the resumed attempt's."""
    out = tmp_path / "study"
    overrides = ["training.save_strategy=epoch", "training.epochs=2"]
    kw = dict(strategies="scratch", sizes="4", per_class=True, seeds="0", out_dir=out)
    study = plan_study(study_config, overrides, **kw)
    run_study(study, echo=lambda _: None)
    cell = study.cells[0]
    (cell.dir / "metrics.json").unlink()  # killed after its epoch-1 checkpoint
    state_file = next((cell.dir / "checkpoints").glob("step_*")) / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["train_runtime"] = 1000.0  # the interrupted attempt had trained 1000 s when it saved the checkpoint
    state_file.write_text(json.dumps(state))
    report = run_study(plan_study(study_config, overrides, **kw), echo=lambda _: None)
    timing = json.loads((cell.dir / "study_cell.json").read_text())
    assert timing["seconds"] > 1000
    assert timing["seconds"] == pytest.approx(1000 + timing["seconds_this_attempt"], abs=0.01)
    assert timing["seconds_before_resume"] == pytest.approx(1000.0)
    assert report["summary"][0]["seconds_mean"] == pytest.approx(timing["seconds"])
    row = next(r for r in (out / "study.csv").read_text().splitlines()[1:])
    assert float(row.split(",")[7]) == pytest.approx(timing["seconds"])


def test_a_reordered_data_file_is_refused_and_study_md_checks_the_eval_split(
    tmp_path, tiny_bert_dir, toy_text_data, monkeypatch
):
    """The training file rewritten with its rows in another order (same class counts) and a new
    seed: the eval split carved from it and the rows behind data.train_indices are not the
    ones the finished cells used. Planning refuses it; study.md claims one eval split only when
    every cell recorded the data it ran on."""
    import shutil

    from hf_transfer.study.report import write_report

    monkeypatch.setenv("HF_TRANSFER_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "train.csv"
    shutil.copy(toy_text_data["train"], data)
    cfg = tmp_path / "carved.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "recipe": "text_classification",
                "model": {"name_or_path": str(tiny_bert_dir)},
                "data": {"train": str(data), "eval_fraction": 0.25},
                "training": {
                    "epochs": 1,
                    "batch_size": 16,
                    "learning_rate": 0.003,
                    "warmup_ratio": 0.0,
                    "report_to": [],
                    "save_strategy": "no",
                },
            }
        )
    )
    out = tmp_path / "study"
    study = plan_study(cfg, strategies="scratch", sizes="4", per_class=True, seeds="0", out_dir=out)
    run_study(study, echo=lambda _: None)
    md = (out / "study.md").read_text()
    assert f"the same for every cell (data fingerprint {study.pool['fingerprint']})" in md

    header, *rows = data.read_text().splitlines()
    data.write_text("\n".join([header, *reversed(rows)]) + "\n")  # same rows, same counts, other order
    with pytest.raises(
        ConfigError,
        match=r"The data changed since .* same sizes and class counts, but hold other "
        r"rows, or the same rows in another order \(data fingerprint \w+ then, \w+ now\)",
    ):
        plan_study(cfg, strategies="scratch", sizes="4", per_class=True, seeds="0,1", out_dir=out)

    # A cell that ran on other data (a folder copied from another study, say) is named, not hidden.
    spec_path = study.cells[0].dir / "cell.json"
    spec = json.loads(spec_path.read_text())
    spec_path.write_text(json.dumps({**spec, "data": "0123456789abcdef"}))
    write_report(study)
    md = (out / "study.md").read_text()
    assert "the same for every cell" not in md and "**1 cell(s) ran on other data**" in md


# ------------------------------------------------------------------------------------------------
# Paired bootstrap over eval examples and seeds


def _outcome(refs, correct: int, rng):
    """Predictions with exactly `correct` right answers on `refs` (3 classes)."""
    from hf_transfer.study.stats import Outcome

    preds = refs.copy()
    wrong = rng.choice(len(refs), size=len(refs) - correct, replace=False)
    preds[wrong] = (refs[wrong] + 1 + rng.integers(0, 2, size=len(wrong))) % 3
    return Outcome(preds, refs)


def _outcome_rows(label, runs, size, corrects, refs, rng):
    return [
        {
            "strategy": label,
            "runs": runs,
            "kind": "train",
            "size": size,
            "seed": s,
            "chosen": "",
            "eval_accuracy": c / len(refs),
            "outcome": _outcome(refs, c, rng),
        }
        for s, c in enumerate(corrects)
    ]


def test_two_seeds_far_apart_are_not_called_tied_and_intervals_stay_in_0_1():
    """feature_extraction 0.796 against scratch 0.298 on 240 eval examples, 2 seeds: the
    t-interval over seeds was [0.37, 1.22] and called them tied. The paired bootstrap over eval
    examples and seeds separates them, every interval stays in [0, 1], and the report says the
    seeds are too few to judge."""
    from types import SimpleNamespace

    from hf_transfer.study.report import _interval_note, markdown, summaries

    rng = np.random.default_rng(0)
    refs = rng.integers(0, 3, size=240)
    rows = _outcome_rows("feature_extraction", "feature_extraction", 4, [183, 199], refs, rng) + _outcome_rows(
        "scratch", "scratch", 4, [60, 83], refs, rng
    )
    v = verdicts(rows, "accuracy")
    best = v["best"][0]
    assert best["strategy"] == "feature_extraction" and best["tied_within_interval"] == []
    assert best["interval"] == "bootstrap" and 0 <= best["low"] < best["mean"] < best["high"] <= 1
    t = v["transfer_vs_scratch"][0]
    assert t["interval"] == "bootstrap" and t["beats_scratch_beyond_interval"] and t["too_few_seeds"]
    assert t["gain"] == pytest.approx((183 + 199 - 60 - 83) / 480)
    for st in summaries(rows, "eval_accuracy").values():
        assert 0 <= st.low <= st.mean <= st.high <= 1
    study = SimpleNamespace(
        metric="accuracy",
        labels=["feature_extraction", "scratch"],
        baselines=[],
        sizes=[4],
        per_class=True,
        seeds=[0, 1],
        cells=[],
        command="hf-transfer compare ...",
        record={"config_file": "x.yaml"},
        pool={"train_pool": 96, "train_pool_per_class": {"a": 48, "b": 48}, "eval_size": 240},
    )
    md = markdown(study, rows, v, summaries(rows, "eval_accuracy"))
    assert "**Only 2 seeds: too few to judge**" in md and "beats scratch beyond the interval" in md
    assert "paired bootstrap over 240 eval examples and 2 seed(s)" in md
    assert "tied" not in md and "no clear difference" not in md
    assert "paired bootstrap over the 240 eval examples" in _interval_note(summaries(rows, "eval_accuracy"))


def test_bootstrap_matches_the_metrics_and_pairs_by_example():
    """The bootstrap's point values are the run's own metrics (macro-F1 as scikit-learn computes it);
    a constant offset between two strategies on the same examples gives a narrow paired interval."""
    from hf_transfer.metrics.classification import compute_classification_metrics
    from hf_transfer.study.stats import Outcome, bootstrap_difference, bootstrap_summary, summarize

    rng = np.random.default_rng(1)
    refs = rng.integers(0, 3, size=200)
    a = {s: _outcome(refs, c, rng) for s, c in enumerate([150, 160, 155])}
    for metric in ("accuracy", "f1", "precision", "recall"):
        s = bootstrap_summary(metric, a)
        expected = [compute_classification_metrics(o.predictions, refs, ["x", "y", "z"])[metric] for o in a.values()]
        assert s.mean == pytest.approx(np.mean(expected)) and s.sd == pytest.approx(np.std(expected, ddof=1))
        assert 0 <= s.low < s.mean < s.high <= 1 and s.n == 3 and not s.few_seeds
    perfect = bootstrap_summary("accuracy", {0: Outcome(refs, refs)})
    assert (perfect.low, perfect.mean, perfect.high) == (1.0, 1.0, 1.0)
    # b is a with 10 more mistakes per seed on the same examples: the difference is sure.
    b = {}
    for s, o in a.items():
        preds = o.predictions.copy()
        right = np.flatnonzero(preds == refs)[:10]
        preds[right] = (refs[right] + 1) % 3
        b[s] = Outcome(preds, refs)
    d = bootstrap_difference("accuracy", a, b)
    assert d.mean == pytest.approx(0.05) and 0 < d.low <= 0.05 <= d.high
    # Seeds only, no predictions: the t-interval, cut to the metric's range.
    cut = summarize([0.9, 1.0], bounds=(0.0, 1.0))
    assert cut.high == 1.0 and cut.low >= 0.0


def test_an_interrupt_that_a_library_swallows_still_stops_the_study(study_config, tmp_path, monkeypatch, request):
    """Ctrl-C landing where Python or a library drops KeyboardInterrupt (a bare `except:`, a
    finalizer or weakref callback: "Exception ignored in ..."): the cell goes on, but the study
    stops once it returns, keeps it, and says that the same command resumes."""
    import os
    import signal

    # A shell that starts the tests in the background (`cmd &`, CI runners) hands them SIGINT
    # ignored, and an ignored SIGINT stays ignored by design: start from Python's usual handler.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, inherited))

    from hf_transfer.study import cells as cells_mod

    real, calls = cells_mod.run_cell, []

    def swallowing(cell_dir):
        calls.append(cell_dir)
        if len(calls) == 1:
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)
            except BaseException:  # noqa: B036  (what the library does)
                pass
        return real(cell_dir)

    monkeypatch.setattr(cells_mod, "run_cell", swallowing)
    out = tmp_path / "study"
    lines = []
    with pytest.raises(KeyboardInterrupt):
        run_study(
            plan_study(study_config, strategies="scratch", sizes="4", per_class=True, seeds="0,1", out_dir=out),
            echo=lines.append,
        )
    assert len(calls) == 1 and "run the same command again to resume" in lines[-1]
    assert len(list((out / "cells").glob("*/metrics.json"))) == 1  # the cell that went on is kept
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the usual handler is back


def test_content_fingerprint_follows_rows_values_and_order_not_the_file():
    import datasets

    from hf_transfer.data.fingerprints import content_fingerprint

    ds = datasets.Dataset.from_dict(
        {"text": ["a", "b", "c"], "labels": [0, 1, 0], "image": [{"bytes": b"\x89PNG1", "path": None}] * 3}
    )
    cols = ["text", "image", "labels"]
    same = datasets.Dataset.from_dict(ds.to_dict())  # another dataset object, the same rows
    assert (
        content_fingerprint(same, cols)
        == content_fingerprint(ds, cols)
        == content_fingerprint(ds.select([0, 1, 2]), cols)
    )
    assert content_fingerprint(ds.select([2, 1, 0]), cols) != content_fingerprint(ds, cols)  # same counts, other order
    edited = ds.to_dict()
    edited["image"][1] = {"bytes": b"\x89PNG2", "path": None}
    assert content_fingerprint(datasets.Dataset.from_dict(edited), cols) != content_fingerprint(ds, cols)
    assert content_fingerprint(ds, ["text", "labels", "not_a_column"]) == content_fingerprint(ds, ["text", "labels"])
