"""Frozen features of a recipe's data: the task built from a config, its splits embedded.

The one place that goes from a `TrainConfig` to `models.features.Features`: `rank`, studies, the
data audit and the benchmarks call it. It lives with the tasks because it builds one
(`get_task`); the extraction itself is `models.features`.
"""

from __future__ import annotations

import time

from hf_transfer.errors import ConfigError, DataError
from hf_transfer.models.features import FeatureExtractor, Features, FeatureSpec, extract, spec_from_settings
from hf_transfer.registry import recipe_modality
from hf_transfer.tasks.base import get_task


def features_for_config(
    cfg,
    roles=("train",),
    *,
    name_or_path: str | None = None,
    spec: FeatureSpec | None = None,
    max_examples: int | None = None,
    seed: int = 0,
    extra: dict | None = None,
    batch_size: int | None = None,
    columns: tuple[str, ...] = (),
) -> dict[str, Features]:
    """Build the task and the pretrained model of a TrainConfig, and extract features.

    Args:
        cfg: The run config (data, model, recipe; `strategy.layers/pooling/cache_dir/use_cache`
            when it has them).
        roles: Splits to embed among `train`, `eval`, `test` (absent ones are skipped).
        name_or_path: Another checkpoint than `cfg.model.name_or_path`.
        spec: Default: from `cfg.strategy`'s settings.
        max_examples: A seeded sample of at most this many rows per split.
        seed: Sampling seed.
        extra: More datasets by name (e.g. `{"target": ds}`, labels optional; same columns as train).
        batch_size: Default: `training.eval_batch_size` or `training.batch_size`.
        columns: Data columns to return beside the features, row for row (`Features.columns`).

    Returns:
        Features by role / extra name.

    Raises:
        DataError: A column in `columns` that a split lacks.
    """
    import copy

    cfg = copy.deepcopy(cfg)
    if name_or_path:
        cfg.model.name_or_path = name_or_path
    task = get_task(cfg)
    task.load_processor()
    splits = task.load_splits()
    model = task.build_model()
    strategy = getattr(cfg, "strategy", None)
    extractor = FeatureExtractor(
        model,
        modality=recipe_modality(cfg.recipe, "text"),
        spec=spec or spec_from_settings(strategy),
        name_or_path=cfg.model.name_or_path,
    )
    bs = batch_size or cfg.training.eval_batch_size or cfg.training.batch_size
    if getattr(task, "token_level", False):
        return _token_features_for(
            task, model, splits, roles, extra, spec or spec_from_settings(strategy), max_examples, seed, bs, columns
        )
    sets = {role: getattr(splits, role, None) for role in roles}
    sets.update(extra or {})
    out = {}
    for name, ds in sets.items():
        if ds is None:
            continue
        if max_examples is not None and len(ds) > max_examples:
            ds = ds.shuffle(seed=seed).select(range(max_examples))
        missing = [c for c in columns if c not in ds.column_names]
        if missing:
            raise DataError(
                f"The {name} split has no column {', '.join(repr(c) for c in missing)} (its columns: "
                f"{', '.join(ds.column_names)}). Name a column of the data, or add it: a column of the csv / "
                "dataset, or for an audio folder a metadata.csv with file_name and that column; "
                "image folders carry no extra columns, use a csv of image paths instead)."
            )
        out[name] = extract(
            extractor,
            task,
            ds,
            batch_size=bs,
            cache=getattr(strategy, "use_cache", True),
            cache_dir=getattr(strategy, "cache_dir", None),
        )
        out[name].columns = {c: list(ds[c]) for c in columns}
    return out


def _token_features_for(task, model, splits, roles, extra, spec, max_examples, seed, batch_size, columns):
    """`features_for_config` for token classification: one row per scored word (the head's input
    and the word's tag) of a seeded sample of at most `max_examples` sentences."""
    if spec.layers != "last" or spec.normalize:
        raise ConfigError(
            "Token classification features are the last layer's per-token states (what the head "
            "reads): leave the layers at `last` and normalize unset."
        )
    if columns:
        raise DataError(
            f"Token-level features have one row per word, not per example: columns "
            f"{', '.join(repr(c) for c in columns)} cannot come back row for row."
        )
    sets = {role: getattr(splits, role, None) for role in roles}
    sets.update(extra or {})
    out = {}
    for name, ds in sets.items():
        if ds is None:
            continue
        if max_examples is not None and len(ds) > max_examples:
            ds = ds.shuffle(seed=seed).select(range(max_examples))
        t0 = time.time()
        X, y = task.token_features(model, ds, batch_size=batch_size)
        out[name] = Features(
            X,
            y,
            {
                "source": "token head input",
                "pooling": "none (per token)",
                "layers": "last",
                "seconds": round(time.time() - t0, 3),
                "dim": int(X.shape[1]),
                "sentences": len(ds),
            },
            False,
        )
    return out
