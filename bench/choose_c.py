"""Benchmark, not CI: the cost and the outcome of choosing a logistic regression's C.

    python bench/choose_c.py                 # Lite0 features of Fashion-MNIST, 10 and 100 per class
    python bench/choose_c.py --shots 10      # the small case only (seconds)

On the frozen EfficientNet-Lite0 features of `bench/efficientnet_fashion_mnist.py`'s draws (64 px,
its feature cache; the first run extracts them), for each training size it times, in the same
process, one after the other:

* `gridsearch`: the previous selection: `GridSearchCV` over the same 15 values of C, stratified
  5-fold, `neg_log_loss`, a cold fit per (C, fold), then the final fit;
* `choose_C`: `hf_transfer.models.probe.choose_C` (warm-started path per fold, the default kept
  unless another C is clearly better) plus the final fit;
* `default`: `LogisticRegression()` with scikit-learn's default C, no selection (the plain probe).

and prints seconds, the chosen C and the test accuracy of each, and the time ratio to the previous
selection.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

WORK = Path("runs/bench/efficientnet_fashion_mnist")


def features(n: int, seed: int, image_size: int):
    import efficientnet_fashion_mnist as fm

    from hf_transfer.config import check_config, config_from_dict
    from hf_transfer.tasks.features import features_for_config

    os.environ.setdefault("HF_TRANSFER_CACHE", str((WORK / "cache").resolve()))
    model_dir = fm.prepare_model(WORK, image_size)
    paths = fm.prepare_data(WORK, [n], [seed], 50)
    raw = {
        "recipe": "image_classification",
        "output_dir": "runs/bench/choose_c/unused",
        "model": {"name_or_path": str(model_dir)},
        "data": {"train": str(paths[(n, seed)]), "eval": str(paths["validation"]), "test": str(paths["test"])},
        "strategy": {"name": "feature_extraction"},
        "training": {"batch_size": 32, "seed": seed, "report_to": []},
    }
    cfg = config_from_dict(raw, "bench choose_c")
    check_config(cfg)
    f = features_for_config(cfg, roles=("train", "test"))
    return f["train"].X.astype(np.float64), f["train"].y, f["test"].X.astype(np.float64), f["test"].y


def gridsearch(X, y, seed):
    """The selection hf_transfer used before: GridSearchCV, cold fits, mean log loss."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    from hf_transfer.models.probe import C_GRID, MAX_FOLDS

    folds = int(min(MAX_FOLDS, np.bincount(y).min()))
    search = GridSearchCV(
        LogisticRegression(max_iter=1000, random_state=seed),
        {"C": list(C_GRID)},
        scoring="neg_log_loss",
        cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
        refit=False,
    ).fit(X, y)
    scores = np.asarray(search.cv_results_["mean_test_score"])
    return float(C_GRID[int(np.flatnonzero(scores >= scores.max() - 1e-12)[0])])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shots", type=int, nargs="+", default=[10, 100])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    import torch
    from sklearn.linear_model import LogisticRegression

    from hf_transfer.models.probe import choose_C

    torch.set_num_threads(args.threads)
    print(
        f"EfficientNet-Lite0 features, Fashion-MNIST {args.image_size} px, seed {args.seed}, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print("| per class | train x dim | method | seconds | C | test accuracy | x previous time |")
    print("|---|---|---|---|---|---|---|")
    for n in args.shots:
        X, y, Xt, yt = features(n, args.seed, args.image_size)
        rows = []
        for name in ("gridsearch", "choose_C", "default"):
            t0 = time.time()
            if name == "gridsearch":
                C = gridsearch(X, y, args.seed)
            elif name == "choose_C":
                C, _ = choose_C(X, y, seed=args.seed)
            else:
                C = 1.0
            clf = LogisticRegression(C=C, max_iter=1000, random_state=args.seed).fit(X, y)
            seconds = time.time() - t0
            rows.append((name, seconds, C, float((clf.predict(Xt) == yt).mean())))
        base = rows[0][1]
        for name, seconds, C, acc in rows:
            print(
                f"| {n} | {X.shape[0]} x {X.shape[1]} | {name} | {seconds:.1f} | {C:g} | {acc:.3f} | "
                f"{seconds / base:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
