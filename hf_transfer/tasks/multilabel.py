"""Multi-label classification: recipes `text_multilabel` and `image_multilabel`.

Any number of labels per example (none included). The head is the checkpoint's sequence / image
classification head with one output per label, trained with binary cross-entropy on the logits
(`problem_type="multi_label_classification"` in config.json, so transformers' own loss and
pipelines treat it as multi-label: `pipeline(...)` gives each label's sigmoid probability).

Label formats: see `hf_transfer.data.targets` (separated string, list column, one 0/1 column per
label). `training.class_weights: balanced` weighs each label's positive examples by
negatives / positives (BCE's `pos_weight`).

**Thresholds.** A label is predicted when its probability reaches that label's threshold. With
`training.multilabel_threshold: tune` (default) each label's threshold maximises its F1 on held-out
predictions: for `feature_extraction`, out-of-fold predictions of a k-fold cross-validation on the
training features; for the strategies that train with the engine, the eval split (held out from
training; carved from the training data unless `data.eval` is given). The eval metrics reported
are cross-fitted (each fold of the eval split thresholded with thresholds tuned on the others), so
they are not scored on the rows the thresholds were fitted to; the test split uses the final
thresholds. They are stored in the run folder (`thresholds.json`) and in `config.json`
(`thresholds`: label -> threshold), so a pipeline user applies them too:

    scores = pipe(text, top_k=None)
    labels = [s["label"] for s in scores if s["score"] >= pipe.model.config.thresholds[s["label"]]]
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
import torch.nn.functional as F

from hf_transfer.data import labels as labels_mod
from hf_transfer.data import targets as targets_mod
from hf_transfer.data.labels import LabelSpace
from hf_transfer.errors import DataError
from hf_transfer.metrics.multilabel import (
    DEFAULT_THRESHOLD,
    MIN_TUNING_POSITIVES,
    MIN_TUNING_ROWS,
    compute_multilabel_metrics,
    cross_fitted_predictions,
    tune_thresholds,
)
from hf_transfer.tasks.base import register_task
from hf_transfer.tasks.image_classification import ImageClassificationTask
from hf_transfer.tasks.targets import (
    FloatLabelImages,
    TargetTask,
    collate_float_images,
    float_label_array,
)
from hf_transfer.tasks.text_classification import TextClassificationTask

logger = logging.getLogger(__name__)

THRESHOLDS_FILE = "thresholds.json"
PROBLEM_TYPE = "multi_label_classification"


class MultiLabelTask(TargetTask):
    """Label sets in, one sigmoid per label out; BCE; tuned thresholds (module docstring)."""

    target_kind = "multilabel"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.thresholds: np.ndarray | None = None
        #: How the thresholds were chosen (metrics.json `threshold_selection`).
        self.threshold_selection = ""
        #: Thresholds read from a finished run: evaluation applies them, never re-tunes.
        self.fixed_thresholds: np.ndarray | None = None
        self.pos_weight: torch.Tensor | None = None
        self.empty_rows: dict[str, int] = {}
        self.label_source = ""
        self._declared = ""
        #: Share of training rows with each label: the new head's initial bias (`init_bias_to_prior`).
        self.prior: np.ndarray | None = None
        #: The head was fitted as a balanced one-vs-rest probe (`strategies.head_init`): its
        #: decisions sit at 0.5, which a small eval split does not move.
        self.balanced_head = False

    # Targets ----------------------------------------------------------------------------
    def find_target(self, ds, role: str) -> None:
        d = self.cfg.data
        if d.label_columns:
            self.label_column = None
            return
        self.label_column = labels_mod.find_column(
            ds, d.label_column, labels_mod.LABEL_CANDIDATES + ("tags", "topics"), "label", "data.label_column", role
        )

    def encode(self, ds, role: str, fit: bool):
        d = self.cfg.data
        where = self.where(role)
        if d.label_columns:
            if fit or self.labels is None:
                self.labels = LabelSpace([str(c) for c in d.label_columns])
                self._declared = "data.label_columns"
            matrix = targets_mod.multi_hot_from_columns(ds, d.label_columns, where)
            drop = [c for c in d.label_columns if c != self.input_col]
        else:
            if self.label_column not in ds.column_names:
                raise DataError(
                    f"Label column '{self.label_column}' (from data.label_column) is not in the {where}. "
                    f"Its columns are: {', '.join(ds.column_names)}."
                )
            sets, feature_names = targets_mod.label_sets(ds, self.label_column, d.label_separator)
            if self.labels is None:
                if d.label_names:
                    self.labels, self._declared = LabelSpace([str(n) for n in d.label_names]), "data.label_names"
                elif feature_names:
                    self.labels, self._declared = LabelSpace(feature_names), "the dataset's ClassLabel names"
                else:
                    found = sorted({label for s in sets for label in s})
                    if not found:
                        raise DataError(
                            f"No row of the {where} has a label in column '{self.label_column}' "
                            f"(separator {d.label_separator!r})."
                        )
                    self.labels, self._declared = LabelSpace(found), "the labels of the train split"
            matrix = targets_mod.multi_hot(sets, self.labels.names, where, self._declared or "the run's labels")
            drop = [self.label_column]
        if len(self.labels) < 1:
            raise DataError("A multi-label recipe needs at least one label.")
        self.empty_rows[role] = targets_mod.count_empty(matrix, where)
        ds = ds.remove_columns([c for c in drop + ["labels"] if c in ds.column_names])
        ds = ds.add_column("labels", matrix.tolist())
        return ds.cast_column("labels", datasets.Sequence(datasets.Value("float32")))

    def fit_on_train(self, train) -> None:
        y = np.asarray(list(train["labels"]), dtype=np.float64)
        pos = y.sum(0)
        self.prior = pos / max(len(y), 1)
        counts = dict(zip(self.labels.names, pos.astype(int).tolist()))
        logger.info("Labels (%d; positive examples of each in %d training rows): %s", len(self.labels), len(y), counts)
        absent = [n for n, c in counts.items() if c == 0]
        if absent:
            logger.warning(
                "No training example has label(s) %s: the model learns never to predict them.", ", ".join(absent)
            )
        setting = self.cfg.training.class_weights
        if setting == "balanced":
            w = np.where(pos > 0, (len(y) - pos) / np.maximum(pos, 1), 1.0)
            self.pos_weight = torch.tensor(w, dtype=torch.float32)
            logger.info(
                "Positive-example weights (negatives / positives): %s",
                dict(zip(self.labels.names, np.round(w, 3).tolist())),
            )
        elif setting not in (None, "none"):
            w = list(setting)
            if len(w) != len(self.labels):
                raise DataError(
                    f"training.class_weights has {len(w)} values but there are {len(self.labels)} labels: "
                    "give one positive-example weight per label, in id order."
                )
            self.pos_weight = torch.tensor([float(x) for x in w], dtype=torch.float32)
        self.class_weights = None

    def load_run_state(self) -> None:
        run = self.run_dir_of(self.cfg.model.name_or_path)
        if run is not None and (run / THRESHOLDS_FILE).is_file():
            info = json.loads((run / THRESHOLDS_FILE).read_text())
            self.fixed_thresholds = np.asarray([float(info["thresholds"][n]) for n in info["labels"]])
            self.known_labels = list(info["labels"])
        if self.known_labels:
            self.labels = LabelSpace(list(self.known_labels))

    # Model ------------------------------------------------------------------------------
    def configure_model(self, model):
        model.config.problem_type = PROBLEM_TYPE
        if self.prior is not None:
            init_bias_to_prior(model, self.prior)
        return model

    def logits(self, model, batch) -> torch.Tensor:
        return model(**self.model_inputs(batch)).logits

    def loss(self, model, batch) -> torch.Tensor:
        logits = self.logits(model, batch).float()
        target = batch["labels"].float()
        pw = self.pos_weight.to(logits.device) if self.pos_weight is not None else None
        # Summed over examples, averaged over labels: the engine divides by the example count.
        per = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pw, reduction="none")
        return per.mean(-1).sum()

    def eval_outputs(self, model, batch) -> dict[str, torch.Tensor]:
        logits = self.logits(model, batch).float()
        target = batch["labels"].float()
        per = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(-1)
        return {"probabilities": torch.sigmoid(logits), "references": target, "loss": per}

    # Metrics ----------------------------------------------------------------------------
    def _fixed(self) -> float | None:
        t = self.cfg.training.multilabel_threshold
        return None if isinstance(t, str) else float(t)

    def compute_metrics_for(self, arrays: dict[str, np.ndarray], prefix: str) -> dict[str, Any]:
        probs = np.asarray(arrays["probabilities"], dtype=np.float64)
        refs = np.asarray(arrays["references"]) > 0.5
        n_labels = len(self.labels)
        extra: dict[str, Any] = {}
        if self.fixed_thresholds is not None or self._fixed() is not None or prefix != "eval":
            if self.fixed_thresholds is not None:
                t = self.fixed_thresholds
            elif self._fixed() is not None:
                t = np.full(n_labels, self._fixed())
            else:  # test during training: the thresholds the last evaluation tuned
                t = self.thresholds if self.thresholds is not None else np.full(n_labels, DEFAULT_THRESHOLD)
            pred = probs >= t[None, :]
        elif self.balanced_head and (len(probs) < MIN_TUNING_ROWS or not (refs.sum(0) >= MIN_TUNING_POSITIVES).any()):
            # A head fitted as a balanced probe (strategies.head_init) puts each label's decision at
            # 0.5; too few held-out rows to move it (the same rule as feature_extraction's).
            self.thresholds = np.full(n_labels, DEFAULT_THRESHOLD)
            pred = probs >= DEFAULT_THRESHOLD
            self.threshold_selection = (
                f"default 0.5 (the eval split's {len(probs)} rows are too few to tune on: thresholds are tuned from "
                f"{MIN_TUNING_ROWS} rows on, for labels with at least {MIN_TUNING_POSITIVES} positives)"
            )
        else:
            least = MIN_TUNING_POSITIVES if self.balanced_head else 1
            pred, folds = cross_fitted_predictions(probs, refs, seed=self.cfg.training.seed, min_positives=least)
            self.thresholds = tune_thresholds(probs, refs, min_positives=least)
            self.threshold_selection = (
                f"per-label F1 on the eval split's {len(probs)} held-out predictions"
                + (f", for the labels with at least {least} positives there (0.5 for the others" if least > 1 else " (")
                + f"; eval metrics cross-fitted over {folds} folds)"
            )
            extra["f1_macro_at_0.5"] = compute_multilabel_metrics(
                probs >= DEFAULT_THRESHOLD, refs, probs, self.labels.names
            )["f1_macro"]
        metrics = compute_multilabel_metrics(pred, refs, probs, self.labels.names)
        metrics.update(extra)
        metrics["loss"] = float(np.mean(arrays["loss"])) if len(arrays["loss"]) else float("nan")
        return metrics

    def compute_metrics(self, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
        return self.compute_metrics_for(arrays, "eval")

    def final_thresholds(self) -> np.ndarray:
        if self._fixed() is not None:
            return np.full(len(self.labels), self._fixed())
        if self.thresholds is None:
            return np.full(len(self.labels), DEFAULT_THRESHOLD)
        return self.thresholds

    def describe_data(self, splits) -> dict[str, Any]:
        info = super().describe_data(splits)
        info["empty_label_rows"] = dict(self.empty_rows)
        info["label_format"] = "columns" if self.cfg.data.label_columns else "separated or list"
        if self.only_roles is None:
            t = self.final_thresholds()
            info["thresholds"] = dict(zip(self.labels.names, [round(float(x), 4) for x in t]))
            info["threshold_selection"] = (
                f"fixed (training.multilabel_threshold={self._fixed()})"
                if self._fixed() is not None
                else self.threshold_selection or "default 0.5"
            )
        return info

    def save_processor(self, out_dir) -> None:
        """The processor, then the thresholds: `thresholds.json` and `config.json` (`thresholds`)."""
        super().save_processor(out_dir)
        out = Path(out_dir)
        t = self.final_thresholds()
        thresholds = {n: round(float(x), 4) for n, x in zip(self.labels.names, t)}
        how = (
            f"fixed (training.multilabel_threshold={self._fixed()})"
            if self._fixed() is not None
            else self.threshold_selection or "default 0.5"
        )
        (out / THRESHOLDS_FILE).write_text(
            json.dumps({"labels": list(self.labels.names), "thresholds": thresholds, "selection": how}, indent=2)
        )
        cfg_path = out / "config.json"
        if cfg_path.is_file():
            cfg = json.loads(cfg_path.read_text())
            cfg["thresholds"] = thresholds
            cfg["problem_type"] = PROBLEM_TYPE
            cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")

    def separability(self, features, labels, seed: int = 0):
        return separability(features, labels, seed)

    def strata(self, train) -> tuple[np.ndarray, list[str]]:
        """For stratified subsamples (`hf-transfer compare`): each row's rarest label in `train`,
        or a last stratum for rows without a label."""
        Y = np.asarray(list(train["labels"])) > 0.5
        rarity = np.where(Y.sum(0) > 0, Y.sum(0), np.inf)
        strata = np.where(Y.any(1), np.argmin(np.where(Y, rarity[None, :], np.inf), axis=1), Y.shape[1])
        return strata.astype(np.int64), list(self.labels.names) + ["(no label)"]

    # Prediction -------------------------------------------------------------------------
    def predict(self, model, inputs: list[str], top_k: int = 1) -> list[dict[str, Any]]:
        """Each input's predicted label set (probability >= the label's threshold) and every
        label's probability; `top` lists the `top_k` most probable labels."""
        from accelerate.utils import send_to_device

        config = model.config
        id2label = config.id2label
        names = [id2label[i] for i in range(len(id2label))]
        saved = getattr(config, "thresholds", None) or {}
        t = np.asarray([float(saved.get(n, DEFAULT_THRESHOLD)) for n in names])
        device = next(model.parameters()).device
        with torch.no_grad():
            probs = (
                torch.sigmoid(model(**send_to_device(self.predict_inputs(inputs), device)).logits.float()).cpu().numpy()
            )
        out = []
        for item, p in zip(inputs, probs):
            order = np.argsort(-p)
            out.append(
                {
                    "input": item,
                    "labels": [names[j] for j in order if p[j] >= t[j]],
                    "scores": {n: round(float(x), 6) for n, x in zip(names, p)},
                    "top": [{"label": names[j], "score": round(float(p[j]), 6)} for j in order[: max(1, top_k)]],
                }
            )
        return out


