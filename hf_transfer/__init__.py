"""hf_transfer: transfer learning for Hugging Face checkpoints."""

from pathlib import Path

__version__ = "0.1.0"


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


def __getattr__(name):
    # Lazy public API: `from hf_transfer import load_config, train` without importing torch at
    # `import hf_transfer` time (keeps `hf-transfer ls` fast).
    if name in ("load_config", "TrainConfig"):
        from hf_transfer import config

        return getattr(config, name)
    if name in ("train", "evaluate", "predict"):
        from hf_transfer import run

        return getattr(run, name)
    raise AttributeError(f"module 'hf_transfer' has no attribute {name!r}")
