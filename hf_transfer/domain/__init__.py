"""Domain shift and domain adaptation: measure the shift (`shift`), adapt to it during training
(`adaptation.name`: `dann`, `adabn`; `data.normalize_from: target`), train through intermediate
domains (`stages:`), and continue masked-LM pretraining on in-domain text (`pretrain`)."""

from __future__ import annotations

from hf_transfer.errors import ConfigError
from hf_transfer.registry import register_check

CLASSIFICATION_RECIPES = ("text_classification", "image_classification", "audio_classification")


def has_target(cfg) -> bool:
    return cfg.data.target is not None and bool(cfg.data.target.name)


def check_domain_config(cfg, source: str = "config") -> None:
    """Cross-key checks for the domain settings (registered with `config.check_config`)."""
    if cfg.stages:
        from hf_transfer.config import check_config
        from hf_transfer.domain.stages import stage_configs

        for stage in stage_configs(cfg, source):  # each stage merged with the top level, checked whole
            check_config(stage.cfg, stage.source)
        return
    a = cfg.adaptation
    if a.name != "none":
        if not has_target(cfg):
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
                "feature_extraction trains no network layer. Use full, partial, freeze (head only), lora, ...")
        if cfg.training.cache_frozen_prefix:
            raise ConfigError(
                f"adaptation.name=dann in {source} needs the target examples to pass through the whole network; "
                "set training.cache_frozen_prefix=false.")
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
                "no images. Leave it at checkpoint.")
        if not has_target(cfg):
            raise ConfigError(
                f"data.normalize_from=target in {source} needs data.target (a folder or file of target images).")
    if cfg.recipe == "masked_lm" and not 0.0 < cfg.data.mlm_probability < 1.0:
        raise ConfigError(f"data.mlm_probability must be between 0 and 1, got {cfg.data.mlm_probability}.")


register_check(check_domain_config)


def check_adaptation(cfg, strategy, model) -> None:
    """Checks that need the built strategy and model (called by `run.train` before training)."""
    name = cfg.adaptation.name
    if name == "none":
        return
    if not strategy.trains_with_engine:
        raise ConfigError(
            f"adaptation.name={name} adapts a network trained by the engine, but strategy {strategy.name} "
            "fits a classifier on cached features. Choose an engine strategy (full, partial, freeze, lora, ...).")
    if name == "adabn":
        from hf_transfer.domain.adabn import check_adabn_model

        check_adabn_model(model)


def build_adaptation_hook(cfg, task, model, train_dataset, collate_fn):
    """The engine hook for `adaptation.name` (None for `none`)."""
    name = cfg.adaptation.name
    if name == "none":
        return None
    from hf_transfer.domain.target import load_target

    target, _ = load_target(cfg, task)
    # Target examples are preprocessed as for evaluation: no augmentation, whatever the source gets.
    target_dataset = task.preprocess(target, train=False)
    if name == "dann":
        from hf_transfer.domain.dann import DANNHook

        probe = collate_fn([train_dataset[i] for i in range(min(2, len(train_dataset)))])
        return DANNHook(cfg, task, model, target_dataset, collate_fn, probe)
    from hf_transfer.domain.adabn import AdaBNHook

    return AdaBNHook(cfg, task, target_dataset, collate_fn)
