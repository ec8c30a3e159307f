"""The run folder: every file `train` writes, and typed reads for evaluate, predict, export and push.

One place names the files (docs/architecture.md, "Run folder"), so a new reader of run folders
never guesses a key with `.get(..., default)`: the config comes back as the validated
`TrainConfig`, the metrics as `RunMetrics`, the feature classifier's description as
`FeatureClassifierSpec`. Strategies that save something the plain transformers model lacks
register a model loader here (`register_model_loader`), so loading a run never imports a strategy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

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
    def from_dict(cls, data: dict) -> "RunMetrics":
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

    def __init__(self, path: str | Path, config: TrainConfig | None = None,
                 error: type[HFTransferError] = HFTransferError, allow_pickle: bool = False):
        self.path = Path(path)
        self.allow_pickle = allow_pickle
        self.config_path = self.path / CONFIG_FILE
        self.metrics_path = self.path / METRICS_FILE
        self.history_path = self.path / HISTORY_FILE
        self.checkpoints_dir = self.path / CHECKPOINTS_DIR
        self.baseline_path = self.path / BASELINE_FILE
        self._error = error
        if config is not None:
            self.__dict__["config"] = config

    @classmethod
    def open(cls, path: str | Path, *, finished: bool = True,
             error: type[HFTransferError] = HFTransferError) -> "RunFolder":
        """The run folder at `path`; with `finished`, it must hold `metrics.json` too."""
        run = cls(path, error=error)
        if not run.config_path.is_file():
            raise error(
                f"'{path}' is not a run folder (no {CONFIG_FILE}). Give the output_dir of a finished "
                "`hf-transfer train`."
            )
        if finished and not run.metrics_path.is_file():
            raise error(
                f"'{path}' has no {METRICS_FILE}: training did not finish. Resume it with "
                "training.resume_from_checkpoint=latest."
            )
        return run

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
        return self.metrics.labels

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
        return FeatureClassifierSpec(classifier=data.get("classifier"),
                                     head_written=bool(data.get("head_written", True)),
                                     module=data.get("module"), raw=data)

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
    def write_metrics(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """Write the JSON-serialisable part of `metrics` to `metrics.json`; return what was written."""
        clean = {k: v for k, v in metrics.items()
                 if isinstance(v, (int, float, str, bool, list, dict)) or v is None}
        self.metrics_path.write_text(json.dumps(clean, indent=2, default=str))
        self.__dict__.pop("metrics", None)
        return clean


_MODEL_LOADERS: list[Callable[[RunFolder, Any], Any]] = []


def register_model_loader(loader: Callable[[RunFolder, Any], Any]) -> None:
    """Add `loader(run, model) -> model`, applied to every model `RunFolder.load_model` loads."""
    if loader not in _MODEL_LOADERS:
        _MODEL_LOADERS.append(loader)


def apply_model_loaders(run: RunFolder, model):
    """`model` (loaded from the run folder) after every registered loader: a strategy that keeps
    its classifier beside the model wraps it, so evaluate and predict need not know strategies."""
    for loader in _MODEL_LOADERS:
        model = loader(run, model)
    return model
