"""Image classification recipe: any AutoModelForImageClassification checkpoint (ViT, DeiT, Swin,
ConvNeXt, ResNet, EfficientNet, a converted EfficientNet-Lite0), a new head for your classes, a
transfer strategy.

    python recipes/image_classification.py --config recipes/configs/vit/beans_full.yaml training.epochs=1

Data: a Hub image dataset, a local folder with one folder per class (optionally inside train/
validation/ test/), or a csv/jsonl of image paths and labels (data.image_column, data.label_column).
Images go through the checkpoint's own image processor; unreadable files are skipped and counted
(data.on_bad_file=error to stop instead); data.augmentation.* augments the training split only.

From another repository, the same in a few lines:

    from hf_transfer import load_config, train
    metrics = train(load_config("my_run.yaml", ["recipe=image_classification", "strategy.name=lora"]))
"""

import argparse
import json

from hf_transfer.config import load_config
from hf_transfer.run import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config")
    parser.add_argument("overrides", nargs="*", help="a.b=value overrides")
    args = parser.parse_args()
    cfg = load_config(args.config, args.overrides + ["recipe=image_classification"])
    metrics = train(cfg)
    print(json.dumps({k: v for k, v in metrics.items()
                      if k.startswith(("eval_", "test_")) and isinstance(v, float)}, indent=2))


if __name__ == "__main__":
    main()
