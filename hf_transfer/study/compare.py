"""`hf-transfer compare`: strategies x training-set sizes x seeds on the user's own data.

    hf-transfer compare my_run.yaml --strategies full,feature_extraction,scratch --sizes 8,64 \
        --per-class --seeds 0,1,2 --baselines logreg --jobs 2 -o studies/mine

Planning, all before any run: the training pool (train rows after `data.filter` and the eval
carve-out, carved with the config's data seed, so the eval split is the same for every cell) is
loaded once; for each seed, nested stratified subsamples of every size are drawn
(`study.sampling`) and written into each cell's config as `data.train_indices`. A cell is one
(strategy or baseline, size, seed): its own run folder under `cells/`. A finished cell (its
`metrics.json` present, its config the planned one) is skipped on the next invocation; an
interrupted one is rerun, from its latest checkpoint when it saved one. The folder's `study.yaml`
records the command and the config; a different config is refused.

Per-strategy settings: `--set LABEL:key=value` applies to the cells of one entry of
`--strategies`; an entry that is not a strategy name is a variant when `--set` gives it a
`strategy.name` (`--strategies full,full+llrd --set full+llrd:strategy.name=full
--set full+llrd:strategy.layer_lr_decay=0.8`).
"""

from __future__ import annotations

import copy
import difflib
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from hf_transfer.config import (
    TrainConfig, check_config, config_from_dict, config_to_dict, load_config, save_config,
)
from hf_transfer.config_parsing import parse_override, set_dotted
from hf_transfer.errors import ConfigError, HFTransferError
from hf_transfer.study import cells as cells_mod
from hf_transfer.study.cells import BASELINES
from hf_transfer.study.sampling import check_sizes, nested_subsamples

STUDY_FILE = "study.yaml"
#: Keys the study sets per cell; the rest of the config is the study's identity.
_CELL_KEYS = (("output_dir",), ("data", "samples_per_class"), ("data", "max_train_samples"),
              ("data", "train_indices"), ("training", "seed"))
#: Keys that may differ between a planned cell and the config its run folder saved.
_RUN_KEYS = (("output_dir",), ("training", "resume_from_checkpoint"))
LOWER_IS_BETTER = ("loss", "wer", "cer")
#: Eval metrics every classification run reports (`eval_<name>` in metrics.json).
CLASSIFICATION_METRICS = ("accuracy", "f1", "precision", "recall", "loss")


@dataclass
class Cell:
    """One run of a study."""

    kind: str            # "train" | "logreg" | "setfit"
    label: str           # entry of --strategies (or the baseline's name)
    strategy: str        # strategy.name that runs ("logreg" / "setfit" for baselines)
    size: int
    seed: int
    dir: Path
    cfg: TrainConfig
    settings: dict = field(default_factory=dict)

    @property
    def spec(self) -> dict:
        return {"kind": self.kind, "label": self.label, "strategy": self.strategy, "size": self.size,
                "seed": self.seed, "settings": self.settings}


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
# Parsing and checks (every one runs before any cell starts)


def parse_int_list(text: str | list, option: str) -> list[int]:
    """`8,64,512` -> [8, 64, 512]; duplicates removed, order kept."""
    items = list(text) if isinstance(text, (list, tuple)) else [t for t in str(text).replace(" ", "").split(",") if t]
    if not items:
        raise ConfigError(f"{option} is empty: give comma-separated integers, e.g. {option} 8,64.")
    out: list[int] = []
    for t in items:
        try:
            v = int(t)
        except (TypeError, ValueError):
            raise ConfigError(f"{option} takes comma-separated integers; {t!r} is not one.") from None
        if v not in out:
            out.append(v)
    return out


def parse_name_list(text: str | list, option: str) -> list[str]:
    items = list(text) if isinstance(text, (list, tuple)) else [t.strip() for t in str(text).split(",")]
    out = []
    for t in items:
        if t and t not in out:
            out.append(t)
    if not out and option == "--strategies":
        raise ConfigError("--strategies is empty: name at least one strategy, e.g. --strategies full,scratch.")
    return out


def _did_you_mean(value: str, choices) -> str:
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""


