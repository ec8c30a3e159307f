"""What multi-label and regression recipes share: loading splits whose target is not one class.

`TargetTask` sits between a modality's task (`TextClassificationTask`, `ImageClassificationTask`:
tokenising, image checks, model loading) and `ClassificationTask` in the method order, so the
modality's own code runs unchanged and only the target handling is replaced:

    class TextMultiLabelTask(TextClassificationTask, MultiLabelTask): ...

Splits: train (after `data.filter`, blank texts / unreadable images dropped and counted), eval
(given, else a seeded random `data.eval_fraction` of train: a label set or a number cannot be
stratified on), test; `data.train_indices`, `data.max_train_samples`, `data.max_eval_samples` as
for classification. `data.samples_per_class` has no meaning without classes and is refused.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hf_transfer.data import labels as labels_mod
from hf_transfer.data.image import collate_images
from hf_transfer.data.sources import load_split
from hf_transfer.errors import DataError
from hf_transfer.tasks.base import ClassificationTask, Splits

logger = logging.getLogger(__name__)


class TargetTask(ClassificationTask):
    """Loading for targets that are not one class per row (module docstring)."""

    #: `multilabel` or `regression`.
    target_kind: str = ""

    def where(self, role: str) -> str:
        """`train split ('data/train.csv')`: how errors name a split and its file."""
        source = getattr(self.cfg.data, role, None)
        name = getattr(source, "name", "") if source is not None else ""
        return f"{role} split ('{name}')" if name else f"{role} split"

    # Subclass hooks ---------------------------------------------------------------------
    def find_target(self, ds, role: str) -> None:
        """Find the target column(s) in the first split read (sets what `encode` needs)."""
        raise NotImplementedError

    def encode(self, ds, role: str, fit: bool):
        """`ds` with a float `labels` column; `fit`: the train split, which defines the targets."""
        raise NotImplementedError

    def fit_on_train(self, train) -> None:
        """Statistics of the final training split (target scaling, label counts)."""

    def load_run_state(self) -> None:
        """Evaluation of a finished run: read what training stored (thresholds, label names)."""

    # Loading ----------------------------------------------------------------------------
    def load_splits(self) -> Splits:
        d = self.cfg.data
        seed = d.seed if d.seed is not None else self.cfg.training.seed
        carved = not (d.eval is not None and d.eval.name)
        if self.only_roles is not None:
            self.load_run_state()
        if (
            self.only_roles is not None
            and self.known_labels
            and "train" not in self.only_roles
            and not ("eval" in self.only_roles and carved)
        ):
            return self._load_without_train(seed)
        train = labels_mod.apply_filter(load_split(d.train, "train"), d.filter, "train")
        self.find_target(train, "train")
        self.input_col = self.input_column(train)
        train = self.drop_unusable_rows(train, "train")
        train = self.encode(train, "train", fit=self.only_roles is None or not self.known_labels)
        eval_ds = test_ds = None
        if not carved:
            eval_ds = self._load_other(d.eval, "eval")
        else:
            n_eval = max(1, int(round(len(train) * d.eval_fraction)))
            if n_eval >= len(train):
                raise DataError(
                    f"The train split has {len(train)} rows: too few to carve an eval split from. "
                    "Give data.eval, or more training data."
                )
            parts = train.train_test_split(test_size=n_eval, seed=seed)
            train, eval_ds = parts["train"], parts["test"]
            logger.info("No data.eval given: carved %d random eval rows from train.", len(eval_ds))
        if d.test is not None and d.test.name:
            test_ds = self._load_other(d.test, "test")
        train = labels_mod.select_indices(train, d.train_indices)
        if d.max_train_samples is not None and d.max_train_samples < len(train):
            train = train.shuffle(seed=seed).select(range(d.max_train_samples))
        if eval_ds is not None and d.max_eval_samples is not None and d.max_eval_samples < len(eval_ds):
            eval_ds = eval_ds.shuffle(seed=seed).select(range(d.max_eval_samples))
        if self.only_roles is None:
            self.fit_on_train(train)
        return Splits(train, eval_ds, test_ds)

    def _load_without_train(self, seed: int) -> Splits:
        d = self.cfg.data
        out: dict[str, Any] = {"eval": None, "test": None}
        for role in ("eval", "test"):
            source = getattr(d, role)
            if role not in self.only_roles or source is None or not source.name:
                continue
            ds = labels_mod.apply_filter(load_split(source, role), d.filter, role)
            if not hasattr(self, "input_col"):
                self.find_target(ds, role)
                self.input_col = self.input_column(ds)
            out[role] = self._encode_other(ds, role)
        if out["eval"] is not None and d.max_eval_samples is not None and d.max_eval_samples < len(out["eval"]):
            out["eval"] = out["eval"].shuffle(seed=seed).select(range(d.max_eval_samples))
        return Splits(None, out["eval"], out["test"])

    def _encode_other(self, ds, role):
        if self.input_col not in ds.column_names:
            raise DataError(
                f"The {self.where(role)} has no column '{self.input_col}' (the train split's input "
                f"column). Its columns are: {', '.join(ds.column_names)}."
            )
        ds = self.drop_unusable_rows(ds, role)
        return self.encode(ds, role, fit=False)

    def recount_labels(self, train, skipped: str, kept: str) -> None:
        """After unreadable training images were dropped: the training statistics again."""
        logger.info("Training rows after skipping %s: %d.", skipped, len(train))
        if self.only_roles is None:
            self.fit_on_train(train)

    @staticmethod
    def run_dir_of(name_or_path) -> Path | None:
        """The run folder being evaluated, when `name_or_path` (`model.name_or_path`) is one
        (evaluate and predict point it at the run)."""
        p = Path(str(name_or_path)).expanduser()
        return p if (p / "config.yaml").is_file() else None


class FloatLabelImages(torch.utils.data.Dataset):
    """An image dataset (`ImageClassificationDataset`) whose items carry float target vectors."""

    def __init__(self, images, labels: np.ndarray | None):
        self.images = images
        images.has_labels = False
        self.labels = labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        item = self.images[index]
        if item is not None and self.labels is not None:
            item["labels"] = torch.as_tensor(self.labels[int(index)], dtype=torch.float32)
        return item


def float_label_array(ds) -> np.ndarray | None:
    if "labels" not in ds.column_names:
        return None
    return np.asarray(list(ds["labels"]), dtype=np.float32)


def collate_float_images(features, empty_like, label_shape: tuple[int, ...]):
    """`collate_images` for items with float targets (images that failed to decode are dropped)."""
    kept = [dict(f) for f in features if f is not None]
    labels = [f.pop("labels") for f in kept if "labels" in f]
    batch = collate_images(kept, empty_like)
    if labels:
        batch["labels"] = torch.stack(labels)
    elif "labels" in batch:
        batch["labels"] = torch.zeros((0, *label_shape), dtype=torch.float32)
    return batch
