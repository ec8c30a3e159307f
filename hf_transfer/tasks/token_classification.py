"""Token classification (named entities, other word tagging): any `AutoModelForTokenClassification`
checkpoint, one tag per word.

Data (CoNLL files, JSON lines of tokens + tags, or texts with character spans), tag schemes,
checks and the word-to-subword alignment live in `hf_transfer.data.tokens`; the metrics
(seqeval's entity precision / recall / F1, token accuracy) in `hf_transfer.metrics.tokens`.

Training reads the labels of the alignment `data.tagging.subword_labels` chose; evaluation and
prediction read the first subword of each word. `predict` groups tokens into entity spans with
character offsets exactly as transformers' `pipeline("token-classification",
aggregation_strategy="simple")` does (BIOES tags are read as BIO for the grouping: `S-` as `B-`,
`E-` as `I-`; the plain pipeline does not know `E-`/`S-`), so an exported BIO model reloaded in
that pipeline gives the same entities.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModelForTokenClassification, AutoTokenizer

from hf_transfer.data import tokens as tok_data
from hf_transfer.data.labels import LabelSpace
from hf_transfer.errors import ConfigError, DataError, ModelError
from hf_transfer.tasks.base import Splits, Task, register_task

logger = logging.getLogger(__name__)


@register_task(
    "token_classification",
    "token-classification",
    example_input="My name is Sarah and I live in London.",
    metrics=("f1", "precision", "recall", "accuracy"),
    modality="text",
    targets="tags",
)
class TokenClassificationTask(Task):
    """Tagged words in, one tag per word out (see the module docstring)."""

    auto_model_cls = AutoModelForTokenClassification
    #: `features`, `auto` and `rank` read one feature vector per word, not per example.
    token_level = True

    def __init__(self, cfg):
        super().__init__(cfg)
        self.labels: LabelSpace | None = None
        self.scheme = "BIO"
        self.class_weights = None
        self.only_roles: tuple[str, ...] | None = None
        self.known_labels: list[str] | None = None
        self.reports: dict[str, tok_data.TagReport] = {}
        d = cfg.data
        if cfg.training.class_weights != "none":
            raise ConfigError(
                "training.class_weights is not available for token_classification (the loss is "
                "summed over tokens); leave it at none."
            )
        if d.samples_per_class is not None or d.eval_samples_per_class is not None:
            raise ConfigError(
                "data.samples_per_class / eval_samples_per_class count examples per class, which "
                "sentences with many tags do not have: use data.max_train_samples / max_eval_samples."
            )
        if d.filter:
            raise ConfigError(
                "data.filter (a pandas query over columns) does not apply to tagged sentences; "
                "filter the files instead."
            )
        if cfg.strategy.name == "contrastive":
            raise ConfigError(
                "strategy contrastive trains sentence embeddings on pairs of examples with one label "
                "each; token_classification tags words. Use feature_extraction, lora or full."
            )
        if cfg.training.cache_frozen_prefix:
            raise ConfigError(
                "training.cache_frozen_prefix keeps one label per example; token_classification has one "
                "per word: leave it off."
            )
        if d.text_pair_column:
            raise ConfigError("data.text_pair_column does not apply to token_classification.")

    # Data -------------------------------------------------------------------------------
    def load_processor(self):
        from hf_transfer.tasks.text_classification import model_max_length

        self.processor = self.checkpoint_processor(AutoTokenizer, "tokenizer")
        if not getattr(self.processor, "is_fast", False):
            raise ModelError(
                f"The tokenizer of '{self.cfg.model.name_or_path}' is a slow (Python) tokenizer: token "
                "classification needs a fast one (its word_ids() align tags to subwords). Use a checkpoint "
                "with a tokenizer.json."
            )
        if type(self.processor).__name__.startswith(("Roberta", "GPT2", "Bart", "Longformer")) and not getattr(
            self.processor, "add_prefix_space", False
        ):
            # Byte-level BPE tokenizers take pre-split words only with a prefix space.
            from hf_transfer.paths import resolve

            m = self.cfg.model
            try:
                self.processor = AutoTokenizer.from_pretrained(
                    resolve(m.name_or_path), revision=m.revision, add_prefix_space=True
                )
            except (OSError, ValueError) as e:
                raise ModelError(
                    f"The byte-level tokenizer of '{m.name_or_path}' needs add_prefix_space=True for "
                    f"pre-split words and did not reload so ({e})."
                ) from None
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
        return self.processor

    def _read(self, source, role: str) -> list[tok_data.Sentence]:
        t = self.cfg.data.tagging
        sentences = tok_data.read_source(
            source, role, t, self.cfg.data.text_column, t.scheme if t.scheme != "auto" else self.scheme
        )
        tok_data.check_tag_form(sentences)
        return sentences

    def _dataset(self, sentences: list[tok_data.Sentence], role: str):
        import datasets

        t = self.cfg.data.tagging
        self.reports[role] = tok_data.repair_tags(sentences, self.scheme, t.invalid_tags, role)
        tok_data.check_labels(sentences, self.labels.names, role, declared=bool(t.labels or self.known_labels))
        empty = [s.where for s in sentences if not s.tokens]
        if empty:
            raise DataError(f"{empty[0]}: a sentence with no tokens ({len(empty)} in the {role} split).")
        return datasets.Dataset.from_dict(tok_data.to_rows(sentences, self.labels.names))

    def load_splits(self) -> Splits:
        """Read, check and encode train / eval / test; carve eval from train when none is given."""
        d, t = self.cfg.data, self.cfg.data.tagging
        seed = d.seed if d.seed is not None else self.cfg.training.seed
        train_sents = self._read(d.train, "train")
        self.scheme = tok_data.detect_scheme(train_sents, t.scheme)
        names = list(self.known_labels) if self.known_labels else None
        if names is None:
            # Repair first so that the set is built from valid tags (a lone I-X still names type X).
            probe = [tok_data.Sentence(list(s.tokens), list(s.tags), s.where, s.first_line) for s in train_sents]
            tok_data.repair_tags(probe, self.scheme, "repair", "train")
            names = tok_data.label_set(probe, self.scheme, t.labels)
        self.labels = LabelSpace(names)
        logger.info("Tag scheme %s, %d tags: %s", self.scheme, len(names), ", ".join(names))
        train = self._dataset(train_sents, "train")
        eval_ds = test_ds = None
        if d.eval is not None and d.eval.name:
            eval_ds = self._dataset(self._read(d.eval, "eval"), "eval")
        else:
            order = list(range(len(train)))
            random.Random(seed).shuffle(order)
            n_eval = max(1, int(round(len(train) * d.eval_fraction)))
            if len(train) - n_eval < 1:
                raise DataError(
                    f"The training split has {len(train)} sentence(s): too few to carve an eval split "
                    "from. Give data.eval."
                )
            eval_ds, train = train.select(sorted(order[:n_eval])), train.select(sorted(order[n_eval:]))
            logger.info("No data.eval given: carved %d eval sentences (seeded) from train.", len(eval_ds))
        if d.test is not None and d.test.name:
            test_ds = self._dataset(self._read(d.test, "test"), "test")
        if d.train_indices is not None:
            bad = [i for i in d.train_indices if not 0 <= i < len(train)]
            if bad:
                raise DataError(f"data.train_indices holds {bad[0]}, outside the {len(train)} training sentences.")
            train = train.select(d.train_indices)
        if d.max_train_samples is not None and d.max_train_samples < len(train):
            train = train.shuffle(seed=seed).select(range(d.max_train_samples))
        if eval_ds is not None and d.max_eval_samples is not None and d.max_eval_samples < len(eval_ds):
            eval_ds = eval_ds.shuffle(seed=seed).select(range(d.max_eval_samples))
        counts = np.bincount(np.concatenate([np.asarray(x) for x in train["tags"]]), minlength=len(names))
        logger.info(
            "Training tags (%d sentences, %d tokens): %s",
            len(train),
            int(counts.sum()),
            dict(zip(names, counts.tolist())),
        )
        if self.only_roles is not None:
            train = train if "train" in self.only_roles else None
        return Splits(train, eval_ds, test_ds)

    def describe_data(self, splits: Splits) -> dict[str, Any]:
        info: dict[str, Any] = {
            "labels": self.labels.names,
            "tag_scheme": self.scheme,
            "subword_labels": self.cfg.data.tagging.subword_labels,
        }
        for role in ("train", "eval", "test"):
            ds = getattr(splits, role)
            if ds is not None:
                info[f"{role}_size"] = len(ds)
                info[f"{role}_tokens"] = int(sum(len(x) for x in ds["tokens"]))
        info["repaired_tags"] = {role: r.repaired for role, r in self.reports.items()}
        return info

    def preprocess(self, ds, train: bool):
        d = self.cfg.data
        return tok_data.tokenize_and_align(
            ds, self.processor, d.max_length, d.tagging.subword_labels, self.labels.names
        )

    def collate(self, features):
        return tok_data.pad_token_batch(features, self.processor)

    def lengths(self, ds):
        return [len(x) for x in ds["input_ids"]]

    # Model ------------------------------------------------------------------------------
    def build_model(self, from_scratch: bool = False):
        from hf_transfer.tasks.text_classification import build_text_model

        return build_text_model(self, from_scratch)

    # Engine hooks -----------------------------------------------------------------------
    def num_items(self, batch) -> int:
        return int((batch["labels"] != -100).sum())

    def model_inputs(self, batch) -> dict[str, torch.Tensor]:
        return {k: v for k, v in batch.items() if k not in ("labels", "word_labels")}

    def logits(self, model, batch) -> torch.Tensor:
        return model(**self.model_inputs(batch)).logits

    def loss(self, model, batch) -> torch.Tensor:
        logits = self.logits(model, batch).float()
        return F.cross_entropy(
            logits.flatten(0, 1),
            batch["labels"].flatten(),
            ignore_index=-100,
            reduction="sum",
            label_smoothing=self.cfg.training.label_smoothing,
        )

    def eval_outputs(self, model, batch) -> dict[str, torch.Tensor]:
        logits = self.logits(model, batch).float()
        refs = batch["word_labels"]
        per = F.cross_entropy(logits.transpose(1, 2), refs, ignore_index=-100, reduction="none")  # (B, T)
        return {
            "predictions": logits.argmax(-1),
            "references": refs,
            "loss_sum": per.sum(1),
            "loss_count": (refs != -100).sum(1).float(),
        }

    def compute_metrics(self, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
        from hf_transfer.metrics.tokens import compute_token_metrics

        metrics = compute_token_metrics(
            arrays["predictions"], arrays["references"], self.labels.names, self.scheme, self.cfg.data.tagging.strict
        )
        count = float(np.sum(arrays["loss_count"]))
        metrics["loss"] = float(np.sum(arrays["loss_sum"]) / count) if count else float("nan")
        return metrics

    # Frozen token features (feature_extraction, auto, rank) ---------------------------------
    def token_features(self, model, ds, batch_size: int = 32, label_key: str = "word_labels", device=None):
        """`(X, y)` per scored token: the head's input and the tag id (`models.token_features`)."""
        from hf_transfer.models.token_features import token_features

        return token_features(model, self, ds, batch_size=batch_size, label_key=label_key, device=device)

    # Prediction -------------------------------------------------------------------------
    def predict_inputs(self, texts: list[str]):
        return self.processor(
            texts, truncation=True, max_length=self._predict_max_length(), padding=True, return_tensors="pt"
        )

    def _predict_max_length(self) -> int | None:
        # transformers' pipeline truncates at the tokenizer's model_max_length: the same here, so
        # that long texts give the same entities; capped at what the model can embed.
        from hf_transfer.tasks.text_classification import model_max_length

        return model_max_length(self.cfg.model, self.processor)

    def predict(self, model, inputs: list[str], top_k: int = 1, batch_size: int = 32) -> list[dict[str, Any]]:
        """Entity spans per text: `{"input", "entities": [{entity_group, score, word, start, end}]}`,
        grouped as transformers' token-classification pipeline with `aggregation_strategy="simple"`."""
        from accelerate.utils import send_to_device

        tok = self.processor
        id2label = {int(k): v for k, v in model.config.id2label.items()}
        device = next(model.parameters()).device
        results = []
        for i in range(0, len(inputs), batch_size):
            texts = [str(x) for x in inputs[i : i + batch_size]]
            enc = tok(
                texts,
                truncation=True,
                max_length=self._predict_max_length(),
                padding=True,
                return_tensors="pt",
                return_offsets_mapping=True,
                return_special_tokens_mask=True,
            )
            offsets = enc.pop("offset_mapping")
            special = enc.pop("special_tokens_mask")
            with torch.no_grad():
                logits = model(**send_to_device(dict(enc), device)).logits.float().cpu()
            scores = logits.softmax(-1)
            for j, text in enumerate(texts):
                tokens = []
                for k in range(scores.shape[1]):
                    if special[j, k] or not enc["attention_mask"][j, k]:
                        continue
                    idx = int(scores[j, k].argmax())
                    s, e = (int(x) for x in offsets[j, k])
                    tokens.append(
                        {
                            "entity": id2label[idx],
                            "score": float(scores[j, k, idx]),
                            "word": tok.convert_ids_to_tokens(int(enc["input_ids"][j, k])),
                            "start": s,
                            "end": e,
                        }
                    )
                results.append({"input": text, "entities": group_entities(tokens, tok)})
        return results


def _bio(tag: str) -> tuple[str, str]:
    """transformers' `get_tag`, with BIOES read as BIO (S- as B-, E- as I-)."""
    if tag.startswith(("B-", "S-")):
        return "B", tag[2:]
    if tag.startswith(("I-", "E-")):
        return "I", tag[2:]
    return "I", tag


def group_entities(tokens: list[dict], tokenizer) -> list[dict]:
    """Adjacent tokens of one type grouped into entities, a `B-` starting a new one, `O` dropped:
    the `simple` aggregation of transformers' TokenClassificationPipeline."""
    groups: list[list[dict]] = []
    for t in tokens:
        bi, typ = _bio(t["entity"])
        if groups and bi != "B" and typ == _bio(groups[-1][-1]["entity"])[1]:
            groups[-1].append(t)
        else:
            groups.append([t])
    out = []
    for g in groups:
        typ = _bio(g[0]["entity"])[1]
        if typ == "O":
            continue
        out.append(
            {
                "entity_group": typ,
                "score": round(float(np.mean([t["score"] for t in g])), 4),
                "word": tokenizer.convert_tokens_to_string([t["word"] for t in g]),
                "start": g[0]["start"],
                "end": g[-1]["end"],
            }
        )
    return out
