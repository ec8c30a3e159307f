"""`hf-transfer audit`: what is wrong with a small labelled set before training on it.

One frozen forward pass over every row (`models.features.extract`, with its disk cache), then:

1. **Label issues**: out-of-fold class probabilities of the frozen-feature logistic regression
   (stratified k-fold; `feature_extraction`'s classifier), confident learning on them
   (`cleanlab.filter.find_label_issues`, ranked by cleanlab's self-confidence label quality), the
   given and the suggested label of each flagged row, and cleanlab's per-class noise estimate.
2. **Duplicates** inside the training data and **leaks** (an eval or test row that is also, or
   nearly, a training row): exact after normalising case and whitespace (texts) or by a hash of the
   file bytes (images, audio); near by cosine similarity of the embeddings >= `near_threshold`
   (scikit-learn's NearestNeighbors) and, for texts, by the cosine similarity of character n-gram
   TF-IDF vectors >= `text_threshold` (one word changed in a short text can pull the embedding
   similarity well below 0.95; the character n-grams keep most of theirs).
3. **Conflicts**: duplicate groups (exact or near) whose labels differ, and leaks whose labels differ.
4. **Class balance**, **outliers** (mean cosine distance to the k nearest training rows beyond
   Tukey's far-out fence) and, for texts, blank, very short and over-length rows (what truncation
   at `data.max_length` cuts).
5. A **fix file** `clean.csv`: the training source with flagged rows dropped or relabelled
   (`fix="drop" | "relabel" | "none"`); the source itself is never written.

Rows are named by their 0-based data row in the source file (header not counted; an image folder:
its files in sorted order, the path beside). Without a separate `data.eval` the rows the run would
carve out for evaluation come from the training file: the training data is audited alone, whole.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from hf_transfer.data.overlap import exact_groups, exact_matches, normalize_text
from hf_transfer.data_audit import checks
from hf_transfer.errors import ConfigError, DataError, HFTransferError

logger = logging.getLogger(__name__)

FIXES = ("drop", "relabel", "none")
#: Embedding cosine similarity from which two rows are near duplicates.
NEAR_THRESHOLD = 0.95
#: Character n-gram TF-IDF cosine similarity from which two texts are near duplicates.
TEXT_THRESHOLD = 0.7
#: Neighbours looked at per row for near duplicates and the outlier distance.
NEIGHBOURS = 10
OUTLIER_K = 5
#: A text with at most this many tokens (special tokens not counted) is very short.
SHORT_TOKENS = 2
#: A near-duplicate rule that pairs more than this share of the rows says the features (or the
#: texts' characters) cannot tell rows apart at that threshold: its pairs are dropped, with a note.
MAX_NEAR_SHARE = 0.25
#: Rows listed per section in audit.md (audit.json holds them all).
SHOWN = 30


class Pool:
    """The rows of one source (train, eval or test file) with their features."""

    def __init__(self, name: str, source: str):
        self.name = name  # "train", "eval", "test": the file the rows come from
        self.source = source  # its path / Hub id, for the report
        self.rows: list[int] = []  # source rows
        self.labels: list[int] = []
        self.keys: list[str | None] = []
        self.inputs: list[Any] = []
        self.X: list[np.ndarray] = []

    def add(self, ds, rows: list[int], features: np.ndarray, input_col: str, pair_col: str | None):
        from hf_transfer.data.overlap import row_keys

        cols = [input_col] + ([pair_col] if pair_col else [])
        self.rows += rows
        self.labels += [int(v) for v in ds["labels"]]
        self.keys += row_keys(ds, cols)
        self.inputs += [_shown_input(v) for v in ds[input_col]]
        self.X.append(np.asarray(features, dtype=np.float32))

    def finish(self, center: np.ndarray | None = None):
        """Stack the features; `U`: unit rows after subtracting `center` (the training mean)."""
        if isinstance(self.X, list):
            self.X = np.concatenate(self.X) if self.X else np.zeros((0, 0), np.float32)
        self.y = np.asarray(self.labels, dtype=np.int64)
        self.U = checks.unit_rows(self.X - (0 if center is None else center)) if len(self.X) else self.X
        return self

    def __len__(self):
        return len(self.rows)


def _shown_input(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("path") or "<bytes>")
    return "" if value is None else str(value)


def _excerpt(text: str, n: int = 80) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= n else text[: n - 1] + "…"


def _source_name(source) -> str:
    if source is None:
        return ""
    return source.name + (f" ({source.split})" if getattr(source, "split", None) else "")


def _all_rows(d) -> None:
    """Every row of the files: subsampling switched off in `d`, the `data` section of the audit's
    own copy of the config."""
    d.max_train_samples = d.samples_per_class = d.train_indices = None
    d.max_eval_samples = d.eval_samples_per_class = None


def _load(cfg, use_cache: bool):
    """Task, splits, features of every split and each row's place in its source.

    The splits are loaded twice: as `train` loads them (so the features' cache key, which includes
    the data's fingerprint, is the one `train`, `rank` and `shift` use: one forward pass serves
    all), and once more carrying each row's source row through filtering, the eval carve-out and
    subsampling (`ClassificationTask.source_rows`). The two agree row for row: the same seeded
    operations run on the same rows.
    """
    from hf_transfer.models.features import FeatureExtractor, extract, spec_from_settings
    from hf_transfer.registry import recipe_modality
    from hf_transfer.tasks.base import SOURCE_ROW, get_task
    from hf_transfer.tasks.targets import TargetTask

    task = get_task(cfg)
    # One class id per row: label sets, numbers and tagged sentences are not audited (yet).
    if not hasattr(task, "source_rows") or isinstance(task, TargetTask) or getattr(task, "token_level", False):
        raise ConfigError(
            f"`hf-transfer audit` audits classification data; recipe {cfg.recipe} is not one "
            "(text_classification, image_classification, audio_classification)."
        )
    task.load_processor()
    splits = task.load_splits()
    located = get_task(cfg)
    located.source_rows = True
    located.load_processor()
    with _quiet_second_load():
        row_splits = located.load_splits()
    rows = {}
    for role in ("train", "eval", "test"):
        ds, ds_rows = getattr(splits, role), getattr(row_splits, role)
        if ds is None:
            continue
        if ds_rows is None or len(ds_rows) != len(ds):
            raise DataError(
                f"The {role} split loaded differently twice ({len(ds)} then "
                f"{0 if ds_rows is None else len(ds_rows)} rows); its rows cannot be located in the source."
            )
        rows[role] = [int(r) for r in ds_rows[SOURCE_ROW]]
    model = task.build_model()
    strategy = getattr(cfg, "strategy", None)
    extractor = FeatureExtractor(
        model,
        modality=recipe_modality(cfg.recipe, "text"),
        spec=spec_from_settings(strategy),
        name_or_path=cfg.model.name_or_path,
    )
    bs = cfg.training.eval_batch_size or cfg.training.batch_size
    feats = {}
    for role in rows:
        feats[role] = extract(
            extractor,
            task,
            getattr(splits, role),
            batch_size=bs,
            cache=getattr(strategy, "use_cache", True) and use_cache,
            cache_dir=getattr(strategy, "cache_dir", None),
        )
    return task, splits, feats, rows, extractor.describe()


class _quiet_second_load:
    """The second load logs what the first already said: hold `hf_transfer`'s INFO/WARNING lines."""

    def __enter__(self):
        self.logger = logging.getLogger("hf_transfer")
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)
        return False


