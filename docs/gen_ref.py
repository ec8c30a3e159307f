"""Generate the configuration and CLI reference pages from the code (never written by hand).

`mkdocs build` runs this file through the `gen-files` plugin, which writes
`reference/config.md` and `reference/cli.md` into the site. The functions below are also what
`tests/test_docs.py` uses to decide whether a key or a flag named in the docs exists.

* Configuration: every field of `hf_transfer.config.TrainConfig`, recursively (nested dataclasses
  give dotted keys such as `data.train.name`), plus every registered strategy's own settings
  dataclass (`strategy.<key>`, built-ins and plugins alike). Type and default come from the
  dataclass field; the meaning from `field(metadata={"help": ...})`, else the `Attributes:`
  section of the class docstring (Google style), looked up through the base classes.
* CLI: every subcommand of `hf_transfer.cli.build_parser()` and the recipe scripts'
  `hf_transfer.cli.recipe_parser()`, with usage, one example and every option.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import typing
from dataclasses import dataclass
from pathlib import Path

UNDOCUMENTED = "**undocumented**"


# ----------------------------------------------------------------------------------------------
# Configuration


@dataclass
class Key:
    """One configuration key."""

    key: str  # dotted: data.train.name
    type: str
    default: str
    meaning: str
    strategies: tuple[str, ...] = ()  # strategy.* keys: the strategies that have it


def _attribute_docs(cls: type) -> dict[str, str]:
    """`name: text` entries of the `Attributes:` section of `cls`'s docstring (continuation lines
    indented further join the entry)."""
    doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
    out: dict[str, str] = {}
    in_section, current, indent = False, None, None
    for line in doc.splitlines():
        if not in_section:
            in_section = line.strip() == "Attributes:"
            continue
        if not line.strip():
            continue
        width = len(line) - len(line.lstrip())
        if width == 0:  # the next section (or the end of this one)
            break
        m = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(\([^)]*\))?:\s*(.*)", line)
        if m and (indent is None or width == indent):
            indent = width
            current = m.group(1)
            out[current] = m.group(3).strip()
        elif current is not None:
            out[current] = (out[current] + " " + line.strip()).strip()
    return out


def _meaning(cls: type, f: dataclasses.Field) -> str:
    help_text = f.metadata.get("help") if f.metadata else None
    if help_text:
        return str(help_text)
    for klass in cls.__mro__:
        if dataclasses.is_dataclass(klass):
            docs = _attribute_docs(klass)
            if f.name in docs:
                return docs[f.name]
    return UNDOCUMENTED


def _resolved_hints(cls: type) -> dict[str, typing.Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation that does not resolve: fall back to the strings
        return {}


def _nested_dataclass(tp) -> type | None:
    """The dataclass a field holds (`DataSource`, `DataSource | None`), or None."""
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return tp
    for arg in typing.get_args(tp):
        if dataclasses.is_dataclass(arg) and isinstance(arg, type):
            return arg
    return None


def _type_text(f: dataclasses.Field, hint) -> str:
    text = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    text = re.sub(r"\btyping\.", "", text)
    text = re.sub(r"Literal\[(.*?)\]", lambda m: "one of " + m.group(1).replace("'", "").replace('"', ""), text)
    text = re.sub(r"Union\[(.*)\]", lambda m: m.group(1).replace(", ", " | "), text)
    return text.replace(" | ", " or ")


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
    else:
        return "required"
    if dataclasses.is_dataclass(value):
        return "(section)"
    if value is None:
        return "unset"
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    return f"`{value!r}`"


def _walk(cls: type, prefix: str, out: list[Key], skip: set[str] = frozenset()) -> None:
    hints = _resolved_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        key = f"{prefix}{f.name}"
        nested = _nested_dataclass(hints.get(f.name))
        out.append(Key(key, _type_text(f, hints.get(f.name)), _default_text(f), _meaning(cls, f)))
        if nested is not None:
            _walk(nested, key + ".", out)


def strategy_settings() -> dict[str, type]:
    """Every registered strategy (built-ins and plugins) and its settings dataclass."""
    from hf_transfer.strategies.base import available_strategies, strategy_config_class

    return {name: strategy_config_class(name) for name in available_strategies()}


def config_keys() -> list[Key]:
    """Every configuration key: `TrainConfig` recursively, then the strategies' own settings."""
    from hf_transfer.config import StrategyConfig, TrainConfig

    keys: list[Key] = []
    _walk(TrainConfig, "", keys)
    shared = {f.name for f in dataclasses.fields(StrategyConfig)}
    own: dict[str, Key] = {}
    for name, cls in strategy_settings().items():
        hints = _resolved_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name in shared:
                continue
            key = f"strategy.{f.name}"
            if key in own:
                own[key].strategies += (name,)
                continue
            own[key] = Key(key, _type_text(f, hints.get(f.name)), _default_text(f), _meaning(cls, f), (name,))
    return keys + sorted(own.values(), key=lambda k: k.key)


