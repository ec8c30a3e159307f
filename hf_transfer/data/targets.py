"""Targets that are not one class per row: label sets (multi-label) and numbers (regression).

Every check runs before training and names the split, its file and the row (1-based, in the order
the split lists its rows after `data.filter`).

Multi-label labels come in three forms, all encoded into a `labels` column of 0/1 floats per row:

- one string per row in `data.label_column`, labels separated by `data.label_separator`
  (`sports;politics`; an empty cell is a row with no label);
- a list column (`["sports", "politics"]`; a Hub `Sequence(ClassLabel)` keeps its names);
- one 0/1 column per label, named in `data.label_columns` (values 0/1, true/false, or "0"/"1").

A row with no label is allowed (an example of "none of these") and counted in the log and in
`metrics.json` (`empty_label_rows`). A label outside the declared set (`data.label_names`, else
the labels the train split uses) is an error.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import datasets
import numpy as np

from hf_transfer.errors import DataError

logger = logging.getLogger(__name__)

MAX_LISTED = 5


def _rows(rows: list[int]) -> str:
    shown = ", ".join(str(r + 1) for r in rows[:MAX_LISTED])
    return f"row{'s' if len(rows) > 1 else ''} {shown}{' ...' if len(rows) > MAX_LISTED else ''}"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def split_labels(value: Any, separator: str, names: Sequence[str] | None = None) -> list[str]:
    """The labels of one cell: a separated string, a list, or nothing (missing or empty)."""
    if _missing(value):
        return []
    if isinstance(value, (list, tuple)):
        out = []
        for v in value:
            if _missing(v):
                continue
            if names is not None and isinstance(v, (int, np.integer)):
                out.append(names[int(v)])
            else:
                out.append(str(v).strip())
        return [v for v in out if v]
    text = str(value).strip()
    if not text:
        return []
    return [part.strip() for part in text.split(separator) if part.strip()]


def _class_names(feature) -> list[str] | None:
    inner = getattr(feature, "feature", None)
    if isinstance(feature, list) and feature:
        inner = feature[0]
    return list(inner.names) if isinstance(inner, datasets.ClassLabel) else None


def label_sets(ds: datasets.Dataset, column: str, separator: str) -> tuple[list[list[str]], list[str] | None]:
    """Each row's labels from `column`, and the names a `Sequence(ClassLabel)` feature declares."""
    names = _class_names(ds.features[column])
    return [split_labels(v, separator, names) for v in ds[column]], names


def _truth(value: Any) -> float | None:
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    if isinstance(value, (int, float, np.integer, np.floating)) and not _missing(value):
        return float(value) if float(value) in (0.0, 1.0) else None
    if isinstance(value, str) and value.strip().lower() in ("0", "1", "true", "false", "0.0", "1.0"):
        return 1.0 if value.strip().lower() in ("1", "true", "1.0") else 0.0
    return None


def multi_hot_from_columns(ds: datasets.Dataset, columns: Sequence[str], where: str) -> np.ndarray:
    """(n, L) 0/1 matrix from one column per label.

    Raises:
        DataError: A column is missing, or a value is not 0/1 (naming column and rows).
    """
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise DataError(
            f"data.label_columns names {', '.join(map(repr, missing))}, not in the {where}. Its "
            f"columns are: {', '.join(ds.column_names)}."
        )
    out = np.zeros((len(ds), len(columns)), dtype=np.float32)
    for j, c in enumerate(columns):
        values = ds[c]
        bad = []
        for i, v in enumerate(values):
            t = _truth(v)
            if t is None:
                bad.append(i)
            else:
                out[i, j] = t
        if bad:
            raise DataError(
                f"Label column '{c}' of the {where} must hold 0/1 (or true/false) values; "
                f"found {values[bad[0]]!r} at {_rows(bad)}. Fix those rows or drop the column from "
                "data.label_columns."
            )
    return out


def multi_hot(sets: list[list[str]], names: Sequence[str], where: str, declared: str) -> np.ndarray:
    """(n, L) 0/1 matrix of label sets over `names`.

    Raises:
        DataError: A label outside `names`, naming the label, the rows and where the set comes from.
    """
    index = {n: i for i, n in enumerate(names)}
    out = np.zeros((len(sets), len(names)), dtype=np.float32)
    unknown: dict[str, list[int]] = {}
    for i, labels in enumerate(sets):
        for label in labels:
            j = index.get(label)
            if j is None:
                unknown.setdefault(label, []).append(i)
            else:
                out[i, j] = 1.0
    if unknown:
        label, rows = next(iter(unknown.items()))
        others = (
            f" (and {len(unknown) - 1} other unknown label(s): {', '.join(map(repr, list(unknown)[1:6]))})"
            if len(unknown) > 1
            else ""
        )
        raise DataError(
            f"The {where} has label {label!r} at {_rows(rows)}, outside the declared label set "
            f"({declared}: {', '.join(names)}){others}. Fix the rows, add the label to data.label_names, "
            "or check data.label_separator."
        )
    return out


def count_empty(matrix: np.ndarray, where: str) -> int:
    """Rows without any label: allowed, logged, returned for metrics.json."""
    empty = int((matrix.sum(axis=1) == 0).sum())
    if empty:
        logger.info(
            "%d of %d rows of the %s have no label (kept: they teach 'none of these').", empty, len(matrix), where
        )
    if len(matrix) and empty == len(matrix):
        raise DataError(
            f"No row of the {where} has a label: check data.label_column / data.label_columns and data.label_separator."
        )
    return empty


def numeric_targets(ds: datasets.Dataset, column: str, where: str) -> np.ndarray:
    """The regression targets of `column` as float64.

    Raises:
        DataError: A missing, non-numeric or non-finite value (naming the rows and the value).
    """
    values = ds[column]
    out = np.zeros(len(values), dtype=np.float64)
    missing, bad = [], []
    for i, v in enumerate(values):
        if _missing(v) or (isinstance(v, str) and not v.strip()):
            missing.append(i)
            continue
        if isinstance(v, bool):
            bad.append(i)
            continue
        try:
            x = float(v)
        except (TypeError, ValueError):
            bad.append(i)
            continue
        if not math.isfinite(x):
            bad.append(i)
            continue
        out[i] = x
    if missing:
        raise DataError(
            f"The {where} has no target at {_rows(missing)} of column '{column}' ({len(missing)} rows). "
            "Regression needs a number in every row: fill them or drop them (data.filter, e.g. "
            f'"{column}.notna()").'
        )
    if bad:
        raise DataError(
            f"Column '{column}' of the {where} must hold finite numbers; found {values[bad[0]]!r} at "
            f"{_rows(bad)}. Fix those rows, or set data.label_column to the numeric target column."
        )
    return out


def check_not_constant(y: np.ndarray, column: str, where: str) -> None:
    """A constant target leaves nothing to learn (and no standard deviation to scale by)."""
    if len(y) and float(np.ptp(y)) == 0.0:
        raise DataError(
            f"The target column '{column}' of the {where} is constant ({y[0]:g} in all {len(y)} rows): "
            "there is nothing to learn. Check data.label_column and data.filter."
        )
