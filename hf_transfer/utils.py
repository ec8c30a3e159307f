"""Process-wide set-up every entry point shares: seeding and where `hf_transfer` logs go.

It sits at the bottom of the layering (docs/architecture.md) so that the CLI, `run` and the
export commands all use the same two functions without importing each other.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

#: The package's version (what the Hub client reports as `library_version`); the package root
#: re-exports it as `hf_transfer.__version__`.
__version__ = "0.1.0"


def set_seed_all(seed: int) -> None:
    """Seed python, numpy and torch on every device (Accelerate's `set_seed`)."""
    from accelerate.utils import set_seed

    set_seed(seed)


def setup_logging(log_file: Path | None = None, main_process: bool = True) -> None:
    """Log `hf_transfer` records to the console (main process only) and to `log_file`.

    Handlers added by an earlier call are replaced, so calling it once per run is safe. Records
    still propagate to the root logger, so pytest and a user's own logging see them.
    """
    root = logging.getLogger("hf_transfer")
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        if getattr(h, "_hf_transfer", False):
            root.removeHandler(h)
            h.close()  # an earlier run's train.log: closed, not left to the garbage collector
    from hf_transfer.quiet import quiet_libraries

    quiet_libraries()  # no LOAD REPORT tables; no progress-bar escapes off a terminal
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    if main_process:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(fmt)
        console._hf_transfer = True
        root.addHandler(console)
    if log_file is not None:
        fh = logging.FileHandler(log_file)
        fh.setFormatter(fmt)
        fh._hf_transfer = True
        root.addHandler(fh)
