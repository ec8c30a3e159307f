"""Typed dataclasses from YAML mappings, with errors that name the key, its source and a fix.

The machinery behind `hf_transfer.config.load_config`, kept apart from the schema so that the
schema file reads as the list of settings it is. Every key is a dataclass field: an unknown key
gets a did-you-mean, a wrong type the expected type, and YAML 1.1's quirks (`no` read as False,
`1e-4` read as a string) are mapped back to what was meant.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Union

import yaml

from hf_transfer.errors import ConfigError


@dataclass(frozen=True)
class Rules:
    """What a schema adds to the generic rules.

    Attributes:
        shorthand: Dataclasses (with a `name` field) that a plain string stands for: `{name: s}`.
        choose_class: `(cls, raw, prefix, source) -> cls`: picks the dataclass to build from the
            mapping itself (a strategy's own settings class from `strategy.name`).
    """

    shorthand: tuple[type, ...] = ()
    choose_class: Callable[[type, dict, str, str], type] | None = None


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


class _Mismatch(Exception):
    pass


def coerce(value: Any, tp: Any, key: str, source: str, rules: Rules) -> Any:
    """Check `value` against annotation `tp` and convert it (YAML gives ints for floats, etc.)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        # A plain string is shorthand for a DataSource's name.
        for arg in args:
            if arg in rules.shorthand and isinstance(value, str):
                return arg(name=value)
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key, source, rules)
            except _Mismatch as e:
                errors.append(e)
            except ConfigError:
                raise
        raise _Mismatch()
    if origin is Literal:
        choices = typing.get_args(tp)
        if isinstance(value, bool):
            # YAML 1.1 reads an unquoted `no` / `off` as False: map it back to the choice meant.
            spelled = [
                c
                for c in choices
                if isinstance(c, str)
                and c.lower() in (("no", "false", "off", "none") if value is False else ("yes", "true", "on"))
            ]
            if len(spelled) == 1:
                return spelled[0]
            raise _Mismatch()
        if value in choices:
            return value
        raise _Mismatch()
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch()
        (item_tp,) = typing.get_args(tp)
        return [coerce(v, item_tp, f"{key}[{i}]", source, rules) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, str) and tp in rules.shorthand:
            return tp(name=value)
        if not isinstance(value, dict):
            raise _Mismatch()
        return build(tp, value, key, source, rules)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch()
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            # YAML 1.1 reads `1e-4` (no dot) as a string; accept what float() accepts.
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise _Mismatch()
        if not math.isfinite(number):
            # inf / nan pass every `x > 0` check downstream and end as NaN weights: no setting takes them.
            raise ConfigError(f"{key} must be a finite number, got {value!r} (in {source}).")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _Mismatch()
    raise _Mismatch()


def build(cls: type, raw: dict, prefix: str, source: str, rules: Rules) -> Any:
    """Build dataclass `cls` from mapping `raw`, reporting errors with full dotted keys."""
    if rules.choose_class is not None:
        cls = rules.choose_class(cls, raw, prefix, source)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for k, v in raw.items():
        full_key = f"{prefix}.{k}" if prefix else str(k)
        if k not in names:
            close = difflib.get_close_matches(str(k), names, n=1, cutoff=0.5)
            hint = f" Did you mean '{(prefix + '.' if prefix else '') + close[0]}'?" if close else ""
            valid = ", ".join(names)
            raise ConfigError(f"Unknown config key '{full_key}' in {source}.{hint} Valid keys here: {valid}.")
        try:
            kwargs[k] = coerce(v, hints[k], full_key, source, rules)
        except _Mismatch:
            raise ConfigError(
                f"Config key '{full_key}' in {source} must be {_type_name(hints[k])}, got {v!r} ({type(v).__name__})."
            ) from None
    return cls(**kwargs)


def set_dotted(raw: dict, dotted: str, value: Any) -> None:
    """Set `a.b.c` in a nested mapping, creating the levels on the way."""
    parts = dotted.split(".")
    node = raw
    for p in parts[:-1]:
        child = node.get(p)
        if isinstance(child, str):  # DataSource shorthand being refined: `data.train.split=...`
            child = {"name": child}
        if not isinstance(child, dict):
            child = {}
        node[p] = child
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Split `a.b=value` and parse the value as YAML (so `3`, `1e-4`, `true`, `[1, 2]` are typed)."""
    if "=" not in text:
        raise ConfigError(f"Override '{text}' is not of the form key=value (for example training.epochs=2).")
    key, _, value = text.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError(f"Override '{text}' has no key before '='.")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return key, parsed


def read_yaml(path, what: str, missing_hint: str = "") -> Any:
    """The mapping in the YAML file at `path` ({} when empty).

    Raises:
        ConfigError: Naming `what` (`Config file`, `--accelerate-config`) when the file is missing
            (with `missing_hint`) or is not YAML.
    """
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} '{path}' does not exist. {missing_hint}".rstrip())
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} '{path}' is not valid YAML: {e}") from None
