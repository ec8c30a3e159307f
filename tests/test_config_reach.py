"""Below the run layer, no function takes a whole `TrainConfig` only to read one or two fields of it.

Each step takes what it needs: a typed settings object (`cfg.training`, `cfg.data`, `cfg.export`,
...) or explicit arguments. The entry points (`hf_transfer` package root, `cli`, `*/cli.py`,
`demo`, `__main__`), the run layer (`run.py`, `study/`) and the schema itself (`config.py`,
`config_parsing.py`, `registry.py`) may take the whole config.

A function is checked when it has a parameter named `cfg` or `config` (unless that parameter is
annotated with another type, such as `data: DataConfig`) or one annotated `TrainConfig`. What it
reads is the distinct top-level fields it touches (`cfg.data.x` counts as `data`;
`getattr(cfg, "export", None)` as `export`), plus, where it hands the config to a function of the
package that the check can find (same module, `from hf_transfer... import f`, `self.method`, a
class's `__init__`), what that function reads of it. Handing it anywhere else (stored on an
object, into a container, to another library, to a method of the config) counts as reading it
all. A function fails when it reads two fields or fewer, or never reads it. A parameter of which
a field that `TrainConfig` does not have is read is some other config (a transformers
`PretrainedConfig`) and is not checked.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import hf_transfer
from hf_transfer.config import TrainConfig

PACKAGE = Path(hf_transfer.__file__).parent
NAMES = {"cfg", "config"}
THRESHOLD = 3  # distinct top-level fields a function must read to take the whole config
FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}

# Modules that may take the whole config: file names anywhere (cli.py) or at the package's top
# level (the rest), and whole subpackages.
EXCLUDED_FILES = {
    "__init__.py",
    "__main__.py",
    "cli.py",
    "demo.py",
    "run.py",
    "steps.py",
    "stages.py",
    "config.py",
    "config_parsing.py",
    "config_checks.py",
    "registry.py",
}
EXCLUDED_DIRS = {"study", "recipes", "model_cards"}

# Offenders in modules whose owners change them separately: "path:function" -> what it reads.
# This list only shrinks; an entry that no longer offends fails `test_allow_list_has_no_stale_entries`.
ALLOWED: dict[str, str] = {}

Function = ast.FunctionDef | ast.AsyncFunctionDef


# --------------------------------------------------------------------------------- the index


class Module:
    """One parsed module: its functions by qualified name, and the names it imports."""

    def __init__(self, name: str, source: str, filename: str):
        self.name = name
        self.filename = filename
        self.tree = ast.parse(source, filename)
        self.functions: dict[str, Function] = {}
        self.classes: set[str] = set()
        self.imports: dict[str, tuple[str, str]] = {}  # local name -> (module, name)
        package = name if filename.endswith("__init__.py") else name.rpartition(".")[0]
        self._collect(self.tree, "")
        for node in ast.walk(self.tree):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - (node.level - 1)] + ([base] if base else []))
                for a in node.names:
                    self.imports[a.asname or a.name] = (base, a.name)

    def _collect(self, node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.functions.setdefault(prefix + child.name, child)
                self._collect(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                self.classes.add(prefix + child.name)
                self._collect(child, f"{prefix}{child.name}.")
            else:
                self._collect(child, prefix)


class Index:
    """Modules by dotted name; finds the function a call names and what it reads of a parameter."""

    def __init__(self, modules: dict[str, Module]):
        self.modules = modules
        self._memo: dict[tuple[str, str, str], set[str] | None] = {}

    def lookup(self, module: Module, name: str, seen: int = 0) -> tuple[Module, str] | None:
        """(module, qualified name) of a top-level function or class `name` as seen from `module`."""
        if name in module.functions or name in module.classes:
            return module, name
        if name in module.imports and seen < 5:
            target, attr = module.imports[name]
            if target in self.modules:
                return self.lookup(self.modules[target], attr, seen + 1)
        return None

    def callee(self, module: Module, qual: str, call: ast.Call) -> tuple[Module, Function, bool] | None:
        """The function `call` runs and whether its first parameter is bound (self/cls)."""
        func = call.func
        found = None
        if isinstance(func, ast.Name):
            found = self.lookup(module, func.id)
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in ("self", "cls"):
            cls = qual.rsplit(".", 1)[0]  # the class of the method that calls (nested: its outer name)
            if cls in module.classes and f"{cls}.{func.attr}" in module.functions:
                fn = module.functions[f"{cls}.{func.attr}"]
                return module, fn, not _is_static(fn)
        if found is None:
            return None
        where, name = found
        if name in where.classes:
            init = where.functions.get(f"{name}.__init__")
            return (where, init, True) if init is not None else None
        fn = where.functions[name]
        return where, fn, False

    def reach(
        self, module: Module, qual: str, fn: Function, name: str, stack: frozenset = frozenset()
    ) -> set[str] | None:
        """Top-level fields of parameter `name` that `fn` reads; None when it hands the object on."""
        key = (module.name, qual, name)
        if key in stack:
            return set()
        if key in self._memo:
            return self._memo[key]
        stack = stack | {key}
        fields: set[str] = set()
        parents: dict[ast.AST, ast.AST] = {}

        def use(child: ast.Name, up: ast.AST) -> bool:
            """Record one use of the parameter; True when it hands the whole object on."""
            if isinstance(up, ast.Attribute) and up.value is child:
                call = parents.get(up)
                if isinstance(call, ast.Call) and call.func is up:
                    return True  # a method of the object: it reads what it likes
                fields.add(up.attr)
                return False
            if _is_test(child, up, parents):
                return False
            if isinstance(up, ast.Call) and isinstance(up.func, ast.Name) and up.func.id in {"getattr", "hasattr"}:
                if len(up.args) > 1 and up.args[0] is child and isinstance(up.args[1], ast.Constant):
                    fields.add(up.args[1].value)
                    return False
                return True
            call, keyword = (parents.get(up), up.arg) if isinstance(up, ast.keyword) else (up, None)
            if isinstance(call, ast.Call) and (keyword is not None or child in call.args):
                target = self.callee(module, qual, call)
                if target is None:
                    return True
                where, callee, bound = target
                param = _parameter_for(
                    callee, bound, keyword, call.args.index(child) if keyword is None else None, call
                )
                if param is None:
                    return True
                got = self.reach(where, _qualname(where, callee), callee, param, stack)
                if got is None:
                    return True
                fields.update(got)
                return False
            return True

        def walk(node: ast.AST) -> bool:
            for child in ast.iter_child_nodes(node):
                if _binds(child, name):
                    continue  # a nested function with its own parameter of that name: checked on its own
                parents[child] = node
                if (
                    isinstance(child, ast.Name)
                    and child.id == name
                    and isinstance(child.ctx, ast.Load)
                    and use(child, node)
                ):
                    return True
                if walk(child):
                    return True
            return False

        body = ast.Module(body=fn.body, type_ignores=[])
        whole = walk(body)
        result = None if whole else fields
        if len(stack) == 1:  # inside a cycle a result may lack what the caller up the stack reads
            self._memo[key] = result
        return result


def _is_static(fn: Function) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in fn.decorator_list)


def _qualname(module: Module, fn: Function) -> str:
    return next(q for q, f in module.functions.items() if f is fn)


def _parameter_for(fn: Function, bound: bool, keyword: str | None, index: int | None, call: ast.Call) -> str | None:
    """The parameter of `fn` an argument lands in (None: *args, **kwargs or a starred call)."""
    a = fn.args
    if keyword is not None:
        names = [p.arg for p in [*a.args, *a.kwonlyargs]]
        return keyword if keyword in names else None
    if any(isinstance(x, ast.Starred) for x in call.args[: index + 1]):
        return None
    positional = [p.arg for p in [*a.posonlyargs, *a.args]][1 if bound else 0 :]
    return positional[index] if index < len(positional) else None


def _annotation_name(node: ast.expr | None) -> str | None:
    if node is None:
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):  # "TrainConfig"
        try:
            node = ast.parse(node.value, mode="eval").body
        except SyntaxError:
            return node.value
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.BinOp):  # TrainConfig | None
        left, right = _annotation_name(node.left), _annotation_name(node.right)
        return "TrainConfig" if "TrainConfig" in (left, right) else left if left != "None" else right
    if isinstance(node, ast.Subscript):  # Optional[TrainConfig]
        return _annotation_name(node.slice)
    return None


def _config_params(fn: Function) -> list[str]:
    a = fn.args
    out = []
    for p in [*a.posonlyargs, *a.args, *a.kwonlyargs]:
        ann = _annotation_name(p.annotation)
        if ann == "TrainConfig" or (p.arg in NAMES and ann is None):
            out.append(p.arg)
    return out


def _binds(node: ast.AST, name: str) -> bool:
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        return False
    a = node.args
    return any(p.arg == name for p in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg] if p)


def _is_test(node: ast.AST, up: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """`node` (the parameter) is only tested inside `up`: `cfg is None`, `if cfg:`, `isinstance(cfg, T)`."""
    if isinstance(up, ast.Compare) or isinstance(up, ast.UnaryOp) and isinstance(up.op, ast.Not):
        return True
    if isinstance(up, ast.Call) and isinstance(up.func, ast.Name) and up.func.id == "isinstance":
        return True
    if isinstance(up, (ast.If, ast.While, ast.IfExp, ast.Assert)) and up.test is node:
        return True
    if isinstance(up, ast.BoolOp):  # `cfg and cfg.data`: a test when the whole is one
        return up in parents and _is_test(up, parents[up], parents)
    return False


# --------------------------------------------------------------------------------- the check


def offenders(index: Index, module: Module) -> list[tuple[str, str, int, str]]:
    """(file, qualified function name, line, what it reads) for each function below the bar."""
    found = []
    for qual, fn in module.functions.items():
        for name in _config_params(fn):
            fields = index.reach(module, qual, fn, name)
            if fields is None or fields - FIELDS:
                continue  # hands it on whole / not a TrainConfig
            if len(fields) < THRESHOLD:
                what = ", ".join(f"{name}.{f}" for f in sorted(fields)) or f"never reads {name}"
                found.append((module.filename, qual, fn.lineno, what))
    return found


def _package_modules() -> dict[str, Module]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent)
        if "recipes" in rel.parts or "model_cards" in rel.parts:
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(parts)
        out[name] = Module(name, path.read_text(), rel.as_posix())
    return out


def _checked(module: Module) -> bool:
    rel = Path(module.filename).relative_to(PACKAGE.name)
    if rel.parts[0] in EXCLUDED_DIRS:
        return False
    return not (rel.name in EXCLUDED_FILES and (len(rel.parts) == 1 or rel.name == "cli.py"))


INDEX = Index(_package_modules())


def _all_offenders() -> list[tuple[str, str, int, str]]:
    return [o for m in INDEX.modules.values() if _checked(m) for o in offenders(INDEX, m)]


def test_no_function_below_run_takes_the_whole_config_for_a_field_or_two():
    problems = [
        f"{file}:{line} {qual}() takes the whole config and reads: {what}"
        for file, qual, line, what in _all_offenders()
        if f"{file}:{qual}" not in ALLOWED
    ]
    assert not problems, "Pass the settings object (cfg.data, cfg.training, ...) or the values instead:\n" + "\n".join(
        problems
    )


def test_allow_list_has_no_stale_entries():
    current = {f"{file}:{qual}" for file, qual, _, _ in _all_offenders()}
    stale = sorted(set(ALLOWED) - current)
    assert not stale, "No longer offending, remove from ALLOWED: " + ", ".join(stale)


def test_excluded_modules_are_the_entry_points_run_layer_and_schema():
    checked = {m.filename for m in INDEX.modules.values() if _checked(m)}
    for name in (
        "cli.py",
        "run.py",
        "demo.py",
        "__init__.py",
        "__main__.py",
        "config.py",
        "registry.py",
        "config_parsing.py",
        "export/cli.py",
        "study/planning.py",
        "data_audit/cli.py",
    ):
        assert f"hf_transfer/{name}" not in checked
    for name in (
        "data_audit/core.py",
        "export/push.py",
        "tasks/base.py",
        "data/labels.py",
        "selection/plan.py",
        "models/feature_cache.py",
        "data_audit/__init__.py",
    ):
        assert f"hf_transfer/{name}" in checked


HELPERS = """
def reads_data(cfg):
    return cfg.data.train