def audit(
    cfg,
    output_dir: str | Path = "audit",
    *,
    fix: str = "drop",
    method: str = checks.DEFAULT_METHOD,
    near_threshold: float = NEAR_THRESHOLD,
    text_threshold: float = TEXT_THRESHOLD,
    folds: int = checks.MAX_FOLDS,
    seed: int = 0,
    all_rows: bool = False,
    plots: bool = True,
    cache: bool = True,
) -> dict[str, Any]:
    """Audit the labelled data of a config; write audit.json, audit.md, audit.png and clean.csv.

    Args:
        cfg: A `TrainConfig` (its recipe, model and data are used), or a config path.
        output_dir: Folder for the report and the fix file (created).
        fix: `drop` (flagged rows removed), `relabel` (label issues given the suggested label,
            duplicate copies and leaked training rows removed) or `none` (no fix file).
        method: cleanlab's `filter_by` (`checks.METHODS`).
        near_threshold: Embedding cosine similarity for near duplicates and near leaks.
        text_threshold: Character n-gram TF-IDF cosine similarity for near-duplicate texts (>1 = off).
        folds: Cross-validation folds (fewer when the smallest class is smaller).
        seed: Fold assignment seed.
        all_rows: Ignore the config's subsampling (`data.samples_per_class`, `max_train_samples`,
            `train_indices`, eval subsampling): audit every row of the files.
        plots: Write audit.png.
        cache: Read and write the feature cache.

    Returns:
        The report (what audit.json holds) with `files` added.

    Raises:
        ConfigError, DataError: Bad settings or data (a single class, unreadable source...).
    """
    if fix not in FIXES:
        raise ConfigError(f"--fix must be one of {', '.join(FIXES)}, got {fix!r}.")
    if method not in checks.METHODS:
        raise ConfigError(f"--method must be one of {', '.join(checks.METHODS)}, got {method!r}.")
    if not 0 < near_threshold <= 1:
        raise ConfigError(f"--near-threshold is a cosine similarity in (0, 1], got {near_threshold}.")
    if folds < 2:
        raise ConfigError(f"--folds must be at least 2 (cross-validation holds out one fold at a time), got {folds}.")
    if text_threshold <= 0:
        raise ConfigError(f"--text-threshold is a cosine similarity in (0, 1] (above 1: off), got {text_threshold}.")
    if isinstance(cfg, (str, Path)):
        from hf_transfer.config import load_config

        cfg = load_config(cfg)
    checks.require_cleanlab()
    start = time.time()
    cfg = copy.deepcopy(cfg)
    if all_rows:
        _all_rows(cfg.data)
    out = Path(output_dir)
    task, splits, feats, source_rows, feature_info = _load(cfg, cache)
    embed_seconds = sum(f.info.get("seconds", 0.0) for f in feats.values() if not f.cache_hit)
    names = list(task.labels.names)
    d = cfg.data
    pair_col = getattr(d, "text_pair_column", None)
    separate_eval = d.eval is not None and bool(d.eval.name)

    pools = {"train": Pool("train", _source_name(d.train))}
    pools["train"].add(splits.train, source_rows["train"], feats["train"].X, task.input_col, pair_col)
    notes: list[str] = []
    if splits.eval is not None:
        if separate_eval:
            pools["eval"] = Pool("eval", _source_name(d.eval))
            pools["eval"].add(splits.eval, source_rows["eval"], feats["eval"].X, task.input_col, pair_col)
        else:  # carved from the training file: audited with it
            pools["train"].add(splits.eval, source_rows["eval"], feats["eval"].X, task.input_col, pair_col)
    if not separate_eval:
        notes.append(
            "No separate eval split (data.eval): the training data is audited alone, the rows a run "
            "would carve out for evaluation included; no leakage check."
        )
    if splits.test is not None:
        pools["test"] = Pool("test", _source_name(d.test))
        pools["test"].add(splits.test, source_rows["test"], feats["test"].X, task.input_col, pair_col)
    # Cosine similarities on centred features: the raw embeddings of many checkpoints all point
    # one way (unrelated inputs at 0.8+), the centred ones spread out.
    center = pools["train"].finish().X.mean(0)
    for p in pools.values():
        p.finish(center)
    train = pools["train"]
    order = np.argsort(train.rows, kind="stable")  # report and fix in file order
    if not np.all(order == np.arange(len(order))):
        _reorder(train, order)
    is_text = cfg.recipe == "text_classification"

    report: dict[str, Any] = {
        "config": {
            "recipe": cfg.recipe,
            "model": cfg.model.name_or_path,
            "train": train.source,
            "eval": pools["eval"].source if "eval" in pools else None,
            "test": pools["test"].source if "test" in pools else None,
        },
        "labels": names,
        "rows": {name: len(p) for name, p in pools.items()},
        "settings": {
            "method": method,
            "near_threshold": near_threshold,
            "text_threshold": text_threshold,
            "folds": folds,
            "seed": seed,
            "fix": fix,
            "all_rows": all_rows,
            "features": {k: feature_info.get(k) for k in ("source", "pooling", "layers")},
        },
        "notes": notes,
    }
    report["skipped"] = _skipped(task, d.train, is_text)
    report["class_balance"] = _balance(pools, names)
    if report["class_balance"]["train"].get("imbalance_ratio", 1) > 3:
        notes.append(
            f"Classes are imbalanced in train (largest / smallest = "
            f"{report['class_balance']['train']['imbalance_ratio']}): consider training.class_weights=balanced."
        )
    report["label_issues"], report["label_noise"], oof_info = _label_issues(pools, names, method, folds, seed, notes)
    dup_groups, conflicts = _duplicates(train, names, near_threshold, text_threshold if is_text else 2.0, notes)
    report["duplicates"], report["conflicts"] = dup_groups, conflicts
    report["leaks"] = []
    for role in ("eval", "test"):
        if role in pools:
            leaks, leak_conflicts = _leaks(
                train, pools[role], names, near_threshold, text_threshold if is_text else 2.0, notes
            )
            report["leaks"] += leaks
            report["conflicts"] += leak_conflicts
    report["outliers"] = _outliers(train, names)
    if is_text:
        report["text_lengths"] = _text_lengths(task, d.max_length, pools)
    report["summary"] = _summary(report, oof_info)
    report["seconds"] = {
        "total": round(time.time() - start, 2),
        "embedding": round(embed_seconds, 2),
        "features_cached": all(f.cache_hit for f in feats.values()),
    }
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": str(out / "audit.json"), "markdown": str(out / "audit.md")}
    if fix != "none":
        files["clean"] = str(_write_fix(d.train, report, out / "clean.csv", fix, names, task))
        report["fix"] = report.pop("_fix")
    if plots:
        files["plot"] = str(_plot(report, pools, out / "audit.png", names))
    report["files"] = files
    from hf_transfer.files import atomic_write_text

    atomic_write_text(out / "audit.json", json.dumps(_jsonable(report), indent=1) + "\n")
    atomic_write_text(out / "audit.md", to_markdown(report))
    return report