def key_names() -> set[str]:
    """The dotted names of every key (what a `a.b.c` in the docs must be)."""
    return {k.key for k in config_keys()}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _first_line(cls: type) -> str:
    doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
    return doc.split("\n\n")[0].replace("\n", " ")


def config_reference() -> str:
    """The configuration reference page (markdown)."""
    from hf_transfer.config import TrainConfig

    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by docs/gen_ref.py from the config dataclasses; do not edit. -->",
        "",
        "Every key a run config takes: defaults, then the YAML file, then `a.b=value` overrides on the",
        "command line. An unknown key or a wrong type is an error that names the key, where it came from",
        "and the closest valid key. This page is generated from the dataclasses in `hf_transfer/config.py`",
        "and from each registered strategy's settings class, so it lists exactly what the installed",
        "version accepts (strategies of installed plugins included).",
        "",
    ]
    keys = config_keys()
    sections: dict[str, list[Key]] = {}
    for k in keys:
        if k.strategies:
            continue
        top = k.key.split(".")[0]
        sections.setdefault(top if "." in k.key or _is_section(k) else "", []).append(k)
    top_fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    lines += ["## Top level", "", "| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for k in sections.get("", []):
        lines.append(f"| `{k.key}` | {_cell(k.type)} | {_cell(k.default)} | {_cell(k.meaning)} |")
    lines.append("")
    for name, ks in sections.items():
        if not name:
            continue
        meaning = _meaning(TrainConfig, top_fields[name]) if name in top_fields else ""
        lines += [f"## `{name}`", "", meaning, "", "| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        for k in ks:
            if k.key == name:
                continue
            lines.append(f"| `{k.key}` | {_cell(k.type)} | {_cell(k.default)} | {_cell(k.meaning)} |")
        lines.append("")
        if name == "strategy":
            lines += _strategy_section(keys)
    return "\n".join(lines) + "\n"


def _is_section(k: Key) -> bool:
    return k.default == "(section)"


def _strategy_section(keys: list[Key]) -> list[str]:
    from hf_transfer.strategies.base import strategy_class

    lines = [
        "### Settings of each strategy",
        "",
        "`strategy.name` picks the strategy; these keys belong to the strategies listed beside",
        "them (any other strategy refuses them).",
        "",
        "| key | strategies | type | default | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for k in keys:
        if k.strategies:
            names = ", ".join(f"`{s}`" for s in k.strategies)
            lines.append(f"| `{k.key}` | {names} | {_cell(k.type)} | {_cell(k.default)} | {_cell(k.meaning)} |")
    lines += ["", "| strategy | settings class | what trains |", "| --- | --- | --- |"]
    for name, cls in strategy_settings().items():
        strat = strategy_class(name)
        lines.append(f"| `{name}` | `{cls.__module__}.{cls.__qualname__}` | {_cell(strat.summary())} |")
    return lines + [""]


# ----------------------------------------------------------------------------------------------
# CLI


def _parsers() -> dict[str, argparse.ArgumentParser]:
    from hf_transfer.cli import build_parser, commands, recipe_parser

    out = {name: sub for name, sub in commands(build_parser()).items()}
    out["(recipe scripts)"] = recipe_parser(prog="python recipes/<recipe>.py")
    return out


def cli_flags() -> dict[str, set[str]]:
    """Each command's option strings (`--top-k`, `-o`, ...); `""` holds the top-level ones."""
    from hf_transfer.cli import build_parser

    flags = {"": {s for a in build_parser()._actions for s in a.option_strings}}
    for name, parser in _parsers().items():
        flags[name] = {s for a in parser._actions for s in a.option_strings}
    return flags


def _option_row(a: argparse.Action) -> str:
    names = ", ".join(f"`{s}`" for s in a.option_strings) or f"`{a.dest}`" + (" ..." if a.nargs in ("*", "+") else "")
    if a.option_strings and a.nargs != 0 and a.metavar:
        names += f" `{a.metavar}`"
    default = "" if a.default in (None, argparse.SUPPRESS, False) or not a.option_strings else f"`{a.default}`"
    choices = f" (one of {', '.join(map(str, a.choices))})" if a.choices else ""
    required = " (required)" if a.option_strings and a.required else ""
    return f"| {names} | {_cell(default)} | {_cell(_help_text(a))}{choices}{required} |"


def _help_text(a: argparse.Action) -> str:
    """The option's help with argparse's `%(default)s`-style fields filled in (as `--help` shows it)."""
    if not a.help or a.help == argparse.SUPPRESS:
        return ""
    try:
        return a.help % {**vars(a), "prog": ""}
    except (KeyError, TypeError, ValueError):
        return a.help


def cli_reference() -> str:
    """The CLI reference page (markdown)."""
    from hf_transfer.cli import EXAMPLES, build_parser, command_help

    parser = build_parser()
    helps = command_help(parser)
    lines = [
        "# CLI reference",
        "",
        "<!-- Generated by docs/gen_ref.py from the argument parsers; do not edit. -->",
        "",
        "`hf-transfer COMMAND ...` and `python -m hf_transfer COMMAND ...` are the same command.",
        "Errors print as one line starting with `error:` and exit with status 2.",
        "",
        "| command | what it does | example |",
        "| --- | --- | --- |",
    ]
    parsers = _parsers()
    for name, sub in parsers.items():
        if name.startswith("("):
            continue
        example = EXAMPLES.get(name) or sub.get_default("example") or ""
        lines.append(f"| [`{name}`](#{name}) | {_cell(helps.get(name, ''))} | `{_cell(example)}` |")
    lines.append("")
    for name, sub in parsers.items():
        title = "Recipe scripts" if name.startswith("(") else f"`hf-transfer {name}`"
        anchor = "recipe-scripts" if name.startswith("(") else name
        lines += [f"## {title} {{#{anchor}}}", ""]
        if name in helps:
            lines += [helps[name].capitalize() + ".", ""]
        else:
            lines += [
                "Every `recipes/<recipe>.py` script (`hf-transfer ls` lists them) takes these options",
                "and trains like `hf-transfer train` with the script's recipe.",
                "",
            ]
        example = EXAMPLES.get(name) or sub.get_default("example")
        usage = sub.format_usage().replace("usage: ", "").strip()
        lines += ["```text", usage, "```", ""]
        if example:
            lines += ["Example:", "", "```text", example, "```", ""]
        lines += ["| argument | default | meaning |", "| --- | --- | --- |"]
        for a in sub._actions:
            if isinstance(a, argparse._HelpAction) or a.dest in ("func", "example"):
                continue
            lines.append(_option_row(a))
        lines.append("")
    return "\n".join(lines) + "\n"


def write_pages(open_file) -> None:
    """Write both pages with `open_file(path, mode)` (mkdocs-gen-files' `open`, or a plain one)."""
    with open_file("reference/config.md", "w") as f:
        f.write(config_reference())
    with open_file("reference/cli.md", "w") as f:
        f.write(cli_reference())


if __name__ == "<run_path>":  # mkdocs-gen-files runs this file with runpy.run_path
    import logging
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.getLogger("hf_transfer").setLevel(logging.ERROR)
    import mkdocs_gen_files

    write_pages(mkdocs_gen_files.open)
elif __name__ == "__main__":  # python docs/gen_ref.py OUT_DIR: the same pages as plain files
    import sys

    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "site_ref")

    def _open(path, mode):
        (out_dir / path).parent.mkdir(parents=True, exist_ok=True)
        return open(out_dir / path, mode)

    write_pages(_open)
    print(f"Wrote {out_dir / 'reference/config.md'} and {out_dir / 'reference/cli.md'}")
