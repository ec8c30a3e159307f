"""Load one split from the Hub or from a local file or folder, as a `datasets.Dataset`."""

from __future__ import annotations

import logging
from pathlib import Path

import datasets

from hf_transfer.config import DataSource
from hf_transfer.errors import DataError
from hf_transfer.paths import resolve

logger = logging.getLogger(__name__)

# Local file extension -> the `datasets` packaged builder that reads it.
_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
_IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
_AUDIO_EXT = {".wav", ".flac", ".mp3", ".ogg", ".m4a", ".opus"}
_DEFAULT_SPLITS = {"train": "train", "eval": "validation", "test": "test"}


def _looks_local(name: str) -> bool:
    p = Path(name)
    return (
        name.startswith((".", "/", "~"))
        or p.suffix.lower() in _BUILDERS
        or name.count("/") > 1
        or p.exists()
    )


def _load_file(path: Path, source: DataSource) -> datasets.Dataset:
    builder = _BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise DataError(
            f"Cannot read '{path}': unsupported file type '{path.suffix}'. "
            f"Use one of {', '.join(sorted(_BUILDERS))}, or a folder."
        )
    kwargs = {}
    if builder == "csv":
        if path.suffix.lower() == ".tsv":
            kwargs["sep"] = "\t"
        if source.encoding:
            kwargs["encoding"] = source.encoding
    try:
        return datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
    except UnicodeDecodeError as e:
        raise DataError(
            f"Cannot decode '{path}' as UTF-8 ({e.reason}). Set its encoding, for example "
            f"data.<split>.encoding=latin-1."
        ) from None
    except Exception as e:  # datasets wraps parser errors in several exception types
        raise DataError(f"Cannot read '{path}' as {builder}: {e}") from None


def _split_file(folder: Path, split: str) -> Path | None:
    """In a folder of data files, the file for `split` (`train.csv`, `validation.jsonl`, ...)."""
    aliases = {"validation": ("validation", "valid", "val", "dev", "eval"), "test": ("test",)}
    for stem in aliases.get(split, (split,)):
        for ext in _BUILDERS:
            candidate = folder / f"{stem}{ext}"
            if candidate.is_file():
                return candidate
    return None


def _load_folder(folder: Path, split: str, source: DataSource) -> datasets.Dataset:
    files = [p for p in folder.rglob("*") if p.is_file()]
    exts = {p.suffix.lower() for p in files}
    if exts & _AUDIO_EXT:
        # An audiofolder may carry metadata.csv files (transcripts): the audio loader reads them.
        from hf_transfer.data.audio import load_audio_folder

        return load_audio_folder(folder, split)
    if exts & set(_BUILDERS):
        path = _split_file(folder, split)
        if path is None:
            data_files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _BUILDERS)
            if len(data_files) == 1:
                path = data_files[0]
            else:
                raise DataError(
                    f"Folder '{folder}' has no file for split '{split}'. Name the files "
                    "train.csv / validation.csv / test.csv (or .json, .jsonl, .parquet), or point "
                    "data.<split> at the file itself."
                )
        return _load_file(path, source)
    if exts & _IMAGE_EXT:
        from hf_transfer.data.image import load_image_folder

        return load_image_folder(folder, split)
    raise DataError(
        f"Folder '{folder}' holds no data files (csv, json, jsonl, parquet), images or audio."
    )


def load_split(source: DataSource, role: str = "train") -> datasets.Dataset:
    """Load the split that `source` names.

    Args:
        source: Hub dataset (name, config, split) or a local file or folder.
        role: `train`, `eval` or `test`; picks the default split name.

    Returns:
        The split as a `datasets.Dataset`.

    Raises:
        DataError: The path does not exist, the file cannot be parsed, or the Hub dataset cannot
            be reached.
    """
    split = source.split or _DEFAULT_SPLITS[role]
    name = resolve(source.name)
    path = Path(name).expanduser()
    if path.exists():
        ds = _load_folder(path, split, source) if path.is_dir() else _load_file(path, source)
    elif _looks_local(name):
        raise DataError(
            f"data.{role}: local path '{name}' does not exist. Check the path (relative paths are "
            f"resolved from '{Path.cwd()}'), or give a Hub dataset id such as stanfordnlp/sst2."
        )
    else:
        try:
            ds = datasets.load_dataset(name, source.config, split=split, revision=source.revision)
        except ValueError as e:
            if "split" in str(e).lower():
                raise DataError(f"data.{role}: dataset '{name}' has no split '{split}': {e}") from None
            raise DataError(f"data.{role}: cannot load Hub dataset '{name}': {e}") from None
        except Exception as e:
            raise DataError(
                f"data.{role}: cannot load Hub dataset '{name}' (config={source.config}, "
                f"split={split}): {type(e).__name__}: {e}. Check the id and your network, or "
                "use a local csv/json/jsonl/parquet file."
            ) from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(f"data.{role}: '{name}' has no split '{split}' (has {list(ds)}).")
        ds = ds[split]
    for column, feature in ds.features.items():
        if isinstance(feature, datasets.Audio) and feature.decode:
            # datasets decodes audio through torchcodec + FFmpeg; hf_transfer decodes the raw
            # bytes itself (soundfile + soxr), so keep them undecoded.
            ds = ds.cast_column(column, datasets.Audio(decode=False))
    if len(ds) == 0:
        raise DataError(f"data.{role}: split '{split}' of '{name}' is empty. Point it at data with rows.")
    logger.info("Loaded %s split '%s' from %s: %d rows", role, split, name, len(ds))
    return ds
