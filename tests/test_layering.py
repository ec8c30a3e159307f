"""The package's layering (docs/architecture.md, "Layers") holds: no module imports a layer above it.

Every `import` statement counts, including those inside functions (a lazy import is still a
dependency); only imports under `if TYPE_CHECKING:` are skipped. Modules in the same layer may
import each other, except for the few pairs listed in FORBIDDEN.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import hf_transfer

PACKAGE = Path(hf_transfer.__file__).parent

# Top to bottom. The longest prefix that matches a module's dotted name gives its layer; a prefix
# covers the module of that name and every module below it. The package root is named exactly in
# ROOT_LAYER instead: as a prefix it would cover every module and hide an unlisted one.
ROOT = "hf_transfer"
ROOT_LAYER = "entry points"
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "entry points",
        (
            "hf_transfer.__main__",
            "hf_transfer.cli",
            "hf_transfer.demo",
            "hf_transfer.export.cli",
            "hf_transfer.selection.cli",
            "hf_transfer.study.cli",
            "hf_transfer.data_audit.cli",
        ),
    ),
    # A study trains and compares whole runs, so it sits on top of `run`; `steps` are the steps of
    # one run, `stages` runs them once per stage.
    ("run", ("hf_transfer.run", "hf_transfer.steps", "hf_transfer.stages", "hf_transfer.study")),
    (
        "operations",
        (
            "hf_transfer.tasks",
            "hf_transfer.strategies",
            "hf_transfer.engine",
            "hf_transfer.export",
            "hf_transfer.importers",
            "hf_transfer.assets",
            "hf_transfer.selection",
            "hf_transfer.domain",
            "hf_transfer.data_audit",
        ),
    ),
    ("knowledge", ("hf_transfer.models", "hf_transfer.data", "hf_transfer.metrics", "hf_transfer.run_folder")),
    (
        "foundation",
        (
            "hf_transfer.config",
            "hf_transfer.errors",
            "hf_transfer.paths",
            "hf_transfer.utils",
            "hf_transfer.files",
            "hf_transfer.quiet",
            "hf_transfer.registry",
            "hf_transfer.config_parsing",
            "hf_transfer.config_checks",
        ),
    ),
]

# Same-layer imports that are still wrong: the left side must not know about the right side.
FORBIDDEN = [
    ("hf_transfer.tasks", "hf_transfer.importers"),  # architecture fixes live in models/families
    ("hf_transfer.engine", "hf_transfer.strategies"),  # strategies train with the engine, never the reverse
    ("hf_transfer.strategies", "hf_transfer.export"),
    ("hf_transfer.engine", "hf_transfer.export"),
    ("hf_transfer.export", "hf_transfer.engine"),
    ("hf_transfer.export", "hf_transfer.strategies"),
    ("hf_transfer.export", "hf_transfer.tasks"),
]


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_of(module: str) -> int:
    if module == ROOT:
        return [name for name, _ in LAYERS].index(ROOT_LAYER)
    best, best_len = None, -1
    for rank, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if _under(module, p) and len(p) > best_len:
                best, best_len = rank, len(p)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS (and docs/architecture.md).")
    return best


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if "recipes" in parts or "model_cards" in parts:
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def imports_of(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, imported hf_transfer module) for every import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                found.extend((child.lineno, a.name) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                # `from hf_transfer import run` imports the module hf_transfer.run.
                for a in child.names:
                    sub = f"{target}.{a.name}"
                    found.append((child.lineno, sub if sub in _ALL else target))
            visit(child)

    visit(tree)
    return [(line, m) for line, m in found if _under(m, "hf_transfer")]


_ALL = _modules()


def test_every_module_imports():
    for name in _ALL:
        if not name.endswith("__main__"):  # runs the CLI
            importlib.import_module(name)


def test_every_module_has_a_layer():
    assert ROOT in _ALL and len(_ALL) > 50  # the walk found the package
    for name in _ALL:
        layer_of(name)


@pytest.mark.parametrize(
    "module",
    [
        "hf_transfer.brand_new",
        "hf_transfer.brand_new.sub",
        "hf_transfer_other",
        "hf_transfer.runner",
        "hf_transfer.configs",
    ],
)
def test_a_module_in_no_layer_fails(module):
    """A module the table does not list fails the check: neither the root nor a name that only
    starts with a listed one (`hf_transfer.runner` is not under `hf_transfer.run`) covers it."""
    with pytest.raises(AssertionError, match=f"{module} is in no layer"):
        layer_of(module)


def test_no_module_imports_a_layer_above_it():
    problems = []
    for module, path in _ALL.items():
        own = layer_of(module)
        for line, target in imports_of(module, path):
            if target == "hf_transfer":
                continue  # the package root itself is only a namespace; its helpers live in paths
            there = layer_of(target)
            if there < own:
                problems.append(
                    f"{path.relative_to(PACKAGE.parent)}:{line} ({LAYERS[own][0]}) imports "
                    f"{target} ({LAYERS[there][0]})"
                )
            for left, right in FORBIDDEN:
                if _under(module, left) and _under(target, right):
                    problems.append(
                        f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}: {left} must not depend on {right}"
                    )
    problems = list(dict.fromkeys(problems))  # one line per import statement
    assert not problems, "Imports against the layering:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    "module,expected",
    [
        ("hf_transfer", 0),
        ("hf_transfer.cli", 0),
        ("hf_transfer.run", 1),
        ("hf_transfer.export.card", 2),
        ("hf_transfer.models.heads", 3),
        ("hf_transfer.config", 4),
    ],
)
def test_layer_table(module, expected):
    assert layer_of(module) == expected