def _reorder(p: Pool, order: np.ndarray) -> None:
    p.rows = [p.rows[i] for i in order]
    p.labels = [p.labels[i] for i in order]
    p.keys = [p.keys[i] for i in order]
    p.inputs = [p.inputs[i] for i in order]
    p.X, p.y, p.U = p.X[order], p.y[order], p.U[order]


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return None if math.isnan(v) or math.isinf(v) else round(v, 4)
    return obj


# ---------------------------------------------------------------------------------- sections


def _skipped(task, train, is_text: bool) -> dict:
    """Rows the recipe could not read, as `train` counts them (blank texts, unreadable files)."""
    out: dict[str, Any] = {}
    for attr, what in (("blank_rows", "blank or missing text"), ("skipped_files", "unreadable file")):
        per_role = getattr(task, attr, None) or {}
        for role, v in per_role.items():
            n = v if isinstance(v, int) else len(v)
            if n:
                entry = {"count": n, "why": what}
                if not isinstance(v, int):
                    entry["files"] = list(v)[:SHOWN]
                out[role] = entry
    if is_text and out.get("train"):
        out["train"]["rows"] = _blank_rows(train, task)
    return out


def _blank_rows(train, task) -> list[int]:
    """Source rows of the training source `train` (a `DataSource`) whose text is blank or missing."""
    from hf_transfer.data.sources import load_split

    try:
        raw = load_split(train, "train")
        values = raw[task.input_col]
    except (HFTransferError, KeyError):
        return []
    return [
        i
        for i, v in enumerate(values)
        if v is None or (isinstance(v, float) and v != v) or (isinstance(v, str) and not v.strip())
    ]


