"""Run under `accelerate launch`: `hf_transfer.train` from `a.b=value` overrides (no YAML file)."""

import sys

from hf_transfer.config import load_config
from hf_transfer.run import train

train(load_config(None, sys.argv[1:]))