"""

FAKE = """
from dataclasses import replace
from fake.helpers import reads_data as data_of
from hf_transfer.config import DataConfig, TrainConfig

def one_field(cfg):                        # offends: reads one field
    return cfg.data.train.path

def two_fields(config, n):                 # offends: reads two
    if config.training.seed:
        return config.data
    return n

def typed(run: "TrainConfig | None"):      # offends: annotated, never read
    return 1

def three_fields(cfg):                     # fine
    return cfg.data, cfg.model.name, cfg.training.seed

def forwards(cfg):                         # fine: hands it to a function that needs it
    return three_fields(cfg=cfg)

def forwards_narrow(cfg):                  # offends: with what its callees read, two fields
    if cfg is None or not cfg:
        return None
    return one_field(cfg), data_of(cfg), cfg.export

def builds_task(cfg):                      # fine: the task keeps it
    return Task(cfg)

def stores(self, cfg):                     # fine: the object keeps it
    self.cfg = cfg

def library(cfg):                          # fine: another library gets it whole
    return replace(cfg, recipe="x")

def method(cfg):                           # fine: a method of the object
    return cfg.to_dict()

def settings(data: DataConfig, config: "DataConfig"):   # not checked: typed sections
    return data.train

def hub_config(config):                    # not checked: a transformers config
    return config.model_type, config.hidden_size