def _balance(pools: dict, names: list[str]) -> dict:
    out = {}
    for name, p in pools.items():
        counts = np.bincount(p.y, minlength=len(names))
        entry = {"counts": dict(zip(names, counts.tolist()))}
        present = counts[counts > 0]
        if len(present):
            entry["imbalance_ratio"] = round(float(present.max() / present.min()), 2)
        entry["missing_classes"] = [n for n, c in zip(names, counts) if c == 0]
        out[name] = entry
    return out


def _label_issues(pools: dict, names: list[str], method: str, folds: int, seed: int, notes: list[str]):
    """Out-of-fold probabilities over every labelled row (train, eval, test files), then cleanlab."""
    parts = [(name, p) for name, p in pools.items() if len(p)]
    X = np.concatenate([p.X for _, p in parts])
    y = np.concatenate([p.y for _, p in parts])
    where = [(name, i) for name, p in parts for i in range(len(p))]
    counts = np.bincount(y, minlength=len(names))
    present = np.flatnonzero(counts)
    if len(present) < 2:
        notes.append(
            f"Label issues not searched: every row has the same label ({names[int(present[0])]!r}); "
            "a classifier needs two classes. Duplicates, leaks and outliers are still audited."
        )
        return [], {}, {"searched": False}
    singles = [names[int(c)] for c in present if counts[c] < 2]
    if singles:
        notes.append(
            f"Class(es) with a single row: {', '.join(map(repr, singles))}: nothing to cross-validate "
            "them against, so their rows are not searched for label errors (the rest are)."
        )
    try:
        oof = checks.out_of_fold_probabilities(X, y, len(names), folds=folds, seed=seed)
    except HFTransferError:
        notes.append("Label issues not searched: fewer than two classes have two or more rows.")
        return [], {}, {"searched": False}
    found = checks.label_issues(y[oof.rows], oof.probs, method)
    issues = []
    for r, q, s in zip(found.rows, found.quality, found.suggested):
        pool_name, i = where[int(oof.rows[r])]
        p = pools[pool_name]
        issues.append(
            {
                "split": pool_name,
                "row": p.rows[i],
                "given": names[p.labels[i]],
                "suggested": names[int(s)],
                "score": round(float(q), 4),
                "input": _excerpt(p.inputs[i], 200),
            }
        )
    noise = {names[c]: round(v, 4) for c, v in found.noise_rate.items()}
    accuracy = float((oof.probs.argmax(1) == y[oof.rows]).mean())
    return (
        issues,
        noise,
        {
            "searched": True,
            "folds": oof.folds,
            "oof_accuracy": round(accuracy, 4),
            "estimated_label_errors": found.estimated_issues,
            "disagreements": int(len(checks.disagreement(y[oof.rows], oof.probs))),
        },
    )


def _text_matrix(inputs: list[str], others: list[list[str]] = ()):
    from sklearn.feature_extraction.text import TfidfVectorizer

    v = TfidfVectorizer(
        analyzer="char_wb", ngram_range=(3, 5), preprocessor=normalize_text, sublinear_tf=True, dtype=np.float32
    )
    try:
        T = v.fit_transform(inputs)
    except ValueError:  # no n-grams at all (every text shorter than 3 characters)
        return None
    return T, [v.transform(o) for o in others]


def _text_pairs(T, threshold: float, k: int) -> list[tuple[int, int, float]]:
    from sklearn.neighbors import NearestNeighbors

    n = T.shape[0]
    if n < 2:
        return []
    dist, idx = NearestNeighbors(metric="cosine", algorithm="brute").fit(T).kneighbors(T, n_neighbors=min(k + 1, n))
    out = {}
    for i in range(n):
        for dd, j in zip(dist[i], idx[i]):
            j = int(j)
            if j != i and 1 - dd >= threshold:
                a, b = min(i, j), max(i, j)
                out[(a, b)] = max(1 - float(dd), out.get((a, b), -1.0))
    return [(a, b, s) for (a, b), s in out.items()]


