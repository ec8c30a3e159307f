"""Text classification: any `AutoModelForSequenceClassification`-capable checkpoint."""

from __future__ import annotations

from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

from hf_transfer.data import labels as labels_mod
from hf_transfer.data.text import tokenize_split
from hf_transfer.errors import ModelError
from hf_transfer.paths import resolve
from hf_transfer.models.heads import load_for_classification
from hf_transfer.tasks.base import ClassificationTask, register_task


@register_task("text_classification", "text-classification", example_input="This was a wonderful film.")
class TextClassificationTask(ClassificationTask):
    """Tokenised text in, one label out; dynamic padding and length-grouped batches."""

    auto_model_cls = AutoModelForSequenceClassification

    def input_column(self, ds) -> str:
        d = self.cfg.data
        col = labels_mod.find_column(ds, d.text_column, labels_mod.TEXT_CANDIDATES, "text", "data.text_column")
        if d.text_pair_column:
            labels_mod.find_column(ds, d.text_pair_column, (), "text pair", "data.text_pair_column")
        return col

    def load_processor(self):
        m = self.cfg.model
        try:
            self.processor = AutoTokenizer.from_pretrained(
                resolve(m.name_or_path), revision=m.revision, trust_remote_code=m.trust_remote_code
            )
        except (OSError, ValueError) as e:
            raise ModelError(f"Cannot load the tokenizer of '{m.name_or_path}': {e}") from None
        self._collator = DataCollatorWithPadding(self.processor)
        return self.processor

    def build_model(self, from_scratch: bool = False):
        m = self.cfg.model
        model = load_for_classification(
            self.auto_model_cls, m.name_or_path, self.labels.id2label, revision=m.revision,
            trust_remote_code=m.trust_remote_code, from_scratch=from_scratch,
        )
        if model.config.pad_token_id is None and self.processor is not None:
            model.config.pad_token_id = self.processor.pad_token_id
        return model

    def preprocess(self, ds, train: bool):
        d = self.cfg.data
        return tokenize_split(ds, self.processor, self.input_col, d.max_length, d.text_pair_column)

    def collate(self, features):
        return self._collator(features)

    def lengths(self, ds):
        return [len(x) for x in ds["input_ids"]]

    def predict_inputs(self, texts: list[str]):
        """Tokenised batch for raw texts."""
        return self.processor(texts, truncation=True, max_length=self.cfg.data.max_length,
                              padding=True, return_tensors="pt")
