"""Target-domain data (`data.target`): loaded like `data.train`, checked to be the same kind of
data as the run's recipe, labels optional.

A target set is usually unlabelled production data: a csv/jsonl with the text column, a folder of
images (flat, or one folder per class when labels exist), or audio files. Labels, where present,
are encoded with the training label names (the shift report uses them); adaptation ignores them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import datasets

from hf_transfer.data import labels as labels_mod
from hf_transfer.data.sources import load_split
from hf_transfer.errors import DataError
from hf_transfer.paths import resolve
from hf_transfer.registry import recipe_modality

logger = logging.getLogger(__name__)

_WHAT = {"text": "text", "image": "images", "audio": "audio"}


def data_modality(ds: datasets.Dataset) -> tuple[str, str | None]:
    """(`text` | `image` | `audio`, the media column) of a loaded dataset.

    Media columns are `Image` / `Audio` features, or string columns whose first values are paths
    to image or audio files.
    """
    from hf_transfer.data.audio import AUDIO_EXTENSIONS
    from hf_transfer.data.image import IMAGE_EXTENSIONS

    for col, feature in ds.features.items():
        if isinstance(feature, datasets.Image):
            return "image", col
        if isinstance(feature, datasets.Audio):
            return "audio", col
    head = ds.select(range(min(len(ds), 20)))
    for col, feature in ds.features.items():
        if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
            values = [str(v).strip() for v in head[col] if v]
            if not values:
                continue
            suffixes = {Path(v).suffix.lower() for v in values}
            if suffixes <= IMAGE_EXTENSIONS:
                return "image", col
            if suffixes <= AUDIO_EXTENSIONS:
                return "audio", col
    return "text", None


def _flat_image_folder(path: Path) -> datasets.Dataset | None:
    """A folder of loose images (no class folders) as an unlabelled `image` dataset, else None."""
    from hf_transfer.data.image import IMAGE_EXTENSIONS

    if not path.is_dir() or any(p.is_dir() and not p.name.startswith((".", "_")) for p in path.iterdir()):
        return None
    files = sorted(str(p.resolve()) for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        return None
    logger.info("Target image folder '%s': %d unlabelled images.", path, len(files))
    return datasets.Dataset.from_dict({"image": files}, features=datasets.Features({"image": datasets.Image()}))


def load_target(
    cfg, task, *, keep_labels: bool = False, max_samples: int | None = None
) -> tuple[datasets.Dataset, bool]:
    """Load `data.target` for `task` (whose `load_splits` has run: it knows the input column).

    Args:
        cfg: The run's config.
        task: The recipe's task, after `load_splits`.
        keep_labels: Encode the target's labels (same names as train) into `labels` when it has
            them; otherwise every row gets label 0 (the adaptation hooks drop it from batches).
        max_samples: Keep at most this many rows (seeded); defaults to adaptation.max_target_samples.

    Returns:
        (a dataset `task.preprocess` accepts, whether its `labels` are the target's real labels).

    Raises:
        DataError: The target is another kind of data than the recipe's (text for an image model,
            ...), or lacks the training input column.
    """
    source = cfg.data.target
    path = Path(resolve(source.name)).expanduser()
    ds = _flat_image_folder(path) if path.is_dir() else None
    if ds is None:
        ds = load_split(source, "target")
    want = recipe_modality(cfg.recipe, "text")
    found, media_col = data_modality(ds)
    if found != want:
        where = f" (column '{media_col}')" if media_col else ""
        raise DataError(
            f"data.target holds {_WHAT[found]}{where}, but recipe {cfg.recipe} trains on {_WHAT[want]}: the "
            f"target must be the same kind of data as data.train. Columns of the target: {', '.join(ds.column_names)}."
        )
    col = task.input_col
    if col not in ds.column_names:
        if media_col is not None:
            ds = ds.rename_column(media_col, col)
        else:
            raise DataError(
                f"data.target has no column '{col}' (the training input column). Its columns are: "
                f"{', '.join(ds.column_names)}. Rename the column, or set data.text_column for both."
            )
    n = max_samples if max_samples is not None else cfg.adaptation.max_target_samples
    if n is not None and len(ds) > n:
        seed = cfg.data.seed if cfg.data.seed is not None else cfg.training.seed
        ds = ds.shuffle(seed=seed).select(range(n))
    label_col = getattr(task, "label_column", None)
    has_labels = keep_labels and label_col is not None and label_col in ds.column_names
    if has_labels:
        try:
            ds = labels_mod.encode_labels(ds, label_col, task.labels, "target")
        except DataError as e:  # labels the training data does not have: use the target unlabelled
            logger.warning("data.target's labels are not usable (%s); treating the target as unlabelled.", e)
            has_labels = False
    if not has_labels:
        drop = [c for c in ds.column_names if c != col and c in ("labels", label_col)]
        ds = ds.remove_columns(drop).add_column("labels", [0] * len(ds))
    if want == "image":
        from hf_transfer.data.image import check_images
        from hf_transfer.tasks.image_classification import _source_dir

        ds = task._image_column(ds, "target", _source_dir(source) if _flat_image_folder(path) is None else None)
        ds, skipped = check_images(ds, col, "target", cfg.data.on_bad_file)
        if skipped:
            logger.info("Skipped %d unreadable target images.", len(skipped))
    elif want == "audio":
        from hf_transfer.data import audio as audio_mod

        ds = audio_mod.undecoded(ds, col)
        ds = audio_mod.resolve_paths(ds, col, audio_mod.source_dir(source), "target")
        ds, _ = audio_mod.check_audio(ds, col, task._window(), "target")
    if len(ds) == 0:
        raise DataError("data.target has no usable rows.")
    logger.info("Target data: %d rows from %s%s.", len(ds), source.name, " (labelled)" if has_labels else "")
    return ds, has_labels
