"""What a recipe's task supplies to the shared engine, and the classification behaviour all
classification recipes (text, image, audio) share: loss with class weights, evaluation outputs,
metrics."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hf_transfer.config import TrainConfig
from hf_transfer.data import labels as labels_mod
from hf_transfer.data.labels import LabelSpace
from hf_transfer.data.sources import load_split
from hf_transfer.errors import DataError, ModelError
from hf_transfer.paths import resolve
from hf_transfer.registry import register_task, task_class  # noqa: F401  (register_task: re-exported)

logger = logging.getLogger(__name__)

#: Column added to every loaded split when `ClassificationTask.source_rows` is set: the row's
#: 0-based index in its source (file row, header not counted; image folders: sorted file order).
SOURCE_ROW = "__source_row__"


def get_task(cfg: TrainConfig) -> Task:
    """The task object for `cfg.recipe` (built-in or a plugin's; `ConfigError` if unknown)."""
    return task_class(cfg.recipe)(cfg)


@dataclass
class Splits:
    """Label-encoded splits, before model-specific preprocessing."""

    train: Any
    eval: Any | None
    test: Any | None


class Task:
    """Base class: a recipe's data handling, model construction, loss and metrics."""

    name: ClassVar[str] = "task"
    auto_model_cls: ClassVar[Any] = None
    #: The transformers class a user loads the trained model with, when `auto_model_cls` is a
    #: wrapper of hf_transfer's own.
    hub_auto_class: ClassVar[str] = ""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.processor = None

    # Data -------------------------------------------------------------------------------
    def load_splits(self) -> Splits:
        raise NotImplementedError

    def preprocess(self, ds, train: bool):
        """Model-ready dataset (tokenised / feature-extracted)."""
        raise NotImplementedError

    def collate(self, features: list[dict]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def lengths(self, ds) -> list[int] | None:
        """Per-example lengths for length-grouped batching, or None."""
        return None

    # Model ------------------------------------------------------------------------------
    def build_model(self, from_scratch: bool = False) -> nn.Module:
        raise NotImplementedError

    def load_processor(self):
        raise NotImplementedError

    def checkpoint_processor(self, auto_cls, what: str, hint: str = ""):
        """`auto_cls.from_pretrained` on the configured checkpoint (tokenizer, image processor,
        feature extractor), or a `ModelError` that names `what` and says what it needs."""
        m = self.cfg.model
        try:
            return auto_cls.from_pretrained(
                resolve(m.name_or_path), revision=m.revision, trust_remote_code=m.trust_remote_code
            )
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ModelError(
                f"Cannot load the {what} of '{m.name_or_path}' ({type(e).__name__}: {e}). {hint}".rstrip()
            ) from None

    def save_processor(self, out_dir) -> None:
        if self.processor is not None:
            self.processor.save_pretrained(out_dir)

    # Engine hooks -----------------------------------------------------------------------
    def num_items(self, batch) -> int:
        """Loss terms in the batch (examples, or label tokens for sequence outputs)."""
        return int(batch["labels"].shape[0])

    def num_examples(self, batch) -> int:
        return int(batch["labels"].shape[0])

    def loss(self, model, batch) -> torch.Tensor:
        """Summed (not averaged) loss over the batch's items."""
        raise NotImplementedError

    def eval_outputs(self, model, batch) -> dict[str, torch.Tensor]:
        """Tensors with a batch dimension, gathered across processes for `compute_metrics`."""
        raise NotImplementedError

    def compute_metrics(self, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
        raise NotImplementedError

    def compute_metrics_for(self, arrays: dict[str, np.ndarray], prefix: str) -> dict[str, Any]:
        """`compute_metrics` for split `prefix` (`eval`, `test`): multi-label tunes its thresholds
        on `eval` only."""
        return self.compute_metrics(arrays)

    def before_save(self, model) -> None:
        """Called on the final model right before it is saved (regression folds its target
        scaling into the output layer)."""

    def describe_data(self, splits: Splits) -> dict[str, Any]:
        return {}

    def model_inputs(self, batch) -> dict[str, torch.Tensor]:
        """What the model's forward takes from a collated batch (everything but the labels)."""
        return {k: v for k, v in batch.items() if k != "labels"}

    # Prediction -------------------------------------------------------------------------
    def predict_inputs(self, inputs: list[str]) -> dict[str, torch.Tensor]:
        """Model inputs for raw inputs (texts, or image/audio file paths)."""
        raise NotImplementedError

    def predict(self, model, inputs: list[str], top_k: int = 1) -> list[dict[str, Any]]:
        """One result dict per input (`hf-transfer predict`)."""
        raise NotImplementedError


class ClassificationTask(Task):
    """Shared behaviour of text, image and audio classification."""

    model_input_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: TrainConfig):
        super().__init__(cfg)
        self.labels: LabelSpace | None = None
        self.class_weights: torch.Tensor | None = None
        #: Set by `evaluate` before `load_splits`: the splits wanted and the run's label names. A
        #: separate eval or test split is then scored without reading the training data; an eval
        #: split carved from train still loads train, to carve exactly the same rows.
        self.only_roles: tuple[str, ...] | None = None
        self.known_labels: list[str] | None = None
        #: Set before `load_splits` to carry each row's place in its source as column `SOURCE_ROW`
        #: through filtering, the eval carve-out and subsampling (`hf-transfer audit` reports rows so).
        self.source_rows = False

    def _load_source(self, source, role: str):
        ds = load_split(source, role)
        if self.source_rows and SOURCE_ROW not in ds.column_names:
            ds = ds.add_column(SOURCE_ROW, list(range(len(ds))))
        return ds

    def drop_unusable_rows(self, ds, role: str):
        """Rows the task cannot use, dropped and counted (text: blank or missing texts)."""
        return ds

    def input_column(self, ds) -> str:
        raise NotImplementedError

    def load_splits(self) -> Splits:
        """Load train/eval/test, find columns, encode labels, carve eval, subsample."""
        d = self.cfg.data
        seed = d.seed if d.seed is not None else self.cfg.training.seed
        carved = not (d.eval is not None and d.eval.name)
        if (
            self.only_roles is not None
            and self.known_labels
            and "train" not in self.only_roles
            and not ("eval" in self.only_roles and carved)
        ):
            return self._load_without_train(seed)
        train = labels_mod.apply_filter(self._load_source(d.train, "train"), d.filter, "train")
        label_col = labels_mod.find_column(
            train, d.label_column, labels_mod.LABEL_CANDIDATES, "label", "data.label_column"
        )
        self.label_column = label_col
        self.input_col = self.input_column(train)
        train = self.drop_unusable_rows(train, "train")
        self.labels = labels_mod.label_space_from(train, label_col)
        train = labels_mod.encode_labels(train, label_col, self.labels, "train")
        eval_ds = test_ds = None
        if d.eval is not None and d.eval.name:
            eval_ds = self._load_other(d.eval, "eval")
        else:
            train, eval_ds = labels_mod.stratified_split(train, d.eval_fraction, seed)
            logger.info("No data.eval given: carved %d eval rows (stratified) from train.", len(eval_ds))
        if d.test is not None and d.test.name:
            test_ds = self._load_other(d.test, "test")
        train = labels_mod.select_indices(train, d.train_indices)
        train = labels_mod.subsample(labels_mod.per_class(train, d.samples_per_class, seed), d.max_train_samples, seed)
        if eval_ds is not None:
            eval_ds = self._cut_eval(eval_ds, seed, "carved from data.train" if carved else "in data.eval")
        weights = labels_mod.class_weights(train, len(self.labels), self.cfg.training.class_weights)
        self.class_weights = torch.tensor(weights, dtype=torch.float32) if weights is not None else None
        if weights is not None:
            logger.info("Class weights: %s", dict(zip(self.labels.names, [round(w, 4) for w in weights])))
        counts = np.bincount(np.asarray(train["labels"]), minlength=len(self.labels))
        logger.info("Labels (%d): %s", len(self.labels), dict(zip(self.labels.names, counts.tolist())))
        return Splits(train, eval_ds, test_ds)

    def _cut_eval(self, eval_ds, seed: int, origin: str):
        """`data.eval_samples_per_class` and `data.max_eval_samples` applied to the eval split; a cut
        is said in the log and recorded for metrics.json and the run's summary (`eval_cut`)."""
        d = self.cfg.data
        before = len(eval_ds)
        eval_ds = labels_mod.per_class(eval_ds, d.eval_samples_per_class, seed)
        per_class_rows = len(eval_ds)
        eval_ds = labels_mod.subsample(eval_ds, d.max_eval_samples, seed)
        by = ([f"data.eval_samples_per_class={d.eval_samples_per_class}"] if per_class_rows < before else []) + (
            [f"data.max_eval_samples={d.max_eval_samples}"] if len(eval_ds) < per_class_rows else []
        )
        self.eval_cut = None
        if by:
            self.eval_cut = {"eval_size_before_cut": before, "eval_cut_by": " and ".join(by), "eval_origin": origin}
            logger.warning(
                "The eval split (%s rows %s) was cut to %s rows by %s: its metrics rest on those %s rows only.",
                f"{before:,}",
                origin,
                f"{len(eval_ds):,}",
                " and ".join(by),
                f"{len(eval_ds):,}",
            )
        return eval_ds

    def _load_without_train(self, seed: int) -> Splits:
        """The eval and/or test splits alone, columns detected on them, labels the run's."""
        d = self.cfg.data
        self.labels = LabelSpace(list(self.known_labels))
        out: dict[str, Any] = {"eval": None, "test": None}
        for role in ("eval", "test"):
            source = getattr(d, role)
            if role not in self.only_roles or source is None or not source.name:
                continue
            ds = labels_mod.apply_filter(self._load_source(source, role), d.filter, role)
            if not hasattr(self, "input_col"):
                self.label_column = labels_mod.find_column(
                    ds, d.label_column, labels_mod.LABEL_CANDIDATES, "label", "data.label_column", role
                )
                self.input_col = self.input_column(ds)
            out[role] = self._encode_other(ds, role)
        if out["eval"] is not None:
            out["eval"] = labels_mod.subsample(
                labels_mod.per_class(out["eval"], d.eval_samples_per_class, seed), d.max_eval_samples, seed
            )
        return Splits(None, out["eval"], out["test"])

    def _load_other(self, source, role):
        ds = labels_mod.apply_filter(self._load_source(source, role), self.cfg.data.filter, role)
        return self._encode_other(ds, role)

    def _encode_other(self, ds, role):
        labels_mod.find_column(ds, self.label_column, (), "label", "data.label_column", role)
        if self.input_col not in ds.column_names:
            raise DataError(
                f"The {role} split has no column '{self.input_col}' (the train split's input column). "
                f"Its columns are: {', '.join(ds.column_names)}."
            )
        ds = self.drop_unusable_rows(ds, role)
        return labels_mod.encode_labels(ds, self.label_column, self.labels, role)

    def describe_data(self, splits: Splits) -> dict[str, Any]:
        info = {"labels": self.labels.names}
        if splits.train is not None:
            info["train_size"] = len(splits.train)
        if splits.eval is not None:
            info["eval_size"] = len(splits.eval)
            info.update(getattr(self, "eval_cut", None) or {})
        if splits.test is not None:
            info["test_size"] = len(splits.test)
        return info

    def predict(self, model, inputs: list[str], top_k: int = 1) -> list[dict[str, Any]]:
        """The `top_k` labels and their probabilities for each raw input."""
        from accelerate.utils import send_to_device

        id2label = model.config.id2label
        results = []
        device = next(model.parameters()).device  # wherever the caller put the model
        with torch.no_grad():
            probs = model(**send_to_device(self.predict_inputs(inputs), device)).logits.float().softmax(-1).cpu()
        for item, p in zip(inputs, probs):
            scores, ids = p.topk(min(top_k, p.numel()))
            results.append(
                {
                    "input": item,
                    "label": id2label[int(ids[0])],
                    "score": round(float(scores[0]), 4),
                    "top": [{"label": id2label[int(i)], "score": round(float(s), 4)} for s, i in zip(scores, ids)],
                }
            )
        return results

    def recount_labels(self, train, skipped: str, kept: str) -> None:
        """Class weights and per-class counts again, after unusable training files were dropped.

        Args:
            train: The training split left.
            skipped: What was dropped, for the log (`unreadable images`).
            kept: One item of what is left, for the warning (`readable training image`).
        """
        weights = labels_mod.class_weights(train, len(self.labels), self.cfg.training.class_weights)
        self.class_weights = torch.tensor(weights, dtype=torch.float32) if weights is not None else None
        counts = np.bincount(np.asarray(train["labels"]), minlength=len(self.labels))
        logger.info("Labels after skipping %s: %s", skipped, dict(zip(self.labels.names, counts.tolist())))
        gone = [n for n, c in zip(self.labels.names, counts) if c == 0]
        if gone:
            logger.warning("No %s is left for class(es): %s.", kept, ", ".join(gone))

    def logits(self, model, batch) -> torch.Tensor:
        return model(**self.model_inputs(batch)).logits

    def loss(self, model, batch) -> torch.Tensor:
        logits = self.logits(model, batch).float()
        weight = self.class_weights.to(logits.device) if self.class_weights is not None else None
        if weight is None:
            return F.cross_entropy(
                logits, batch["labels"], reduction="sum", label_smoothing=self.cfg.training.label_smoothing
            )
        return self._weighted_sum(logits, batch["labels"], weight)

    def _weighted_sum(self, logits, labels, weight) -> torch.Tensor:
        # Per-example weighted losses summed: the engine divides by the example count, so class
        # weights re-weight examples without changing the loss scale's meaning.
        per = F.cross_entropy(logits, labels, reduction="none", label_smoothing=self.cfg.training.label_smoothing)
        return (per * weight[labels]).sum()

    def eval_outputs(self, model, batch) -> dict[str, torch.Tensor]:
        logits = self.logits(model, batch).float()
        per_loss = F.cross_entropy(logits, batch["labels"], reduction="none")
        return {"predictions": logits.argmax(-1), "references": batch["labels"], "loss": per_loss, "logits": logits}

    def compute_metrics(self, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
        from hf_transfer.metrics.classification import compute_classification_metrics

        metrics = compute_classification_metrics(arrays["predictions"], arrays["references"], self.labels.names)
        metrics["loss"] = float(np.mean(arrays["loss"])) if len(arrays["loss"]) else float("nan")
        if self.cfg.training.record_eval_predictions:  # per example, in split order (studies' paired bootstrap)
            preds = np.asarray(arrays["predictions"])
            preds = preds.argmax(-1) if preds.ndim > 1 else preds
            metrics["predictions"] = preds.astype(int).tolist()
            metrics["references"] = np.asarray(arrays["references"]).astype(int).tolist()
            metrics["example_losses"] = [round(float(v), 6) for v in np.asarray(arrays["loss"], dtype=float)]
        return metrics
