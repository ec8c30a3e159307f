"""`tweet_classification`: text classification with tweets normalised first.

User names become `@user` and links `http`, as TweetEval (Barbieri et al., 2020) prepares tweets:
the model then sees the same text at training and at prediction time. A recipe is a `Task`
subclass registered with `@register_task(name, pipeline_tag, ...)`; this one reuses hf_transfer's
text classification and changes only the text it is given.
"""

from __future__ import annotations

import re

from hf_transfer.tasks import register_task
from hf_transfer.tasks.text_classification import TextClassificationTask

_USER = re.compile(r"@\w+")
_LINK = re.compile(r"https?://\S+")


def normalize_tweet(text: str) -> str:
    """`@someone` -> `@user`, `https://...` -> `http`."""
    return _LINK.sub("http", _USER.sub("@user", text))


@register_task("tweet_classification", "text-classification", example_input="@united thanks for the lovely flight!")
class TweetClassificationTask(TextClassificationTask):
    """Text classification of tweets, user names and links normalised."""

    def preprocess(self, ds, train: bool):
        column = self.input_col
        ds = ds.map(lambda row: {column: normalize_tweet(row[column])}, desc="Normalising tweets")
        return super().preprocess(ds, train)

    def predict_inputs(self, texts: list[str]):
        return super().predict_inputs([normalize_tweet(t) for t in texts])
