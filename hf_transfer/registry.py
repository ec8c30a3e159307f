"""The one registry of strategies and recipes: one registration per name, duplicates refused.

A strategy is registered once, by `@register_strategy(name, settings_cls)` on its class; a recipe
once, by `@register_task(name, pipeline_tag, ...)` on its task class (both decorators live here,
and `hf_transfer.strategies` / `hf_transfer.tasks` re-export them). The entry holds everything
every layer needs: the config loader validates `strategy.*` against the settings class, export
reads a recipe's Hub facts (`RecipeInfo`), `build_strategy` and `get_task` instantiate the class.

Where the names come from: the package's own strategies and tasks (`BUILTIN_MODULES`), then other
installed packages (the entry point groups `hf_transfer.strategies` and `hf_transfer.recipes`).
Both are imported by module name the first time a name is looked up, the way Python's entry points
are (and transformers' auto classes load their models): the registry never imports a module of a
higher layer by an import statement, and nothing installs a loader into it at run time.
"""

from __future__ import annotations

import difflib
import importlib
import threading
from dataclasses import dataclass

from hf_transfer.errors import ConfigError

#: The package's own modules whose import registers the built-in strategies and recipes, loaded
#: like the entry points of an installed plugin (first, so a plugin cannot take a built-in name).
BUILTIN_MODULES = ("hf_transfer.strategies", "hf_transfer.tasks")


@dataclass(frozen=True)
class RecipeInfo:
    """What every layer needs to know about a recipe (a task family), without importing its task.

    Attributes:
        name: The recipe (`recipe:` in a config).
        pipeline_tag: Hub task id.
        task_name: Human name of the Hub task.
        auto_class: transformers class that loads the trained model.
        metrics: Headline metrics, first one the main one.
        lower_is_better: The headline metric is an error rate.
        example_input: What `predict` takes, for the card's usage snippet.
        modality: What goes in: `text`, `image` or `audio` ("" when unknown); also the kind of
            checkpoint the recipe trains.
        targets: What comes out: `class` (one label), `label_set` (any number of labels), `number`
            (regression), `tags` (one label per token) or `text` (transcripts, masked tokens).
    """

    name: str
    pipeline_tag: str = ""
    task_name: str = ""
    auto_class: str = ""
    metrics: tuple[str, ...] = ()
    lower_is_better: bool = False
    example_input: str = ""
    modality: str = ""
    targets: str = "class"


TARGET_KINDS = ("class", "label_set", "number", "tags", "text")


@dataclass(frozen=True)
class StrategyEntry:
    """A registered strategy: its settings dataclass and its class."""

    name: str
    settings_cls: type
    strategy_cls: type


@dataclass(frozen=True)
class RecipeEntry:
    """A registered recipe: its facts and its task class."""

    info: RecipeInfo
    task_cls: type


_STRATEGIES: dict[str, StrategyEntry] = {}
_RECIPES: dict[str, RecipeEntry] = {}
_loaded = False
_loading = threading.RLock()


def _refuse_duplicate(kind: str, name: str, existing: type, new: type) -> None:
    raise ConfigError(
        f"{kind} '{name}' is registered twice: by {existing.__module__}.{existing.__qualname__} and by "
        f"{new.__module__}.{new.__qualname__}. Give the second one another name."
    )


def register_strategy(name: str, settings_cls: type):
    """Class decorator: make the class selectable as `strategy.name: <name>`, its settings checked
    against `settings_cls`. A name registered by another class is refused (`ConfigError`)."""

    def wrap(cls: type) -> type:
        if name in _STRATEGIES:
            entry = _STRATEGIES[name]
            if entry.strategy_cls is cls and entry.settings_cls is settings_cls:
                return cls  # the same registration again (a module imported twice): nothing changes
            _refuse_duplicate("Strategy", name, entry.strategy_cls, cls)
        cls.name = name
        cls.config_cls = settings_cls
        _STRATEGIES[name] = StrategyEntry(name, settings_cls, cls)
        return cls

    return wrap


def register_task(
    name: str,
    pipeline_tag: str = "",
    *,
    example_input: str = "",
    metrics: tuple[str, ...] = ("accuracy", "f1"),
    lower_is_better: bool = False,
    modality: str = "",
    targets: str = "class",
):
    """Class decorator: the task behind `recipe: <name>`, with the Hub facts export and the model
    card read (`RecipeInfo`; the auto class is the task's `hub_auto_class`, else its
    `auto_model_cls`). A name registered by another class is refused (`ConfigError`)."""
    if targets not in TARGET_KINDS:
        raise ConfigError(
            f"register_task('{name}'): targets must be one of {', '.join(TARGET_KINDS)}, got {targets!r}."
        )

    def wrap(cls: type) -> type:
        if name in _RECIPES:
            if _RECIPES[name].task_cls is cls:
                return cls  # the same registration again (a module imported twice): nothing changes
            _refuse_duplicate("Recipe", name, _RECIPES[name].task_cls, cls)
        cls.name = name
        auto = getattr(cls, "hub_auto_class", "") or getattr(getattr(cls, "auto_model_cls", None), "__name__", "")
        info = RecipeInfo(
            name,
            pipeline_tag=pipeline_tag,
            task_name=pipeline_tag.replace("-", " ").title(),
            auto_class=auto,
            metrics=tuple(metrics),
            lower_is_better=lower_is_better,
            example_input=example_input,
            modality=modality,
            targets=targets,
        )
        _RECIPES[name] = RecipeEntry(info, cls)
        return cls

    return wrap


