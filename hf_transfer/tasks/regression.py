"""Regression: recipes `text_regression` and `image_regression`: one number per text or image.

The target is the numeric column `data.label_column` (detected among `label`, `score`, `target`,
... when unset). The head is the checkpoint's classification head with one output
(`problem_type="regression"`, `num_labels=1`, the label named after the column), trained with
`training.regression_loss` (`mse`, or `huber` with `training.huber_delta`).

**Target standardisation** (`data.standardize_targets`, on by default): the model learns
`(y - mean) / std` of the training targets, whatever their units, so learning rates and the head's
initialisation mean the same for a 0-1 confidence and a 0-100 rating. Before the model is saved the
mean and standard deviation are folded into the output layer (`w * std`, `b * std + mean`), so the
saved model outputs the original units: `pipeline(...)` with plain transformers returns the same
number as `hf-transfer predict`. The scaling is recorded in `target_scaling.json`, `config.json`
(`target_mean`, `target_std`, informational) and `metrics.json`.

Metrics: `rmse`, `mae`, `mse` (lower is better), `r2`, `spearman`, `pearson`, in the target's
units. The best checkpoint is selected by `rmse` unless `training.metric_for_best_model` says
otherwise.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hf_transfer.data import labels as labels_mod
from hf_transfer.data import targets as targets_mod
from hf_transfer.data.labels import LabelSpace
from hf_transfer.errors import DataError, ModelError
from hf_transfer.metrics.regression import compute_regression_metrics
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

SCALING_FILE = "target_scaling.json"
PROBLEM_TYPE = "regression"
TARGET_CANDIDATES = ("label", "labels", "score", "target", "rating", "value", "y", "confidence")


def output_linear(model: nn.Module) -> nn.Linear:
    """The linear layer that produces a one-output model's prediction (the last one with one
    output; under PEFT, the trained copy in `modules_to_save`)."""
    found = [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, nn.Linear) and m.out_features == 1 and "original_module" not in n
    ]
    if not found:
        raise ModelError(
            "Cannot find the model's one-output linear layer to fold the target scaling into. "
            "Set data.standardize_targets=false for this architecture."
        )
    name, layer = found[-1]
    if hasattr(layer, "lora_A") or "base_layer" in name:
        raise ModelError(
            f"The output layer '{name}' carries a LoRA adapter: the target scaling cannot be folded "
            "into it. Leave the head out of the LoRA targets, or set data.standardize_targets=false."
        )
    return layer


def fold_scaling(layer: nn.Linear, mean: float, std: float) -> None:
    """`layer(x) * std + mean` becomes `layer(x)`."""
    with torch.no_grad():
        layer.weight.mul_(std)
        if layer.bias is not None:
            layer.bias.mul_(std).add_(mean)


class RegressionTask(TargetTask):
    """A number in the target's units out; MSE or Huber on standardised targets (module docstring)."""

    target_kind = "regression"

    def __init__(self, cfg):
        super().__init__(cfg)
        #: (mean, std) of the training targets while the model learns standardised targets;
        #: (0, 1) once folded into the saved model or for a finished run.
        self.mean, self.std = 0.0, 1.0
        self.scaling: dict[str, Any] = {}
        self.folded = False

    def find_target(self, ds, role: str) -> None:
        d = self.cfg.data
        self.label_column = labels_mod.find_column(
            ds, d.label_column, TARGET_CANDIDATES, "target", "data.label_column", role
        )
        self.labels = LabelSpace([self.label_column])

    def encode(self, ds, role: str, fit: bool):
        where = self.where(role)
        if self.label_column not in ds.column_names:
            raise DataError(
                f"Target column '{self.label_column}' is not in the {where}. Its columns are: "
                f"{', '.join(ds.column_names)}."
            )
        y = targets_mod.numeric_targets(ds, self.label_column, where)
        if fit:
            targets_mod.check_not_constant(y, self.label_column, where)
        ds = ds.remove_columns(
            [c for c in (self.label_column, "labels") if c in ds.column_names and c != self.input_col]
        )
        import datasets

        ds = ds.add_column("labels", y.tolist())
        return ds.cast_column("labels", datasets.Value("float64"))

    def fit_on_train(self, train) -> None:
        y = np.asarray(list(train["labels"]), dtype=np.float64)
        targets_mod.check_not_constant(y, self.label_column, self.where("train") + " (after subsampling)")
        mean, std = float(y.mean()), float(y.std())
        self.scaling = {
            "column": self.label_column,
            "mean": mean,
            "std": std,
            "min": float(y.min()),
            "max": float(y.max()),
            "train_rows": int(len(y)),
            "standardized": bool(self.cfg.data.standardize_targets),
        }
        if self.cfg.data.standardize_targets:
            self.mean, self.std = mean, std
        logger.info(
            "Target '%s': %d training rows, mean %.4g, std %.4g, range [%.4g, %.4g]%s.",
            self.label_column,
            len(y),
            mean,
            std,
            y.min(),
            y.max(),
            "; the model learns standardised targets" if self.cfg.data.standardize_targets else "",
        )

    def load_run_state(self) -> None:
        run = self.run_dir_of(self.cfg.model.name_or_path)
        if run is not None and (run / SCALING_FILE).is_file():
            self.scaling = json.loads((run / SCALING_FILE).read_text())
            self.label_column = self.scaling.get("column", self.label_column if hasattr(self, "label_column") else None)
        self.mean, self.std = 0.0, 1.0  # a saved model outputs the original units

    # Model ------------------------------------------------------------------------------
    def configure_model(self, model):
        model.config.problem_type = PROBLEM_TYPE
        return model

    def predictions(self, model, batch) -> torch.Tensor:
        """The model's output in the target's units, shape (batch,)."""
        out = model(**self.model_inputs(batch)).logits.float().reshape(-1)
        return out * self.std + self.mean

    def loss(self, model, batch) -> torch.Tensor:
        z = model(**self.model_inputs(batch)).logits.float().reshape(-1)
        target = (batch["labels"].float().reshape(-1) - self.mean) / self.std
        if self.cfg.training.regression_loss == "huber":
            return F.huber_loss(z, target, reduction="sum", delta=self.cfg.training.huber_delta)
        return F.mse_loss(z, target, reduction="sum")

    def eval_outputs(self, model, batch) -> dict[str, torch.Tensor]:
        pred = self.predictions(model, batch)
        ref = batch["labels"].float().reshape(-1)
        return {"predictions": pred, "references": ref, "loss": (pred - ref) ** 2}

    def compute_metrics(self, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
        metrics = compute_regression_metrics(arrays["predictions"], arrays["references"])
        metrics["loss"] = metrics["mse"]
        return metrics

    def before_save(self, model) -> None:
        """Fold the target scaling into the output layer (module docstring)."""
        if self.folded or (self.mean == 0.0 and self.std == 1.0):
            return
        fold_scaling(output_linear(model), self.mean, self.std)
        logger.info(
            "Folded the target scaling (mean %.4g, std %.4g) into the output layer: the saved model outputs "
            "'%s' in its own units.",
            self.mean,
            self.std,
            self.label_column,
        )
        self.mean, self.std, self.folded = 0.0, 1.0, True

    def describe_data(self, splits) -> dict[str, Any]:
        info = super().describe_data(splits)
        if self.scaling:
            info["target_scaling"] = dict(self.scaling)
        info["regression_loss"] = self.cfg.training.regression_loss
        return info

    def save_processor(self, out_dir) -> None:
        """The processor, then the scaling record: `target_scaling.json` and `config.json`."""
        super().save_processor(out_dir)
        if not self.scaling:
            return
        out = Path(out_dir)
        (out / SCALING_FILE).write_text(
            json.dumps(
                {
                    **self.scaling,
                    "note": "The saved model outputs the original units: the scaling is folded into its output layer.",
                },
                indent=2,
            )
        )
        cfg_path = out / "config.json"
        if cfg_path.is_file():
            cfg = json.loads(cfg_path.read_text())
            cfg.update(problem_type=PROBLEM_TYPE, target_mean=self.scaling["mean"], target_std=self.scaling["std"])
            cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")

    def separability(self, features, labels, seed: int = 0):
        return separability(features, labels, seed)

    def strata(self, train, bins: int = 5) -> tuple[np.ndarray, list[str]]:
        """For stratified subsamples (`hf-transfer compare`): quantile bins of the target."""
        y = np.asarray(list(train["labels"]), dtype=np.float64)
        edges = np.unique(np.quantile(y, np.linspace(0, 1, bins + 1)))
        strata = np.clip(np.searchsorted(edges, y, side="right") - 1, 0, max(len(edges) - 2, 0))
        names = [f"{self.label_column} in [{edges[i]:.4g}, {edges[i + 1]:.4g}]" for i in range(max(len(edges) - 1, 1))]
        return strata.astype(np.int64), names

    # Prediction -------------------------------------------------------------------------
    def predict(self, model, inputs: list[str], top_k: int = 1) -> list[dict[str, Any]]:
        """Each input's predicted value (`score`, as transformers' pipeline names it)."""
        from accelerate.utils import send_to_device

        name = model.config.id2label.get(0, "value")
        device = next(model.parameters()).device
        with torch.no_grad():
            out = model(**send_to_device(self.predict_inputs(inputs), device)).logits.float().reshape(-1).cpu()
        return [{"input": item, "label": name, "score": round(float(v), 6)} for item, v in zip(inputs, out)]


def separability(features: np.ndarray, targets: np.ndarray, seed: int = 0) -> tuple[float | None, float | None]:
    """`auto`'s similarity for a numeric target: the cross-validated R^2 of a ridge regression on
    standardised frozen features, clipped to [0, 1]. Returns (score, R^2); None below 4 rows."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(targets, dtype=np.float64).reshape(-1)
    if len(y) < 4 or np.ptp(y) == 0:
        return None, None
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 13)))
    pred = cross_val_predict(
        model, np.asarray(features, dtype=np.float64), y, cv=KFold(min(5, len(y) // 2), shuffle=True, random_state=seed)
    )
    r2 = float(1 - np.sum((pred - y) ** 2) / np.sum((y - y.mean()) ** 2))
    return float(np.clip(r2, 0.0, 1.0)), r2


@register_task(
    "text_regression",
    "text-classification",
    example_input="What a lovely, sunny day.",
    metrics=("rmse", "mae", "r2", "spearman"),
    lower_is_better=True,
    modality="text",
    targets="number",
)
class TextRegressionTask(TextClassificationTask, RegressionTask):
    """Tokenised text in, one number out."""

    def build_model(self, from_scratch: bool = False):
        return self.configure_model(super().build_model(from_scratch))


@register_task(
    "image_regression",
    "image-classification",
    example_input="path/to/image.jpg",
    metrics=("rmse", "mae", "r2", "spearman"),
    lower_is_better=True,
    modality="image",
    targets="number",
)
class ImageRegressionTask(ImageClassificationTask, RegressionTask):
    """An image in, one number out."""

    def build_model(self, from_scratch: bool = False):
        return self.configure_model(super().build_model(from_scratch))

    def preprocess(self, ds, train: bool):
        return FloatLabelImages(super().preprocess(ds, train), float_label_array(ds))

    def collate(self, features):
        return collate_float_images(features, self._empty_like, ())
