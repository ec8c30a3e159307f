"""`hf-transfer compare --backend ray`: the same study.csv metrics as the local backend, the backend
recorded per cell, clear errors, and a study whose Ray worker was killed completes on the next run
without redoing finished cells. The Ray tests start a local Ray instance of 2 CPUs (slow)."""

from __future__ import annotations

import csv
import json
import os
import signal
import threading
import time

import pytest
import yaml

from hf_transfer.errors import ConfigError
from hf_transfer.study.compare import plan_study, run_study

ray = pytest.importorskip("ray")

METRICS = ("eval_accuracy", "eval_f1", "eval_loss")


@pytest.fixture
def study_config(tmp_path, tiny_bert_dir, toy_text_data, monkeypatch):
    monkeypatch.setenv("HF_TRANSFER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
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


def _rows(out):
    with open(out / "study.csv") as f:
        return {(r["strategy"], r["size"], r["seed"]): r for r in csv.DictReader(f)}


def _mtimes(study):
    return {
        c.dir.name: (c.dir / "metrics.json").stat().st_mtime_ns
        for c in study.cells
        if (c.dir / "metrics.json").is_file()
    }


def test_ray_settings_are_checked_first(study_config, tmp_path, capsys, monkeypatch):
    from hf_transfer.cli import main

    base = [
        "compare",
        str(study_config),
        "--strategies",
        "scratch",
        "--sizes",
        "4",
        "--per-class",
        "-o",
        str(tmp_path / "s"),
    ]
    assert main(base + ["--address", "auto"]) != 0
    assert "--address, --cpus-per-cell and --gpus-per-cell apply to --backend ray only" in capsys.readouterr().err
    assert main(base + ["--backend", "ray", "--cpus-per-cell", "0"]) != 0
    assert "--cpus-per-cell must be positive, got 0.0" in capsys.readouterr().err
    monkeypatch.setitem(__import__("sys").modules, "ray", None)
    assert main(base + ["--backend", "ray"]) != 0
    assert (
        "--backend ray needs Ray, which is not installed: pip install 'hf-transfer-toolkit[ray]'"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "s").exists()
    with pytest.raises(ConfigError, match="--backend must be one of local, ray"):
        run_study(
            plan_study(study_config, strategies="scratch", sizes="4", per_class=True, out_dir=tmp_path / "t"),
            backend="slurm",
        )


@pytest.mark.slow
def test_ray_and_local_backends_write_the_same_study(study_config, tmp_path):
    kw = dict(strategies="scratch,full", sizes="4", per_class=True, seeds="0,1", baselines="logreg")
    local = run_study(plan_study(study_config, out_dir=tmp_path / "local", **kw), echo=lambda s: None)
    lines = []
    on_ray = run_study(
        plan_study(study_config, out_dir=tmp_path / "ray", **kw),
        echo=lines.append,
        backend="ray",
        ray_init={"num_cpus": 2},
    )
    assert local["finished"] == on_ray["finished"] == 6 and not on_ray["failed_cells"]
    assert lines[0].startswith("Ray: 6 cell(s) as tasks of 1 CPU / 0 GPU each on a cluster of 2 CPU(s)")
    a, b = _rows(tmp_path / "local"), _rows(tmp_path / "ray")
    assert a.keys() == b.keys() and len(a) == 6
    columns = [k for k in next(iter(a.values())) if k.startswith(("eval_", "test_"))]
    assert set(METRICS) <= set(columns)
    for key in a:
        for m in columns:
            if a[key][m] == "" or b[key][m] == "":
                assert a[key][m] == b[key][m], (key, m)  # a metric this kind of cell does not write
                continue
            assert float(a[key][m]) == pytest.approx(float(b[key][m]), abs=1e-6), (key, m)
        assert a[key]["backend"] == "local" and b[key]["backend"] == "ray"
    for c in (tmp_path / "ray" / "cells").iterdir():
        assert json.loads((c / "study_cell.json").read_text())["backend"] == "ray"
    assert "Backends: ray 6 cells on 1 host" in (tmp_path / "ray" / "study.md").read_text()
    assert "Backends: local 6 cells on 1 host" in (tmp_path / "local" / "study.md").read_text()

    # Resume through the other backend: nothing reruns, the report is the same.
    before = _mtimes(plan_study(study_config, out_dir=tmp_path / "ray", **kw))
    lines = []
    run_study(plan_study(study_config, out_dir=tmp_path / "ray", **kw), echo=lines.append)
    assert lines[0].startswith("6 of 6 cells already finished")
    assert _mtimes(plan_study(study_config, out_dir=tmp_path / "ray", **kw)) == before


def _kill_a_ray_worker_mid_study(out, killed: list, stop: threading.Event) -> None:
    """Once a cell has finished, SIGKILL the Ray worker process running another cell."""
    import psutil

    while not stop.is_set() and not killed:
        finished = list(out.glob("cells/*/metrics.json"))
        if finished:
            for proc in psutil.process_iter(["pid", "cmdline"]):
                cmd = proc.info["cmdline"] or []
                if "hf_transfer.study.cells" in cmd and str(out) in " ".join(cmd):
                    cell_dir = cmd[-1]
                    if os.path.isfile(os.path.join(cell_dir, "metrics.json")):
                        continue
                    worker = proc.parent()
                    if worker is None or "ray" not in " ".join(worker.cmdline()).lower():
                        continue
                    killed.append((os.path.basename(cell_dir), worker.pid, proc.pid))
                    os.kill(worker.pid, signal.SIGKILL)
                    return
        time.sleep(0.05)


@pytest.mark.slow
def test_killed_ray_worker_then_rerun_completes_without_redoing_finished_cells(study_config, tmp_path):
    import psutil

    out = tmp_path / "study"
    kw = dict(strategies="scratch", sizes="4,8", per_class=True, seeds="0,1,2", out_dir=out)
    killed: list = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_a_ray_worker_mid_study, args=(out, killed, stop), daemon=True)
    killer.start()
    lines = []
    try:
        report = run_study(
            plan_study(study_config, **kw), echo=lines.append, backend="ray", ray_init={"num_cpus": 2}, ray_retries=0
        )
    finally:
        stop.set()
        killer.join()
    assert killed, "no cell was caught running"
    name, worker_pid, cell_pid = killed[0]
    assert not psutil.pid_exists(cell_pid) or psutil.Process(cell_pid).status() == psutil.STATUS_ZOMBIE
    assert list(report["failed_cells"]) == [name]
    assert "the Ray worker running it died" in report["failed_cells"][name]
    assert any("FAILED (the Ray worker running it died" in x for x in lines)
    study = plan_study(study_config, **kw)
    before = _mtimes(study)
    assert len(before) == 5 and name not in before

    lines = []
    report = run_study(study, echo=lines.append, backend="ray", ray_init={"num_cpus": 2})
    assert report["finished"] == 6 and not report["failed_cells"]
    assert lines[0].startswith("5 of 6 cells already finished")
    after = _mtimes(study)
    assert [k for k in after if after.get(k) != before.get(k)] == [name]
    assert len(_rows(out)) == 6