def getattr_reads(cfg):                    # offends: getattr with a constant is one field
    return getattr(cfg, "export", None), isinstance(cfg, TrainConfig)

class Task:
    def __init__(self, cfg):               # fine: stores it
        self.cfg = cfg

    def helper(self, x, cfg):              # offends, named with its class
        def inner():
            return cfg.strategy.name
        def own(cfg):                      # checked on its own: forwards
            return forwards(cfg)
        return inner(), self.other(cfg)

    def other(self, cfg):                  # offends; `self.other(cfg)` resolves here
        return cfg.strategy
"""


def _fake_index() -> Index:
    return Index(
        {
            "fake.mod": Module("fake.mod", FAKE, "fake/mod.py"),
            "fake.helpers": Module("fake.helpers", HELPERS, "fake/helpers.py"),
        }
    )


def test_the_check_finds_what_it_should_and_nothing_else():
    index = _fake_index()
    found = {(qual, what) for _, qual, _, what in offenders(index, index.modules["fake.mod"])}
    assert found == {
        ("one_field", "cfg.data"),
        ("two_fields", "config.data, config.training"),
        ("typed", "never reads run"),
        ("getattr_reads", "cfg.export"),
        ("forwards_narrow", "cfg.data, cfg.export"),
        ("Task.helper", "cfg.strategy"),
        ("Task.other", "cfg.strategy"),
    }
    lines = {qual: line for _, qual, line, _ in offenders(index, index.modules["fake.mod"])}
    assert FAKE.splitlines()[lines["one_field"] - 1].startswith("def one_field(cfg)")