def parse_sets(items: list[str], labels: list[str], baselines: list[str]) -> dict[str, list[str]]:
    """`LABEL:key=value` items grouped by label."""
    out: dict[str, list[str]] = {}
    known = labels + baselines
    for item in items or []:
        label, sep, override = item.partition(":")
        if not sep or "=" not in override:
            raise ConfigError(f"--set {item!r} is not LABEL:key=value (e.g. --set scratch:training.learning_rate=3e-4).")
        if label not in known:
            raise ConfigError(f"--set {item!r} names '{label}', which is not in --strategies or --baselines "
                              f"({', '.join(known)}).{_did_you_mean(label, known)}")
        parse_override(override)
        out.setdefault(label, []).append(override)
    return out


def check_strategy_labels(labels: list[str], sets: dict[str, list[str]]) -> dict[str, str]:
    """The strategy each entry of --strategies runs; unknown names are errors with a did-you-mean."""
    from hf_transfer.strategies.base import available_strategies

    known = available_strategies()
    out = {}
    for label in labels:
        named = [parse_override(o)[1] for o in sets.get(label, []) if parse_override(o)[0] == "strategy.name"]
        name = str(named[-1]) if named else label
        if name not in known:
            hint = (f" '{label}' is a baseline: pass it with --baselines {label}." if label in BASELINES
                    else _did_you_mean(name, known))
            raise ConfigError(f"Unknown strategy '{name}' in --strategies.{hint} Available: {', '.join(known)}"
                              "; a variant needs --set LABEL:strategy.name=NAME.")
        out[label] = name
    return out


def check_baselines(baselines: list[str], cfg: TrainConfig) -> None:
    for b in baselines:
        if b not in BASELINES:
            raise ConfigError(f"Unknown baseline '{b}' in --baselines.{_did_you_mean(b, BASELINES)} "
                              f"Available: {', '.join(BASELINES)}.")
        cells_mod.check_baseline_available(b, cfg.recipe, bool(cfg.data.text_pair_column))


# ------------------------------------------------------------------------------------------------
# Configs


def _drop(d: dict, keys) -> dict:
    d = copy.deepcopy(d)
    for path in keys:
        node = d
        for k in path[:-1]:
            node = node.get(k, {})
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return d


def _normalized(raw: dict, drop=()) -> dict:
    """A config dict through the current schema (defaults filled in), minus `drop` keys."""
    return _drop(config_to_dict(config_from_dict(copy.deepcopy(raw), "a saved config")), drop)


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


def _absolute_data_paths(cfg: TrainConfig) -> TrainConfig:
    """Local data paths made absolute, as a run saves them: cells then match their saved config,
    and the study reads the same files from any working folder."""
    from hf_transfer.config import DataSource

    for role in ("train", "eval", "test", "target"):
        source = getattr(cfg.data, role, None)
        if isinstance(source, DataSource) and source.name and not source.name.startswith("pkg://"):
            path = Path(source.name).expanduser()
            if not path.is_absolute() and path.exists():
                source.name = str(path.resolve())
    return cfg


def _cell_config(base: TrainConfig, strategy: str, sets: list[str], indices: list[int], seed: int,
                 data_seed: int, out: Path, label: str) -> TrainConfig:
    raw = config_to_dict(base)
    if raw["strategy"]["name"] != strategy:
        # Another strategy's settings would be unknown keys: start from its defaults.
        raw["strategy"] = {"name": strategy}
    for text in sets:
        key, value = parse_override(text)
        set_dotted(raw, key, value)
    raw["data"].update(samples_per_class=None, max_train_samples=None, train_indices=indices, seed=data_seed)
    raw["training"]["seed"] = seed
    raw["output_dir"] = str(out)
    cfg = config_from_dict(raw, f"--set for '{label}'" if sets else f"the cells of '{label}'")
    check_config(cfg, f"the cells of '{label}'")
    return cfg


def _load_pool(base: TrainConfig, data_seed: int) -> tuple[np.ndarray, list[str], dict]:
    """Label ids of the training pool, the label names, and a description of pool and eval split."""
    from hf_transfer.tasks import get_task
    from hf_transfer.tasks.base import ClassificationTask

    cfg = copy.deepcopy(base)
    cfg.data.samples_per_class = cfg.data.max_train_samples = cfg.data.train_indices = None
    cfg.data.seed = data_seed
    task = get_task(cfg)
    if not isinstance(task, ClassificationTask):
        raise ConfigError(f"hf-transfer compare needs a classification recipe; this config's recipe is {cfg.recipe}.")
    # The shared loading only (labels, filter, eval carve-out): the positions in data.train_indices
    # are into this pool. Image/audio file checks run later, inside each cell, on its own rows.
    splits = ClassificationTask.load_splits(task)
    labels = np.asarray(splits.train["labels"])
    names = list(task.labels.names)
    counts = np.bincount(labels, minlength=len(names))
    pool = {"train_pool": int(len(labels)), "train_pool_per_class": dict(zip(names, counts.tolist())),
            "eval_size": int(len(splits.eval)) if splits.eval is not None else 0,
            "test_size": int(len(splits.test)) if splits.test is not None else 0}
    return labels, names, pool


