"""Audio data: folders and file lists of clips, decoding without torchcodec, checks, batching.

Sources
    * A Hub audio dataset: its `Audio` column is cast to `Audio(decode=False)` (`undecoded`), so
      `datasets` hands over the stored bytes/path and never needs torchcodec + FFmpeg; the bytes
      are decoded here with soundfile (libsndfile: wav, flac, ogg/opus, mp3).
    * A local audio folder (`load_audio_folder`): one folder per class for classification, or a
      `metadata.csv` / `metadata.jsonl` with `file_name` and the other columns (a transcription
      for speech recognition), optionally inside `train/`, `validation/`, `test/` split folders.
    * A csv/json/jsonl file of paths with labels or transcripts: relative paths are read against
      the file's folder (`resolve_paths`).

Decoding
    `read_audio` returns mono float32 at the feature extractor's rate: channels are averaged and
    other rates are resampled with soxr (high quality).

Checks
    Every clip is decoded once when the splits are loaded (`check_audio`), so a bad clip never
    reaches a split and every count (dataset sizes, class weights, steps per epoch, eval metrics)
    describes the clips that really train and score. A clip is *bad* when it is missing,
    unreadable, empty, not finite, or silent (peak below `SILENCE_DBFS`): with
    `data.on_bad_file: skip` it is dropped and counted per split (log and `metrics.json`
    `skipped_files`), with `error` a `DataError` names it. A clip longer than the model's window
    (Whisper: 30 s, or `data.max_audio_seconds`) is not bad but does not fit: `data.long_audio:
    error` raises a `DataError` naming it, `truncate` keeps its first window and counts it.
    Decoded audio is not cached: `AudioDataset` decodes each clip again when a batch needs it
    (cheap next to any speech model's forward pass), so memory stays flat however large the split.
"""

from __future__ import annotations

import io
import json
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch

from hf_transfer.data.folders import AUDIO_EXTENSIONS, split_root  # noqa: F401  (AUDIO_EXTENSIONS: re-exported)
from hf_transfer.data.labels import find_column
from hf_transfer.errors import DataError

logger = logging.getLogger(__name__)

#: Audio column names looked for, in priority order (a `datasets.Audio` column wins over all).
AUDIO_CANDIDATES = ("audio", "audio_path", "audio_file", "file_name", "filename", "file", "path", "wav", "speech")
#: Transcript column names looked for, in priority order.
TRANSCRIPT_CANDIDATES = (
    "text",
    "transcription",
    "transcript",
    "sentence",
    "normalized_text",
    "raw_transcription",
    "raw_text",
)
METADATA_FILES = ("metadata.csv", "metadata.jsonl", "metadata.json")
#: A clip whose peak stays below this level (dB full scale) counts as silent: -60 dBFS is a peak
#: of 0.001, about 33 steps of 16-bit audio; no usable recording of speech or sound is that quiet.
SILENCE_DBFS = -60.0
_SILENCE_PEAK = 10 ** (SILENCE_DBFS / 20)


# ----------------------------------------------------------------------------------------------
# Folders


def _visible(p: Path, root: Path) -> bool:
    return not any(part.startswith((".", "_")) for part in p.relative_to(root).parts)


def _audio_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS and _visible(p, folder)
    )


def _read_metadata(path: Path) -> list[dict]:
    if path.suffix == ".csv":
        import pandas as pd

        try:
            frame = pd.read_csv(path, keep_default_na=False)
        except Exception as e:  # pandas raises several parser error types
            raise DataError(f"Cannot read '{path}' as csv: {e}") from None
        return frame.to_dict("records")
    rows = []
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            return list(json.loads(text))
        except json.JSONDecodeError as e:
            raise DataError(f"Cannot read '{path}' as JSON lines: {e}") from None
    for line_no, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:  # its "line 1" is within the line: name the file's line
                raise DataError(f"Cannot read '{path}' as JSON lines: line {line_no}: {e}") from None
    return rows


