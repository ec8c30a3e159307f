"""Planning a study: every input checked and every cell's config built before any run starts.

Parses `--strategies/--sizes/--seeds/--baselines/--set`, validates each cell's config, loads the
training pool once (one data seed, so one eval split for all cells), draws the nested subsamples
(`study.sampling`) and refuses a study folder that holds another config. Kept apart from running
so that a bad flag fails in seconds, not after the first cell.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import shlex
from pathlib import Path

import numpy as np
import yaml

from hf_transfer.config import TrainConfig, check_config, config_from_dict, config_to_dict, load_config
from hf_transfer.config_parsing import parse_override, set_dotted
from hf_transfer.errors import ConfigError, HFTransferError
from hf_transfer.study import cells as cells_mod
from hf_transfer.study.cell_state import (
    CELL_KEYS,
    STUDY_FILE,
    Cell,
    Study,
    cell_status,
    config_differences,
    drop_keys,
    normalized_config,
)
from hf_transfer.study.cells import BASELINES
from hf_transfer.study.sampling import check_sizes, nested_subsamples

LOWER_IS_BETTER = ("loss", "wer", "cer", "rmse", "mae", "mse")
#: Eval metrics every classification run reports (`eval_<name>` in metrics.json).
CLASSIFICATION_METRICS = ("accuracy", "f1", "precision", "recall", "loss")
#: The same for the multi-label and regression recipes (by their `RecipeInfo.targets`).
TARGET_STUDY_METRICS = {
    "multilabel": ("f1", "f1_macro", "f1_micro", "subset_accuracy", "accuracy", "lrap", "loss"),
    "regression": ("rmse", "mae", "mse", "r2", "spearman", "pearson", "loss"),
}


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
            raise ConfigError(
                f"--set {item!r} is not LABEL:key=value (e.g. --set scratch:training.learning_rate=3e-4)."
            )
        if label not in known:
            raise ConfigError(
                f"--set {item!r} names '{label}', which is not in --strategies or --baselines "
                f"({', '.join(known)}).{_did_you_mean(label, known)}"
            )
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
            hint = (
                f" '{label}' is a baseline: pass it with --baselines {label}."
                if label in BASELINES
                else _did_you_mean(name, known)
            )
            raise ConfigError(
                f"Unknown strategy '{name}' in --strategies.{hint} Available: {', '.join(known)}"
                "; a variant needs --set LABEL:strategy.name=NAME."
            )
        out[label] = name
    return out


def check_baselines(baselines: list[str], cfg: TrainConfig) -> None:
    for b in baselines:
        if b not in BASELINES:
            raise ConfigError(
                f"Unknown baseline '{b}' in --baselines.{_did_you_mean(b, BASELINES)} "
                f"Available: {', '.join(BASELINES)}."
            )
        cells_mod.check_baseline_available(b, cfg.recipe, bool(cfg.data.text_pair_column))


# ------------------------------------------------------------------------------------------------
# Configs


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


def _cell_config(
    base: TrainConfig,
    strategy: str,
    sets: list[str],
    indices: list[int],
    seed: int,
    data_seed: int,
    out: Path,
    label: str,
) -> TrainConfig:
    raw = config_to_dict(base)
    if raw["strategy"]["name"] != strategy:
        # Another strategy's settings would be unknown keys: start from its defaults.
        raw["strategy"] = {"name": strategy}
    for text in sets:
        key, value = parse_override(text)
        set_dotted(raw, key, value)
    raw["data"].update(samples_per_class=None, max_train_samples=None, train_indices=indices, seed=data_seed)
    raw["training"]["seed"] = seed
    raw["training"]["record_eval_predictions"] = True  # the verdicts' paired bootstrap over eval examples
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
    from hf_transfer.tasks.targets import TargetTask

    if isinstance(task, TargetTask):
        # Label sets and numbers: the subsamples are stratified on `task.strata` (the rarest label
        # of each row; quintiles of the target), the pool being what a cell's data.train_indices index.
        splits = TargetTask.load_splits(task)
        strata, names = task.strata(splits.train)
        counts = np.bincount(strata, minlength=len(names))
        pool = {
            "train_pool": int(len(strata)),
            "train_pool_per_class": dict(zip(names, counts.tolist())),  # per stratum
            "target_labels": list(task.labels.names),
            "eval_size": int(len(splits.eval)) if splits.eval is not None else 0,
            "test_size": int(len(splits.test)) if splits.test is not None else 0,
            "fingerprint": _data_fingerprint(task, splits, list(task.labels.names)),
        }
        return strata, names, pool
    if getattr(task, "token_level", False):
        # Tagged sentences have no single class: nested subsamples of sentences at random (one
        # stratum), sizes counted in sentences.
        splits = task.load_splits()
        pool = {
            "train_pool": len(splits.train),
            "train_pool_per_class": {"sentences": len(splits.train)},
            "train_pool_tokens": int(sum(len(t) for t in splits.train["tokens"])),
            "eval_size": int(len(splits.eval)) if splits.eval is not None else 0,
            "test_size": int(len(splits.test)) if splits.test is not None else 0,
            "fingerprint": _data_fingerprint(task, splits, ["sentences"]),
        }
        return np.zeros(len(splits.train), dtype=np.int64), ["sentences"], pool
    if not isinstance(task, ClassificationTask):
        raise ConfigError(f"hf-transfer compare needs a classification recipe; this config's recipe is {cfg.recipe}.")
    # The shared loading only (labels, filter, eval carve-out): the positions in data.train_indices
    # are into this pool. Image/audio file checks run later, inside each cell, on its own rows.
    splits = ClassificationTask.load_splits(task)
    labels = np.asarray(splits.train["labels"])
    names = list(task.labels.names)
    counts = np.bincount(labels, minlength=len(names))
    pool = {
        "train_pool": int(len(labels)),
        "train_pool_per_class": dict(zip(names, counts.tolist())),
        "eval_size": int(len(splits.eval)) if splits.eval is not None else 0,
        "test_size": int(len(splits.test)) if splits.test is not None else 0,
        "fingerprint": _data_fingerprint(task, splits, names),
    }
    return labels, names, pool


def _data_fingerprint(task, splits, names: list[str]) -> str:
    """The content of the training pool and the eval split, rows in order (inputs and labels):
    `data.train_indices` are positions in this pool, and every cell is judged on this eval split."""
    from hf_transfer.data.fingerprints import content_fingerprint

    # Columns absent from a split are skipped (tagged sentences have `tokens` and `tags`).
    columns = [getattr(task, "input_col", None), task.cfg.data.text_pair_column, "labels", "tokens", "tags"]
    parts = [repr(names)] + [
        content_fingerprint(ds, columns) if ds is not None else "-" for ds in (splits.train, splits.eval, splits.test)
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _cell_dirname(label: str, size: int, per_class: bool, seed: int) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "+-_." else "_" for ch in label)
    return f"{safe}__n{size}{'pc' if per_class else ''}__seed{seed}"


def format_command(
    config: str,
    overrides: list[str],
    strategies: list[str],
    sizes: list[int],
    seeds: list[int],
    per_class: bool,
    baselines: list[str],
    sets: list[str],
    jobs: int,
    out_dir: str,
    metric: str,
) -> str:
    parts = [
        "hf-transfer",
        "compare",
        str(config),
        *overrides,
        "--strategies",
        ",".join(strategies),
        "--sizes",
        ",".join(map(str, sizes)),
    ]
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


def plan_study(
    config: str | Path,
    overrides: list[str] | None = None,
    *,
    strategies,
    sizes,
    seeds=(0,),
    per_class: bool = False,
    baselines=(),
    sets: list[str] | None = None,
    jobs: int = 1,
    out_dir: str | Path | None = None,
    metric: str = "accuracy",
    config_name: str | None = None,
    rerun_changed: bool = False,
) -> Study:
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
            unknown = [
                o.partition("=")[0]
                for o in by_label.get(b, [])
                if o.partition("=")[0] not in ("C", "max_iter", "penalty", "solver", "class_weight", "tol", "alpha")
            ]
        else:
            from setfit import TrainingArguments

            unknown = [
                o.partition("=")[0]
                for o in by_label.get(b, [])
                if o.partition("=")[0] not in TrainingArguments.__dataclass_fields__
            ]
        if unknown:
            raise ConfigError(f"--set {b}:{unknown[0]}=... is not a setting of the {b} baseline.")
    from hf_transfer.registry import recipe_info

    kind = {"label_set": "multilabel", "number": "regression"}.get(recipe_info(base.recipe).targets)
    if kind and metric == "accuracy":  # the command's default: macro F1 for label sets, RMSE for numbers
        metric = {"multilabel": "f1", "regression": "rmse"}[kind]
    if kind and per_class:
        raise ConfigError(
            f"--per-class counts examples per class; recipe {base.recipe} has {kind} targets. Give --sizes as totals."
        )
    allowed = TARGET_STUDY_METRICS[kind] if kind else CLASSIFICATION_METRICS
    if metric not in allowed:
        raise ConfigError(
            f"--metric {metric} is not a metric of recipe {base.recipe}.{_did_you_mean(metric, allowed)} "
            f"Available: {', '.join(allowed)}."
        )
    out = Path(out_dir) if out_dir else Path("studies") / Path(str(config)).stem
    data_seed = base.data.seed if base.data.seed is not None else base.training.seed

    # Every cell's config is built (and validated) before the data is read.
    dummy = [0]
    for label in labels:
        _cell_config(base, strategy_of[label], by_label.get(label, []), dummy, 0, data_seed, out, label)

    pool_labels, names, pool = _load_pool(base, data_seed)
    if per_class and base.recipe == "token_classification":
        raise ConfigError(
            "--per-class counts examples per class; tagged sentences have none: give --sizes in "
            "sentences without --per-class."
        )
    check_sizes(pool_labels, sizes, per_class, names)
    command = format_command(
        config_name or str(config),
        overrides,
        labels,
        sizes,
        seeds,
        per_class,
        baselines,
        set_items,
        jobs,
        str(out),
        metric,
    )
    identity = drop_keys(config_to_dict(base), CELL_KEYS)
    identity["data"]["seed"] = data_seed
    record = {
        "command": command,
        "config_file": config_name or str(config),
        "overrides": overrides,
        "per_class": per_class,
        "data_seed": data_seed,
        "pool": pool,
        "labels": names,
        "config": identity,
        "plan": {
            "strategies": labels,
            "baselines": baselines,
            "sizes": sizes,
            "seeds": seeds,
            "sets": set_items,
            "metric": metric,
        },
    }
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
                    cell_list.append(Cell(label, label, label, size, seed, d, cfg, settings, pool["fingerprint"]))
                else:
                    cfg = _cell_config(
                        base, strategy_of[label], by_label.get(label, []), subsets[size], seed, data_seed, d, label
                    )
                    cell_list.append(
                        Cell(
                            "train", label, strategy_of[label], size, seed, d, cfg, data_fingerprint=pool["fingerprint"]
                        )
                    )
    study = Study(
        out, base, labels, baselines, sizes, seeds, per_class, metric, names, pool, cell_list, command, record
    )
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
        old_config = normalized_config(old.get("config", {}))
    except HFTransferError as e:
        raise ConfigError(f"{path} holds a config this version cannot read ({e}). Use a new -o folder.") from None
    new_config = normalized_config(record["config"])
    # Keys the study sets per cell were dropped on both sides; put back what normalized_config filled in.
    old_config, new_config = drop_keys(old_config, CELL_KEYS), drop_keys(new_config, CELL_KEYS)
    diff = config_differences(old_config, new_config)
    if diff:
        raise ConfigError(
            f"'{out}' holds a study of a different config ({'; '.join(diff)}). A study folder holds one "
            "config: choose another -o folder for this one."
        )
    if bool(old.get("per_class")) != record["per_class"]:
        raise ConfigError(
            f"'{out}' holds a study with sizes {'per class' if old.get('per_class') else 'in total'}; "
            f"this command counts them {'per class' if record['per_class'] else 'in total'}. "
            "Choose another -o folder."
        )
    old_pool = dict(old.get("pool") or {})
    old_fingerprint = old_pool.pop("fingerprint", None)  # absent in studies planned before it was recorded
    new_pool = {k: v for k, v in record["pool"].items() if k != "fingerprint"}
    if old_pool and old_pool != new_pool:
        raise ConfigError(
            f"The data changed since '{out}' was planned (training pool {old_pool} then, "
            f"{new_pool} now). Choose another -o folder."
        )
    if old_fingerprint is not None and old_fingerprint != record["pool"]["fingerprint"]:
        raise ConfigError(
            f"The data changed since '{out}' was planned: the training pool and eval split have the same sizes "
            "and class counts, but hold other rows, or the same rows in another order (data fingerprint "
            f"{old_fingerprint} then, {record['pool']['fingerprint']} now). The cells already run used the old eval "
            "split and training subsets, so new cells would not be comparable with them. Restore the data as it "
            "was, or choose another -o folder for this data."
        )
