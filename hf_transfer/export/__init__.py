"""Export a run folder to a Hub-ready model folder, write its model card, push it to the Hub.

    from hf_transfer.export import export_run, push_run, validate_card

Names load lazily so that `hf-transfer --help` does not import torch.
"""

_NAMES = {
    "build_card": "card",
    "validate_card": "card",
    "RunFolder": "card",
    "export_run": "export",
    "verify_export": "export",
    "push_run": "push",
    "PushResult": "push",
    "maybe_push_after_training": "push",
    "check_push_settings": "push",
}

__all__ = sorted(_NAMES)


def __getattr__(name):
    if name in _NAMES:
        import importlib

        return getattr(importlib.import_module(f"hf_transfer.export.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'hf_transfer.export' has no attribute {name!r}")
