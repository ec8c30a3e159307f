"""Exact duplicates by content: texts after normalising case and whitespace, images and audio by a
hash of their file bytes.

`train` uses `overlap_warning` on every run (one line when an eval or test row is also a
training row); `hf-transfer audit` uses the same keys for its exact duplicates and leaks.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

#: Beyond this many rows per split, `overlap_warning` hashes texts only (reading every image or
#: clip again would no longer be cheap).
MAX_FILE_ROWS_FOR_WARNING = 50_000


def normalize_text(text: str) -> str:
    """Case folded, runs of whitespace as one space, no leading or trailing space."""
    return " ".join(str(text).casefold().split())


def _file_digest(path: str) -> str | None:
    h = hashlib.sha1()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def content_key(value: Any) -> str | None:
    """What makes two inputs the same: normalised text, or the sha1 of the bytes of an image or
    audio entry (`{"bytes": ..., "path": ...}` as datasets stores them undecoded). None for a
    missing or unreadable value (it matches nothing)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        return "t:" + normalize_text(value)
    if isinstance(value, dict):
        data = value.get("bytes")
        if data:
            return "b:" + hashlib.sha1(data).hexdigest()
        path = value.get("path")
        if path:
            digest = _file_digest(path)
            return None if digest is None else "b:" + digest
        return None
    if isinstance(value, (bytes, bytearray)):
        return "b:" + hashlib.sha1(value).hexdigest()
    return "r:" + repr(value)


def row_keys(ds, columns: Iterable[str]) -> list[str | None]:
    """The content key of every row of `ds` over `columns` (input, and a text pair when there is one)."""
    columns = [c for c in columns if c]
    per_column = [[content_key(v) for v in ds[c]] for c in columns]
    out = []
    for parts in zip(*per_column):
        out.append(None if any(p is None for p in parts) else "\x1f".join(parts))
    return out


def exact_groups(keys: list[str | None]) -> list[list[int]]:
    """Indices sharing a key, groups of two or more, in first-seen order."""
    by_key: dict[str, list[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        if k is not None:
            by_key[k].append(i)
    return [g for g in by_key.values() if len(g) > 1]


def exact_matches(train_keys: list[str | None], other_keys: list[str | None]) -> list[tuple[int, int]]:
    """(other index, first train index with the same key) for every row of `other` found in train."""
    first: dict[str, int] = {}
    for i, k in enumerate(train_keys):
        if k is not None:
            first.setdefault(k, i)
    return [(j, first[k]) for j, k in enumerate(other_keys) if k is not None and k in first]


def _is_file_column(ds, column: str) -> bool:
    import datasets

    feature = ds.features.get(column)
    return isinstance(feature, (datasets.Image, datasets.Audio)) or (isinstance(feature, dict) and "bytes" in feature)


def overlap_warning(task, splits) -> str | None:
    """One line when an eval or test row has the same content as a training row, else None.

    Cheap: a hash per row (texts normalised for case and whitespace; images and clips by their
    bytes, up to `MAX_FILE_ROWS_FOR_WARNING` rows per split).
    """
    column = getattr(task, "input_col", None)
    train = getattr(splits, "train", None)
    if column is None or train is None or column not in train.column_names:
        return None
    pair = getattr(getattr(getattr(task, "cfg", None), "data", None), "text_pair_column", None)
    columns = [column] + ([pair] if pair and pair in train.column_names else [])
    if any(_is_file_column(train, c) for c in columns) and len(train) > MAX_FILE_ROWS_FOR_WARNING:
        return None
    train_keys = None
    found = []
    for role in ("eval", "test"):
        ds = getattr(splits, role, None)
        if ds is None or column not in ds.column_names:
            continue
        if any(_is_file_column(ds, c) for c in columns) and len(ds) > MAX_FILE_ROWS_FOR_WARNING:
            continue
        if train_keys is None:
            train_keys = row_keys(train, columns)
        hits = exact_matches(train_keys, row_keys(ds, columns))
        if hits:
            found.append(f"{len(hits)} of {len(ds)} {role} rows")
    if not found:
        return None
    return (
        f"{' and '.join(found)} also appear in the training data (same content after normalising "
        "case and whitespace): those scores overstate accuracy. `hf-transfer audit CONFIG` lists them "
        "(and near duplicates)."
    )