def _cell_dirname(label: str, size: int, per_class: bool, seed: int) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "+-_." else "_" for ch in label)
    return f"{safe}__n{size}{'pc' if per_class else ''}__seed{seed}"


def format_command(config: str, overrides: list[str], strategies: list[str], sizes: list[int], seeds: list[int],
                   per_class: bool, baselines: list[str], sets: list[str], jobs: int, out_dir: str, metric: str) -> str:
    parts = ["hf-transfer", "compare", str(config), *overrides, "--strategies", ",".join(strategies),
             "--sizes", ",".join(map(str, sizes))]
    if per_class:
        parts.append("--per-class")
    parts += ["--seeds", ",".join(map(str, seeds))]
    if baselines:
        parts += ["--baselines", ",".join(baselines)]
    for s in sets:
        parts += ["--set", s]
    if metric != "accuracy":
        parts += ["--metric", metric]
    parts += ["--jobs", str(jobs), "-o", str(out_dir)]
    return shlex.join(parts)


def plan_study(config: str | Path, overrides: list[str] | None = None, *, strategies, sizes, seeds=(0,),
               per_class: bool = False, baselines=(), sets: list[str] | None = None, jobs: int = 1,
               out_dir: str | Path | None = None, metric: str = "accuracy", config_name: str | None = None,
               rerun_changed: bool = False) -> Study:
    """Check everything and plan every cell; nothing runs.

    Raises:
        ConfigError / DataError / HFTransferError: bad input, named, before any run.
    """
    if not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"--jobs must be at least 1 (cells run at once), got {jobs}.")
    overrides = list(overrides or [])
    labels = parse_name_list(strategies, "--strategies")
    baselines = parse_name_list(baselines or [], "--baselines")
    sizes = parse_int_list(sizes, "--sizes")
    seeds = parse_int_list(seeds, "--seeds")
    for s in seeds:
        if s < 0:
            raise ConfigError(f"--seeds must be non-negative integers, got {s}.")
    for s in sizes:
        if s < 1:
            raise ConfigError(f"--sizes must be positive integers, got {s}.")
    sizes = sorted(sizes)
    set_items = list(sets or [])
    by_label = parse_sets(set_items, labels, baselines)
    strategy_of = check_strategy_labels(labels, by_label)
    base = _absolute_data_paths(load_config(config, overrides))
    check_baselines(baselines, base)
    for b in baselines:
        if b == "logreg":
            unknown = [o.partition("=")[0] for o in by_label.get(b, [])
                       if o.partition("=")[0] not in ("C", "max_iter", "penalty", "solver", "class_weight", "tol")]
        else:
            from setfit import TrainingArguments

            unknown = [o.partition("=")[0] for o in by_label.get(b, [])
                       if o.partition("=")[0] not in TrainingArguments.__dataclass_fields__]
        if unknown:
            raise ConfigError(f"--set {b}:{unknown[0]}=... is not a setting of the {b} baseline.")
    if metric not in CLASSIFICATION_METRICS:
        raise ConfigError(f"--metric {metric} is not a classification metric.{_did_you_mean(metric, CLASSIFICATION_METRICS)} "
                          f"Available: {', '.join(CLASSIFICATION_METRICS)}.")
    out = Path(out_dir) if out_dir else Path("studies") / Path(str(config)).stem
    data_seed = base.data.seed if base.data.seed is not None else base.training.seed

    # Every cell's config is built (and validated) before the data is read.
    dummy = [0]
    for label in labels:
        _cell_config(base, strategy_of[label], by_label.get(label, []), dummy, 0, data_seed, out, label)

    pool_labels, names, pool = _load_pool(base, data_seed)
    check_sizes(pool_labels, sizes, per_class, names)
    command = format_command(config_name or str(config), overrides, labels, sizes, seeds, per_class, baselines, set_items,
                             jobs, str(out), metric)
    identity = _drop(config_to_dict(base), _CELL_KEYS)
    identity["data"]["seed"] = data_seed
    record = {"command": command, "config_file": config_name or str(config), "overrides": overrides, "per_class": per_class,
              "data_seed": data_seed, "pool": pool, "labels": names, "config": identity,
              "plan": {"strategies": labels, "baselines": baselines, "sizes": sizes, "seeds": seeds,
                       "sets": set_items, "metric": metric}}
    _check_study_folder(out, record)

    cell_list: list[Cell] = []
    for seed in seeds:
        subsets = nested_subsamples(pool_labels, sizes, seed, per_class)
        for size in sizes:
            for label in labels + baselines:
                d = out / "cells" / _cell_dirname(label, size, per_class, seed)
                if label in baselines:
                    cfg = _cell_config(base, base.strategy.name, [], subsets[size], seed, data_seed, d, label)
                    settings = {k: v for k, v in (parse_override(o) for o in by_label.get(label, []))}
                    cell_list.append(Cell(label, label, label, size, seed, d, cfg, settings))
                else:
                    cfg = _cell_config(base, strategy_of[label], by_label.get(label, []), subsets[size], seed,
                                       data_seed, d, label)
                    cell_list.append(Cell("train", label, strategy_of[label], size, seed, d, cfg))
    study = Study(out, base, labels, baselines, sizes, seeds, per_class, metric, names, pool, cell_list,
                  command, record)
    for cell in cell_list:
        status, diff = cell_status(cell)
        if status == "changed" and not rerun_changed:
            raise ConfigError(
                f"Cell {cell.dir} finished with other settings than planned ({'; '.join(diff)}). Rerun such "
                "cells with --rerun-changed (their old results are deleted), give a variant a new label "
                "(--strategies NEW --set NEW:strategy.name=...), or use another -o folder."
            )
    return study