def load_audio_folder(folder: str | Path, split: str = "train") -> datasets.Dataset:
    """A folder of audio clips as a dataset with an `audio` column of absolute paths.

    Layouts (like `datasets`' audiofolder):

    * `metadata.csv` / `metadata.jsonl` in the split's folder: a `file_name` column (paths
      relative to that folder) and any other columns, e.g. `transcription` for speech recognition
      or `label` for classification;
    * otherwise one folder per class (`folder/yes/1.wav`, `folder/no/2.wav`): columns `audio` and
      a `ClassLabel` `label` named after the class folders (sorted);
    * either inside split folders `train/`, `validation/` (`valid`, `val`, `dev`, `eval`), `test/`,
      which `split` picks; without split folders the folder is one split, whatever `split` says.

    Files are not opened here; the task checks each one when it loads the splits (`check_audio`).

    Raises:
        DataError: The split folder is missing, the metadata lacks `file_name`, or no clip is found.
    """
    folder = Path(folder)
    root = split_root(folder, split, "Audio")
    metadata = next((root / n for n in METADATA_FILES if (root / n).is_file()), None)
    if metadata is not None:
        return _from_metadata(root, metadata)

    paths, labels, classes = [], [], []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and _visible(p, root)):
        files = _audio_files(class_dir)
        if files:
            classes.append(class_dir.name)
            paths.extend(str(p.resolve()) for p in files)
            labels.extend([len(classes) - 1] * len(files))
    loose = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS]
    if loose and classes:
        logger.warning(
            "%d clips directly in '%s' belong to no class folder and are ignored (for example %s). "
            "Put each class's clips in a folder named after the class.",
            len(loose),
            root,
            loose[0].name,
        )
    if not classes:
        if loose:
            files = sorted(loose)
            logger.info("Audio folder '%s': %d clips, no class folders and no metadata.csv.", root, len(files))
            return datasets.Dataset.from_dict({"audio": [str(p.resolve()) for p in files]})
        raise DataError(
            f"No audio clips found under '{root}'. An audio folder holds one folder per class "
            f"({root}/<class>/<clip>.wav) or a metadata.csv with file_name and transcription columns, "
            "optionally inside train/ validation/ test/ folders."
        )
    features = datasets.Features({"audio": datasets.Value("string"), "label": datasets.ClassLabel(names=classes)})
    ds = datasets.Dataset.from_dict({"audio": paths, "label": labels}, features=features)
    logger.info("Audio folder '%s': %d clips in %d classes.", root, len(ds), len(classes))
    return ds


def _from_metadata(root: Path, metadata: Path) -> datasets.Dataset:
    rows = _read_metadata(metadata)
    if not rows:
        raise DataError(f"'{metadata}' has no rows.")
    key = next((k for k in ("file_name", "filename", "file", "path", "audio") if k in rows[0]), None)
    if key is None:
        raise DataError(
            f"'{metadata}' has no file_name column (columns: {', '.join(rows[0])}). Its file_name column "
            "holds each clip's path relative to the metadata file."
        )
    out: dict[str, list] = {"audio": []}
    others = [k for k in rows[0] if k != key and k != "audio"]
    for k in others:
        out[k] = []
    for row in rows:
        value = str(row.get(key) or "").strip()
        p = Path(value).expanduser()
        out["audio"].append(str((p if p.is_absolute() else root / p).resolve()) if value else None)
        for k in others:
            out[k].append(row.get(k))
    ds = datasets.Dataset.from_dict(out)
    logger.info("Audio folder '%s': %d clips listed in %s.", root, len(ds), metadata.name)
    return ds


# ----------------------------------------------------------------------------------------------
# Columns and paths


def find_audio_column(ds: datasets.Dataset, given: str | None, role: str = "train") -> str:
    """The audio column: the one given, else the only `datasets.Audio` column, else the first of
    `AUDIO_CANDIDATES` present (in that priority order)."""
    audio = [c for c, f in ds.features.items() if isinstance(f, datasets.Audio)]
    if not given and len(audio) == 1:
        return audio[0]
    return find_column(ds, given, AUDIO_CANDIDATES, "audio", "data.audio_column", role, first_match=True)


def find_transcript_column(ds: datasets.Dataset, given: str | None, role: str = "train") -> str:
    """The transcript column: the one given, else the first of `TRANSCRIPT_CANDIDATES` present."""
    return find_column(ds, given, TRANSCRIPT_CANDIDATES, "transcript", "data.text_column", role, first_match=True)


def source_dir(source) -> Path | None:
    """The folder that relative paths in a local csv/json file are read against (None for the Hub)."""
    from hf_transfer.paths import resolve

    if source is None or not getattr(source, "name", None):
        return None
    path = Path(resolve(source.name)).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.is_file():
        return path.resolve().parent
    return None


def undecoded(ds: datasets.Dataset, column: str) -> datasets.Dataset:
    """`ds` with an `Audio` column cast to `Audio(decode=False)`: rows give {bytes, path}, and
    `datasets` never calls torchcodec."""
    feature = ds.features.get(column)
    if isinstance(feature, datasets.Audio) and feature.decode:
        return ds.cast_column(column, datasets.Audio(decode=False))
    return ds


def _resolve_batch(batch: dict, column: str, base: str) -> dict:
    out = []
    for value in batch[column]:
        if isinstance(value, str):
            text = value.strip()
            p = Path(text).expanduser()
            out.append(str(p if p.is_absolute() or not text else Path(base) / p))
        elif isinstance(value, dict) and value.get("path") and not value.get("bytes"):
            p = Path(str(value["path"])).expanduser()
            out.append({**value, "path": str(p if p.is_absolute() else Path(base) / p)})
        else:
            out.append(value)
    return {column: out}


