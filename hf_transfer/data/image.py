"""Image data: folders of class subfolders, robust decoding, training augmentation, batching.

Decoding and bad files
    Every image is checked once, when the splits are loaded, by decoding it fully with PIL
    (`check_images`). Doing it up front, not in the training loop, keeps every count right: a
    skipped file never reaches a split, so dataset sizes, class weights, steps per epoch and eval
    metrics all describe the images that really train and score. With `data.on_bad_file: skip`
    the bad rows are dropped and counted per split in the log and in `metrics.json`
    (`skipped_files`); with `error` a `DataError` names the first bad file. A full decode (not
    just `Image.verify`, which misses truncated JPEG data) costs one extra decode per image; JPEGs
    are decoded in PIL's reduced-size draft mode, which still reads every byte. Should a file still
    fail later (deleted or rewritten mid-run), `ImageClassificationDataset` returns None for it and
    `collate_images` drops it, with a warning: the run goes on.

Augmentation
    Written with PIL and `torch`'s RNG, not torchvision or kornia. torchvision is a heavy
    dependency that must match the installed torch build exactly (it is absent here) and kornia
    works on tensors, i.e. after the processor has already resized and normalised, so a random
    crop there would throw resolution away. PIL is already what transformers' image processors
    read, so the augmented image goes straight into the checkpoint's own processor. Random numbers
    come from torch's global generator, which Accelerate checkpoints and DataLoader workers seed
    per worker (numpy's global generator would repeat the same augmentations in every worker).
"""

from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

from hf_transfer.data.folders import IMAGE_EXTENSIONS, split_root  # noqa: F401  (IMAGE_EXTENSIONS: re-exported)
from hf_transfer.errors import DataError

logger = logging.getLogger(__name__)

IMAGE_CANDIDATES = ("image", "img", "path", "file", "filepath", "image_path")
# Side of the reduced JPEG decode used by the up-front check: small and fast, still reads every byte.
_CHECK_DRAFT_SIZE = (64, 64)


# ----------------------------------------------------------------------------------------------
# Folders


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def load_image_folder(folder: str | Path, split: str = "train") -> datasets.Dataset:
    """A folder of class subfolders as a dataset with columns `image` and `label`.

    Two layouts are read:

    * split subfolders, each holding one folder per class: `folder/train/cat/1.png`,
      `folder/validation/cat/7.png`, `folder/test/...` (also `valid`, `val`, `dev`, `eval`);
      `split` picks one;
    * one folder per class directly under `folder`: the folder is a single split, whatever
      `split` asks for (leave `data.eval` empty to carve `data.eval_fraction` out of it).

    Images are found recursively inside each class folder; hidden files are ignored, and files are
    listed in sorted order so the dataset is the same on every machine. Files are not opened here:
    the image task checks each one when it loads the splits (see the module docstring).

    Args:
        folder: The dataset folder.
        split: `train`, `validation` or `test` (aliases accepted).

    Returns:
        A `datasets.Dataset` with an `Image` column `image` (paths, decoded on access) and a
        `ClassLabel` column `label` named after the class folders (sorted).

    Raises:
        DataError: The split subfolder is missing, or no class folder holds an image.
    """
    folder = Path(folder)
    root = split_root(folder, split, "Image")
    paths, labels, classes, empty = [], [], [], []
    for class_dir in _visible_dirs(root):
        files = _image_files(class_dir)
        if not files:
            empty.append(class_dir.name)
            continue
        classes.append(class_dir.name)
        paths.extend(str(p.resolve()) for p in files)
        labels.extend([class_dir.name] * len(files))
    loose = [p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    if loose:
        logger.warning(
            "%d images directly in '%s' belong to no class folder and are ignored (for example %s). "
            "Put each class's images in a folder named after the class.",
            len(loose),
            root,
            loose[0],
        )
    if empty:
        logger.warning("Class folders with no images in '%s' are ignored: %s", root, ", ".join(empty))
    if not paths:
        raise DataError(
            f"No images found in class folders under '{root}'. An image folder holds one folder per "
            f"class ({root}/<class>/<image>.png), optionally inside train/ validation/ test/ folders."
        )
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=classes)})
    ds = datasets.Dataset.from_dict({"image": paths, "label": [classes.index(c) for c in labels]}, features=features)
    logger.info("Image folder '%s': %d images in %d classes.", root, len(ds), len(classes))
    return ds


# ----------------------------------------------------------------------------------------------
# Decoding


