"""Console output: hf_transfer's own log lines, not the libraries' tables and terminal codes.

transformers 5 logs a "LOAD REPORT" table (every missing, unexpected or resized key, in colour)
as a warning on each `from_pretrained` that does not match the checkpoint exactly, which is every
head swap. hf_transfer says the same in one line of its own (`hf_transfer.models.heads`: "New
(randomly initialised) weights ..."), so the table is filtered out of transformers' logger. Progress
bars (tqdm, datasets' map bars, transformers' loading bars) are switched off when stderr is not a
terminal: redirected into a log file they are cursor-movement codes (`ESC[A`), not progress.
"""

from __future__ import annotations

import logging
import os
import sys

_LOAD_REPORT_LOGGER = "transformers.modeling_utils"


class _DropLoadReport(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        return "LOAD REPORT" not in message


_FILTER = _DropLoadReport()


def progress_disabled() -> bool:
    """True when progress bars would not be seen as bars: stderr is not a terminal, or
    `TQDM_DISABLE` is set."""
    if os.environ.get("TQDM_DISABLE", "").strip().lower() in ("1", "true", "yes"):
        return True
    if "ipykernel" in sys.modules:  # a notebook: not a tty, but tqdm.auto draws widgets there
        return False
    try:
        return not sys.stderr.isatty()
    except (AttributeError, ValueError):
        return True


def quiet_libraries() -> None:
    """Silence transformers' load-report table; turn library progress bars off off a terminal.

    Idempotent; called when hf_transfer sets up logging (every train, evaluate, predict, export).
    """
    from transformers.utils import logging as hf_logging

    hf_logger = hf_logging.get_logger(_LOAD_REPORT_LOGGER)
    if _FILTER not in hf_logger.filters:
        hf_logger.addFilter(_FILTER)
    if progress_disabled():
        hf_logging.disable_progress_bar()
        try:
            import datasets

            datasets.disable_progress_bars()
        except ImportError:
            pass
        # Bars created without an explicit `disable=` (accelerate, peft, sklearn helpers) read this.
        os.environ.setdefault("TQDM_DISABLE", "1")
