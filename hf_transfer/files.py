"""Writing run and export folders safely: atomic text files, the user's umask on files that
libraries write privately, and a readable check of a `.safetensors` file before it is loaded."""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path

from hf_transfer.errors import ModelError


def current_umask() -> int:
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def respect_umask(path: str | Path, recursive: bool = True) -> None:
    """Give `path` (and, for a folder, everything in it) the permissions the umask allows.

    safetensors writes its files through a private temporary file (mode 600) and
    `tempfile.mkdtemp` makes mode-700 folders; renamed into place, both keep those modes, so other
    users (a serving process, a shared group) could not read a model the user meant to share.
    Files become 666 & ~umask (644 under umask 022), folders 777 & ~umask (755).
    """
    mask = current_umask()
    path = Path(path)
    if not path.exists():
        return
    items = [path]
    if path.is_dir() and recursive:
        items += list(path.rglob("*"))
    for p in items:
        if p.is_symlink():
            continue
        mode = (0o777 if p.is_dir() else 0o666) & ~mask
        try:
            os.chmod(p, mode)
        except OSError:
            pass


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` atomically: a reader sees the old file or the new one, never half.

    The file is written beside the target, flushed, then `os.replace`d over it, and gets the
    umask's permissions (not the temporary file's 600).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def safetensors_problem(path: str | Path) -> str | None:
    """Why `path` is not a complete safetensors file, or None when its header and size agree.

    Reads only the header: 8 bytes of little-endian header length, the JSON header, then the
    tensors, whose byte ranges (`data_offsets`) must end exactly at the end of the file.
    """
    path = Path(path)
    size = path.stat().st_size
    if size < 8:
        return f"it is {size} bytes long, shorter than a safetensors header"
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > size - 8:
            return f"its header claims {n:,} bytes but the file has {size - 8:,} after the length field (truncated)"
        try:
            header = json.loads(f.read(n))
        except (ValueError, UnicodeDecodeError):
            return "its header is not valid JSON (corrupt or not a safetensors file)"
    if not isinstance(header, dict):
        return "its header is not a mapping (corrupt)"
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, int(info["data_offsets"][1]))
        except (KeyError, TypeError, IndexError, ValueError):
            return f"its header entry for '{name}' has no valid data_offsets (corrupt)"
    expected = 8 + n + end
    if expected != size:
        how = "truncated" if size < expected else "has trailing bytes"
        return f"it should be {expected:,} bytes long but is {size:,} ({how})"
    return None


def check_weights(folder: str | Path) -> None:
    """Raise a `ModelError` naming the file when a folder's safetensors weights are incomplete.

    Called where loading failed (or before a load), so the user learns which file is broken
    instead of reading a deserialisation traceback.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.safetensors")):
        problem = safetensors_problem(path)
        if problem:
            raise ModelError(
                f"'{path}' is damaged: {problem}. Copy it again from where it came from, or retrain "
                "the run (an interrupted copy or a full disk leaves a file like this)."
            )
