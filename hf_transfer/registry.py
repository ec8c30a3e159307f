"""What higher layers register with the config loader, which imports none of them.

Strategies add their settings class (`register_strategy`), tasks their recipe and its Hub facts
(`register_task`), other packages cross-key checks. The config stays plain data at the bottom of
the layering; `hf_transfer/__init__.py` installs the loader that imports the built-in strategies
and tasks the first time a name is looked up. This is the one list of recipes: the CLI and export
read it from here.

Other installed packages extend it through two Python entry point groups, loaded right after the
built-ins: `hf_transfer.strategies` and `hf_transfer.recipes` (see `load_plugins`).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable

from hf_transfer.errors import ConfigError


@dataclass(frozen=True)
class RecipeInfo:
    """What export and the model card need to know about a recipe (a task family).

    Attributes:
        name: The recipe (`recipe:` in a config).
        pipeline_tag: Hub task id.
        task_name: Human name of the Hub task.
        auto_class: transformers class that loads the trained model.
        metrics: Headline metrics, first one the main one.
        lower_is_better: The headline metric is an error rate.
        example_input: What `predict` takes, for the card's usage snippet.
    """

    name: str
    pipeline_tag: str = ""
    task_name: str = ""
    auto_class: str = ""
    metrics: tuple[str, ...] = ()
    lower_is_better: bool = False
    example_input: str = ""


_STRATEGY_SETTINGS: dict[str, type] = {}
_RECIPES: dict[str, RecipeInfo] = {}
_CHECKS: list[Callable[[Any, str], None]] = []
_builtin_loader: Callable[[], None] | None = None


def set_builtin_loader(loader: Callable[[], None]) -> None:
    """Install the function that imports (and so registers) the built-in strategies and tasks."""
    global _builtin_loader
    _builtin_loader = loader


def _load_builtins() -> None:
    global _builtin_loader
    loader, _builtin_loader = _builtin_loader, None
    if loader is not None:
        loader()


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
_plugins_loaded = False


def load_plugins() -> list[Plugin]:
    """Import every entry point of the `hf_transfer.strategies` and `hf_transfer.recipes` groups.

    An entry point names a module, which registers on import (`@register_strategy`,
    `@register_task`), or a function, which is then called with no arguments. A plugin that fails
    to import is recorded with its error (`hf-transfer ls` shows it) instead of stopping every
    command of the installation. Runs once; later calls return the same list.
    """
    global _plugins_loaded
    if _plugins_loaded:
        return list(_PLUGINS)
    _plugins_loaded = True
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
                    ep.name, group, dist or "?", error)
            _PLUGINS.append(Plugin(group, ep.name, ep.value, dist, error))
    return list(_PLUGINS)


def plugins() -> list[Plugin]:
    """The plugins found so far (loading the built-ins and the plugins first)."""
    _load_builtins()
    return load_plugins()


def register_strategy_settings(name: str, settings_cls: type) -> None:
    """Make `strategy.name: <name>` valid, checked against `settings_cls`."""
    _STRATEGY_SETTINGS[name] = settings_cls


def register_recipe(name: str, info: RecipeInfo | None = None) -> None:
    """Make `recipe: <name>` valid; `info` tells export how to present it."""
    _RECIPES[name] = info or RecipeInfo(name)


def register_check(check: Callable[[Any, str], None]) -> None:
    """Add a `check(cfg, source)` that `check_config` runs (raise `ConfigError` on a problem)."""
    if check not in _CHECKS:
        _CHECKS.append(check)


def available_recipes() -> list[str]:
    """Every registered recipe name, in registration order (the one list of recipes)."""
    _load_builtins()
    return list(_RECIPES)


def recipe_info(name: str) -> RecipeInfo:
    """The registered facts of recipe `name`; `ConfigError` with a did-you-mean if unknown."""
    _load_builtins()
    if name not in _RECIPES:
        known = list(_RECIPES)
        raise ConfigError(f"Unknown recipe '{name}'.{_did_you_mean(name, known)} Available: {', '.join(known)}.")
    return _RECIPES[name]


def _did_you_mean(value: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(str(value), choices, n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def strategy_settings_class(name: str) -> type:
    """The settings dataclass registered for strategy `name`; `ConfigError` with a did-you-mean."""
    _load_builtins()
    if name not in _STRATEGY_SETTINGS:
        known = sorted(_STRATEGY_SETTINGS)
        raise ConfigError(
            f"Unknown strategy.name '{name}'.{_did_you_mean(name, known)} Available: {', '.join(known)}."
        )
    return _STRATEGY_SETTINGS[name]
