"""Text classification recipe: a BERT-family checkpoint, a new head, a transfer strategy.

    python recipes/text_classification.py --config bert/sst2_full training.epochs=1

From another repository, the same in a few lines:

    from hf_transfer import load_config, train
    cfg = load_config("my_run.yaml", ["strategy.name=lora"])
    metrics = train(cfg)
"""

import sys

from hf_transfer.cli import recipe_main

if __name__ == "__main__":
    sys.exit(recipe_main("text_classification", __doc__))
