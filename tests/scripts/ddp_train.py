"""Run under `accelerate launch`: train from overrides, then every rank writes the weights it
ended with, so a test can check that all processes hold identical models."""

import sys

from safetensors.torch import save_file

from hf_transfer.config import load_config
from hf_transfer.engine import trainer as trainer_mod
from hf_transfer.run import train

captured = {}
original_train = trainer_mod.Trainer.train


def train_and_capture(self):
    metrics = original_train(self)
    captured["model"] = self.unwrapped_model()
    captured["rank"] = self.accelerator.process_index
    captured["world"] = self.accelerator.num_processes
    return metrics


trainer_mod.Trainer.train = train_and_capture
cfg = load_config(None, sys.argv[1:])
train(cfg)
state = {k: v.detach().contiguous().clone() for k, v in captured["model"].state_dict().items()}
save_file(state, f"{cfg.output_dir}/rank{captured['rank']}_of{captured['world']}.safetensors")
