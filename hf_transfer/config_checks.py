"""Config checks that span several keys and know about recipes, stages and domains.

`config.check_config` runs them; they read only the config and the registry's recipe facts, so
they sit with the config at the bottom of the layering. Staged configs are resolved here too
(`stage_configs`): each stage is a full config, checked like any other.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_transfer.errors import ConfigError
from hf_transfer.registry import recipe_info

CLASSIFICATION_RECIPES = ("text_classification", "image_classification", "audio_classification")


def has_target(data) -> bool:
    """Whether the data settings name target-domain data (`data.target`)."""
    return data.target is not None and bool(data.target.name)


def check_domain_settings(cfg, source: str = "config") -> None:
    """Cross-key checks of the domain settings: adaptation, target data, normalisation, masking."""
    a = cfg.adaptation
    if a.name != "none":
        if not has_target(cfg.data):
            raise ConfigError(
                f"adaptation.name={a.name} in {source} needs target-domain data: set data.target to a file or "
                "folder of target examples, in the same form as data.train (labels not needed), for example "
                "data.target=data/unlabelled_target.csv."
            )
        if cfg.recipe not in CLASSIFICATION_RECIPES:
            raise ConfigError(
                f"adaptation.name={a.name} in {source} adapts classifiers ({', '.join(CLASSIFICATION_RECIPES)}); "
                f"recipe {cfg.recipe} is not one. For in-domain text use `hf-transfer pretrain` instead."
            )
    if a.name == "dann":
        if cfg.strategy.name == "feature_extraction":
            raise ConfigError(
                f"adaptation.name=dann in {source} trains the network adversarially, but strategy.name="
                "feature_extraction trains no network layer. Use full, partial, freeze (head only), lora, ..."
            )
        if cfg.training.cache_frozen_prefix:
            raise ConfigError(
                f"adaptation.name=dann in {source} needs the target examples to pass through the whole network; "
                "set training.cache_frozen_prefix=false."
            )
        if a.lambda_max < 0 or a.gamma <= 0:
            raise ConfigError(f"adaptation.lambda_max must be >= 0 and adaptation.gamma > 0 (in {source}).")
        if a.domain_hidden_size < 0:
            raise ConfigError(f"adaptation.domain_hidden_size must be >= 0 (0 = linear), got {a.domain_hidden_size}.")
        if a.target_batch_size is not None and a.target_batch_size < 1:
            raise ConfigError(f"adaptation.target_batch_size must be at least 1, got {a.target_batch_size}.")
    if cfg.data.normalize_from == "target":
        if cfg.recipe != "image_classification":
            raise ConfigError(
                f"data.normalize_from=target in {source} recomputes image normalisation; recipe {cfg.recipe} has "
                "no images. Leave it at checkpoint."
            )
        if not has_target(cfg.data):
            raise ConfigError(
                f"data.normalize_from=target in {source} needs data.target (a folder or file of target images)."
            )
    if cfg.recipe == "masked_lm" and not 0.0 < cfg.data.mlm_probability < 1.0:
        raise ConfigError(f"data.mlm_probability must be between 0 and 1, got {cfg.data.mlm_probability}.")


#: Strategies that need classes (or label sets: `contrastive` pairs rows by label overlap), not numbers.
CLASS_STRATEGIES = ("contrastive",)


def check_target_settings(cfg, source: str = "config") -> None:
    """Cross-key checks of the multi-label and regression recipes (label sets, numeric targets)."""
    try:
        targets = recipe_info(cfg.recipe).targets
    except ConfigError:  # an unknown recipe is reported by the recipe check
        return
    kind = {"label_set": "multilabel", "number": "regression"}.get(targets)
    if kind is None:
        return
    if kind == "regression" and cfg.strategy.name in CLASS_STRATEGIES:
        raise ConfigError(
            f"strategy.name '{cfg.strategy.name}' pairs examples by their labels and needs classes or "
            f"label sets; recipe {cfg.recipe} ({source}) has numeric targets. Use "
            "feature_extraction, freeze, partial, lora, full or auto."
        )
    if cfg.data.samples_per_class is not None or cfg.data.eval_samples_per_class is not None:
        raise ConfigError(
            f"data.samples_per_class / eval_samples_per_class need classes; recipe {cfg.recipe} "
            f"({source}) has {kind} targets. Use data.max_train_samples / max_eval_samples."
        )
    if kind == "regression" and cfg.data.label_columns:
        raise ConfigError(
            f"data.label_columns is for multi-label recipes; {cfg.recipe} ({source}) reads one "
            "numeric target from data.label_column."
        )
    t = cfg.training
    if kind == "multilabel" and not isinstance(t.multilabel_threshold, str) and not 0 < t.multilabel_threshold < 1:
        raise ConfigError(
            f"training.multilabel_threshold must be 'tune' or between 0 and 1, got {t.multilabel_threshold} ({source})."
        )
    if t.huber_delta <= 0:
        raise ConfigError(f"training.huber_delta must be positive, got {t.huber_delta} ({source}).")
    if kind == "regression" and t.metric_for_best_model in ("f1", "accuracy", "eval_f1", "eval_accuracy"):
        # The classification default: a regression run is selected by its RMSE.
        t.metric_for_best_model = "rmse"


#: Stage keys replaced whole when a stage gives them (their keys depend on the name).
_REPLACED_WHOLE = ("strategy", "adaptation")


@dataclass
class Stage:
    """One stage of a staged config, resolved: its full config and where it trains."""

    index: int  # 0-based
    name: str
    cfg: Any  # TrainConfig
    source: str

    @property
    def dir(self) -> Path:
        return Path(self.cfg.output_dir)

    @property
    def body_dir(self) -> Path:
        return self.dir / "body"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "stage"


def _merge(base: dict, over: dict) -> dict:
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict) and key not in _REPLACED_WHOLE:
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def stage_configs(cfg, source: str = "config") -> list[Stage]:
    """The stages of `cfg`, each a full validated `TrainConfig` (model paths of later stages
    point at the previous stage's body, which exists once that stage has trained)."""
    from hf_transfer.config import config_from_dict, config_to_dict

    if not isinstance(cfg.stages, list) or not cfg.stages:
        raise ConfigError(f"stages in {source} must be a non-empty list of partial configs.")
    base = config_to_dict(cfg)
    base.pop("stages")
    stages: list[Stage] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(cfg.stages):
        where = f"stages[{i}] of {source}"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} must be a mapping of config keys (data, strategy, training, ...), got {raw!r}.")
        raw = dict(raw)
        name = str(raw.pop("name", f"stage{i + 1}"))
        for key in ("stages", "output_dir"):
            if key in raw:
                raise ConfigError(f"{where} sets '{key}'; stages share the top-level output_dir and cannot nest.")
        if i > 0 and "model" in raw:
            raise ConfigError(
                f"{where} sets 'model': every stage after the first starts from the previous stage's "
                "body. Set model.name_or_path at the top level (or in the first stage)."
            )
        # Stage names key stages.json (what resume skips) and the combined metrics: one name, one stage.
        if name in seen:
            raise ConfigError(
                f"{where} is named '{name}', like stages[{seen[name]}]: every stage needs its own "
                "name (it keys the progress record and the combined metrics). Rename one of them."
            )
        seen[name] = i
        dirname = f"{i + 1:02d}_{_slug(name)}"
        merged = _merge(copy.deepcopy(base), raw)
        merged["output_dir"] = str(Path(cfg.output_dir) / dirname)
        if stages:
            merged["model"]["name_or_path"] = str(stages[-1].body_dir)
        stage_cfg = config_from_dict(merged, where)
        stages.append(Stage(i, name, stage_cfg, where))
    return stages
