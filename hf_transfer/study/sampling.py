"""Nested, stratified training subsamples: for one seed, every larger set contains every smaller one.

Per class (`--per-class`): each class's rows are shuffled once by (seed, class); the size-k set is
the first k of every class. Totals: the same per-class shuffles, then one ordering of all rows in
which every prefix keeps the pool's class proportions (to within one row per class) and holds at
least one row of each class: the first row of each class comes first, then rows are ordered by
(rank within class + 0.5) / class size, Sainte-Lague's divisor rule, which is house-monotone, so a
prefix of the ordering is both stratified and nested. The size-n set is the first n rows.

Positions are into the training pool (train rows after `data.filter` and the eval carve-out),
the numbering `data.train_indices` uses.
"""

from __future__ import annotations

import numpy as np

from hf_transfer.errors import ConfigError


def _class_orders(labels: np.ndarray, seed: int) -> dict[int, np.ndarray]:
    # One generator per (seed, class): a class's order does not depend on the other classes.
    return {
        int(c): np.random.default_rng([seed, 0, int(c)]).permutation(np.flatnonzero(labels == c))
        for c in np.unique(labels)
    }


def stratified_order(labels, seed: int) -> np.ndarray:
    """All pool positions, ordered so that each prefix is a stratified sample of the pool."""
    labels = np.asarray(labels)
    orders = _class_orders(labels, seed)
    tiebreak = np.random.default_rng([seed, 1])
    keys, positions = [], []
    for order in orders.values():
        rank = np.arange(len(order), dtype=float)
        key = (rank + 0.5) / len(order)
        key[0] = -1.0  # one row of every class first
        keys.append(key)
        positions.append(order)
    keys = np.concatenate(keys)
    positions = np.concatenate(positions)
    ties = tiebreak.random(len(keys))
    return positions[np.lexsort((ties, keys))]


def nested_subsamples(labels, sizes: list[int], seed: int, per_class: bool) -> dict[int, list[int]]:
    """For each size, the sorted pool positions of its subsample (nested across sizes).

    Args:
        labels: Label id of every pool row.
        sizes: Sizes: totals, or rows per class with `per_class`.
        seed: Draws the subsample; the same seed gives the same sets.
        per_class: Sizes count rows per class.

    Raises:
        ConfigError: A size is larger than the pool (or than a class holds, per class), or a total
            is smaller than the number of classes.
    """
    labels = np.asarray(labels)
    check_sizes(labels, sizes, per_class)
    out: dict[int, list[int]] = {}
    if per_class:
        orders = _class_orders(labels, seed)
        for k in sizes:
            out[k] = sorted(int(i) for order in orders.values() for i in order[:k])
    else:
        order = stratified_order(labels, seed)
        for n in sizes:
            out[n] = sorted(int(i) for i in order[:n])
    return out


def check_sizes(labels, sizes: list[int], per_class: bool, names: list[str] | None = None) -> None:
    """Raise `ConfigError` for a size the pool cannot give."""
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    for s in sizes:
        if s < 1:
            raise ConfigError(f"--sizes must be positive integers, got {s}.")
    if per_class:
        smallest = int(counts.min())
        too_big = [s for s in sizes if s > smallest]
        if too_big:
            c = int(classes[counts.argmin()])
            name = names[c] if names else str(c)
            raise ConfigError(
                f"--sizes {max(too_big)} per class is more than class '{name}' holds in the training pool "
                f"({smallest} rows after data.filter and the eval carve-out; per class: "
                f"{_per_class_text(classes, counts, names)}). Use sizes up to {smallest}."
            )
    else:
        too_big = [s for s in sizes if s > len(labels)]
        if too_big:
            raise ConfigError(
                f"--sizes {max(too_big)} is more than the training pool holds ({len(labels)} rows after "
                f"data.filter and the eval carve-out). Use sizes up to {len(labels)}."
            )
        too_small = [s for s in sizes if s < len(classes)]
        if too_small:
            raise ConfigError(
                f"--sizes {min(too_small)} is fewer than the {len(classes)} classes: a stratified "
                "subsample needs at least one row of each. Use larger sizes, or --per-class."
            )


def _per_class_text(classes, counts, names) -> str:
    return ", ".join(f"{names[int(c)] if names else c}={int(n)}" for c, n in zip(classes, counts))
