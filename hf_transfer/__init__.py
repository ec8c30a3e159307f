"""hf_transfer: transfer learning for Hugging Face checkpoints."""

from hf_transfer.paths import model_cards_dir, recipes_dir  # noqa: F401  (public helpers)
from hf_transfer.utils import __version__  # noqa: F401  (one place: export reads it without the root)


def __getattr__(name):
    # Lazy public API: `from hf_transfer import load_config, train` without importing torch at
    # `import hf_transfer` time (keeps `hf-transfer ls` fast).
    if name in ("load_config", "TrainConfig"):
        from hf_transfer import config

        return getattr(config, name)
    if name == "audit":
        from hf_transfer.data_audit import audit

        return audit
    if name in ("train", "evaluate", "predict"):
        from hf_transfer import run

        return getattr(run, name)
    raise AttributeError(f"module 'hf_transfer' has no attribute {name!r}")