def _check_study_folder(out: Path, record: dict) -> None:
    path = out / STUDY_FILE
    if not path.is_file():
        if out.is_dir() and any(out.iterdir()):
            raise ConfigError(f"'{out}' exists and is not a study folder (no {STUDY_FILE}). Choose another -o.")
        return
    old = yaml.safe_load(path.read_text()) or {}
    try:
        old_config = _normalized(old.get("config", {}))
    except HFTransferError as e:
        raise ConfigError(f"{path} holds a config this version cannot read ({e}). Use a new -o folder.") from None
    new_config = _normalized(record["config"])
    # Keys the study sets per cell were dropped on both sides; put back what _normalized filled in.
    old_config, new_config = _drop(old_config, _CELL_KEYS), _drop(new_config, _CELL_KEYS)
    diff = config_differences(old_config, new_config)
    if diff:
        raise ConfigError(
            f"'{out}' holds a study of a different config ({'; '.join(diff)}). A study folder holds one "
            "config: choose another -o folder for this one."
        )
    if bool(old.get("per_class")) != record["per_class"]:
        raise ConfigError(f"'{out}' holds a study with sizes {'per class' if old.get('per_class') else 'in total'}; "
                          f"this command counts them {'per class' if record['per_class'] else 'in total'}. "
                          "Choose another -o folder.")
    if old.get("pool") and old["pool"] != record["pool"]:
        raise ConfigError(f"The data changed since '{out}' was planned (training pool {old['pool']} then, "
                          f"{record['pool']} now). Choose another -o folder.")


def _write_study_record(study: Study) -> None:
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
    if not (d / "metrics.json").is_file():
        return ("partial", []) if any(d.iterdir()) else ("new", [])
    if not saved.is_file():
        return "changed", [f"{cells_mod.CELL_CONFIG} missing"]
    try:
        old = _normalized(yaml.safe_load(saved.read_text()) or {}, _RUN_KEYS)
    except HFTransferError as e:
        return "changed", [f"its config.yaml no longer loads: {e}"]
    new = _drop(config_to_dict(cell.cfg), _RUN_KEYS)
    diff = config_differences(old, new)
    spec_path = d / cells_mod.CELL_SPEC
    if spec_path.is_file():
        old_spec = json.loads(spec_path.read_text())
        if old_spec.get("settings", {}) != cell.settings:
            diff.append(f"settings: {old_spec.get('settings')} -> {cell.settings}")
    return ("changed", diff) if diff else ("finished", [])


