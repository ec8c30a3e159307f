"""Columns, label encoding and splits, shared by every classification recipe."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import datasets
import numpy as np

from hf_transfer.data.fingerprints import transform_fingerprint
from hf_transfer.errors import DataError

logger = logging.getLogger(__name__)

LABEL_CANDIDATES = ("label", "labels", "class", "target", "category", "sentiment", "y")
TEXT_CANDIDATES = ("text", "sentence", "content", "review", "tweet", "document", "utterance", "question")


def find_column(
    ds: datasets.Dataset,
    given: str | None,
    candidates: tuple[str, ...],
    what: str,
    key: str,
    role: str = "train",
    first_match: bool = False,
) -> str:
    """The column holding `what`: the one given, else the single candidate present (or, with
    `first_match`, the first candidate present, the candidates being in priority order).

    Raises:
        DataError: The given column is missing, or detection finds none or several.
    """
    cols = list(ds.column_names)
    if given:
        if given not in cols:
            raise DataError(
                f"{what.capitalize()} column '{given}' (from {key}) is not in the {role} split. "
                f"Its columns are: {', '.join(cols)}. Set {key} to one of them."
            )
        return given
    lowered = {c.lower(): c for c in cols}
    found = [lowered[c] for c in candidates if c in lowered]
    if len(found) == 1 or (found and first_match):
        return found[0]
    if not found:
        raise DataError(
            f"No {what} column found in the {role} split (looked for {', '.join(candidates)}). "
            f"Its columns are: {', '.join(cols)}. Set {key} to the right one."
        )
    raise DataError(f"Several columns could hold the {what}: {', '.join(found)}. Set {key} to pick one.")


@dataclass
class LabelSpace:
    """The label names, in id order."""

    names: list[str]

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names))

    @property
    def label2id(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.names)}

    def __len__(self) -> int:
        return len(self.names)


def label_space_from(ds: datasets.Dataset, column: str) -> LabelSpace:
    """Label names from a `ClassLabel` feature, else the sorted distinct values of the column."""
    feature = ds.features[column]
    if isinstance(feature, datasets.ClassLabel):
        return LabelSpace(list(feature.names))
    values = [v for v in ds[column] if v is not None]
    if not values:
        raise DataError(f"Label column '{column}' is empty in the train split.")
    distinct = sorted(set(values), key=lambda v: (isinstance(v, str), v))
    if len(distinct) < 2:
        raise DataError(
            f"Label column '{column}' has a single value ({distinct[0]!r}) in the train split: a "
            "classifier needs at least two classes."
        )
    return LabelSpace([str(v) for v in distinct])


def encode_labels(ds: datasets.Dataset, column: str, labels: LabelSpace, role: str) -> datasets.Dataset:
    """Map the label column to integer ids under the name `labels`.

    Raises:
        DataError: A row has a missing label, or a label never seen in the train split.
    """
    feature = ds.features[column]
    if isinstance(feature, datasets.ClassLabel):
        names = list(feature.names)
        raw = [names[v] if v is not None and v >= 0 else None for v in ds[column]]
    else:
        raw = [None if v is None else str(v) for v in ds[column]]
    missing = sum(v is None for v in raw)
    if missing:
        raise DataError(
            f"{missing} rows of the {role} split have no label in column '{column}' (for "
            "example unlabelled test rows, label -1). Remove them or point data."
            f"{role} at a labelled split."
        )
    mapping = labels.label2id
    unseen = sorted(set(raw) - set(mapping))
    if unseen:
        raise DataError(
            f"The {role} split has labels never seen in train: {', '.join(map(repr, unseen[:10]))}. "
            f"Train labels are {', '.join(labels.names)}. Add examples of them to train, or drop "
            f"those rows from {role}."
        )
    ids = [mapping[v] for v in raw]
    ds = ds.remove_columns([c for c in (column, "labels") if c in ds.column_names])
    ds = ds.add_column("labels", ids)
    return ds.cast_column("labels", datasets.ClassLabel(names=labels.names))


def stratified_split(ds: datasets.Dataset, fraction: float, seed: int) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Carve `fraction` of `ds` out as an eval split, stratified by `labels` when every class allows."""
    counts = Counter(ds["labels"])
    stratify = "labels" if min(counts.values()) >= 2 else None
    if stratify is None:
        logger.warning("A class has a single example: the eval split is carved without stratification.")
    n_eval = max(int(round(len(ds) * fraction)), len(counts) if stratify else 1)
    if n_eval >= len(ds):
        raise DataError(
            f"The train split has {len(ds)} rows: too few to carve an eval split from. "
            "Give data.eval, or more training data."
        )
    parts = ds.train_test_split(test_size=n_eval, seed=seed, stratify_by_column=stratify)
    return parts["train"], parts["test"]