def resolve_paths(ds: datasets.Dataset, column: str, base: Path | None, role: str = "train") -> datasets.Dataset:
    """Relative file paths in `column` made absolute against `base` (the csv/json file's folder)."""
    if base is None:
        return ds
    feature = ds.features.get(column)
    is_text = isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")
    if not (is_text or isinstance(feature, datasets.Audio)):
        return ds
    return ds.map(
        _resolve_batch,
        batched=True,
        fn_kwargs={"column": column, "base": str(base)},
        desc=f"Resolving {role} audio paths",
    )


# ----------------------------------------------------------------------------------------------
# Decoding


def describe_audio(value: Any, index: int | None = None) -> str:
    """A short name for an audio value, for messages: its path, else its row."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict) and value.get("path"):
        return str(value["path"])
    return f"row {index}" if index is not None else "<in-memory audio>"


class AudioReadError(Exception):
    """Why a clip cannot be used (missing, unreadable, empty, silent, not finite)."""


def _decode(value: Any) -> tuple[np.ndarray, int]:
    """Mono float32 samples and their rate, from a path, {bytes, path}, {array, sampling_rate} or bytes."""
    import soundfile as sf

    if value is None:
        raise AudioReadError("no audio in this row")
    if isinstance(value, dict) and value.get("array") is not None:
        rate = value.get("sampling_rate")
        if not rate:
            raise AudioReadError("in-memory audio without a sampling_rate")
        audio = np.asarray(value["array"], dtype=np.float32)
        if audio.ndim == 2:  # (channels, samples) as datasets decodes, or (samples, channels)
            audio = audio.mean(axis=0 if audio.shape[0] < audio.shape[1] else 1)
        return audio.reshape(-1), int(rate)
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        if data:
            source: Any = io.BytesIO(data)
        elif path:
            source = str(path)
        else:
            raise AudioReadError("no audio in this row (neither bytes nor a path)")
    elif isinstance(value, (bytes, bytearray)):
        source = io.BytesIO(value)
    else:
        source = str(value)
        if not source.strip():
            raise AudioReadError("empty path")
    if isinstance(source, str) and not Path(source).is_file():
        raise AudioReadError("file not found")
    try:
        audio, rate = sf.read(source, dtype="float32", always_2d=True)
    except Exception as e:  # soundfile.LibsndfileError (RuntimeError), TypeError on odd headers
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise AudioReadError(f"unreadable: {reason}") from None
    return audio.mean(axis=1), int(rate)


def _resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target or audio.size == 0:
        return audio
    import soxr

    return soxr.resample(audio, rate, target, quality="HQ").astype(np.float32, copy=False)


def read_audio(value: Any, sampling_rate: int) -> np.ndarray:
    """Decode one clip to mono float32 at `sampling_rate`, and check it is usable.

    Raises:
        AudioReadError: Missing, unreadable, empty, not finite, or silent (the message says which).
    """
    audio, rate = _decode(value)
    if audio.size == 0:
        raise AudioReadError("empty (no samples)")
    if not np.isfinite(audio).all():
        raise AudioReadError("holds NaN or infinite samples")
    peak = float(np.abs(audio).max())
    if peak < _SILENCE_PEAK:
        level = "digital silence" if peak == 0 else f"peak {20 * math.log10(peak):.0f} dBFS"
        raise AudioReadError(f"silent ({level}; below {SILENCE_DBFS:.0f} dBFS)")
    return np.ascontiguousarray(_resample(audio, rate, sampling_rate), dtype=np.float32)


@dataclass
class AudioWindow:
    """How clips are fitted to the model.

    Attributes:
        sampling_rate: The feature extractor's rate; every clip is resampled to it.
        max_samples: Longest clip the model takes (None: no limit).
        where: What sets the limit, for messages ("the model's 30 s window", ...).
        long_audio: `error` or `truncate` for clips longer than `max_samples`.
        on_bad_file: `skip` or `error` for unusable clips.
    """

    sampling_rate: int
    max_samples: int | None = None
    where: str = ""
    long_audio: str = "error"
    on_bad_file: str = "skip"

    def fit(self, audio: np.ndarray, name: str) -> np.ndarray:
        """`audio` cut to the window, or a DataError when too long and `long_audio: error`."""
        if self.max_samples is None or audio.shape[0] <= self.max_samples:
            return audio
        if self.long_audio == "truncate":
            return audio[: self.max_samples]
        raise DataError(
            f"Audio '{name}' lasts {audio.shape[0] / self.sampling_rate:.1f} s, longer than {self.where} "
            f"({self.max_samples / self.sampling_rate:g} s). Set data.long_audio=truncate to keep the "
            "first part of such clips, or cut them into shorter clips."
        )


@dataclass
class AudioCheck:
    """What `check_audio` found in one split."""

    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)
    truncated: int = 0
    seconds: list[float] = field(default_factory=list)  # kept clips, before any truncation

    def reasons(self) -> dict[str, int]:
        return dict(Counter(r.split(":")[0].split(" (")[0] for _, r in self.skipped))


def check_audio(
    ds: datasets.Dataset, column: str, window: AudioWindow, role: str
) -> tuple[datasets.Dataset, AudioCheck]:
    """Decode every clip of `ds[column]` once; drop (or raise on) the bad ones; apply `long_audio`.

    Returns:
        The split without bad rows, with an int column `num_samples` (after resampling and
        truncation), and what was found.

    Raises:
        DataError: `on_bad_file: error` and a bad clip (named, with the reason); or a clip longer
            than the window with `long_audio: error`.
    """
    start = time.time()
    check = AudioCheck()
    keep: list[int] = []
    lengths: list[int] = []
    index = 0
    for batch in ds.select_columns([column]).iter(batch_size=64):
        for value in batch[column]:
            name = describe_audio(value, index)
            try:
                audio = read_audio(value, window.sampling_rate)
            except AudioReadError as e:
                if window.on_bad_file == "error":
                    raise DataError(
                        f"Cannot use audio '{name}' in the {role} split: {e}. Fix or remove the file, "
                        "or set data.on_bad_file=skip to skip unusable clips (they are counted in the log)."
                    ) from None
                check.skipped.append((name, str(e)))
                index += 1
                continue
            check.seconds.append(audio.shape[0] / window.sampling_rate)
            fitted = window.fit(audio, name)
            if fitted.shape[0] < audio.shape[0]:
                check.truncated += 1
            keep.append(index)
            lengths.append(int(fitted.shape[0]))
            index += 1
    if check.skipped:
        shown = "; ".join(f"{n} ({r})" for n, r in check.skipped[:5])
        more = f"; ... ({len(check.skipped) - 5} more)" if len(check.skipped) > 5 else ""
        logger.warning(
            "Skipped %d unusable clip(s) of %d in the %s split (data.on_bad_file=skip): %s%s",
            len(check.skipped),
            index,
            role,
            shown,
            more,
        )
    if not keep:
        raise DataError(
            f"Every clip of the {role} split is unusable (for example '{check.skipped[0][0]}': {check.skipped[0][1]})."
            if check.skipped
            else f"The {role} split has no clips."
        )
    if check.truncated:
        logger.warning(
            "Truncated %d clip(s) of the %s split to %s (data.long_audio=truncate).",
            check.truncated,
            role,
            window.where,
        )
    if len(keep) < len(ds):
        ds = ds.select(keep)
    if "num_samples" in ds.column_names:
        ds = ds.remove_columns("num_samples")
    ds = ds.add_column("num_samples", lengths)
    secs = np.asarray(check.seconds)
    logger.info(
        "Checked %d %s clips in %.1fs: %.1f min of audio, %.2f-%.2f s per clip (median %.2f s).",
        index,
        role,
        time.time() - start,
        secs.sum() / 60,
        secs.min(),
        secs.max(),
        float(np.median(secs)),
    )
    return ds, check


class AudioDataset(torch.utils.data.Dataset):
    """Clips decoded on access (`audio`: float32 at the window's rate, fitted to it) and their
    targets (`labels`: a class id or a list of token ids)."""

    def __init__(self, ds: datasets.Dataset, column: str, window: AudioWindow, targets: list | None = None):
        self.ds = ds.select_columns([column])
        self.column = column
        #: Samples per clip after fitting (from `check_audio`), for length-grouped batching.
        self.lengths = list(ds["num_samples"]) if "num_samples" in ds.column_names else None
        self.window = window
        self.targets = targets

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int) -> dict[str, Any]:
        value = self.ds[int(index)][self.column]
        name = describe_audio(value, int(index))
        try:
            audio = read_audio(value, self.window.sampling_rate)
        except AudioReadError as e:
            # Checked when the split was loaded: the file changed or vanished since.
            raise DataError(f"Audio '{name}' became unusable during the run: {e}.") from None
        item = {"audio": self.window.fit(audio, name)}
        if self.targets is not None:
            item["labels"] = self.targets[int(index)]
        return item


def load_audio_files(paths: list[str], window: AudioWindow) -> list[np.ndarray]:
    """Clips for prediction, fitted to the window.

    Raises:
        DataError: A file is unusable (named, with the reason), or too long with `long_audio: error`.
    """
    out = []
    for path in paths:
        try:
            audio = read_audio(str(path), window.sampling_rate)
        except AudioReadError as e:
            raise DataError(f"Cannot use audio '{path}': {e}.") from None
        out.append(window.fit(audio, str(path)))
    return out
