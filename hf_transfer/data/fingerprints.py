"""Fingerprints that hf_transfer gives datasets' transforms itself (`new_fingerprint=`).

Without one, `Dataset.map`, `filter` and `select` hash their function and arguments with dill to
name the result. For a closure over a tokenizer that takes a good part of a second, and datasets
does it inside a bare `except:` that also catches KeyboardInterrupt: a Ctrl-C landing there is
dropped (a random fingerprint is used) and the run goes on. A fingerprint built here from the
input's own fingerprint, the step's name and its settings avoids that hashing. A step whose
result depends on an object that a short description cannot pin down (a tokenizer folder edited in
place) also passes `load_from_cache_file=False`: its cache is never trusted on the description.
"""

from __future__ import annotations

import hashlib

import datasets
import numpy as np


def transform_fingerprint(ds: datasets.Dataset, step: str, *settings) -> str:
    """A deterministic fingerprint for `step` applied to `ds` with `settings` (plain values, compared by repr)."""
    h = hashlib.sha256()
    for part in (getattr(ds, "_fingerprint", None), step, *settings):
        h.update(part.tobytes() if isinstance(part, np.ndarray) else repr(part).encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


def tokenizer_identity(tokenizer) -> tuple:
    """What names a tokenizer in a fingerprint: class, source, size and the sides it cuts and pads."""
    return (
        type(tokenizer).__name__,
        str(getattr(tokenizer, "name_or_path", "")),
        len(tokenizer),
        getattr(tokenizer, "truncation_side", None),
        getattr(tokenizer, "padding_side", None),
    )


def content_fingerprint(ds: datasets.Dataset, columns, batch_size: int = 4096) -> str:
    """A hash of the values of `columns` row by row, in order (datasets' own fingerprint follows
    the file and the transforms, not the rows: a file rewritten with its rows in another order
    gets a new one, the same rows after another path do not). Image and audio columns are hashed
    as stored (path or bytes), never decoded."""
    h = hashlib.sha256()
    columns = [c for c in columns if c and c in ds.column_names]
    h.update(repr((len(ds), columns)).encode())
    table_view = ds.with_format("arrow")
    for start in range(0, len(ds), batch_size):
        table = table_view[start : start + batch_size]
        for column in columns:
            for value in table.column(column).to_pylist():
                _feed(h, value)
    return h.hexdigest()[:16]


def _feed(h, value) -> None:
    """Hash one value: bytes as they are (an embedded image or clip), containers item by item, the rest by repr."""
    if isinstance(value, (bytes, bytearray)):
        h.update(b"b%d:" % len(value))
        h.update(value)
    elif isinstance(value, dict):
        h.update(b"{")
        for key in sorted(value):
            h.update(repr(key).encode())
            _feed(h, value[key])
        h.update(b"}")
    elif isinstance(value, (list, tuple)):
        h.update(b"[%d:" % len(value))
        for item in value:
            _feed(h, item)
        h.update(b"]")
    else:
        h.update(repr(value).encode())
        h.update(b";")