def describe_image(value: Any, index: int | None = None) -> str:
    """A short name for an image value, for messages: its path, else its row."""
    if isinstance(value, dict) and value.get("path"):
        return str(value["path"])
    if isinstance(value, (str, Path)):
        return str(value)
    path = getattr(value, "filename", None)
    if path:
        return str(path)
    return f"row {index}" if index is not None else "an in-memory image"


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit RGB: EXIF rotation applied, alpha composited over white.

    Compositing over white (as transformers' own `convert_to_rgb` does) keeps transparent areas
    from turning into whatever colour the transparent pixels happen to hold, usually black.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16/32-bit grayscale: scale the range to 8 bits (a plain convert would clip to white).
        arr = np.asarray(image, dtype=np.float32)
        hi = float(arr.max()) if arr.size else 0.0
        arr = arr * (255.0 / hi) if hi > 255.0 else arr
        image = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="L")
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _open_raw(value: Any) -> Image.Image:
    """The PIL image behind a dataset value: a path, `{"bytes", "path"}`, a PIL image or an array."""
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return Image.open(io.BytesIO(value["bytes"]))
        if value.get("path"):
            return Image.open(value["path"])
        raise ValueError("the image entry has neither bytes nor a path")
    if isinstance(value, (str, Path)):
        return Image.open(value)
    if isinstance(value, np.ndarray):
        return Image.fromarray(value)
    raise ValueError(f"cannot read an image from a {type(value).__name__}")


def load_image(value: Any) -> Image.Image:
    """Decode one dataset value to an RGB PIL image (raises on an unreadable or corrupt file)."""
    image = _open_raw(value)
    image.load()
    return to_rgb(image)


def image_problem(value: Any) -> str | None:
    """Why `value` cannot be decoded (the error text), or None when it decodes.

    Decodes the whole file; JPEGs in reduced-size draft mode, which is much faster and still
    reads all the compressed data, so truncation is caught.
    """
    try:
        image = _open_raw(value)
        if getattr(image, "format", None) == "JPEG":
            image.draft("RGB", _CHECK_DRAFT_SIZE)
        image.load()
        if image.width < 1 or image.height < 1:
            return "the image is empty (0 pixels)"
    except Exception as e:  # PIL raises many types (UnidentifiedImageError, OSError, SyntaxError, bomb errors...)
        return f"{type(e).__name__}: {e}"
    return None


def check_images(
    ds: datasets.Dataset, column: str, role: str, on_bad_file: str = "skip"
) -> tuple[datasets.Dataset, list[str]]:
    """Decode every image of `ds[column]` once; drop (or raise on) the ones that fail.

    Args:
        ds: A split whose `column` holds paths or `Image(decode=False)` entries.
        column: The image column.
        role: `train`, `eval` or `test`, for messages.
        on_bad_file: `skip` drops bad rows and returns them; `error` raises on the first.

    Returns:
        The split without the bad rows, and the names (paths, or `row N`) of the skipped images.

    Raises:
        DataError: With `on_bad_file: error`, naming the first unreadable file and why.
    """
    start = time.time()
    bad_rows: list[int] = []
    bad_names: list[str] = []
    index = 0
    for batch in ds.select_columns([column]).iter(batch_size=256):
        for value in batch[column]:
            problem = image_problem(value)
            if problem is not None:
                name = describe_image(value, index)
                if on_bad_file == "error":
                    raise DataError(
                        f"Cannot read image '{name}' in the {role} split ({problem}). Fix or remove "
                        "the file, or set data.on_bad_file=skip to skip unreadable images."
                    )
                bad_rows.append(index)
                bad_names.append(name)
            index += 1
    if bad_rows:
        shown = "; ".join(bad_names[:5]) + (f"; ... ({len(bad_names) - 5} more)" if len(bad_names) > 5 else "")
        logger.warning(
            "Skipped %d unreadable image(s) of %d in the %s split (data.on_bad_file=skip): %s",
            len(bad_rows),
            len(ds),
            role,
            shown,
        )
        bad = set(bad_rows)
        ds = ds.select([i for i in range(len(ds)) if i not in bad])
        if len(ds) == 0:
            raise DataError(f"Every image of the {role} split is unreadable (for example '{bad_names[0]}').")
    logger.info("Checked %d %s images in %.1fs.", index, role, time.time() - start)
    return ds, bad_names


# ----------------------------------------------------------------------------------------------
# Augmentation


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


