"""Task families behind the recipes. Importing registers the built-in ones."""

from hf_transfer.tasks import audio_classification  # noqa: F401
from hf_transfer.tasks import image_classification  # noqa: F401
from hf_transfer.tasks import speech_recognition  # noqa: F401
from hf_transfer.tasks import text_classification  # noqa: F401
from hf_transfer.tasks import multilabel  # noqa: F401
from hf_transfer.tasks import regression  # noqa: F401
from hf_transfer.tasks import token_classification  # noqa: F401
from hf_transfer.tasks.base import ClassificationTask, Task, get_task, register_task
from hf_transfer.domain import pretrain as _masked_lm  # noqa: F401,E402  (recipe masked_lm)

__all__ = ["ClassificationTask", "Task", "get_task", "register_task"]