def _prepare_cell(cell: Cell, label_names: list[str]) -> None:
    status, _ = cell_status(cell)
    if status == "changed":  # --rerun-changed: the old result no longer matches the plan
        shutil.rmtree(cell.dir)
    planned = cell.dir / cells_mod.CELL_CONFIG
    if status == "partial" and planned.is_file():
        try:
            old = _normalized(yaml.safe_load(planned.read_text()) or {}, _RUN_KEYS)
        except HFTransferError:
            old = None
        if old != _drop(config_to_dict(cell.cfg), _RUN_KEYS):
            shutil.rmtree(cell.dir)  # an unfinished run of other settings: nothing to keep
    cell.dir.mkdir(parents=True, exist_ok=True)
    (cell.dir / cells_mod.CELL_SPEC).write_text(json.dumps({**cell.spec, "labels": label_names}, indent=2))
    save_config(cell.cfg, cell.dir / cells_mod.CELL_CONFIG)


def cell_result(cell: Cell) -> dict[str, Any] | None:
    """The finished cell's metrics plus `seconds`, or None."""
    path = cell.dir / "metrics.json"
    if not path.is_file():
        return None
    metrics = json.loads(path.read_text())
    timing = cell.dir / cells_mod.CELL_RESULT
    seconds = None
    if timing.is_file():
        seconds = json.loads(timing.read_text()).get("seconds")
    if seconds is None:
        seconds = metrics.get("train_runtime")
    metrics["seconds"] = seconds
    return metrics


# ------------------------------------------------------------------------------------------------
# Running


class _Progress:
    """One line per finished cell, with an estimate of the time left."""

    def __init__(self, study: Study, total: int, jobs: int, echo: Callable[[str], None]):
        self.study, self.total, self.jobs, self.echo = study, total, jobs, echo
        self.done = 0
        self.seconds: dict[tuple[str, int], list[float]] = {}

    def record(self, cell: Cell, seconds: float | None) -> None:
        if seconds is not None:
            self.seconds.setdefault((cell.label, cell.size), []).append(float(seconds))

    def estimate(self, cell: Cell) -> float | None:
        same = self.seconds.get((cell.label, cell.size))
        if same:
            return float(np.mean(same))
        label = [s for (lab, _), v in self.seconds.items() if lab == cell.label for s in v]
        if label:
            return float(np.mean(label))
        every = [s for v in self.seconds.values() for s in v]
        return float(np.mean(every)) if every else None

    def eta(self, remaining: list[Cell], running: dict[int, float] | None = None) -> str:
        if not remaining:
            return "done"
        guesses = [self.estimate(c) for c in remaining]
        if any(g is None for g in guesses):
            return "ETA unknown"
        total = sum(guesses) - sum((running or {}).values())
        return f"ETA {_duration(max(total, 0.0) / self.jobs)}"

    def line(self, cell: Cell, metrics: dict | None, seconds: float | None, remaining: list[Cell],
             error: str | None = None, running: dict[int, float] | None = None, earlier: bool = False) -> None:
        self.done += 1
        head = f"[{self.done}/{self.total}] {cell.label} n={cell.size}{self.study.size_unit} seed={cell.seed}"
        if error:
            self.echo(f"{head}: FAILED ({error.splitlines()[0][:200]}); see {cell.dir / cells_mod.CELL_LOG}")
            return
        value = (metrics or {}).get(f"eval_{self.study.metric}")
        shown = f"{self.study.metric}={value:.4f}" if isinstance(value, (int, float)) else f"{self.study.metric}=?"
        chosen = (metrics or {}).get("auto_choice")
        extra = f" chose {chosen}" if chosen else ""
        secs = f"{seconds:.1f} s" if seconds is not None else "? s"
        when = "finished earlier, skipped" if earlier else secs
        self.echo(f"{head}: {shown}{extra} ({when}) · {self.eta(remaining, running)}")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _drop_run_handlers() -> None:
    root = logging.getLogger("hf_transfer")
    for h in list(root.handlers):
        if getattr(h, "_hf_transfer", False):
            root.removeHandler(h)
            h.close()


