"""Media folders laid out by split (`train/`, `validation/`, `test/`), shared by image and audio."""

from __future__ import annotations

from pathlib import Path

from hf_transfer.errors import DataError

#: File suffixes read as images / audio, wherever a folder is scanned (sources, image, audio).
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".aiff", ".aif", ".au", ".m4a"})

#: Names accepted for each split: split subfolders here, and data files (`val.csv`) in `sources`.
SPLIT_ALIASES = {
    "train": ("train", "training"),
    "validation": ("validation", "valid", "val", "dev", "eval"),
    "test": ("test", "testing"),
}


def split_folders(folder: Path) -> dict[str, Path]:
    """Canonical split name -> subfolder, when `folder` is laid out in split folders."""
    by_name = {p.name.lower(): p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))}
    found = {}
    for split, aliases in SPLIT_ALIASES.items():
        for alias in aliases:
            if alias in by_name:
                found[split] = by_name[alias]
                break
    # A class may be called "test"; only a train folder makes the layout a split layout.
    return found if "train" in found else {}


def split_root(folder: Path, split: str, kind: str) -> Path:
    """The folder holding `split`'s files: its split subfolder, or `folder` itself when unsplit.

    Raises:
        DataError: `split` is a slice, or the folder has split subfolders but none for `split`.
    """
    split_name = split.split("[", 1)[0].strip().lower()
    if split_name != split.strip().lower():
        raise DataError(
            f"Split slices such as '{split}' are not supported for {kind.lower()} folders; use "
            "data.max_train_samples / data.max_eval_samples instead."
        )
    splits = split_folders(folder)
    if not splits:
        return folder
    canonical = next((s for s, aliases in SPLIT_ALIASES.items() if split_name in aliases), split_name)
    if canonical not in splits:
        raise DataError(
            f"{kind} folder '{folder}' has split subfolders ({', '.join(p.name for p in splits.values())}) "
            f"but none for split '{split}'. Add '{folder / canonical}', or leave that split empty "
            "(an empty data.eval carves data.eval_fraction out of train)."
        )
    return splits[canonical]
