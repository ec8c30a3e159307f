"""Domain shift and domain adaptation: measure the shift (`shift`), adapt to it during training
(`adaptation.name`: `dann`, `adabn`; `data.normalize_from: target`). Their config checks are in
`hf_transfer.config_checks`; staged runs (`stages:`) in `hf_transfer.stages`; continued masked-LM
pretraining is the recipe `masked_lm` (`hf_transfer.tasks.masked_lm`)."""

from __future__ import annotations

from hf_transfer.errors import ConfigError


def check_adaptation(name: str, strategy, model) -> None:
    """Checks of `adaptation.name` that need the built strategy and model (before training)."""
    if name == "none":
        return
    if not strategy.trains_with_engine:
        raise ConfigError(
            f"adaptation.name={name} adapts a network trained by the engine, but strategy {strategy.name} "
            "fits a classifier on cached features. Choose an engine strategy (full, partial, freeze, lora, ...)."
        )
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
        from hf_transfer.registry import recipe_modality

        return DANNHook(cfg.adaptation, recipe_modality(cfg.recipe), task, model, target_dataset, collate_fn, probe)
    from hf_transfer.domain.adabn import AdaBNHook

    return AdaBNHook(task, target_dataset, collate_fn)
