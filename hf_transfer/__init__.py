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


def _load_builtin_plugins() -> None:
    """Register the built-in tasks and strategies with the config loader.

    The package root wires the layers together: `hf_transfer.config` is plain data and never
    imports the strategies or tasks that extend it, so the first validation asks for them here.
    """
    import hf_transfer.strategies  # noqa: F401
    import hf_transfer.tasks  # noqa: F401


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


from hf_transfer import config as _config  # noqa: E402  (after the helpers above: config needs none)

_config.set_builtin_loader(_load_builtin_plugins)
