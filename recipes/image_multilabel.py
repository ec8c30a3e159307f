"""Multi-label image classification: any number of labels per image, sigmoid head with BCE,
per-label thresholds tuned on held-out data.

    python recipes/image_multilabel.py --config vit/images_multilabel_full training.epochs=1

From Python:

    from hf_transfer import load_config, train
    metrics = train(load_config("vit/images_multilabel_full.yaml", ["strategy.name=feature_extraction"]))
"""

import sys

from hf_transfer.cli import recipe_main

if __name__ == "__main__":
    sys.exit(recipe_main("image_multilabel", __doc__))
