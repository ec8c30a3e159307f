"""`feature_extraction`: a classic classifier on the frozen backbone's features, cached on disk.

The backbone never trains. Its features come from `models.features` (pooled as the checkpoint
was trained to be pooled: a sentence-transformers folder's own pooling and normalisation, the
masked mean for other text encoders, what the head reads for images, the mean over real frames for
audio; `strategy.layers` to average or concatenate several layers) and are cached per
(checkpoint, data, preprocessing, feature spec): a later run with the same inputs, whatever the
classifier, reads them back without running the model. Then `models.probe` fits the classifier:
`logistic_regression` (default; C = 1 unless stratified cross-validation on the training
features finds a clearly better one),
`svm`, `knn` or `linear` (a torch linear layer trained with AdamW on the cached features).
Features are always computed with evaluation preprocessing: augmentation is off.

**The run folder** (`models.feature_run`): a plain transformers model when the features are the
head's input and the classifier is linear (its weights written into the head); a SetFit folder
(sentence-transformers body + scikit-learn `model_head.pkl`) for text features a
sentence-transformers body reproduces; otherwise the model with `classifier.joblib` beside it.
`hf-transfer evaluate` / `predict` load all three.

**Loss in the metrics.** `eval_loss` is the log loss per example: exact for the linear classifiers;
for `knn` its neighbour-vote probabilities clipped at 1e-7; 0 for `svm` (no probabilities).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from hf_transfer.engine.distributed import resolve_mixed_precision
from hf_transfer.errors import ConfigError, ModelError
from hf_transfer.models.feature_cache import cache_root, load_cached, save_cached  # noqa: F401  (re-exported)
from hf_transfer.models.feature_run import (  # noqa: F401  (re-exported: older imports, pickles)
    CLASSIFIER_FILE,
    CLASSIFIER_SETTINGS_FILE,
    CLASSIFIER_TENSORS_FILE,
    SETFIT_CONFIG_FILE,
    SETFIT_HEAD_FILE,
    SPEC_FILE,
    FeatureClassifierModel,
    attach_feature_classifier,
    fit_record,
    save_feature_run,
    setfit_compatible,
)
from hf_transfer.models.features import (
    FeatureExtractor,
    HeadInputCapture,
    default_device,
    extract,
    locate_head_input,
    spec_from_settings,
)
from hf_transfer.models.probe import (  # noqa: F401  (re-exported)
    EstimatorClassifier,
    LinearProbe,
    classifier_metrics,
    fit_classifier,
    write_into_head,
)
from hf_transfer.registry import recipe_info, recipe_modality
from hf_transfer.strategies.base import Strategy, StrategyConfig, register_strategy

logger = logging.getLogger(__name__)

#: Train examples whose features are compared with the head's input (decides the `head` layout).
HEAD_CHECK_EXAMPLES = 8


@dataclass
class FeatureExtractionConfig(StrategyConfig):
    """Settings of `feature_extraction`.

    Attributes:
        name: `feature_extraction`.
        classifier: `logistic_regression` (scikit-learn, multinomial), `svm` (`LinearSVC`, or `SVC`
            with `svm_kernel: rbf`), `knn`, or `linear` (a torch linear layer trained with AdamW).
        C: Inverse regularisation strength of `logistic_regression` and `svm`. Unset: 1.0 unless
            stratified cross-validation on the training features finds a clearly better value
            (`logistic_regression`, `models.probe.choose_C`; the value and why are in metrics.json
            as `C`, `C_selection`), 1.0 for `svm`.
        max_iter: Iteration limit of the scikit-learn solvers.
        svm_kernel: `linear` or `rbf`.
        k: Number of neighbours of `knn` (at most the number of training examples).
        standardize: Scale features to zero mean and unit variance before fitting (learned on
            the training split; folded into the weights written into the head). Off by default:
            on frozen features it lowered accuracy (docs/benchmarks/images.md), since it lifts
            low-variance, mostly-noise dimensions to the same weight as the informative ones.
        epochs: Passes over the training features of the `linear` classifier.
        lr: AdamW learning rate of the `linear` classifier (weight decay is
            `training.weight_decay`; class weights and label smoothing come from `training.*`).
        batch_size: Mini-batch size of the `linear` classifier.
        layers: `last`, `mean` (every block's output, averaged or concatenated) or a list of layer
            indices (0 = embeddings' output, -1 = last).
        combine: `mean` or `concat`, when several layers are read.
        pooling: `auto` (the checkpoint's convention) or `mean`, `cls`, `max`, `last_token`,
            `pooler`, `head_input`.
        normalize: L2-normalise the features; unset = the checkpoint's convention.
        cache_dir: Feature cache folder. Empty: `$HF_TRANSFER_CACHE/features`, else
            `~/.cache/hf_transfer/features`.
        use_cache: Read and write the feature cache. Off: features are computed every run.
    """

    name: str = "feature_extraction"
    classifier: Literal["logistic_regression", "svm", "knn", "linear"] = "logistic_regression"
    C: float | None = None
    max_iter: int = 1000
    svm_kernel: Literal["linear", "rbf"] = "linear"
    k: int = 5
    standardize: bool = False
    epochs: int = 100
    lr: float = 1e-2
    batch_size: int = 64
    layers: Literal["last", "mean"] | list[int] = "last"
    combine: Literal["mean", "concat"] = "mean"
    pooling: Literal["auto", "mean", "cls", "max", "last_token", "pooler", "head_input"] = "auto"
    normalize: bool | None = None
    cache_dir: str | None = None
    use_cache: bool = True

    def __post_init__(self) -> None:
        for key in ("C", "lr"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ConfigError(f"strategy.{key} must be positive, got {value}.")
        for key in ("max_iter", "k", "epochs", "batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"strategy.{key} must be at least 1, got {getattr(self, key)}.")
        spec_from_settings(self)  # layers / combine / pooling checked now, before any data is read


def features_are_head_input(extractor: FeatureExtractor, model: nn.Module, head, task, ds, device) -> bool:
    """Whether the extractor's features equal what `head` (a `HeadInput`) receives, on a few
    training examples: then a linear classifier can be written into the head itself."""
    n = min(HEAD_CHECK_EXAMPLES, len(ds))
    data = task.preprocess(ds.select(range(n)), train=False)
    batch = task.collate([data[i] for i in range(n)])
    inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in task.model_inputs(batch).items()}
    with torch.no_grad(), HeadInputCapture(model, head) as cap:
        x = extractor(inputs)
        model(**inputs)
        h, _ = cap.features()
    return x.shape == h.shape and torch.allclose(x, h, rtol=1e-4, atol=1e-5)


def split_features(
    extractor: FeatureExtractor,
    task,
    splits,
    *,
    batch_size: int,
    device,
    cache: bool = True,
    cache_dir: str | None = None,
    autocast=None,
) -> tuple[dict[str, tuple], list[bool]]:
    """Features of every split there is (`train`, `eval`, `test`): role -> (float64 X, labels),
    and for each whether it came from the feature cache."""
    feats, hits = {}, []
    for role, ds in (("train", splits.train), ("eval", splits.eval), ("test", splits.test)):
        if ds is None:
            continue
        f = extract(
            extractor,
            task,
            ds,
            batch_size=batch_size,
            device=device,
            cache=cache,
            cache_dir=cache_dir,
            autocast=autocast,
        )
        feats[role] = (f.X.astype(np.float64), f.y)
        hits.append(f.cache_hit)
    return feats, hits


def fit_feature_classifier(settings: FeatureExtractionConfig, training, task, X: np.ndarray, y: np.ndarray):
    """`settings.classifier` fitted on training features `X`, `y` (`models.probe.fit_classifier`),
    with the task's class weights and `training`'s seed, weight decay and label smoothing."""
    num_labels = len(task.labels) if getattr(task, "labels", None) is not None else int(y.max()) + 1
    cw = getattr(task, "class_weights", None)
    return fit_classifier(
        settings,
        X,
        y,
        num_labels,
        cw.numpy() if cw is not None else None,
        seed=training.seed,
        weight_decay=training.weight_decay,
        label_smoothing=training.label_smoothing,
    )


def held_out_metrics(clf, feats: dict[str, tuple], task) -> dict[str, Any]:
    """The classifier's `eval_*` and `test_*` metrics on the splits `feats` holds."""
    metrics: dict[str, Any] = {}
    for role in ("eval", "test"):
        if role in feats:
            metrics.update(classifier_metrics(clf, *feats[role], task, role))
    return metrics


def write_feature_run(
    out, model: nn.Module, task, clf, extractor: FeatureExtractor, data, *, head_written: bool, record: dict
) -> str:
    """`models.feature_run.save_feature_run` with the task's label names and `data.max_length`."""
    return save_feature_run(
        Path(out),
        model,
        task,
        clf,
        extractor,
        head_written=head_written,
        labels=list(task.labels.names),
        max_length=getattr(data, "max_length", None),
        record=record,
    )


@register_strategy("feature_extraction", FeatureExtractionConfig)
class FeatureExtraction(Strategy):
    """Frozen backbone features, cached; a classic classifier on top (see the module docstring)."""

    trains_with_engine = False

    def __init__(self, config: FeatureExtractionConfig):
        super().__init__(config)
        self._fitted: dict[str, Any] | None = None

    def prepare(self, ctx) -> None:
        if getattr(ctx.task, "token_level", False):  # per-token classifier (strategies.token_probe)
            from hf_transfer.strategies.token_probe import check_token_settings

            check_token_settings(self.config)
            return
        if recipe_info(ctx.cfg.recipe).targets == "text":  # transcripts, masked tokens: no classes
            raise ConfigError(f"strategy feature_extraction needs a classification recipe, not {ctx.cfg.recipe}.")
        if getattr(getattr(ctx.cfg.data, "augmentation", None), "enabled", False):
            logger.info("Augmentation is off for feature_extraction: features are computed once, unaugmented.")

    def apply(self, model: nn.Module, groups: list) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(False)
        return model.eval()

    def describe(self, model: nn.Module) -> dict[str, Any]:
        info = super().describe(model)
        info["classifier"] = self.config.classifier
        if self._fitted:
            info.update(self._fitted)
            if self._fitted.get("head_written"):
                info["trainable_parameters"] = self._fitted["classifier_parameters"]
                info["frozen_parameters"] = sum(p.numel() for p in model.parameters()) - info["trainable_parameters"]
        return info

    def fit(self, ctx, model: nn.Module, groups: list) -> dict[str, Any]:
        """Features (cached), classifier, metrics; writes the run folder (module docstring)."""
        c, cfg, task, splits = self.config, ctx.cfg, ctx.task, ctx.splits
        if getattr(task, "token_level", False):
            from hf_transfer.strategies.token_probe import fit_token_probe

            metrics, self._fitted = fit_token_probe(self, ctx, model)
            return metrics
        start = time.time()
        extractor = FeatureExtractor(
            model, modality=recipe_modality(cfg.recipe), spec=spec_from_settings(c), name_or_path=cfg.model.name_or_path
        )
        device = default_device()
        autocast = None
        precision = resolve_mixed_precision(cfg.training.mixed_precision, self)
        if precision != "no" and torch.device(device).type != "cpu":
            autocast = torch.bfloat16 if precision == "bf16" else torch.float16
        bs = cfg.training.eval_batch_size or cfg.training.batch_size

        feats, hits = split_features(
            extractor,
            task,
            splits,
            batch_size=bs,
            device=device,
            cache=c.use_cache,
            cache_dir=c.cache_dir,
            autocast=autocast,
        )
        feature_seconds = time.time() - start

        if getattr(task, "target_kind", ""):  # label sets or numbers: strategies.feature_targets
            from hf_transfer.strategies.feature_targets import fit_targets

            return fit_targets(self, ctx, model, extractor, feats, hits, start, device)
        X, y = feats["train"]
        t0 = time.time()
        clf = fit_feature_classifier(c, cfg.training, task, X, y)
        classifier_seconds = time.time() - t0
        runtime = time.time() - start

        metrics = held_out_metrics(clf, feats, task)

        head_written = False
        try:
            head = locate_head_input(model, "auto", extractor.modality == "text")
        except ModelError:
            head = None
        # Only these features can be the head's input (a mean or a normalised vector never is for
        # a transformers head); a few examples confirm it, so cached runs rarely touch the model.
        candidate = (
            extractor.pooling in (("pooler",), ("head_input",), ("auto",))
            and not extractor.normalize
            and extractor.spec.layers == "last"
        )
        if (
            isinstance(clf, LinearProbe)
            and head is not None
            and head.linear is not None
            and candidate
            and features_are_head_input(extractor, model, head, task, splits.train, device)
        ):
            head_written = write_into_head(model.get_submodule(head.linear), clf)
        self._fitted = {"head_written": head_written, **fit_record(extractor, clf, X.shape[1])}
        layout = "head" if head_written else ("setfit" if setfit_compatible(extractor) else "beside")
        self._fitted["run_layout"] = layout
        if layout != "head":
            logger.info(
                "The %s classifier is saved beside the model (%s layout): hf-transfer evaluate/predict use it%s.",
                c.classifier,
                layout,
                "; so does setfit.SetFitModel.from_pretrained" if layout == "setfit" else "",
            )
        if _is_main():
            write_feature_run(
                ctx.output_dir,
                model,
                task,
                clf,
                extractor,
                cfg.data,
                head_written=head_written,
                record={k: v for k, v in self._fitted.items() if k != "head_written"},
            )

        metrics.update(
            {
                "train_runtime": round(runtime, 3),
                "train_samples_per_second": round(len(y) / runtime, 3) if runtime > 0 else 0.0,
                "feature_seconds": round(feature_seconds, 3),
                "classifier_seconds": round(classifier_seconds, 3),
                "feature_cache_hit": bool(hits) and all(hits),
            }
        )
        return metrics


def _is_main() -> bool:
    from accelerate.state import PartialState

    return PartialState().is_main_process