#: The entry point groups another installed package registers its strategies and recipes under.
PLUGIN_GROUPS = ("hf_transfer.strategies", "hf_transfer.recipes")


@dataclass(frozen=True)
class Plugin:
    """One entry point of a `PLUGIN_GROUPS` group, as found and loaded.

    Attributes:
        group: The entry point group.
        name: The entry point's name.
        value: What it points at (`package.module` or `package.module:function`).
        distribution: The installed package that declares it ("" when unknown).
        error: Why it failed to load ("" when it loaded).
    """

    group: str
    name: str
    value: str
    distribution: str = ""
    error: str = ""


_PLUGINS: list[Plugin] = []


def _load() -> None:
    """Import the built-in modules, then every plugin, once (each import registers)."""
    global _loaded
    if _loaded:
        return
    with _loading:
        if _loaded:
            return
        _loaded = True  # set first: the modules imported below may look names up while they register
        try:
            for module in BUILTIN_MODULES:
                importlib.import_module(module)
        except BaseException:
            _loaded = False  # a failed import is raised again on the next lookup, not hidden
            raise
        _load_plugins()


def _load_plugins() -> None:
    """Import every entry point of the `hf_transfer.strategies` and `hf_transfer.recipes` groups.

    An entry point names a module, which registers on import (`@register_strategy`,
    `@register_task`), or a function, which is then called with no arguments. A plugin that fails
    to import (or registers a name already taken) is recorded with its error (`hf-transfer ls`
    shows it) instead of stopping every command of the installation.
    """
    from importlib.metadata import entry_points

    for group in PLUGIN_GROUPS:
        for ep in sorted(entry_points(group=group), key=lambda e: e.name):
            dist = getattr(getattr(ep, "dist", None), "name", "") or ""
            try:
                obj = ep.load()
                if callable(obj) and not isinstance(obj, type):
                    obj()
                error = ""
            except Exception as e:  # a broken plugin must not break the installation
                error = f"{type(e).__name__}: {e}"
                import logging

                logging.getLogger("hf_transfer").warning(
                    "hf_transfer plugin %r (entry point group %s, package %s) failed to load: %s",
                    ep.name,
                    group,
                    dist or "?",
                    error,
                )
            _PLUGINS.append(Plugin(group, ep.name, ep.value, dist, error))


def plugins() -> list[Plugin]:
    """The plugins found (loading the built-ins and the plugins first)."""
    _load()
    return list(_PLUGINS)


def _did_you_mean(value: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(str(value), choices, n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def available_recipes() -> list[str]:
    """Every registered recipe name, in registration order (the one list of recipes)."""
    _load()
    return list(_RECIPES)


def _recipe(name: str) -> RecipeEntry:
    _load()
    if name not in _RECIPES:
        known = list(_RECIPES)
        raise ConfigError(f"Unknown recipe '{name}'.{_did_you_mean(name, known)} Available: {', '.join(known)}.")
    return _RECIPES[name]


def recipe_info(name: str) -> RecipeInfo:
    """The registered facts of recipe `name`; `ConfigError` with a did-you-mean if unknown."""
    return _recipe(name).info


def task_class(name: str) -> type:
    """The task class registered for recipe `name`; `ConfigError` with a did-you-mean if unknown."""
    return _recipe(name).task_cls


def available_strategies() -> list[str]:
    """Every registered strategy name, sorted."""
    _load()
    return sorted(_STRATEGIES)


def _strategy(name: str) -> StrategyEntry:
    _load()
    if name not in _STRATEGIES:
        known = sorted(_STRATEGIES)
        raise ConfigError(f"Unknown strategy.name '{name}'.{_did_you_mean(name, known)} Available: {', '.join(known)}.")
    return _STRATEGIES[name]


def strategy_settings_class(name: str) -> type:
    """The settings dataclass registered for strategy `name`; `ConfigError` with a did-you-mean."""
    return _strategy(name).settings_cls


def strategy_class(name: str) -> type:
    """The class registered as strategy `name`; `ConfigError` with a did-you-mean if unknown."""
    return _strategy(name).strategy_cls


def recipe_modality(name: str, default: str = "") -> str:
    """What recipe `name` takes in (`text`, `image`, `audio`), or `default` when it does not say
    (a plugin's recipe without `modality`, or a recipe not installed here)."""
    try:
        return recipe_info(name).modality or default
    except ConfigError:
        return default