class Augmenter:
    """Training-split augmentation on PIL images, from `data.augmentation` settings.

    In order: rotation by up to `rotation_degrees` either way; a random resized crop covering
    `random_resized_crop`..100% of the area with aspect ratio 3/4..4/3 (the Inception/torchvision
    recipe, re-implemented: see the module docstring); a horizontal flip with probability
    `horizontal_flip`; brightness, contrast and saturation each scaled by a factor drawn from
    `1 ± color_jitter`. The checkpoint's processor then resizes and normalises as at evaluation.
    """

    def __init__(
        self,
        random_resized_crop: float = 1.0,
        horizontal_flip: float = 0.0,
        rotation_degrees: float = 0.0,
        color_jitter: float = 0.0,
    ):
        self.min_scale = float(random_resized_crop)
        self.flip_p = float(horizontal_flip)
        self.degrees = float(rotation_degrees)
        self.jitter = float(color_jitter)

    @classmethod
    def from_config(cls, aug) -> Augmenter:
        return cls(aug.random_resized_crop, aug.horizontal_flip, aug.rotation_degrees, aug.color_jitter)

    @property
    def is_identity(self) -> bool:
        return self.min_scale >= 1.0 and self.flip_p <= 0 and self.degrees <= 0 and self.jitter <= 0

    def describe(self) -> str:
        return (
            f"random_resized_crop={self.min_scale}, horizontal_flip={self.flip_p}, "
            f"rotation_degrees={self.degrees}, color_jitter={self.jitter}"
        )

    def _crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        area = width * height
        log_ratio = (math.log(3 / 4), math.log(4 / 3))
        for _ in range(10):
            target = area * _uniform(self.min_scale, 1.0)
            ratio = math.exp(_uniform(*log_ratio))
            w = int(round(math.sqrt(target * ratio)))
            h = int(round(math.sqrt(target / ratio)))
            if 0 < w <= width and 0 < h <= height:
                left = int(torch.randint(0, width - w + 1, ()))
                top = int(torch.randint(0, height - h + 1, ()))
                return left, top, left + w, top + h
        # Fallback (extreme aspect ratios): a central crop of the whole image's short side.
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        return left, top, left + side, top + side

    def __call__(self, image: Image.Image) -> Image.Image:
        if self.degrees > 0:
            image = image.rotate(_uniform(-self.degrees, self.degrees), resample=Image.BILINEAR)
        if self.min_scale < 1.0:
            image = image.crop(self._crop_box(*image.size))
        if self.flip_p > 0 and float(torch.rand(())) < self.flip_p:
            image = ImageOps.mirror(image)
        if self.jitter > 0:
            low, high = max(0.0, 1.0 - self.jitter), 1.0 + self.jitter
            for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
                image = enhancer(image).enhance(_uniform(low, high))
        return image


# ----------------------------------------------------------------------------------------------
# Model-ready dataset and batches


def process_image(processor, image: Image.Image) -> dict[str, torch.Tensor]:
    """One image through the checkpoint's image processor: model inputs without a batch dimension."""
    out = processor(images=[image], return_tensors="pt")
    return {k: v[0] for k, v in out.items() if isinstance(v, torch.Tensor)}


class ImageClassificationDataset(torch.utils.data.Dataset):
    """Decodes, augments (training only) and processes one image per `__getitem__`.

    Lazy: nothing is decoded until a batch needs it, so memory stays flat and augmentation is
    fresh every epoch. Without an augmenter the same index always gives the same tensor.

    Args:
        ds: A split with an image column (paths or `Image(decode=False)` entries) and `labels`.
        column: The image column.
        processor: The checkpoint's image processor.
        augment: An `Augmenter` for the training split, or None.
        on_bad_file: What to do if a file that passed the up-front check fails now.
    """

    def __init__(
        self, ds: datasets.Dataset, column: str, processor, augment: Augmenter | None = None, on_bad_file: str = "skip"
    ):
        self.ds = ds
        self.column = column
        self.processor = processor
        self.augment = augment
        self.on_bad_file = on_bad_file
        self.has_labels = "labels" in ds.column_names

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        row = self.ds[int(index)]
        value = row[self.column]
        try:
            image = load_image(value)
        except Exception as e:
            name = describe_image(value, index)
            if self.on_bad_file == "error":
                raise DataError(f"Cannot read image '{name}' ({type(e).__name__}: {e}).") from None
            logger.warning(
                "Image '%s' became unreadable after the up-front check (%s): dropped from its batch.", name, e
            )
            return None
        if self.augment is not None:
            image = self.augment(image)
        item = process_image(self.processor, image)
        if self.has_labels:
            item["labels"] = int(row["labels"])
        return item


def collate_images(features: Iterable[dict[str, Any] | None], empty_like: dict[str, torch.Tensor] | None = None):
    """Stack processed images (and labels) into a batch, dropping images that failed to decode.

    Args:
        features: `ImageClassificationDataset` items; None marks a dropped image.
        empty_like: One processed example, used for the shapes of an all-dropped (empty) batch.

    Raises:
        DataError: The processor gave images of different sizes (its config resizes to no fixed
            size), so they cannot form one batch.
    """
    kept = [f for f in features if f is not None]
    if not kept:
        if empty_like is None:
            raise DataError("A whole batch of images failed to decode.")
        batch = {k: v.new_zeros((0, *v.shape)) for k, v in empty_like.items()}
        batch["labels"] = torch.zeros(0, dtype=torch.long)
        return batch
    batch: dict[str, torch.Tensor] = {}
    for key in kept[0]:
        if key == "labels":
            batch[key] = torch.tensor([f[key] for f in kept], dtype=torch.long)
            continue
        shapes = {tuple(f[key].shape) for f in kept}
        if len(shapes) > 1:
            raise DataError(
                f"The image processor returned '{key}' of different shapes in one batch ({sorted(shapes)[:3]}). "
                "Its preprocessor_config.json must resize to a fixed size (size: {height, width}, or a "
                "crop_size with do_center_crop)."
            )
        batch[key] = torch.stack([f[key] for f in kept])
    return batch