def _plausible(pairs, n: int, what: str, option: str, threshold: float, notes: list[str]):
    """`pairs`, unless they pair so many rows that the similarity cannot tell rows apart."""
    paired = len({i for a, b, _ in pairs for i in (a, b)})
    if n and paired > MAX_NEAR_SHARE * n:
        notes.append(
            f"Near duplicates by {what} left out: at {option} {threshold} they would pair {paired} of {n} "
            f"training rows, so this similarity does not tell the rows apart (raise {option})."
        )
        return []
    return pairs


def _duplicates(train: Pool, names, near_threshold: float, text_threshold: float, notes: list[str]):
    """Groups of exact and near duplicates inside the training data; conflicting ones."""
    exact = exact_groups(train.keys)
    pairs = _plausible(
        checks.near_pairs(train.U, near_threshold, NEIGHBOURS),
        len(train),
        "embedding",
        "--near-threshold",
        near_threshold,
        notes,
    )
    if text_threshold <= 1:
        mats = _text_matrix(train.inputs)
        if mats is not None:
            pairs += _plausible(
                _text_pairs(mats[0], text_threshold, NEIGHBOURS),
                len(train),
                "characters",
                "--text-threshold",
                text_threshold,
                notes,
            )
    exact_pairs = [(g[0], j, 1.0) for g in exact for j in g[1:]]
    groups = checks.groups_from_pairs(len(train), exact_pairs + pairs)
    exact_sets = {frozenset(g) for g in exact}
    sims = {}
    for a, b, s in pairs:
        sims[(a, b)] = max(s, sims.get((a, b), 0))
    dups, conflicts = [], []
    for g in groups:
        kind = "exact" if frozenset(g) in exact_sets else "near"
        labels = [names[train.labels[i]] for i in g]
        inner = [sims.get((a, b), 1.0) for ai, a in enumerate(g) for b in g[ai + 1 :] if (a, b) in sims]
        entry = {
            "kind": kind,
            "split": "train",
            "rows": [train.rows[i] for i in g],
            "labels": labels,
            "similarity": round(min(inner), 4) if inner and kind == "near" else 1.0,
            "input": _excerpt(train.inputs[g[0]], 120),
        }
        dups.append(entry)
        if len(set(labels)) > 1:
            conflicts.append({**entry, "kind": f"{kind} duplicates"})
    return dups, conflicts


def _leaks(train: Pool, other: Pool, names, near_threshold: float, text_threshold: float, notes: list[str]):
    """Rows of `other` (eval/test) that are, or nearly are, training rows."""
    found: dict[int, tuple[int, float, str]] = {}
    for j, i in exact_matches(train.keys, other.keys):
        found[j] = (i, 1.0, "exact")
    near = [(j, i, s, "near") for j, i, s in checks.best_matches(other.U, train.U, near_threshold)]
    near = _plausible_leaks(near, len(other), other.name, "embedding", "--near-threshold", near_threshold, notes)
    if text_threshold <= 1 and len(other):
        mats = _text_matrix(train.inputs, [other.inputs])
        if mats is not None:
            from sklearn.neighbors import NearestNeighbors

            T, (To,) = mats
            dist, idx = NearestNeighbors(metric="cosine", algorithm="brute").fit(T).kneighbors(To, n_neighbors=1)
            text = [
                (int(j), int(idx[j, 0]), float(other.U[j] @ train.U[int(idx[j, 0])]), "near (text)")
                for j in np.flatnonzero(1 - dist[:, 0] >= text_threshold)
            ]
            near += _plausible_leaks(
                text, len(other), other.name, "characters", "--text-threshold", text_threshold, notes
            )
    for j, i, s, kind in near:
        if j not in found:
            found[j] = (i, s, kind)
    leaks, conflicts = [], []
    for j in sorted(found):
        i, s, kind = found[j]
        entry = {
            "split": other.name,
            "eval_row": other.rows[j],
            "train_row": train.rows[i],
            "similarity": round(float(s), 4),
            "kind": kind,
            "eval_label": names[other.labels[j]],
            "train_label": names[train.labels[i]],
            "input": _excerpt(other.inputs[j], 120),
        }
        leaks.append(entry)
        if entry["eval_label"] != entry["train_label"]:
            conflicts.append(
                {
                    "kind": f"{other.name} row also in train",
                    "split": f"{other.name}+train",
                    "rows": [other.rows[j], train.rows[i]],
                    "labels": [entry["eval_label"], entry["train_label"]],
                    "similarity": entry["similarity"],
                    "input": entry["input"],
                }
            )
    return leaks, conflicts


