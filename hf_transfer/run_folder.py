"""The run folder: every file `train` writes, and typed reads for evaluate, predict, export and push.

One place names the files (docs/architecture.md, "Run folder"), so a new reader of run folders
never guesses a key with `.get(..., default)`: the config comes back as the validated
`TrainConfig`, the metrics as `RunMetrics`, the feature classifier's description as
`FeatureClassifierSpec`. It is also the one writer of the run's own records (`config.yaml`,
`metrics.json`, `history.json`, the confusion matrices) and the one place that says what a
finished run is (`RunFolder.open`) and what `--overwrite` removes (`RUN_ARTIFACTS`). The model
itself is written by the strategy that trained it and loaded by `hf_transfer.run`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from hf_transfer.config import DataSource, TrainConfig, config_from_dict
from hf_transfer.errors import ConfigError, HFTransferError

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.json"
LOG_FILE = "train.log"
CHECKPOINTS_DIR = "checkpoints"
ADAPTER_DIR = "adapter"
ADAPTER_CONFIG_FILE = "adapter_config.json"
FEATURE_SPEC_FILE = "feature_classifier.json"
#: A feature classifier kept beside the model (layouts `setfit` and `beside`): tensors + JSON.
FEATURE_CLASSIFIER_FILE = "classifier.safetensors"
FEATURE_CLASSIFIER_SETTINGS_FILE = "classifier.json"
#: Pickled feature classifiers (older run folders; SetFit's head): never read unless allowed.
PICKLED_CLASSIFIER_FILES = ("classifier.joblib", "model_head.pkl")
BASELINE_FILE = "baseline_metrics.json"
#: Images the run writes that a model card shows.
IMAGES = ("training_curves.png", "confusion_matrix.png", "test_confusion_matrix.png")
#: The model's weights, any one of which means the model was saved.
MODEL_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
#: A static-embedding run's description (`strategies.static`): its model is not a transformers one.
STATIC_INFO_FILE = "static.json"
#: An ONNX export's description and graph (`export.onnx`).
ONNX_SPEC_FILE = "onnx_export.json"
ONNX_FILE = "model.onnx"

# Files and folders a finished (or interrupted) run leaves in its output_dir. `--overwrite` removes
# exactly these (never anything else the folder may hold), once the new run has been validated.
RUN_ARTIFACTS = (
    METRICS_FILE,
    HISTORY_FILE,
    "training_curves.png",
    "confusion_matrix.json",
    "confusion_matrix.png",
    "test_confusion_matrix.json",
    "test_confusion_matrix.png",
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "classifier.joblib",
    FEATURE_CLASSIFIER_FILE,
    FEATURE_CLASSIFIER_SETTINGS_FILE,
    CHECKPOINTS_DIR,
    ADAPTER_DIR,
    "logs",
)


@dataclass(frozen=True)
class RunMetrics:
    """`metrics.json`: the facts every reader uses, typed, and the scores by split.

    Attributes:
        labels: Label names in id order (empty for speech recognition).
        strategy: The strategy that trained the run.
        trainable_parameters: Parameters that trained.
        frozen_parameters: Parameters that stayed fixed.
        train_size: Training examples (after filters and subsampling).
        eval_size: Evaluation examples.
        test_size: Test examples.
        train_runtime: Training seconds.
        train_steps: Optimizer steps.
        hardware: Where it trained.
        audio_window_seconds: Whisper encoder window the run trained with, when cut.
        raw: The whole file, for keys only some runs write.
    """

    labels: list[str] = field(default_factory=list)
    strategy: str | None = None
    trainable_parameters: int | None = None
    frozen_parameters: int | None = None
    train_size: int | None = None
    eval_size: int | None = None
    test_size: int | None = None
    train_runtime: float | None = None
    train_steps: int | None = None
    hardware: str | None = None
    audio_window_seconds: float | None = None
    raw: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> RunMetrics:
        known = {f.name for f in fields(cls)} - {"raw", "labels"}
        kwargs = {k: data[k] for k in known if data.get(k) is not None}
        return cls(labels=[str(x) for x in data.get("labels") or []], raw=dict(data), **kwargs)

    def score(self, split: str, name: str) -> float | None:
        """`<split>_<name>` (`eval_accuracy`, `test_wer`) as a float, or None when not measured."""
        return metric_value(self.raw, split, name)


def metric_value(metrics: dict, split: str, name: str) -> float | None:
    """`metrics["<split>_<name>"]` when it is a number (also for baseline files that are plain dicts)."""
    v = metrics.get(f"{split}_{name}")
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


@dataclass(frozen=True)
class FeatureClassifierSpec:
    """`feature_classifier.json`, written by the `feature_extraction` strategy.

    Attributes:
        classifier: Which classifier was fitted (`logistic`, `svm`, `knn`, ...).
        head_written: The classifier was written into the model's own head (plain transformers
            reproduces it); False when it lives beside the model (`classifier.safetensors`).
        module: The module whose input (or output) the features were read from.
        raw: The whole file.
    """

    classifier: str | None = None
    head_written: bool = True
    module: str | None = None
    raw: dict = field(default_factory=dict)


class RunFolder:
    """A run folder. Reads are lazy and typed; a missing file is an error that says what to do.

    Args:
        path: The folder (`output_dir` of a `hf-transfer train`).
        config: The config when already in memory (a run not yet trained), else read from disk.
        error: Error class raised for a folder that is not (yet) a finished run.
        allow_pickle: The caller trusts this folder enough to unpickle an older run's classifier
            (unpickling runs code from the file); off unless the user asks (`--trust-pickle`).
    """

    def __init__(
        self,
        path: str | Path,
        config: TrainConfig | None = None,
        error: type[HFTransferError] = HFTransferError,
        allow_pickle: bool = False,
    ):
        self.path = Path(path)
        self.allow_pickle = allow_pickle
        self.config_path = self.path / CONFIG_FILE
        self.metrics_path = self.path / METRICS_FILE
        self.history_path = self.path / HISTORY_FILE
        self.checkpoints_dir = self.path / CHECKPOINTS_DIR
        self.baseline_path = self.path / BASELINE_FILE
        self.log_path = self.path / LOG_FILE
        self._error = error
        if config is not None:
            self.__dict__["config"] = config

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        finished: bool = True,
        needs_metrics: bool = False,
        error: type[HFTransferError] = HFTransferError,
        allow_pickle: bool = False,
    ) -> RunFolder:
        """The run folder at `path`.

        Args:
            finished: It must hold a trained model (`has_model`): else the error says whether
                checkpoints of an interrupted run are there and how to finish it.
            needs_metrics: It must hold `metrics.json` too (model cards, push): an ONNX export or
                a run whose metrics were never written has none.
        """
        run = cls(path, error=error, allow_pickle=allow_pickle)
        if not run.config_path.is_file():
            raise error(
                f"'{path}' is not a run folder (no {CONFIG_FILE}). Give the output_dir of a finished "
                "`hf-transfer train`."
            )
        if finished and not run.has_model:
            ckpts = run.checkpoints()
            state = (
                f"It holds checkpoints ({', '.join(p.name for p in ckpts)}) of a run that was interrupted: "
                f"finish it with `hf-transfer train {run.config_path} "
                "training.resume_from_checkpoint=latest`."
                if ckpts
                else "No checkpoint was saved either: train it again."
            )
            raise error(f"'{path}' has no trained model yet (training did not finish). {state}")
        if needs_metrics and not run.metrics_path.is_file():
            raise error(
                f"'{path}' has no {METRICS_FILE}: training did not finish. Resume it with "
                "training.resume_from_checkpoint=latest."
            )
        return run

    @property
    def is_onnx_export(self) -> bool:
        """An ONNX export (`hf-transfer export --format onnx`): its graph is the model."""
        return (self.path / ONNX_SPEC_FILE).is_file() and (self.path / ONNX_FILE).is_file()

    @property
    def is_static(self) -> bool:
        """A static-embedding run (`strategy.name: static`): an embedding table and a linear head."""
        return (self.path / STATIC_INFO_FILE).is_file()

    @property
    def has_model(self) -> bool:
        """A trained model is saved: transformers weights and config, an ONNX graph or a static table."""
        if self.is_onnx_export or self.is_static:
            return True
        return (self.path / "config.json").is_file() and any((self.path / w).is_file() for w in MODEL_WEIGHTS)

    def checkpoints(self) -> list[Path]:
        """The saved checkpoints (`checkpoints/step_*`), oldest first."""
        if not self.checkpoints_dir.is_dir():
            return []
        return sorted(p for p in self.checkpoints_dir.iterdir() if p.name.startswith("step_"))

    def check_writable(self, overwrite: bool, resuming: bool) -> None:
        """Refuse to train into a folder that holds a run, unless overwriting or resuming it.

        A finished run (its `metrics.json`) would otherwise be replaced file by file; an interrupted
        one's checkpoints would mix with the new run's (and `resume_from_checkpoint=latest` would pick
        the wrong one).

        Raises:
            ConfigError: The folder holds a run and neither `overwrite` nor resuming was asked for.
        """
        if overwrite or resuming or not self.path.is_dir():
            return
        if self.metrics_path.is_file():
            raise ConfigError(
                f"output_dir '{self.path}' holds a finished run ({METRICS_FILE}). Choose another output_dir, or "
                "replace that run with --overwrite (overwrite_output_dir=true in the config; "
                "train(cfg, overwrite=True) from Python)."
            )
        if self.checkpoints():
            raise ConfigError(
                f"output_dir '{self.path}' holds the checkpoints of an interrupted run. Continue it with "
                "training.resume_from_checkpoint=latest, start afresh with --overwrite "
                "(overwrite_output_dir=true), or choose another output_dir."
            )

    def clear_previous_run(self) -> list[str]:
        """Remove a previous run's artifacts (`RUN_ARTIFACTS`); return what was removed."""
        import shutil

        removed = []
        for pattern in RUN_ARTIFACTS:
            for p in sorted(self.path.glob(pattern)):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                removed.append(p.name)
        return removed

    # Paths ------------------------------------------------------------------------------------
    def images(self) -> tuple[str, ...]:
        """The card images this run wrote."""
        return tuple(i for i in IMAGES if (self.path / i).is_file())

    # Typed reads ------------------------------------------------------------------------------
    @cached_property
    def config(self) -> TrainConfig:
        """The validated config the run trained with."""
        try:
            raw = yaml.safe_load(self.config_path.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise self._error(f"Cannot read '{self.config_path}': {e}") from None
        try:
            return config_from_dict(raw, f"'{self.config_path}'")
        except ConfigError as e:
            raise self._error(f"The run's {CONFIG_FILE} no longer validates: {e}") from None

    @cached_property
    def metrics(self) -> RunMetrics:
        """`metrics.json` (empty for a run that has not finished)."""
        if not self.metrics_path.is_file():
            return RunMetrics()
        try:
            return RunMetrics.from_dict(json.loads(self.metrics_path.read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise self._error(f"Cannot read '{self.metrics_path}': {e}") from None

    @property
    def recipe(self) -> str:
        return self.config.recipe

    @property
    def labels(self) -> list[str]:
        """Label names in id order: what the run trained on (`metrics.json`), else the saved
        model's `id2label`; empty when neither says."""
        try:
            if self.metrics.labels:
                return self.metrics.labels
        except HFTransferError:
            pass
        try:
            id2label = json.loads((self.path / "config.json").read_text()).get("id2label") or {}
            return [str(id2label[str(i)]) for i in range(len(id2label))]
        except (OSError, ValueError, KeyError):
            return []

    @property
    def strategy_name(self) -> str:
        return self.metrics.strategy or self.config.strategy.name

    @property
    def base_name(self) -> str:
        return self.config.model.name_or_path

    @property
    def base_revision(self) -> str | None:
        return self.config.model.revision

    def source(self, role: str) -> DataSource | None:
        """The data source of split `role` (`train`, `eval`, `test`), or None when not set."""
        src = getattr(self.config.data, role, None)
        return src if isinstance(src, DataSource) and src.name else None

    @property
    def adapter_dir(self) -> Path | None:
        """Where the run keeps its PEFT adapter: `adapter/` (PEFT strategies) or the root; None if none."""
        for d in (self.path / ADAPTER_DIR, self.path):
            if (d / ADAPTER_CONFIG_FILE).is_file():
                return d
        return None

    @property
    def adapter_config(self) -> dict | None:
        """The adapter's `adapter_config.json` (PEFT's own format), or None."""
        d = self.adapter_dir
        return json.loads((d / ADAPTER_CONFIG_FILE).read_text()) if d else None

    @property
    def feature_classifier(self) -> FeatureClassifierSpec | None:
        """What the `feature_extraction` strategy saved about its classifier, or None."""
        path = self.path / FEATURE_SPEC_FILE
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        return FeatureClassifierSpec(
            classifier=data.get("classifier"),
            head_written=bool(data.get("head_written", True)),
            module=data.get("module"),
            raw=data,
        )

    @property
    def feature_layout(self) -> str | None:
        """`setfit` or `beside` when the run's classifier lives beside the model (a feature
        classifier that plain transformers cannot load), else None."""
        spec = self.feature_classifier
        if spec is None:
            return "beside" if any((self.path / f).is_file() for f in PICKLED_CLASSIFIER_FILES) else None
        layout = spec.raw.get("layout") or ("head" if spec.head_written else "beside")
        return layout if layout in ("setfit", "beside") else None

    @property
    def model_type(self) -> str | None:
        """`model_type` of the saved model's config.json, or None."""
        path = self.path / "config.json"
        return json.loads(path.read_text()).get("model_type") if path.is_file() else None

    # Writing ----------------------------------------------------------------------------------
    def write_config(self, cfg: TrainConfig) -> None:
        """Write `config.yaml` atomically, local data paths made absolute, so that `evaluate` and
        `export` read the same files from any working folder."""
        import copy

        from hf_transfer.config import save_config

        saved = copy.deepcopy(cfg)
        for role in ("train", "eval", "test", "target"):
            source = getattr(saved.data, role, None)
            if isinstance(source, DataSource) and source.name and not source.name.startswith("pkg://"):
                path = Path(source.name).expanduser()
                if not path.is_absolute() and path.exists():
                    source.name = str(path.resolve())
        save_config(saved, self.config_path)
        self.__dict__.pop("config", None)

    def write_metrics(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """Write `metrics.json` (its JSON-serialisable part) and the confusion matrices it carries
        (`eval_confusion_matrix` / `test_confusion_matrix`, as json + png beside it, taken out of
        the dict); return what was written."""
        from hf_transfer.metrics.classification import save_confusion_matrix

        labels = metrics.get("labels")
        for prefix in ("eval", "test"):
            cm = metrics.pop(f"{prefix}_confusion_matrix", None)
            if cm is not None and labels:
                save_confusion_matrix(
                    cm, labels, self.path, stem="confusion_matrix" if prefix == "eval" else "test_confusion_matrix"
                )
        clean = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool, list, dict)) or v is None}
        # Written aside and renamed: a killed process never leaves half a file that reads as finished.
        tmp = self.metrics_path.with_name(METRICS_FILE + ".tmp")
        tmp.write_text(json.dumps(clean, indent=2, default=str))
        tmp.replace(self.metrics_path)
        self.__dict__.pop("metrics", None)
        return clean

    def write_history(self, history: list[dict]) -> None:
        """`history.json` (the logged training and evaluation records) and `training_curves.png`."""
        from hf_transfer.metrics.plots import plot_training_curves

        plot_training_curves(history, self.path / "training_curves.png")
        self.history_path.write_text(json.dumps(history, indent=1))
