"""Continued masked-language-model pretraining on unlabelled in-domain text (domain-adaptive
pretraining, Gururangan et al. 2020), on the same engine as every other run.

`hf-transfer pretrain my_mlm.yaml` trains recipe `masked_lm`: `data.train` is a file of texts (no
labels), masked with transformers' `DataCollatorForLanguageModeling`, the model is
`AutoModelForMaskedLM`. The run folder is a checkpoint that `hf-transfer train` takes as
`model.name_or_path` (the classification head is then new; the MLM head is dropped).

Evaluation masks the eval texts once, with a fixed seed, so eval loss and perplexity compare
across epochs and runs; training draws fresh masks every batch. Every eval text has at least one
masked token (one is drawn, seeded, where the random draw masked none), so a small held-out split
still measures a loss; an eval split with nothing to mask is refused.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModelForMaskedLM, AutoTokenizer, DataCollatorForLanguageModeling

from hf_transfer.data import labels as labels_mod
from hf_transfer.data.fingerprints import tokenizer_identity, transform_fingerprint
from hf_transfer.data.sources import load_split
from hf_transfer.errors import DataError, ModelError
from hf_transfer.paths import resolve
from hf_transfer.tasks.base import Splits, Task, register_task

logger = logging.getLogger(__name__)


def _has_text(text) -> bool:
    return bool(text and str(text).strip())


@register_task("masked_lm", modality="text", targets="text")
class MaskedLMTask(Task):
    """Unlabelled text in; masked tokens predicted. Loss summed over masked tokens."""

    auto_model_cls = AutoModelForMaskedLM

    def __init__(self, cfg):
        super().__init__(cfg)
        if cfg.training.metric_for_best_model in ("f1", "accuracy", "eval_f1"):
            # The default selects classifiers by F1; a language model is selected by its loss.
            cfg.training.metric_for_best_model = "loss"

    # Data -------------------------------------------------------------------------------
    def load_splits(self) -> Splits:
        d = self.cfg.data
        seed = d.seed if d.seed is not None else self.cfg.training.seed
        train = labels_mod.apply_filter(load_split(d.train, "train"), d.filter, "train")
        self.input_col = labels_mod.find_column(
            train, d.text_column, labels_mod.TEXT_CANDIDATES, "text", "data.text_column"
        )
        train = train.filter(
            _has_text,
            input_columns=[self.input_col],
            new_fingerprint=transform_fingerprint(train, "drop_blank_texts", self.input_col),
        )
        if d.eval is not None and d.eval.name:
            eval_ds = labels_mod.apply_filter(load_split(d.eval, "eval"), d.filter, "eval")
            eval_ds = eval_ds.filter(
                _has_text,
                input_columns=[self.input_col],
                new_fingerprint=transform_fingerprint(eval_ds, "drop_blank_texts", self.input_col),
            )
            if len(eval_ds) == 0:
                raise DataError(
                    f"data.eval ({d.eval.name}) holds no non-blank text in column '{self.input_col}': "
                    "the masked-LM eval loss would measure nothing."
                )
        else:
            if len(train) < 2:
                raise DataError(
                    f"data.train holds {len(train)} non-blank text(s): too few to hold any out for the masked-LM "
                    "eval loss. Give more texts, or a separate data.eval file."
                )
            parts = train.train_test_split(test_size=d.eval_fraction, seed=seed)
            train, eval_ds = parts["train"], parts["test"]
            logger.info("No data.eval given: held out %d texts for the masked-LM eval loss.", len(eval_ds))
        if d.max_train_samples is not None and len(train) > d.max_train_samples:
            train = train.shuffle(seed=seed).select(range(d.max_train_samples))
        if d.max_eval_samples is not None and len(eval_ds) > d.max_eval_samples:
            eval_ds = eval_ds.select(range(d.max_eval_samples))
        return Splits(train, eval_ds, None)

    def preprocess(self, ds, train: bool):
        tok = self.processor

        def encode(batch):
            texts = [str(t) if t is not None else "" for t in batch[self.input_col]]
            return tok(texts, truncation=True, max_length=self.cfg.data.max_length, return_special_tokens_mask=True)

        # Our own fingerprints (hf_transfer.data.fingerprints): hashing these closures would go through
        # datasets' bare `except:`, which swallows Ctrl-C.
        encoded = ds.map(
            encode,
            batched=True,
            remove_columns=ds.column_names,
            desc="Tokenizing",
            new_fingerprint=transform_fingerprint(
                ds, "mlm_tokenize", tokenizer_identity(tok), self.input_col, self.cfg.data.max_length
            ),
            load_from_cache_file=False,
        )
        if train:
            return encoded
        # Fixed masks for evaluation: the same tokens are hidden at every evaluation.
        collator = DataCollatorForLanguageModeling(
            tok, mlm_probability=self.cfg.data.mlm_probability, seed=self.cfg.training.seed
        )
        # A text the random draw left unmasked gets one masked token (seeded): a short held-out
        # split would otherwise measure nothing (eval loss NaN).
        rng = np.random.default_rng(self.cfg.training.seed)

        def mask(batch):
            rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
            specials = [list(r["special_tokens_mask"]) for r in rows]
            out = collator(rows)
            keep = out["attention_mask"].bool()
            input_ids = [ids[k].tolist() for ids, k in zip(out["input_ids"], keep)]
            labels = [lab[k].tolist() for lab, k in zip(out["labels"], keep)]
            for ids, lab, special, original in zip(input_ids, labels, specials, (r["input_ids"] for r in rows)):
                if all(v == -100 for v in lab):
                    choices = [i for i, s in enumerate(special) if not s]
                    if choices:
                        i = int(rng.choice(choices))
                        lab[i], ids[i] = int(original[i]), tok.mask_token_id
            return {
                "input_ids": input_ids,
                "attention_mask": [m[k].tolist() for m, k in zip(out["attention_mask"], keep)],
                "labels": labels,
            }

        masked = encoded.map(
            mask,
            batched=True,
            batch_size=64,
            remove_columns=encoded.column_names,
            desc="Masking eval texts",
            load_from_cache_file=False,
            new_fingerprint=transform_fingerprint(
                encoded,
                "mlm_eval_masks",
                tokenizer_identity(tok),
                self.cfg.data.mlm_probability,
                self.cfg.training.seed,
            ),
        )
        if not any(v != -100 for lab in masked["labels"] for v in lab):
            raise DataError(
                f"The {len(masked)} held-out text(s) have no token that can be masked (only special "
                "tokens): the masked-LM eval loss would measure nothing. Give more (or longer) eval texts."
            )
        return masked

    def collate(self, features):
        if "labels" not in features[0]:
            return self._mlm_collator(features)
        # Already masked (evaluation): pad inputs, and labels with -100.
        labels = [f["labels"] for f in features]
        batch = self.processor.pad(
            [{k: f[k] for k in ("input_ids", "attention_mask")} for f in features], return_tensors="pt"
        )
        width = batch["input_ids"].shape[1]
        batch["labels"] = torch.tensor([lab + [-100] * (width - len(lab)) for lab in labels], dtype=torch.long)
        return batch

    def lengths(self, ds):
        return [len(x) for x in ds["input_ids"]]

    # Model ------------------------------------------------------------------------------
    def load_processor(self):
        m = self.cfg.model
        try:
            self.processor = AutoTokenizer.from_pretrained(
                resolve(m.name_or_path), revision=m.revision, trust_remote_code=m.trust_remote_code
            )
        except (OSError, ValueError) as e:
            raise ModelError(f"Cannot load the tokenizer of '{m.name_or_path}': {e}") from None
        if self.processor.mask_token is None:
            raise ModelError(
                f"The tokenizer of '{m.name_or_path}' has no mask token, so it cannot be trained as a masked "
                "language model. Continued pretraining needs an encoder checkpoint (BERT, RoBERTa, DistilBERT, "
                "ELECTRA, MiniLM, ...)."
            )
        self._mlm_collator = DataCollatorForLanguageModeling(
            self.processor, mlm_probability=self.cfg.data.mlm_probability
        )
        return self.processor

    def build_model(self, from_scratch: bool = False):
        from hf_transfer.models.heads import load_config_checked

        m = self.cfg.model
        config = load_config_checked(m.name_or_path, m.revision, m.trust_remote_code)
        try:
            if from_scratch:
                return AutoModelForMaskedLM.from_config(config, trust_remote_code=m.trust_remote_code)
            model, info = AutoModelForMaskedLM.from_pretrained(
                resolve(m.name_or_path),
                revision=m.revision,
                trust_remote_code=m.trust_remote_code,
                output_loading_info=True,
            )
        except ValueError as e:
            raise ModelError(
                f"'{m.name_or_path}' ({config.model_type}) has no masked-language-model form in transformers "
                f"(AutoModelForMaskedLM): {str(e).splitlines()[0]} Continued masked-LM pretraining needs an encoder "
                "such as BERT, RoBERTa, DistilBERT, ELECTRA or MiniLM."
            ) from None
        new = sorted(set(info.get("missing_keys", ())) | {k[0] for k in info.get("mismatched_keys", ())})
        if new:
            logger.info(
                "Added a masked-LM head to '%s' (the checkpoint has none); new weights: %s. The decoder is "
                "tied to the input embeddings.",
                m.name_or_path,
                ", ".join(new),
            )
        model.hf_transfer_new_weights = new
        return model

    # Engine hooks -----------------------------------------------------------------------
    def num_items(self, batch) -> int:
        return int((batch["labels"] != -100).sum())

    def num_examples(self, batch) -> int:
        return int(batch["input_ids"].shape[0])

    def model_inputs(self, batch) -> dict[str, torch.Tensor]:
        return {k: v for k, v in batch.items() if k not in ("labels", "special_tokens_mask")}

    def _token_losses(self, model, batch):
        logits = model(**self.model_inputs(batch)).logits.float()
        labels = batch["labels"]
        per_token = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none", ignore_index=-100)
        return logits, labels, per_token

    def loss(self, model, batch) -> torch.Tensor:
        _, _, per_token = self._token_losses(model, batch)
        return per_token.sum()

    def eval_outputs(self, model, batch) -> dict[str, torch.Tensor]:
        logits, labels, per_token = self._token_losses(model, batch)
        masked = labels != -100
        correct = ((logits.argmax(-1) == labels) & masked).sum(1)
        return {"loss_sum": per_token.sum(1), "tokens": masked.sum(1), "correct": correct}

    def compute_metrics(self, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
        tokens = float(np.sum(arrays["tokens"]))
        loss = float(np.sum(arrays["loss_sum"]) / tokens) if tokens else float("nan")
        return {
            "loss": loss,
            "perplexity": math.exp(min(loss, 50.0)) if tokens else float("nan"),
            "accuracy": float(np.sum(arrays["correct"]) / tokens) if tokens else float("nan"),
            "masked_tokens": int(tokens),
        }

    def describe_data(self, splits: Splits) -> dict[str, Any]:
        info = {"train_size": len(splits.train), "mlm_probability": self.cfg.data.mlm_probability}
        if splits.eval is not None:
            info["eval_size"] = len(splits.eval)
        return info
