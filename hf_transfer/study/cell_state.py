"""The cells of a study on disk: what a cell is, whether it already ran, and its result.

A study resumes by looking at its folder: a cell whose `metrics.json` exists and whose planned
`cell.yaml` matches the plan is finished and skipped; a started one is rerun (from its checkpoint);
one finished with other settings is `changed`. Planning (`study.planning`) and running
(`study.runner`) both ask these questions, so they live here, below both.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hf_transfer.config import TrainConfig, config_from_dict, config_to_dict, save_config
from hf_transfer.errors import HFTransferError
from hf_transfer.run_folder import RunFolder
from hf_transfer.study import cells as cells_mod

STUDY_FILE = "study.yaml"
#: Keys the study sets per cell; the rest of the config is the study's identity.
CELL_KEYS = (
    ("output_dir",),
    ("data", "samples_per_class"),
    ("data", "max_train_samples"),
    ("data", "train_indices"),
    ("training", "seed"),
    ("training", "record_eval_predictions"),
)
#: Keys that may differ between a planned cell and the config its run folder saved (cells planned
#: before the study recorded eval predictions are still finished).
RUN_KEYS = (("output_dir",), ("training", "resume_from_checkpoint"), ("training", "record_eval_predictions"))


@dataclass
class Cell:
    """One run of a study."""

    kind: str  # "train" | "logreg" | "setfit"
    label: str  # entry of --strategies (or the baseline's name)
    strategy: str  # strategy.name that runs ("logreg" / "setfit" for baselines)
    size: int
    seed: int
    dir: Path
    cfg: TrainConfig
    settings: dict = field(default_factory=dict)
    data_fingerprint: str | None = None  # the pool and eval split it was planned on (`planning._data_fingerprint`)

    @property
    def spec(self) -> dict:
        return {
            "kind": self.kind,
            "label": self.label,
            "strategy": self.strategy,
            "size": self.size,
            "seed": self.seed,
            "settings": self.settings,
            "data": self.data_fingerprint,
        }


@dataclass
class Study:
    """A planned study: its folder, its cells and what they share."""

    out_dir: Path
    base_cfg: TrainConfig
    labels: list[str]
    baselines: list[str]
    sizes: list[int]
    seeds: list[int]
    per_class: bool
    metric: str
    label_names: list[str]
    pool: dict
    cells: list[Cell]
    command: str
    record: dict

    @property
    def size_unit(self) -> str:
        return "/class" if self.per_class else ""


# ------------------------------------------------------------------------------------------------
# Config comparison


def drop_keys(d: dict, keys) -> dict:
    """A deep copy of `d` without the nested `keys` (tuples of path parts)."""
    d = copy.deepcopy(d)
    for path in keys:
        node = d
        for k in path[:-1]:
            node = node.get(k, {})
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return d


def normalized_config(raw: dict, drop=()) -> dict:
    """A config dict through the current schema (defaults filled in), minus `drop` keys."""
    return drop_keys(config_to_dict(config_from_dict(copy.deepcopy(raw), "a saved config")), drop)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def config_differences(a: dict, b: dict, limit: int = 6) -> list[str]:
    """`key: a -> b` for each leaf that differs (long values shortened)."""
    fa, fb = _flat(a), _flat(b)
    out = []
    for k in sorted(set(fa) | set(fb)):
        if fa.get(k) != fb.get(k):
            va, vb = (repr(v)[:60] for v in (fa.get(k), fb.get(k)))
            out.append(f"{k}: {va} -> {vb}")
    return out[:limit] + ([f"... {len(out) - limit} more"] if len(out) > limit else [])


def write_study_record(study: Study) -> None:
    """`study.yaml`: the plan and config, and this command appended to its history (atomic replace)."""
    study.out_dir.mkdir(parents=True, exist_ok=True)
    path = study.out_dir / STUDY_FILE
    history = []
    if path.is_file():
        history = (yaml.safe_load(path.read_text()) or {}).get("history", [])
    record = dict(study.record)
    record["history"] = history + [{"command": study.command, "at": time.strftime("%Y-%m-%dT%H:%M:%S")}]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(record, sort_keys=False, width=120))
    tmp.replace(path)


# ------------------------------------------------------------------------------------------------
# Cell state


def cell_status(cell: Cell) -> tuple[str, list[str]]:
    """`finished`, `changed` (finished with other settings), `partial` (started, unfinished) or `new`."""
    d = cell.dir
    if not d.is_dir():
        return "new", []
    # What the study planned for this cell (cell.yaml), not the run's own config.yaml: a run may
    # adjust its saved config (a max_length clamped to the model's limit, absolute paths).
    saved = d / cells_mod.CELL_CONFIG
    if not RunFolder(d).metrics_path.is_file():
        return ("partial", []) if any(d.iterdir()) else ("new", [])
    if not saved.is_file():
        return "changed", [f"{cells_mod.CELL_CONFIG} missing"]
    try:
        old = normalized_config(yaml.safe_load(saved.read_text()) or {}, RUN_KEYS)
    except HFTransferError as e:
        return "changed", [f"its config.yaml no longer loads: {e}"]
    new = drop_keys(config_to_dict(cell.cfg), RUN_KEYS)
    diff = config_differences(old, new)
    spec_path = d / cells_mod.CELL_SPEC
    if spec_path.is_file():
        old_spec = json.loads(spec_path.read_text())
        if old_spec.get("settings", {}) != cell.settings:
            diff.append(f"settings: {old_spec.get('settings')} -> {cell.settings}")
        if old_spec.get("data") and cell.data_fingerprint and old_spec["data"] != cell.data_fingerprint:
            diff.append(f"data fingerprint: {old_spec['data']} -> {cell.data_fingerprint}")
    return ("changed", diff) if diff else ("finished", [])


def prepare_cell(cell: Cell, label_names: list[str]) -> None:
    """Before a cell runs: drop a result of other settings, then write `cell.json` and the planned `cell.yaml`."""
    status, _ = cell_status(cell)
    if status == "changed":  # --rerun-changed: the old result no longer matches the plan
        shutil.rmtree(cell.dir)
    planned = cell.dir / cells_mod.CELL_CONFIG
    if status == "partial" and planned.is_file():
        try:
            old = normalized_config(yaml.safe_load(planned.read_text()) or {}, RUN_KEYS)
        except HFTransferError:
            old = None
        if old != drop_keys(config_to_dict(cell.cfg), RUN_KEYS):
            shutil.rmtree(cell.dir)  # an unfinished run of other settings: nothing to keep
    cell.dir.mkdir(parents=True, exist_ok=True)
    (cell.dir / cells_mod.CELL_SPEC).write_text(json.dumps({**cell.spec, "labels": label_names}, indent=2))
    save_config(cell.cfg, cell.dir / cells_mod.CELL_CONFIG)


def cell_data_fingerprint(cell: Cell) -> str | None:
    """The data fingerprint the cell ran on (its `cell.json`); None for cells planned before it was recorded."""
    path = cell.dir / cells_mod.CELL_SPEC
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("data")


def cell_result(cell: Cell) -> dict[str, Any] | None:
    """The finished cell's metrics plus `seconds`, or None."""
    run = RunFolder(cell.dir)
    if not run.metrics_path.is_file():
        return None
    metrics = dict(run.metrics.raw)
    timing = cell.dir / cells_mod.CELL_RESULT
    seconds = None
    record = json.loads(timing.read_text()) if timing.is_file() else {}
    seconds = record.get("seconds")
    if seconds is None:
        seconds = metrics.get("train_runtime")
    metrics["seconds"] = seconds
    metrics["backend"] = record.get("backend") or "local"  # cells run before backends were recorded: local
    metrics["host"] = record.get("host") or ""
    return metrics