def init_bias_to_prior(model, prior: np.ndarray, floor: float = 1e-3) -> bool:
    """Start each label's output bias at the log-odds of its training frequency, so the untrained
    head predicts the base rates rather than 0.5 for every label (the prior initialisation of Lin et
    al.'s focal-loss paper): BCE's first steps then go to telling examples apart instead of pushing
    every probability down. The head's output layer is the last linear layer with one output per
    label. Returns False (and changes nothing) when none is found."""
    from torch import nn

    layers = [
        m
        for n, m in model.named_modules()
        if isinstance(m, nn.Linear)
        and m.out_features == len(prior)
        and m.bias is not None
        and "original_module" not in n
    ]
    if not layers:
        return False
    p = np.clip(np.asarray(prior, dtype=np.float64), floor, 1 - floor)
    with torch.no_grad():
        layers[-1].bias.copy_(torch.as_tensor(np.log(p / (1 - p)), dtype=layers[-1].bias.dtype))
    return True


def separability(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> tuple[float | None, float | None]:
    """`auto`'s similarity for label sets: the mean, over labels with at least 2 positive and 2
    negative examples, of the normalised balanced accuracy `2b - 1` (clipped to [0, 1]) of a
    cross-validated logistic regression on standardised features. Returns (score, mean balanced
    accuracy); (None, None) when no label can be scored."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    Y = np.asarray(labels) > 0.5
    X = np.asarray(features, dtype=np.float64)
    baccs = []
    for j in range(Y.shape[1]):
        pos = int(Y[:, j].sum())
        folds = min(5, pos, len(Y) - pos)
        if folds < 2:
            continue
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        pred = cross_val_predict(clf, X, Y[:, j], cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
        baccs.append(float(balanced_accuracy_score(Y[:, j], pred)))
    if not baccs:
        return None, None
    b = float(np.mean(baccs))
    return float(np.clip(2 * b - 1, 0.0, 1.0)), b


@register_task(
    "text_multilabel",
    "text-classification",
    example_input="The match was delayed by the election.",
    metrics=("f1_macro", "f1_micro", "subset_accuracy", "lrap"),
    modality="text",
    targets="label_set",
)
class TextMultiLabelTask(TextClassificationTask, MultiLabelTask):
    """Tokenised text in, a set of labels out."""

    def build_model(self, from_scratch: bool = False):
        return self.configure_model(super().build_model(from_scratch))


@register_task(
    "image_multilabel",
    "image-classification",
    example_input="path/to/image.jpg",
    metrics=("f1_macro", "f1_micro", "subset_accuracy", "lrap"),
    modality="image",
    targets="label_set",
)
class ImageMultiLabelTask(ImageClassificationTask, MultiLabelTask):
    """An image in, a set of labels out."""

    def build_model(self, from_scratch: bool = False):
        return self.configure_model(super().build_model(from_scratch))

    def preprocess(self, ds, train: bool):
        return FloatLabelImages(super().preprocess(ds, train), float_label_array(ds))

    def collate(self, features):
        return collate_float_images(features, self._empty_like, (len(self.labels),))