def subsample(ds: datasets.Dataset, n: int | None, seed: int) -> datasets.Dataset:
    """At most `n` rows, stratified by `labels` where possible, reproducible by `seed`."""
    if n is None or n >= len(ds):
        return ds
    counts = Counter(ds["labels"])
    if min(counts.values()) >= 2 and n >= len(counts):
        return ds.train_test_split(train_size=n, seed=seed, stratify_by_column="labels")["train"]
    return ds.shuffle(seed=seed).select(range(n))


def per_class(ds: datasets.Dataset, n: int | None, seed: int) -> datasets.Dataset:
    """At most `n` rows of each class, drawn reproducibly by `seed`."""
    if n is None:
        return ds
    rng = np.random.default_rng(seed)
    labels = np.asarray(ds["labels"])
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        keep.extend(rng.permutation(idx)[:n].tolist())
    return ds.select(sorted(keep))


def class_weights(ds: datasets.Dataset, num_labels: int, setting) -> list[float] | None:
    """Per-class loss weights: None, inverse frequency (`balanced`), or the list given."""
    if setting in (None, "none"):
        return None
    if setting == "balanced":
        counts = np.bincount(np.asarray(ds["labels"]), minlength=num_labels).astype(float)
        # sklearn's "balanced": n_samples / (n_classes * count); absent classes get weight 0.
        weights = np.where(counts > 0, counts.sum() / (num_labels * np.maximum(counts, 1)), 0.0)
        return weights.tolist()
    weights = list(setting)
    if len(weights) != num_labels:
        raise DataError(
            f"training.class_weights has {len(weights)} values but there are {num_labels} labels "
            "(in id order: see id2label in the log). Give one weight per label."
        )
    return [float(w) for w in weights]


def apply_filter(ds: datasets.Dataset, expression: str | None, role: str) -> datasets.Dataset:
    """Rows of `ds` for which the pandas query `expression` holds (`data.filter`)."""
    if not expression:
        return ds
    import pandas as pd

    def keep(batch):
        # datasets hands a lazy batch object; materialise it as plain columns for pandas.
        frame = pd.DataFrame({k: list(batch[k]) for k in batch.keys()})
        return frame.eval(expression).astype(bool).tolist()

    try:
        out = ds.filter(
            keep, batched=True, desc="Filtering", new_fingerprint=transform_fingerprint(ds, "data.filter", expression)
        )
    except Exception as e:  # pandas raises several types for a bad expression
        raise DataError(
            f"data.filter {expression!r} cannot be applied to the {role} split ({type(e).__name__}: {e}). "
            f"Columns are: {', '.join(ds.column_names)}."
        ) from None
    if len(out) == 0:
        raise DataError(f"data.filter {expression!r} keeps no rows of the {role} split ({len(ds)} rows before).")
    logger.info("data.filter kept %d of %d %s rows.", len(out), len(ds), role)
    return out


def select_indices(
    ds: datasets.Dataset, indices: list[int] | None, key: str = "data.train_indices"
) -> datasets.Dataset:
    """The rows of `ds` at `indices` (in that order), or `ds` itself when `indices` is None.

    Raises:
        DataError: An index is outside the split or repeated.
    """
    if indices is None:
        return ds
    bad = [i for i in indices if not 0 <= i < len(ds)]
    if bad:
        raise DataError(
            f"{key} holds {len(bad)} positions outside the training pool of {len(ds)} rows (for example "
            f"{bad[0]}). The pool changed (data file, data.filter, data.eval_fraction or data.seed): "
            "recompute the indices."
        )
    if len(set(indices)) != len(indices):
        raise DataError(f"{key} repeats some positions: each row may be selected once.")
    return ds.select(indices, new_fingerprint=transform_fingerprint(ds, "select", np.asarray(indices, dtype=np.int64)))
