"""Text classification: any `AutoModelForSequenceClassification`-capable checkpoint."""

from __future__ import annotations

import logging

from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

from hf_transfer.data import labels as labels_mod
from hf_transfer.data.fingerprints import transform_fingerprint
from hf_transfer.data.text import tokenize_split
from hf_transfer.errors import DataError, HFTransferError
from hf_transfer.models.heads import load_for_classification
from hf_transfer.tasks.base import ClassificationTask, register_task

logger = logging.getLogger(__name__)

# Models whose position ids start after the padding index (RoBERTa's convention): the usable
# length is max_position_embeddings - pad_token_id - 1.
_OFFSET_POSITIONS = (
    "roberta",
    "xlm-roberta",
    "camembert",
    "longformer",
    "data2vec-text",
    "xmod",
    "roberta-prelayernorm",
    "mpnet",
    "ibert",
)


def model_max_length(model_cfg, tokenizer=None) -> int | None:
    """The longest input, in tokens, that the checkpoint can take (None when it sets no limit)."""
    from hf_transfer.models.heads import load_config_checked

    try:
        config = load_config_checked(model_cfg.name_or_path, model_cfg.revision, model_cfg.trust_remote_code)
    except HFTransferError:
        return None
    limits = []
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        if config.model_type in _OFFSET_POSITIONS:
            positions -= (getattr(config, "pad_token_id", None) or 0) + 1
        limits.append(positions)
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_limit, int) and 0 < tok_limit < 1_000_000:
        limits.append(tok_limit)
    return min(limits) if limits else None


@register_task(
    "text_classification", "text-classification", example_input="This was a wonderful film.", modality="text"
)
class TextClassificationTask(ClassificationTask):
    """Tokenised text in, one label out; dynamic padding and length-grouped batches."""

    auto_model_cls = AutoModelForSequenceClassification

    def __init__(self, cfg):
        super().__init__(cfg)
        #: Rows dropped because their text was blank or missing, by split.
        self.blank_rows: dict[str, int] = {}

    def drop_unusable_rows(self, ds, role: str):
        """Drop rows whose text (or text pair) is missing, NaN or only whitespace: counted, logged,
        and recorded in metrics.json (`skipped_blank_texts`), as unreadable images and clips are."""
        columns = [c for c in (self.input_col, self.cfg.data.text_pair_column) if c]

        def usable(batch):
            keep = []
            for i in range(len(batch[columns[0]])):
                ok = True
                for c in columns:
                    v = batch[c][i]
                    if v is None or (isinstance(v, float) and v != v) or (isinstance(v, str) and not v.strip()):
                        ok = False
                keep.append(ok)
            return keep

        before = len(ds)
        out = ds.filter(
            usable,
            batched=True,
            desc=f"Dropping blank {role} texts",
            new_fingerprint=transform_fingerprint(ds, "drop_blank_texts", columns),
        )
        dropped = before - len(out)
        self.blank_rows[role] = dropped
        if dropped:
            logger.warning(
                "Dropped %d of %d %s rows whose text is blank or missing (column %s).",
                dropped,
                before,
                role,
                " / ".join(repr(c) for c in columns),
            )
        if len(out) == 0:
            raise DataError(f"Every row of the {role} split has a blank or missing text in column '{columns[0]}'.")
        return out

    def describe_data(self, splits):
        info = super().describe_data(splits)
        info["skipped_blank_texts"] = dict(self.blank_rows)
        return info

    def input_column(self, ds) -> str:
        d = self.cfg.data
        col = labels_mod.find_column(ds, d.text_column, labels_mod.TEXT_CANDIDATES, "text", "data.text_column")
        if d.text_pair_column:
            labels_mod.find_column(ds, d.text_pair_column, (), "text pair", "data.text_pair_column")
        return col

    def load_processor(self):
        self.processor = self.checkpoint_processor(AutoTokenizer, "tokenizer")
        self._collator = DataCollatorWithPadding(self.processor)
        self._clamp_max_length()
        return self.processor

    def _clamp_max_length(self) -> None:
        """Cap data.max_length at what the model can embed (its position table), with a warning,
        instead of an index error in the middle of training. The config records the cap."""
        limit = model_max_length(self.cfg.model, self.processor)
        d = self.cfg.data
        if limit is not None and d.max_length > limit:
            logger.warning(
                "data.max_length=%d is more than '%s' can take (%d positions): using %d.",
                d.max_length,
                self.cfg.model.name_or_path,
                limit,
                limit,
            )
            d.max_length = limit

    def build_model(self, from_scratch: bool = False):
        return build_text_model(self, from_scratch)

    def preprocess(self, ds, train: bool):
        d = self.cfg.data
        return tokenize_split(ds, self.processor, self.input_col, d.max_length, d.text_pair_column)

    def collate(self, features):
        return self._collator(features)

    def lengths(self, ds):
        return [len(x) for x in ds["input_ids"]]

    def predict_inputs(self, texts: list[str]):
        """Tokenised batch for raw texts."""
        return self.processor(
            texts, truncation=True, max_length=self.cfg.data.max_length, padding=True, return_tensors="pt"
        )


def build_text_model(task, from_scratch: bool = False):
    """The task's text model with its new head (`models.heads.load_for_classification`), its
    `pad_token_id` set from the tokenizer when the checkpoint's config has none. Shared by the
    sequence and token classification tasks."""
    m = task.cfg.model
    model = load_for_classification(
        task.auto_model_cls,
        m.name_or_path,
        task.labels.id2label,
        revision=m.revision,
        trust_remote_code=m.trust_remote_code,
        from_scratch=from_scratch,
    )
    if model.config.pad_token_id is None and task.processor is not None:
        model.config.pad_token_id = task.processor.pad_token_id
    return model