def _run_in_process(cell: Cell) -> str | None:
    """Run one cell here, its console output into its `cell.log`; the error text, or None."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    if bars:  # transformers' bars (saving shards) would reach the console past the redirection
        hf_logging.disable_progress_bar()
    with open(cell.dir / cells_mod.CELL_LOG, "a") as log, redirect_stdout(log), redirect_stderr(log):
        try:
            cells_mod.run_cell(cell.dir)
            return None
        except HFTransferError as e:
            (cell.dir / cells_mod.CELL_ERROR).write_text(str(e))
            return str(e)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # one broken cell must not lose the others
            import traceback

            text = f"{type(e).__name__}: {e}"
            (cell.dir / cells_mod.CELL_ERROR).write_text(text + "\n\n" + traceback.format_exc())
            return text
        finally:
            _drop_run_handlers()
            if bars:
                hf_logging.enable_progress_bar()


def _worker_env(jobs: int) -> dict[str, str]:
    env = dict(os.environ)
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, threads)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("TQDM_DISABLE", "1")
    return env


def run_study(study: Study, jobs: int = 1, echo: Callable[[str], None] = print,
              in_process: bool | None = None) -> dict[str, Any]:
    """Run every unfinished cell (one at a time here, or `jobs` worker processes), then write
    the report. Ctrl-C stops the running cells; finished cells stay, and the report covers them.

    Returns:
        The report (what `study.json` holds).
    """
    from hf_transfer.study.report import write_report

    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}.")
    in_process = (jobs == 1) if in_process is None else in_process
    _write_study_record(study)
    progress = _Progress(study, len(study.cells), jobs, echo)
    pending = []
    for cell in study.cells:
        if cell_status(cell)[0] == "finished":
            progress.record(cell, (cell_result(cell) or {}).get("seconds"))
        else:
            pending.append(cell)
    for cell in pending:
        status, diff = cell_status(cell)
        if status == "changed":
            echo(f"{cell.dir.name}: settings changed since it ran ({'; '.join(diff)}): running it again.")
            progress.record(cell, (cell_result(cell) or {}).get("seconds"))  # its old time: an estimate
    done_before = [c for c in study.cells if c not in pending]
    if done_before:
        echo(f"{len(done_before)} of {len(study.cells)} cells already finished in {study.out_dir}: skipped.")
    for cell in done_before:
        m = cell_result(cell)
        progress.line(cell, m, (m or {}).get("seconds"), pending, earlier=True)
    failures: dict[str, str] = {}
    interrupted = False
    try:
        if in_process:
            for i, cell in enumerate(pending):
                _prepare_cell(cell, study.label_names)
                error = _run_in_process(cell)
                m = None if error else cell_result(cell)
                if error:
                    failures[cell.dir.name] = error
                progress.record(cell, (m or {}).get("seconds"))
                progress.line(cell, m, (m or {}).get("seconds"), pending[i + 1:], error)
        else:
            _run_workers(study, pending, jobs, progress, failures)
    except KeyboardInterrupt:
        interrupted = True
    report = write_report(study)
    if interrupted:
        echo(f"Interrupted. Finished cells are kept in {study.out_dir}; run the same command again to resume.")
        raise KeyboardInterrupt
    report["failed_cells"] = failures
    if failures:
        echo(f"{len(failures)} cell(s) failed: " + ", ".join(failures) + ". Their cell.log says why; "
             "run the command again to retry them.")
    return report


def _run_workers(study: Study, pending: list[Cell], jobs: int, progress: _Progress, failures: dict[str, str]) -> None:
    env = _worker_env(jobs)
    queue = list(pending)
    running: dict[subprocess.Popen, tuple[Cell, float, Any]] = {}
    try:
        while queue or running:
            while queue and len(running) < jobs:
                cell = queue.pop(0)
                _prepare_cell(cell, study.label_names)
                log = open(cell.dir / cells_mod.CELL_LOG, "a")
                proc = subprocess.Popen([sys.executable, "-m", "hf_transfer.study.cells", str(cell.dir)],
                                        stdout=log, stderr=subprocess.STDOUT, env=env)
                running[proc] = (cell, time.perf_counter(), log)
            time.sleep(0.2)
            for proc in [p for p in running if p.poll() is not None]:
                cell, _, log = running.pop(proc)
                log.close()
                error = None
                if proc.returncode != 0:
                    err = cell.dir / cells_mod.CELL_ERROR
                    error = err.read_text() if err.is_file() else f"exit status {proc.returncode}"
                    if proc.returncode in (130, -2):
                        raise KeyboardInterrupt
                    failures[cell.dir.name] = error
                m = None if error else cell_result(cell)
                progress.record(cell, (m or {}).get("seconds"))
                now = time.perf_counter()
                elapsed = {id(c): now - t for c, t, _ in running.values()}
                progress.line(cell, m, (m or {}).get("seconds"), queue + [c for c, _, _ in running.values()],
                              error, running=elapsed)
    finally:
        for proc, (cell, _, log) in running.items():
            if proc.poll() is None:
                proc.terminate()
        for proc, (cell, _, log) in running.items():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