def _plausible_leaks(matches, n: int, role: str, what: str, option: str, threshold: float, notes: list[str]):
    if n and len(matches) > 2 * MAX_NEAR_SHARE * n:
        notes.append(
            f"Near leaks by {what} left out: at {option} {threshold} {len(matches)} of {n} {role} rows "
            f"would match a training row, so this similarity does not tell the rows apart (raise {option})."
        )
        return []
    return matches


def _outliers(train: Pool, names) -> dict:
    score = checks.knn_distance(train.U, OUTLIER_K)
    cutoff = checks.outlier_cutoff(score)
    rows = np.flatnonzero(score > cutoff)
    rows = rows[np.argsort(-score[rows])]
    return {
        "k": OUTLIER_K,
        "cutoff": round(cutoff, 4),
        "median_distance": round(float(np.median(score)), 4) if len(score) else None,
        "rows": [
            {
                "split": "train",
                "row": train.rows[i],
                "label": names[train.labels[i]],
                "distance": round(float(score[i]), 4),
                "input": _excerpt(train.inputs[i], 120),
            }
            for i in rows
        ],
    }


def _text_lengths(task, max_len: int, pools) -> dict:
    """Token counts per pool against `max_len` (`data.max_length`): over-length and very short rows."""
    tok = task.processor
    special = tok.num_special_tokens_to_add(pair=False) if hasattr(tok, "num_special_tokens_to_add") else 0
    out: dict[str, Any] = {"max_length": max_len, "short_tokens": SHORT_TOKENS}
    for name, p in pools.items():
        if not len(p):
            continue
        lengths = np.array([len(ids) for ids in tok(p.inputs, add_special_tokens=True, truncation=False)["input_ids"]])
        words = lengths - special
        over = np.flatnonzero(lengths > max_len)
        short = np.flatnonzero(words <= SHORT_TOKENS)
        out[name] = {
            "tokens": {
                "median": int(np.median(lengths)),
                "p95": int(np.percentile(lengths, 95)),
                "max": int(lengths.max()),
            },
            "over_max_length": [
                {"row": p.rows[i], "tokens": int(lengths[i]), "cut": int(lengths[i] - max_len)} for i in over
            ],
            "very_short": [
                {"row": p.rows[i], "tokens": int(words[i]), "input": _excerpt(p.inputs[i], 60)} for i in short
            ],
        }
    return out


def _summary(report: dict, oof: dict) -> dict:
    s = {
        "label_issues": len(report["label_issues"]),
        "label_issues_train": sum(1 for r in report["label_issues"] if r["split"] == "train"),
        "duplicate_groups": len(report["duplicates"]),
        "duplicate_rows": sum(len(g["rows"]) - 1 for g in report["duplicates"]),
        "conflicts": len(report["conflicts"]),
        "leaks": len(report["leaks"]),
        "outliers": len(report["outliers"]["rows"]),
        **{k: v for k, v in oof.items()},
    }
    tl = report.get("text_lengths", {}).get("train")
    if tl:
        s["over_max_length"] = len(tl["over_max_length"])
        s["very_short"] = len(tl["very_short"])
    return s


# ---------------------------------------------------------------------------------- fix file


def _fix_plan(report: dict, fix: str) -> tuple[set[int], dict[int, str], dict[str, int]]:
    """Training-file rows to drop and to relabel (row -> label name), and why, per reason."""
    drop: set[int] = set()
    relabel: dict[int, str] = {}
    why = {"label_issues": 0, "duplicate_copies": 0, "conflicting_duplicates": 0, "leaked_into_eval": 0}
    for issue in report["label_issues"]:
        if issue["split"] != "train":
            continue
        if fix == "drop":
            drop.add(issue["row"])
        else:
            relabel[issue["row"]] = issue["suggested"]
        why["label_issues"] += 1
    for g in report["duplicates"]:
        rows, labels = g["rows"], g["labels"]
        final = [relabel.get(r, lab) for r, lab in zip(rows, labels)]
        values, counts = np.unique(final, return_counts=True)
        if counts.max() * 2 <= len(final):  # no majority label: which is right is the user's call
            fresh = [r for r in rows if r not in drop]
            drop.update(rows)
            why["conflicting_duplicates"] += len(fresh)
            continue
        majority = values[counts.argmax()]
        keep = next((r for r, lab in zip(rows, final) if lab == majority and r not in drop), None)
        for r in rows:
            if r != keep and r not in drop:
                drop.add(r)
                why["duplicate_copies"] += 1
    for leak in report["leaks"]:
        if leak["train_row"] not in drop:
            drop.add(leak["train_row"])
            why["leaked_into_eval"] += 1
    for r in drop:
        relabel.pop(r, None)
    return drop, relabel, why


