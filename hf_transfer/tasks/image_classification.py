"""Image classification: any `AutoModelForImageClassification` checkpoint (ViT, DeiT, Swin,
ConvNeXt, ResNet, EfficientNet, a converted EfficientNet-Lite0, ...).

Images are preprocessed by the checkpoint's own image processor (`AutoImageProcessor`), so size
and normalisation match pretraining whatever size the files are. Data comes from a Hub image
dataset, a local image folder (one folder per class, see `hf_transfer.data.image`), or a
csv/json/jsonl file of paths and labels (relative paths are read against the file's folder).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import datasets
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification

from hf_transfer.data import labels as labels_mod
from hf_transfer.data.image import (
    IMAGE_CANDIDATES,
    Augmenter,
    ImageClassificationDataset,
    check_images,
    collate_images,
    load_image,
    process_image,
)
from hf_transfer.errors import DataError
from hf_transfer.models.families.efficientnet import (
    fix_batchnorm_momentum,
    fix_scratch_init,
    keep_frozen_parameters,
    neutralise_squeeze_excite,
)
from hf_transfer.models.heads import load_for_classification
from hf_transfer.paths import resolve
from hf_transfer.tasks.base import ClassificationTask, Splits, register_task

logger = logging.getLogger(__name__)


def _source_dir(source) -> Path | None:
    """The folder relative image paths in a local csv/json file are read against (None for the Hub)."""
    if source is None or not source.name:
        return None
    path = Path(resolve(source.name)).expanduser()
    if path.is_dir():
        return path.resolve()  # a folder of train.csv / validation.csv ...: the folder itself
    if path.is_file():
        return path.resolve().parent
    return None


def _resolve_paths(batch: dict, column: str, base: str) -> dict:
    out = []
    for value in batch[column]:
        if value is None or not str(value).strip():
            out.append(None)
            continue
        p = Path(str(value).strip()).expanduser()
        out.append(str(p if p.is_absolute() else Path(base) / p))
    return {column: out}


@register_task("image_classification", "image-classification", example_input="path/to/image.jpg", modality="image")
class ImageClassificationTask(ClassificationTask):
    """An image in, one label out. Augmentation on the training split only."""

    auto_model_cls = AutoModelForImageClassification

    def __init__(self, cfg):
        super().__init__(cfg)
        #: Unreadable images skipped, by split (`train`, `eval`, `test`): their paths or `row N`.
        self.skipped_files: dict[str, list[str]] = {}
        self._augmenter = Augmenter.from_config(cfg.data.augmentation)
        self._augmentation_off_reason: str | None = None
        self._empty_like: dict[str, torch.Tensor] | None = None

    # Data -------------------------------------------------------------------------------
    def input_column(self, ds) -> str:
        d = self.cfg.data
        if d.image_column:
            return labels_mod.find_column(ds, d.image_column, (), "image", "data.image_column")
        image_features = [c for c, f in ds.features.items() if isinstance(f, datasets.Image)]
        if len(image_features) == 1:
            return image_features[0]
        return labels_mod.find_column(ds, None, IMAGE_CANDIDATES, "image", "data.image_column")

    def load_splits(self) -> Splits:
        """The shared loading, then every image checked once (see `hf_transfer.data.image`)."""
        splits = super().load_splits()
        d = self.cfg.data
        train_dir = _source_dir(d.train)
        dirs = {
            "train": train_dir,
            "eval": _source_dir(d.eval) if d.eval is not None and d.eval.name else train_dir,
            "test": _source_dir(d.test),
        }
        checked = {}
        for role, ds in (("train", splits.train), ("eval", splits.eval), ("test", splits.test)):
            if ds is None:
                checked[role] = None
                continue
            ds = self._image_column(ds, role, dirs[role])
            checked[role], self.skipped_files[role] = check_images(ds, self.input_col, role, d.on_bad_file)
        if self.skipped_files.get("train"):
            self.recount_labels(checked["train"], "unreadable images", "readable training image")
        return Splits(checked["train"], checked["eval"], checked["test"])

    def _image_column(self, ds, role: str, base: Path | None):
        """The image column as `Image(decode=False)`: decoding stays lazy and under our control."""
        col = self.input_col
        feature = ds.features[col]
        if isinstance(feature, datasets.Image):
            return ds.cast_column(col, datasets.Image(decode=False)) if feature.decode else ds
        if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
            if base is not None:
                ds = ds.map(
                    _resolve_paths,
                    batched=True,
                    fn_kwargs={"column": col, "base": str(base)},
                    desc=f"Resolving {role} image paths",
                )
            return ds.cast_column(col, datasets.Image(decode=False))
        raise DataError(
            f"Column '{col}' of the {role} split holds {feature}, not images or image paths. Set "
            "data.image_column to the column with the images (or their file paths)."
        )

    def augmentation_active(self, train: bool) -> bool:
        """Whether `preprocess(ds, train)` augments: training split, enabled, features not cached."""
        return (
            train
            and self.cfg.data.augmentation.enabled
            and self._augmentation_off_reason is None
            and not self._augmenter.is_identity
        )

    def disable_augmentation(self, reason: str) -> None:
        """Switch augmentation off for this run, e.g. by a strategy that caches features once."""
        if self.cfg.data.augmentation.enabled and self._augmentation_off_reason is None:
            logger.info("Augmentation off: %s.", reason)
        self._augmentation_off_reason = reason

    def preprocess(self, ds, train: bool):
        """A lazy torch dataset; augmented only when `augmentation_active(train)`, else deterministic."""
        augment = self._augmenter if self.augmentation_active(train) else None
        if augment is not None:
            logger.info("Training augmentation: %s", augment.describe())
        return ImageClassificationDataset(ds, self.input_col, self.processor, augment, self.cfg.data.on_bad_file)

    def collate(self, features):
        return collate_images(features, self._empty_like)

    def describe_data(self, splits: Splits) -> dict[str, Any]:
        info = super().describe_data(splits)
        info["skipped_files"] = {role: len(names) for role, names in self.skipped_files.items()}
        return info

    # Model ------------------------------------------------------------------------------
    def load_processor(self):
        self.processor = self.checkpoint_processor(
            AutoImageProcessor,
            "image processor",
            "An image checkpoint needs a preprocessor_config.json (its resize and normalisation settings).",
        )
        # Shapes for a batch in which every image failed to decode (see collate_images).
        self._empty_like = process_image(self.processor, Image.new("RGB", (32, 32)))
        return self.processor

    def build_model(self, from_scratch: bool = False):
        m = self.cfg.model
        model = load_for_classification(
            self.auto_model_cls,
            m.name_or_path,
            self.labels.id2label,
            revision=m.revision,
            trust_remote_code=m.trust_remote_code,
            from_scratch=from_scratch,
        )
        if from_scratch:
            fix_scratch_init(model)
        if from_scratch and getattr(model.config, "squeeze_excite_neutralised", False):
            # A random-init Lite0 must lack SE blocks too, or the baseline is another network.
            neutralise_squeeze_excite(model)
        keep_frozen_parameters(model)
        fix_batchnorm_momentum(model)
        return model

    def predict_inputs(self, paths: list[str]):
        """Model inputs for image files (any size or mode), as the checkpoint's processor makes them."""
        images = []
        for path in paths:
            try:
                images.append(load_image(str(path)))
            except Exception as e:
                raise DataError(f"Cannot read image '{path}' ({type(e).__name__}: {e}).") from None
        out = self.processor(images=images, return_tensors="pt")
        return {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}
