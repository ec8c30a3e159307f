"""Image classification recipe: any AutoModelForImageClassification checkpoint (ViT, DeiT, Swin,
ConvNeXt, ResNet, EfficientNet, a converted EfficientNet-Lite0), a new head for your classes, a
transfer strategy.

    python recipes/image_classification.py --config vit/beans_full training.epochs=1

Data: a Hub image dataset, a local folder with one folder per class (optionally inside train/
validation/ test/), or a csv/jsonl of image paths and labels (data.image_column, data.label_column).
Images go through the checkpoint's own image processor; unreadable files are skipped and counted
(data.on_bad_file=error to stop instead); data.augmentation.* augments the training split only.

From another repository, the same in a few lines:

    from hf_transfer import load_config, train
    metrics = train(load_config("my_run.yaml", ["recipe=image_classification", "strategy.name=lora"]))
"""

import sys

from hf_transfer.cli import recipe_main

if __name__ == "__main__":
    sys.exit(recipe_main("image_classification", __doc__))
