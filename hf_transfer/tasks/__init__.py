"""Task families behind the recipes. Importing registers the built-in ones."""

# Registration order is the order recipes are listed in: kept as written, not sorted.
# isort: off
from hf_transfer.tasks import audio_classification  # noqa: F401
from hf_transfer.tasks import image_classification  # noqa: F401
from hf_transfer.tasks import speech_recognition  # noqa: F401
from hf_transfer.tasks import text_classification  # noqa: F401
from hf_transfer.tasks import multilabel  # noqa: F401
from hf_transfer.tasks import regression  # noqa: F401
from hf_transfer.tasks import token_classification  # noqa: F401
from hf_transfer.tasks import masked_lm  # noqa: F401

# isort: on
from hf_transfer.tasks.base import ClassificationTask, Task, get_task, register_task

__all__ = ["ClassificationTask", "Task", "get_task", "register_task"]
