"""Every third-party package that `hf_transfer/` imports is declared in `pyproject.toml`.

A module that imports an undeclared package works on the developer's machine, where something else
pulled the package in, and fails on a new user's machine. The check parses every module (imports
inside functions included), maps import names to distributions with the installed metadata, and
compares against the core dependencies and the optional extras.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hf_transfer"


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    return _normalise(re.split(r"[\s<>=!~\[;@]", requirement.strip(), maxsplit=1)[0])


def declared_distributions() -> tuple[set[str], dict[str, set[str]]]:
    """The core dependencies and each extra's, as normalised distribution names."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_requirement_name(r) for r in project.get("dependencies", [])}
    extras = {
        name: {_requirement_name(r) for r in reqs} for name, reqs in project.get("optional-dependencies", {}).items()
    }
    return core, extras


def third_party_imports(package: Path = PACKAGE) -> dict[str, list[str]]:
    """Top-level names of absolute imports that are neither the standard library nor the package
    itself, each with the modules that import it."""
    found: dict[str, list[str]] = {}
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module.split(".")[0]]
            else:
                continue
            for name in names:
                if name in sys.stdlib_module_names or name == package.name:
                    continue
                found.setdefault(name, []).append(str(path.relative_to(package.parent)))
    return found


def distributions_for(import_name: str) -> set[str]:
    """The installed distributions that provide an import name (PIL -> pillow, yaml -> pyyaml); a
    package that is not installed is taken to be distributed under its import name."""
    mapping = md.packages_distributions()
    return {_normalise(d) for d in mapping.get(import_name, [])} or {_normalise(import_name)}


def undeclared(imports: dict[str, list[str]], core: set[str], extras: dict[str, set[str]]) -> list[str]:
    declared = core.union(*extras.values()) if extras else set(core)
    problems = []
    for name, modules in sorted(imports.items()):
        if not distributions_for(name) & declared:
            problems.append(
                f"{name} (imported by {', '.join(sorted(set(modules)))}) is not declared in "
                f"pyproject.toml: add {sorted(distributions_for(name))[0]} to the dependencies "
                f"or to the extra of the feature that needs it"
            )
    return problems


def test_every_third_party_import_is_a_declared_dependency():
    core, extras = declared_distributions()
    problems = undeclared(third_party_imports(), core, extras)
    assert not problems, "\n".join(problems)


def test_the_check_catches_an_undeclared_import(tmp_path):
    """The check itself can fail: a module importing a package that pyproject.toml lacks is named."""
    package = tmp_path / "hf_transfer"
    package.mkdir()
    (package / "__init__.py").write_text("import numpy\n")
    (package / "lazy.py").write_text("def f():\n    from scipy import stats\n    import json\n    from . import x\n")
    imports = third_party_imports(package)
    assert set(imports) == {"numpy", "scipy"}
    problems = undeclared(imports, core={"numpy"}, extras={"docs": {"mkdocs"}})
    assert len(problems) == 1 and problems[0].startswith("scipy (imported by hf_transfer/lazy.py)")
    assert not undeclared(imports, core={"numpy"}, extras={"stats": {"scipy"}})


@pytest.mark.parametrize(
    "import_name, distribution", [("PIL", "pillow"), ("yaml", "pyyaml"), ("sklearn", "scikit-learn")]
)
def test_import_names_map_to_their_distributions(import_name, distribution):
    assert distribution in distributions_for(import_name)
