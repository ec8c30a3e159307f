"""Token classification (named entities) recipe: a BERT-family checkpoint, a new per-token head,
a transfer strategy.

    python recipes/token_classification.py --config minilm/wnut16_ner_full training.epochs=1

Data: CoNLL files (a token and its tag per line), JSON lines with `tokens` + `tags`, or texts with
character spans `[{start, end, label}]` (docs/token_classification.md). From Python:

    from hf_transfer import load_config, train
    from hf_transfer.run import predict
    cfg = load_config("my_ner.yaml", ["strategy.name=lora"])
    train(cfg)
    predict(cfg.output_dir, ["Ada Lovelace met Charles Babbage in London."])
"""

import sys

from hf_transfer.cli import recipe_main

if __name__ == "__main__":
    sys.exit(recipe_main("token_classification", __doc__))