def _write_fix(train, report: dict, path: Path, fix: str, names: list[str], task) -> Path:
    """The training source `train` (a `DataSource`) with the planned rows dropped / relabelled, as csv."""
    import datasets

    from hf_transfer.data.sources import load_split

    raw = load_split(train, "train")
    drop, relabel, why = _fix_plan(report, fix)
    label_col = task.label_column
    frame = {}
    for col, feature in raw.features.items():
        values = raw[col]
        if isinstance(feature, datasets.ClassLabel):
            values = [feature.int2str(v) if v is not None and v >= 0 else None for v in values]
        elif isinstance(feature, (datasets.Image, datasets.Audio)):
            values = [
                v.get("path") if isinstance(v, dict) else v
                for v in raw.cast_column(col, type(feature)(decode=False))[col]
            ]
        frame[col] = values
    import pandas as pd

    df = pd.DataFrame(frame)
    if relabel:
        if df[label_col].dtype != object:
            df[label_col] = df[label_col].astype(object)
        for r, lab in relabel.items():
            df.at[r, label_col] = lab
    kept = df.drop(index=sorted(r for r in drop if r < len(df)))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    # UTF-8 whatever the source's encoding: `data.train=clean.csv` replaces the whole data.train
    # entry (its `encoding` too), and UTF-8 is what a csv without one is read as.
    kept.to_csv(tmp, index=False, encoding="utf-8")
    tmp.replace(path)
    report["_fix"] = {
        "mode": fix,
        "file": str(path),
        "rows_in": len(df),
        "rows_out": len(kept),
        "dropped": len(drop),
        "relabelled": len(relabel),
        "why": why,
        "dropped_rows": sorted(drop),
        "relabelled_rows": {str(k): v for k, v in sorted(relabel.items())},
    }
    return path


# ---------------------------------------------------------------------------------- writing


