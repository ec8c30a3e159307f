"""One cell of a study: a training run, or a baseline, on one (size, seed) subsample.

A cell folder holds `cell.json` (what to run: kind, label, size, seed, baseline settings),
`cell.yaml` (the full config, `data.train_indices` included), and once finished `metrics.json`
(Trainer-style `eval_*` keys) and `study_cell.json` (wall seconds: this attempt's, plus the training
seconds of the interrupted attempts a resumed cell continued). A training cell is a normal run
folder (`hf-transfer evaluate` / `export` work on it). Baseline cells keep their metrics and config,
not a model.

    python -m hf_transfer.study.cells CELL_DIR     # what `hf-transfer compare --jobs N` runs per cell
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from hf_transfer.errors import DataError, HFTransferError

CELL_SPEC = "cell.json"
CELL_CONFIG = "cell.yaml"
CELL_RESULT = "study_cell.json"
CELL_ERROR = "error.txt"
CELL_LOG = "cell.log"

#: Baselines: not strategies of the engine, but reference points run on the same splits.
BASELINES = ("logreg", "setfit")


def read_spec(cell_dir: Path) -> dict:
    return json.loads((Path(cell_dir) / CELL_SPEC).read_text())


#: Set by the runner for the cell processes it starts: which backend ran the cell (`study_cell.json`).
BACKEND_ENV = "HF_TRANSFER_STUDY_BACKEND"


def run_cell(cell_dir: str | Path, backend: str | None = None) -> dict[str, Any]:
    """Run the cell in `cell_dir` and write its results; returns its metrics.

    A training cell whose folder holds a checkpoint from an interrupted attempt resumes from it.
    `backend` (default: `$HF_TRANSFER_STUDY_BACKEND`, else `local`) and the host are recorded
    beside the wall seconds.
    """
    import os
    import socket

    from hf_transfer.config import load_config

    cell_dir = Path(cell_dir)
    spec = read_spec(cell_dir)
    cfg = load_config(cell_dir / CELL_CONFIG)
    for stale in (CELL_RESULT, CELL_ERROR):
        (cell_dir / stale).unlink(missing_ok=True)
    start = time.perf_counter()
    if spec["kind"] == "train":
        metrics = _run_training(cfg, cell_dir)
    elif spec["kind"] == "logreg":
        metrics = _run_logreg(cfg, spec, cell_dir)
    elif spec["kind"] == "setfit":
        metrics = _run_setfit(cfg, spec, cell_dir)
    else:
        raise HFTransferError(f"Unknown cell kind {spec['kind']!r} in {cell_dir / CELL_SPEC}.")
    seconds = time.perf_counter() - start
    # A resumed training cell: the attempts it resumed trained `train_runtime - train_runtime_this_process`
    # seconds up to the checkpoint (kept in the checkpoint's trainer state); s/run counts them too.
    before = 0.0
    if spec["kind"] == "train" and isinstance(metrics.get("train_runtime_this_process"), (int, float)):
        before = max(0.0, float(metrics.get("train_runtime", 0.0)) - float(metrics["train_runtime_this_process"]))
    _write_json(
        cell_dir / CELL_RESULT,
        {
            "seconds": round(seconds + before, 3),
            "seconds_this_attempt": round(seconds, 3),
            "seconds_before_resume": round(before, 3),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "backend": backend or os.environ.get(BACKEND_ENV) or "local",
            "host": socket.gethostname(),
        },
    )
    return metrics


def _write_json(path: Path, data: dict) -> None:
    # Written aside and renamed: a killed process never leaves half a file that reads as finished.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)


def has_checkpoint(cell_dir: Path) -> bool:
    from hf_transfer.run_folder import RunFolder

    return any(p.is_dir() for p in RunFolder(cell_dir).checkpoints())


def _run_training(cfg, cell_dir: Path) -> dict[str, Any]:
    from hf_transfer.run import train

    cfg.output_dir = str(cell_dir)
    if has_checkpoint(cell_dir):
        # Printed, not logged: the run's log handlers are set up only inside train().
        print(f"Cell {cell_dir.name} was interrupted: resuming from its latest checkpoint.", file=sys.stderr)
        cfg.training.resume_from_checkpoint = "latest"
    return train(cfg)


# ------------------------------------------------------------------------------------------------
# Baselines


def _classification_metrics(pred, ref, names: list[str], prefix: str) -> dict[str, Any]:
    from hf_transfer.metrics.classification import compute_classification_metrics

    m = compute_classification_metrics(pred, ref, names)
    # Per example, in split order, as the training cells record them: the verdicts' paired bootstrap.
    m["predictions"] = [int(v) for v in pred]
    m["references"] = [int(v) for v in ref]
    return {f"{prefix}_{k}": v for k, v in m.items()}


def _finish_baseline(cfg, cell_dir: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    from hf_transfer.run_folder import RunFolder

    cfg.output_dir = str(cell_dir)
    run = RunFolder(cell_dir)
    run.write_config(cfg)
    run.write_metrics(metrics)
    return metrics


def _run_logreg(cfg, spec: dict, cell_dir: Path) -> dict[str, Any]:
    """Frozen features (the checkpoint's own pooling convention) + scikit-learn logistic regression."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    try:
        from hf_transfer.models.features import FeatureSpec
        from hf_transfer.tasks.features import features_for_config
    except ImportError as e:  # the shared frozen-features module is not in this installation
        raise HFTransferError(f"The logreg baseline needs hf_transfer.models.features ({e}).") from None
    roles = ["train", "eval"] + (["test"] if cfg.data.test is not None and cfg.data.test.name else [])
    from hf_transfer.registry import recipe_info

    if recipe_info(cfg.recipe).targets in ("label_set", "number"):
        return _run_target_baseline(cfg, spec, cell_dir, roles)
    start = time.perf_counter()
    # The checkpoint's own convention (FeatureSpec defaults), whatever the config's strategy says.
    feats = features_for_config(cfg, roles=tuple(roles), spec=FeatureSpec())
    feature_seconds = time.perf_counter() - start
    settings = {"max_iter": 1000, **spec.get("settings", {})}
    clf = LogisticRegression(**settings)
    train = feats["train"]
    clf.fit(train.X, np.asarray(train.y))
    names = spec["labels"]
    metrics: dict[str, Any] = {
        "strategy": "logreg",
        "labels": names,
        "train_size": int(len(train.X)),
        "logreg_settings": settings,
        "feature_seconds": round(feature_seconds, 3),
        "features": train.info,
    }
    for role in roles[1:]:
        f = feats[role]
        metrics[f"{role}_size"] = int(len(f.X))
        metrics.update(_classification_metrics(clf.predict(f.X), np.asarray(f.y), names, role))
    return _finish_baseline(cfg, cell_dir, metrics)


def _run_target_baseline(cfg, spec: dict, cell_dir: Path, roles: list[str]) -> dict[str, Any]:
    """`logreg` for label sets and numbers, as a user writes it: frozen features + scikit-learn's
    one-vs-rest logistic regression (`class_weight="balanced"`, predicting at 0.5) for multi-label,
    `Ridge()` for regression. `--set logreg:C=...` / `alpha=...` change them."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.multiclass import OneVsRestClassifier

    from hf_transfer.models.features import FeatureSpec
    from hf_transfer.tasks import get_task
    from hf_transfer.tasks.features import features_for_config
    from hf_transfer.tasks.targets import TargetTask

    task = get_task(cfg)
    TargetTask.load_splits(task)  # the label names (the features' own load reads the same data)
    names = list(task.labels.names)
    start = time.perf_counter()
    feats = features_for_config(cfg, roles=tuple(roles), spec=FeatureSpec())
    feature_seconds = time.perf_counter() - start
    given = dict(spec.get("settings", {}))
    train = feats["train"]
    metrics: dict[str, Any] = {
        "strategy": "logreg",
        "labels": names,
        "train_size": int(len(train.X)),
        "feature_seconds": round(feature_seconds, 3),
        "features": train.info,
    }
    if task.target_kind == "multilabel":
        from hf_transfer.metrics.multilabel import compute_multilabel_metrics

        settings = {"max_iter": 1000, "class_weight": "balanced", **{k: v for k, v in given.items() if k != "alpha"}}
        Y = np.asarray(train.y) > 0.5
        usable = Y.min(0) != Y.max(0)  # a label with one class in the subsample: never predicted
        clf = OneVsRestClassifier(LogisticRegression(**settings)).fit(train.X, Y[:, usable].astype(int))

        def score(X, y):
            p = np.zeros((len(X), len(names)))
            p[:, usable] = clf.predict_proba(X)
            return compute_multilabel_metrics(p >= 0.5, np.asarray(y) > 0.5, p, names)
    else:
        from hf_transfer.metrics.regression import compute_regression_metrics

        settings = {"alpha": float(given.get("alpha", 1.0))}
        reg = Ridge(**settings).fit(train.X, np.asarray(train.y, dtype=np.float64))

        def score(X, y):
            return compute_regression_metrics(reg.predict(X), y)

    metrics["logreg_settings"] = settings
    for role in roles[1:]:
        f = feats[role]
        metrics[f"{role}_size"] = int(len(f.X))
        metrics.update({f"{role}_{k}": v for k, v in score(f.X, f.y).items()})
    return _finish_baseline(cfg, cell_dir, metrics)


def _run_setfit(cfg, spec: dict, cell_dir: Path) -> dict[str, Any]:
    """The real SetFit package (contrastive body fine-tuning, then a logistic-regression head)."""
    import numpy as np

    try:
        from setfit import SetFitModel, Trainer, TrainingArguments
    except ImportError:
        raise HFTransferError(
            "The setfit baseline needs the setfit package: pip install 'hf-transfer-toolkit[setfit]'."
        ) from None
    from datasets import Dataset

    from hf_transfer.paths import resolve
    from hf_transfer.tasks import get_task

    task = get_task(cfg)
    splits = task.load_splits()
    col = task.input_col
    names = spec["labels"]
    settings = {
        "batch_size": cfg.training.batch_size,
        "num_epochs": 1,
        "num_iterations": 20,
        "max_length": cfg.data.max_length,
        **spec.get("settings", {}),
    }
    args = TrainingArguments(
        output_dir=str(cell_dir / "setfit"),
        seed=cfg.training.seed,
        report_to="none",
        save_strategy="no",
        show_progress_bar=False,
        **settings,
    )
    model = SetFitModel.from_pretrained(
        resolve(cfg.model.name_or_path), revision=cfg.model.revision, trust_remote_code=cfg.model.trust_remote_code
    )
    train = Dataset.from_dict({"text": list(splits.train[col]), "label": list(splits.train["labels"])})
    trainer = Trainer(model=model, args=args, train_dataset=train)
    trainer.train()
    metrics: dict[str, Any] = {
        "strategy": "setfit",
        "labels": names,
        "train_size": len(train),
        "setfit_settings": settings,
    }
    for role, ds in (("eval", splits.eval), ("test", splits.test)):
        if ds is None:
            continue
        pred = np.asarray(
            model.predict(
                list(ds[col]),
                batch_size=cfg.training.eval_batch_size or cfg.training.batch_size,
                show_progress_bar=False,
            )
        )
        metrics[f"{role}_size"] = len(ds)
        metrics.update(_classification_metrics(pred.astype(int), np.asarray(ds["labels"]), names, role))
    return _finish_baseline(cfg, cell_dir, metrics)


def check_baseline_available(name: str, recipe: str, text_pair: bool = False) -> None:
    """Raise before any run when a baseline cannot run here."""
    import importlib.util

    if recipe == "token_classification" and name in ("logreg", "setfit"):
        raise DataError(
            f"The {name} baseline classifies whole examples; for token_classification the frozen-feature "
            "baseline is the strategy feature_extraction (a per-token logistic regression): add it to "
            "--strategies."
        )
    if name == "setfit":
        if recipe != "text_classification":
            raise DataError(f"The setfit baseline trains on text only; this config's recipe is {recipe}.")
        if text_pair:
            raise DataError("The setfit baseline takes one text per example; this config sets data.text_pair_column.")
        if importlib.util.find_spec("setfit") is None:
            raise HFTransferError(
                "--baselines setfit needs the setfit package, which is not installed: "
                "pip install 'hf-transfer-toolkit[setfit]' (or pip install setfit)."
            )
    if name == "logreg" and importlib.util.find_spec("hf_transfer.models.features") is None:
        raise HFTransferError("--baselines logreg needs hf_transfer.models.features, missing from this installation.")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m hf_transfer.study.cells CELL_DIR", file=sys.stderr)
        return 2
    cell_dir = Path(argv[0])
    try:
        run_cell(cell_dir)
    except HFTransferError as e:
        (cell_dir / CELL_ERROR).write_text(str(e))
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        import traceback

        (cell_dir / CELL_ERROR).write_text(f"{type(e).__name__}: {e}\n\n{traceback.format_exc()}")
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
