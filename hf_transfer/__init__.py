"""hf_transfer: transfer learning for Hugging Face checkpoints."""

from hf_transfer.paths import model_cards_dir, recipes_dir  # noqa: F401  (public helpers)

from hf_transfer.utils import __version__  # noqa: F401  (one place: export reads it without the root)


def _load_builtin_plugins() -> None:
    """Register the built-in tasks and strategies with the config loader, then the plugins.

    The package root wires the layers together: `hf_transfer.config` is plain data and never
    imports the strategies or tasks that extend it, so the first validation asks for them here.
    """
    import hf_transfer.domain  # noqa: F401  (adaptation and stages checks, recipe masked_lm)
    import hf_transfer.strategies  # noqa: F401
    import hf_transfer.tasks  # noqa: F401
    from hf_transfer.registry import load_plugins

    load_plugins()  # other packages' strategies and recipes (entry point groups), after the built-ins


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


from hf_transfer.registry import set_builtin_loader as _set_builtin_loader  # noqa: E402

_set_builtin_loader(_load_builtin_plugins)
