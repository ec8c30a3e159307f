"""Text classification recipe: a BERT-family checkpoint, a new head, a transfer strategy.

    python recipes/text_classification.py --config recipes/configs/bert/sst2_full.yaml training.epochs=1

From another repository, the same in a few lines:

    from hf_transfer import load_config, train
    cfg = load_config("my_run.yaml", ["strategy.name=lora"])
    metrics = train(cfg)
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
    cfg = load_config(args.config, args.overrides + ["recipe=text_classification"])
    metrics = train(cfg)
    print(json.dumps({k: v for k, v in metrics.items() if k.startswith("eval_") and isinstance(v, float)}, indent=2))


if __name__ == "__main__":
    main()
