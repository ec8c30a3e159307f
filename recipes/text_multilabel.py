"""Multi-label text classification: any number of labels per text (a separated string, a list
column, or one 0/1 column per label), sigmoid head with BCE, per-label thresholds tuned on
held-out data.

    python recipes/text_multilabel.py --config minilm/disaster_multilabel_full training.epochs=1

From Python:

    from hf_transfer import load_config, train
    metrics = train(load_config("minilm/disaster_multilabel_full.yaml", ["strategy.name=feature_extraction"]))
"""

import sys

from hf_transfer.cli import recipe_main

if __name__ == "__main__":
    sys.exit(recipe_main("text_multilabel", __doc__))