def _plot(report: dict, pools: dict, path: Path, names: list[str]) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    train = pools["train"]
    fig = Figure(figsize=(15, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 3, 1)
    width = 0.8 / max(1, len(pools))
    x = np.arange(len(names))
    for k, (name, _) in enumerate(pools.items()):
        counts = [report["class_balance"][name]["counts"][n] for n in names]
        ax.bar(x + k * width, counts, width, label=name)
    ax.set_xticks(x + width * (len(pools) - 1) / 2, [n[:12] for n in names], rotation=30, ha="right")
    ax.set_title("Class balance")
    ax.legend()
    ax = fig.add_subplot(1, 3, 2)
    if len(train) >= 3 and train.U.shape[1] >= 2:
        Z = train.U - train.U.mean(0)
        _, _, vt = np.linalg.svd(Z, full_matrices=False)
        P = Z @ vt[:2].T
        for c, n in enumerate(names):
            m = train.y == c
            ax.scatter(P[m, 0], P[m, 1], s=8, alpha=0.6, label=n[:12])
        pos = {r: i for i, r in enumerate(train.rows)}
        flagged = [pos[r["row"]] for r in report["label_issues"] if r["split"] == "train" and r["row"] in pos]
        if flagged:
            ax.scatter(P[flagged, 0], P[flagged, 1], s=40, marker="x", c="black", label="label issue")
        leaked = [pos[r["train_row"]] for r in report["leaks"] if r["train_row"] in pos]
        if leaked:
            ax.scatter(P[leaked, 0], P[leaked, 1], s=60, facecolors="none", edgecolors="red", label="in eval/test")
        ax.legend(fontsize=7)
    ax.set_title("Training rows (PCA of the features)")
    ax = fig.add_subplot(1, 3, 3)
    o = report["outliers"]
    score = checks.knn_distance(train.U, o["k"])
    ax.hist(score, bins=40, color="gray")
    if math.isfinite(o["cutoff"]):
        ax.axvline(o["cutoff"], color="red", linestyle="--", label=f"outlier fence {o['cutoff']:.3f}")
        ax.legend(fontsize=7)
    ax.set_title(f"Mean cosine distance to {o['k']} nearest rows")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path


def to_markdown(report: dict) -> str:
    s = report["summary"]
    c = report["config"]
    lines = [
        f"# Data audit: {c['train']}",
        "",
        f"Model `{c['model']}` ({c['recipe']}); rows: "
        + ", ".join(f"{k} {v}" for k, v in report["rows"].items())
        + (f"; eval: {c['eval']}" if c.get("eval") else "")
        + (f"; test: {c['test']}" if c.get("test") else ""),
        "",
        "Rows are 0-based data rows of their source file (the header line not counted).",
        "",
    ]
    lines += [
        "## Summary",
        "",
        f"- Likely label errors: **{s['label_issues']}**"
        + (
            f" (out-of-fold accuracy of the frozen-feature probe {s['oof_accuracy']:.3f}, {s['folds']} folds; "
            f"cleanlab estimates {s['estimated_label_errors']} label errors; the probe disagrees with "
            f"{s['disagreements']} labels)"
            if s.get("searched")
            else " (not searched)"
        ),
        f"- Duplicate groups in train: **{s['duplicate_groups']}** ({s['duplicate_rows']} extra copies)",
        f"- Conflicting duplicates: **{s['conflicts']}**",
        f"- Eval/test rows also in train (leaks): **{s['leaks']}**",
        f"- Outliers: **{s['outliers']}**",
    ]
    if "over_max_length" in s:
        lines.append(
            f"- Texts over data.max_length: **{s['over_max_length']}**; very short texts: **{s['very_short']}**"
        )
    for role, sk in report["skipped"].items():
        lines.append(
            f"- {role}: {sk['count']} rows skipped ({sk['why']})"
            + (f": rows {', '.join(map(str, sk['rows'][:SHOWN]))}" if sk.get("rows") else "")
        )
    if "fix" in report:
        f = report["fix"]
        lines.append(
            f"- Fix file (`--fix {f['mode']}`): `{f['file']}`: {f['rows_out']} of {f['rows_in']} rows "
            f"({f['dropped']} dropped, {f['relabelled']} relabelled). Train on it with "
            f"`data.train={f['file']}`."
        )
    for note in report["notes"]:
        lines.append(f"- Note: {note}")
    lines += [
        "",
        "## Class balance",
        "",
        "| split | " + " | ".join(report["labels"]) + " | largest / smallest |",
        "|---" * (len(report["labels"]) + 2) + "|",
    ]
    for name, b in report["class_balance"].items():
        lines.append(
            f"| {name} | "
            + " | ".join(str(b["counts"][n]) for n in report["labels"])
            + f" | {b.get('imbalance_ratio', '-')} |"
        )
    if report["label_noise"]:
        lines += [
            "",
            "Estimated share of wrong labels per given class (cleanlab's confident joint): "
            + ", ".join(f"{k} {v:.1%}" for k, v in report["label_noise"].items())
            + ".",
        ]
    lines += _table(
        "Likely label errors",
        "Lowest label quality first (score: cleanlab's self-confidence, the held-out probability of the given label).",
        ["split", "row", "given", "suggested", "score", "input"],
        report["label_issues"],
    )
    lines += _table(
        "Duplicates in train",
        f"Exact: same text after normalising case and whitespace (files: same "
        f"bytes); near: embedding cosine >= {report['settings']['near_threshold']} or similar characters.",
        ["kind", "rows", "labels", "similarity", "input"],
        report["duplicates"],
    )
    lines += _table(
        "Conflicts",
        "The same or nearly the same input with different labels.",
        ["kind", "split", "rows", "labels", "input"],
        report["conflicts"],
    )
    lines += _table(
        "Leaks",
        "Eval or test rows that are also, or nearly, training rows.",
        ["split", "eval_row", "train_row", "similarity", "kind", "eval_label", "train_label", "input"],
        report["leaks"],
    )
    o = report["outliers"]
    lines += _table(
        "Outliers",
        f"Mean cosine distance to the {o['k']} nearest training rows above {o['cutoff']} "
        f"(median {o['median_distance']}).",
        ["row", "label", "distance", "input"],
        o["rows"],
    )
    for role, tl in report.get("text_lengths", {}).items():
        if not isinstance(tl, dict) or "tokens" not in tl:
            continue
        t = tl["tokens"]
        lines += [
            "",
            f"## Text lengths ({role})",
            "",
            f"Tokens per row: median {t['median']}, 95th percentile {t['p95']}, max {t['max']}; "
            f"data.max_length {report['text_lengths']['max_length']}.",
        ]
        if tl["over_max_length"]:
            lines.append(
                f"{len(tl['over_max_length'])} rows are cut by truncation: "
                + ", ".join(f"row {r['row']} (-{r['cut']} tokens)" for r in tl["over_max_length"][:SHOWN])
            )
        if tl["very_short"]:
            lines.append(
                f"{len(tl['very_short'])} rows have at most {report['text_lengths']['short_tokens']} tokens: "
                + ", ".join(f"row {r['row']} ({r['input']!r})" for r in tl["very_short"][:SHOWN])
            )
    if "plot" in report.get("files", {}):
        lines += ["", f"![audit]({Path(report['files']['plot']).name})"]
    lines += [
        "",
        f"Audit took {report['seconds']['total']} s (embedding {report['seconds']['embedding']} s"
        + ("; features from the cache" if report["seconds"]["features_cached"] else "")
        + ").",
    ]
    return "\n".join(lines) + "\n"


def _table(title: str, intro: str, cols: list[str], rows: list[dict]) -> list[str]:
    out = ["", f"## {title} ({len(rows)})", ""]
    if not rows:
        return out + ["None found."]
    out += [intro, "", "| " + " | ".join(cols) + " |", "|---" * len(cols) + "|"]
    for r in rows[:SHOWN]:
        out.append("| " + " | ".join(_cell(r.get(c, "")) for c in cols) + " |")
    if len(rows) > SHOWN:
        out.append(f"\n{len(rows) - SHOWN} more in audit.json.")
    return out


def _cell(v) -> str:
    if isinstance(v, list):
        return ", ".join(map(str, v))
    if isinstance(v, float):
        return f"{v:.3f}"
    return _excerpt(str(v), 80)


__all__ = ["audit", "to_markdown", "FIXES", "NEAR_THRESHOLD", "TEXT_THRESHOLD"]
