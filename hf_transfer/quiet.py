"""Console output: hf_transfer's own log lines, not the libraries' tables and terminal codes.

transformers 5 logs a "LOAD REPORT" table (every missing, unexpected or resized key, in colour)
as a warning on each `from_pretrained` that does not match the checkpoint exactly, which is every
head swap. hf_transfer says the same in one line of its own (`hf_transfer.models.heads`: "New
(randomly initialised) weights ..."), so the table is filtered out of transformers' logger. Progress
bars (tqdm, datasets' map bars, transformers' loading bars) are switched off when stderr is not a
terminal: redirected into a log file they are cursor-movement codes (`ESC[A`), not progress.
transformers also calls a checkpoint "corrupted" when a new head's tied weights are both missing
from it (a masked-LM head added to a bare encoder saved by an older transformers): that head is new,
not damaged, and hf_transfer names its new weights itself, so that warning is dropped too.

`hf_transfer.cli` applies this policy at its entry, before any command runs, so every command
(`train`, `shift`, `compare`, `pretrain`, `rank`, ...) prints the same way. It imports nothing
heavy: libraries not yet imported read the environment variables it sets when they load.
"""

from __future__ import annotations

import logging
import os
import sys

_LOAD_REPORT_LOGGER = "transformers.modeling_utils"


#: transformers' warnings that hf_transfer replaces with a line of its own (module docstring).
_DROPPED = ("LOAD REPORT", "This checkpoint seem corrupted")
#: Environment variables that turn each library's progress bars off when it is imported later.
_PROGRESS_ENV = ("TQDM_DISABLE", "HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS")


class _DropLoadReport(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        return not any(text in message for text in _DROPPED)


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
    """Drop transformers' load-report table (and its false "corrupted" warning); turn library
    progress bars off off a terminal.

    Idempotent and cheap (no library is imported here); called at the command line's entry for
    every command and whenever hf_transfer sets up logging (train, evaluate, predict, export).
    """
    # transformers' loggers are standard `logging` loggers: filtered without importing transformers.
    hf_logger = logging.getLogger(_LOAD_REPORT_LOGGER)
    if _FILTER not in hf_logger.filters:
        hf_logger.addFilter(_FILTER)
    if not progress_disabled():
        return
    for name in _PROGRESS_ENV:  # read by datasets, huggingface_hub and tqdm when they load
        os.environ.setdefault(name, "1")
    # Libraries already loaded read their setting once, at import: switch them off directly.
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
