"""Load one split from the Hub or from a local file or folder, as a `datasets.Dataset`."""

from __future__ import annotations

import logging
from pathlib import Path

import datasets

from hf_transfer.config import DataSource
from hf_transfer.data.folders import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS, SPLIT_ALIASES
from hf_transfer.errors import DataError
from hf_transfer.paths import resolve

logger = logging.getLogger(__name__)

# Local file extension -> the `datasets` packaged builder that reads it.
_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
_DEFAULT_SPLITS = {"train": "train", "eval": "validation", "test": "test", "target": "train"}


def looks_local(name: str) -> bool:
    """`name` is a local path, not a Hub dataset id: the rule `load_split` applies."""
    p = Path(name)
    return name.startswith((".", "/", "~")) or p.suffix.lower() in _BUILDERS or name.count("/") > 1 or p.exists()


_looks_local = looks_local  # older private name


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
    _check_not_empty(path, builder)
    try:
        return datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
    except Exception as e:  # datasets wraps parser errors (DatasetGenerationError ...): find the cause
        cause = _cause(e, UnicodeDecodeError)
        if cause is not None:
            raise DataError(
                f"Cannot decode '{path}' as {source.encoding or 'UTF-8'} ({cause.reason} at byte "
                f"{cause.start}). Set its encoding, for example data.<split>.encoding=latin-1 "
                "(`encoding: latin-1` under that split in the YAML)."
            ) from None
        if "corresponds to no data" in str(e):
            raise DataError(
                f"'{path}' has no data rows (only a header?). Point the split at a file with rows."
            ) from None
        raise DataError(f"Cannot read '{path}' as {builder}: {type(e).__name__}: {e}") from None


def _cause(e: BaseException, kind: type) -> BaseException | None:
    """`e` or the first exception in its cause/context chain that is a `kind`."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, kind):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def _check_not_empty(path: Path, builder: str) -> None:
    """An empty file, or a csv with a header and no rows: say so (datasets' messages do not)."""
    if path.stat().st_size == 0:
        raise DataError(f"'{path}' is empty (0 bytes). Point the split at a file with data.")
    if builder != "csv":
        return
    lines = 0
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                lines += 1
                if lines > 1:
                    return
    what = "only a header line" if lines == 1 else "only blank lines"
    raise DataError(f"'{path}' has {what} and no data rows. Point the split at a file with rows.")


def _split_file(folder: Path, split: str) -> Path | None:
    """In a folder of data files, the file for `split` (`train.csv`, `validation.jsonl`, ...)."""
    for stem in SPLIT_ALIASES.get(split, (split,)):
        for ext in _BUILDERS:
            candidate = folder / f"{stem}{ext}"
            if candidate.is_file():
                return candidate
    return None


def _load_folder(folder: Path, split: str, source: DataSource) -> datasets.Dataset:
    files = [p for p in folder.rglob("*") if p.is_file()]
    exts = {p.suffix.lower() for p in files}
    if exts & AUDIO_EXTENSIONS:
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
    if exts & IMAGE_EXTENSIONS:
        from hf_transfer.data.image import load_image_folder

        return load_image_folder(folder, split)
    raise DataError(f"Folder '{folder}' holds no data files (csv, json, jsonl, parquet), images or audio.")


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
    elif looks_local(name):
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
