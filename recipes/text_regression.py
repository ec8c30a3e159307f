"""Text regression: one number per text, MSE or Huber loss on standardised targets; the saved
model outputs the target's own units.

    python recipes/text_regression.py --config minilm/tweets_confidence_full training.epochs=1

From Python:

    from hf_transfer import load_config, train
    metrics = train(load_config("minilm/tweets_confidence_full.yaml", ["strategy.name=feature_extraction"]))
"""

import sys

from hf_transfer.cli import recipe_main

if __name__ == "__main__":
    sys.exit(recipe_main("text_regression", __doc__))
