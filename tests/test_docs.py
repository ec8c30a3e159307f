"""Docs that cannot lie: every config key and CLI flag the README and docs/ name exists, and every
shell or Python snippet is either run here (on tiny offline models) or marked illustrative.

Markers, in the markdown source (HTML comments: invisible on GitHub and on the site), on the line
right before a fenced block:

* `<!-- tested: GROUP -->` the block runs in `test_tested_blocks_run` (one folder per page and group,
  blocks in page order); `<!-- tested: GROUP file=NAME -->` writes the block to the file NAME there
  (its model is swapped for a tiny one and its training cut to a few steps);
* `<!-- illustrative: why -->` the block is not run (it needs a GPU, the Hub, hours, ...).

`<!-- illustrative-page: why -->` anywhere on a page marks all of its blocks (benchmark pages).
"""

from __future__ import annotations

import importlib.util
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"


def _gen_ref():
    import sys

    if "hf_transfer_docs_gen_ref" not in sys.modules:
        spec = importlib.util.spec_from_file_location("hf_transfer_docs_gen_ref", DOCS / "gen_ref.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules["hf_transfer_docs_gen_ref"]


def doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]


SHELL = {"bash", "sh", "shell", "console", "zsh"}
PYTHON = {"python", "py", "python3"}
MARKER = re.compile(r"<!--\s*(tested|illustrative)\s*:?\s*(.*?)\s*-->")


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    marker: str  # "tested", "illustrative" or ""
    marker_args: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"

    @property
    def runnable(self) -> bool:
        """A shell command or a Python snippet (what must be tested or marked)."""
        if self.lang in SHELL | PYTHON:
            return True
        if self.lang == "":
            return any(
                line.strip().startswith(("hf-transfer ", "python ", "accelerate ", "pip "))
                for line in self.code.splitlines()
            )
        return False


def blocks(path: Path) -> list[Block]:
    lines = path.read_text().splitlines()
    page_illustrative = any("<!-- illustrative-page:" in line for line in lines)
    out, i = [], 0
    while i < len(lines):
        m = re.match(r"^(\s*)(```+|~~~+)\s*([\w+-]*)", lines[i])
        if not m:
            i += 1
            continue
        fence, lang, start = m.group(2), m.group(3).lower(), i
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            j += 1
        prev = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        mm = MARKER.search(prev)
        marker, args = (mm.group(1), mm.group(2)) if mm else ("illustrative" if page_illustrative else "", "")
        indent = len(m.group(1))
        code = "\n".join(line[indent:] for line in lines[start + 1 : j])
        out.append(Block(path, start + 1, lang, code, marker, args))
        i = j + 1
    return out


def all_blocks() -> list[Block]:
    return [b for p in doc_files() for b in blocks(p)]


def _without_blocks(text: str) -> str:
    return re.sub(r"^(\s*)(```+|~~~+).*?^\s*\2", "", text, flags=re.S | re.M)


def command_lines(text: str) -> list[str]:
    """Shell command lines of a block (backslash continuations joined)."""
    out, current = [], ""
    for line in text.splitlines():
        line = line.rstrip()
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        out.append((current + line).strip())
        current = ""
    return [re.sub(r"^\$\s+", "", line) for line in out if line.strip() and not line.strip().startswith("#")]


# ------------------------------------------------------------------------------------ snippets


def test_every_snippet_is_tested_or_marked_illustrative():
    unmarked = [b.where for b in all_blocks() if b.runnable and not b.marker]
    assert not unmarked, (
        "These shell/Python blocks are neither run by tests/test_docs.py nor marked illustrative: "
        + ", ".join(unmarked)
        + ". Put `<!-- tested: GROUP -->` (and make the test run it) or "
        "`<!-- illustrative: why -->` on the line before the fence."
    )


def test_the_readme_stays_an_entry_point():
    readme = (REPO / "README.md").read_text()
    assert len(readme) < 15_000, f"README.md is {len(readme)} characters: move detail to docs/."
    assert "make demo" in readme and "make test" in readme
    # .ci/run calls the README's test command.
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test-all" in readme and "make test-all" in ci


# ------------------------------------------------------------------------------ keys and flags

SECTIONS = ("model", "data", "strategy", "training", "export", "adaptation")
KEY = re.compile(rf"(?<![\w./:-])((?:{'|'.join(SECTIONS)})\.[A-Za-z_][\w.]*)")
FILE_SUFFIX = re.compile(r"\.(py|md|ya?ml|json|jsonl|csv|parquet|safetensors|bin|pth|pt|png|txt|joblib|pkl|log|onnx)$")


def _error_example_lines(path: Path) -> set[int]:
    """Lines of blocks marked `<!-- illustrative: shows an error ... -->`: a wrong key on purpose."""
    out: set[int] = set()
    for b in blocks(path):
        if b.marker == "illustrative" and b.marker_args.startswith("shows an error"):
            out |= set(range(b.line, b.line + b.code.count("\n") + 2))
    return out


def named_keys() -> list[tuple[str, str]]:
    """(key, where) for every dotted config key named in the docs: in code spans, blocks and
    `key=value` overrides."""
    found = []
    for path in doc_files():
        skip = _error_example_lines(path)
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if n in skip:
                continue
            for m in KEY.finditer(line):
                key = m.group(1).rstrip(".")
                if FILE_SUFFIX.search(key) or line[m.end() : m.end() + 1] == "(":  # a file, a method call
                    continue
                found.append((key, f"{path.relative_to(REPO)}:{n}"))
    return found


def test_every_config_key_named_in_the_docs_exists():
    known = _gen_ref().key_names()
    missing = sorted({f"{k} ({w})" for k, w in named_keys() if k not in known})
    assert not missing, "Config keys named in the docs that do not exist: " + ", ".join(missing)


def test_the_key_check_catches_a_wrong_key(tmp_path):
    known = _gen_ref().key_names()
    assert "training.epochs" in known and "data.train.name" in known and "strategy.trainable_layers" in known
    assert "training.epocs" not in known and "strategy.nonsense" not in known
    assert KEY.findall("set `training.epocs=2` and model.safetensors") == [
        "training.epocs=2".split("=")[0],
        "model.safetensors",
    ]


def test_every_config_key_has_a_documented_meaning():
    undocumented = [k.key for k in _gen_ref().config_keys() if k.meaning == _gen_ref().UNDOCUMENTED]
    assert not undocumented, (
        "Config keys without a meaning (add them to their dataclass's `Attributes:` "
        "docstring or `field(metadata={'help': ...})`): " + ", ".join(undocumented)
    )


# Flags of other tools the docs show (pip, accelerate, make, pytest, mkdocs, torchrun, python -m venv).
EXTERNAL = (
    "pip ",
    "accelerate ",
    "make ",
    "pytest",
    "python -m pytest",
    "mkdocs ",
    "torchrun ",
    "srun ",
    "python -m venv",
    "python -m build",
    "sbatch ",
    "git ",
    "deepspeed ",
    "bash ",
)


def _flags(words: list[str]) -> list[str]:
    return [w.split("=", 1)[0] for w in words if re.match(r"^--?[A-Za-z][\w-]*", w)]


def named_flags() -> list[tuple[str, str, str]]:
    """(flag, command, where): the flags given to `hf-transfer CMD`, `python -m hf_transfer CMD`,
    `python bench/X.py` and `python recipes/X.py` in the docs' blocks and code spans."""
    out = []
    for path in doc_files():
        text = path.read_text()
        spans = re.findall(r"`([^`\n]+)`", _without_blocks(text))
        candidates = [(line, b.where) for b in blocks(path) if b.lang in SHELL | {""} for line in command_lines(b.code)]
        candidates += [(s, str(path.relative_to(REPO))) for s in spans]
        for line, where in candidates:
            line = line.split(" # ")[0].split("  #")[0]
            line = re.sub(r"^(ACCELERATE_\w+=\S+\s+)", "", line)
            line = re.sub(r"^accelerate launch( --?[\w-]+( \d+| \S+\.yaml)?)* -m hf_transfer", "hf-transfer", line)
            line = line.replace("python -m hf_transfer", "hf-transfer")
            try:
                words = shlex.split(line)
            except ValueError:
                words = line.split()
            if len(words) >= 2 and words[0] == "hf-transfer":
                cmd = words[1] if not words[1].startswith("-") else ""
                out += [(f, cmd, where) for f in _flags(words[1:])]
            elif len(words) >= 2 and words[0] == "python" and words[1].startswith(("bench/", "recipes/")):
                out += [(f, words[1], where) for f in _flags(words[2:])]
    return out


def test_every_cli_flag_named_in_the_docs_exists():
    flags = _gen_ref().cli_flags()
    missing = []
    for flag, cmd, where in named_flags():
        if cmd.startswith("bench/"):
            script = REPO / cmd
            ok = script.is_file() and (f'"{flag}"' in script.read_text() or f"'{flag}'" in script.read_text())
        elif cmd.startswith("recipes/"):
            ok = flag in flags["(recipe scripts)"]
        elif cmd in flags:
            ok = flag in flags[cmd] or flag in flags[""]
        else:
            ok = False
            flag = f"{flag} (unknown command '{cmd}')"
        if not ok:
            missing.append(f"{flag} of {cmd or 'hf-transfer'} ({where})")
    assert not missing, "CLI flags named in the docs that do not exist: " + ", ".join(sorted(set(missing)))


def test_inline_flags_name_a_real_option():
    """A lone `--flag` in a code span names some hf-transfer option (or a benchmark's)."""
    flags = _gen_ref().cli_flags()
    every = set().union(*flags.values())
    bench = "".join(p.read_text() for p in (REPO / "bench").glob("*.py"))
    from accelerate.commands.launch import launch_command_parser  # `accelerate launch --multi_gpu`

    every |= {s for a in launch_command_parser()._actions for s in a.option_strings}
    missing = []
    for path in doc_files():
        for span in re.findall(r"`(--[A-Za-z][\w-]*)(?:[ =][^`]*)?`", _without_blocks(path.read_text())):
            if span not in every and f'"{span}"' not in bench and f"'{span}'" not in bench:
                missing.append(f"{span} ({path.relative_to(REPO)})")
    assert not missing, "Options named in the docs that no command has: " + ", ".join(sorted(set(missing)))


def test_the_flag_check_sees_commands():
    found = {(f, c) for f, c, _ in named_flags()}
    assert ("--license", "export") in found and ("--strategies", "compare") in found


# ---------------------------------------------------------------------------------- tested blocks


def doc_tested_groups() -> dict[tuple[str, str], list[Block]]:
    groups: dict[tuple[str, str], list[Block]] = {}
    for b in all_blocks():
        if b.marker == "tested":
            group = b.marker_args.split()[0] if b.marker_args else "default"
            groups.setdefault((str(b.path.relative_to(REPO)), group), []).append(b)
    return groups


def _tiny_for(recipe: str, tiny: dict) -> str:
    return str(tiny["image"] if recipe == "image_classification" else tiny["text"])


def _write_config(block: Block, dest: Path, tiny: dict) -> None:
    """The block's YAML, with a tiny model and a few training steps (what CPU tests can afford)."""
    import yaml

    cfg = yaml.safe_load(block.code)
    cfg.setdefault("model", {})["name_or_path"] = _tiny_for(cfg.get("recipe", "text_classification"), tiny)
    training = cfg.setdefault("training", {})
    training.update(
        {
            "max_steps": 4,
            "batch_size": 8,
            "report_to": [],
            "save_strategy": "no",
            "learning_rate": training.get("learning_rate", 3e-3),
        }
    )
    cfg.setdefault("data", {}).setdefault("max_length", 32)
    dest.write_text(yaml.safe_dump(cfg))


def _fixtures(folder: Path) -> None:
    """The files the tested blocks name: reviews.csv (text, label) and photos/<class>/*.jpg."""
    import numpy as np
    from PIL import Image

    from conftest import toy_sentences, write_csv

    write_csv(folder / "reviews.csv", toy_sentences(80, seed=5))
    rng = np.random.default_rng(0)
    for channel, name in enumerate(("cat", "dog")):
        (folder / "photos" / name).mkdir(parents=True)
        for i in range(10):
            a = rng.integers(0, 90, (24, 24, 3)).astype(np.uint8)
            a[..., channel] = rng.integers(160, 256, (24, 24))
            Image.fromarray(a).save(folder / "photos" / name / f"{i}.jpg")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory, tiny_bert_dir):
    from tiny_models import save_vit

    return {"text": tiny_bert_dir, "image": save_vit(tmp_path_factory.mktemp("tiny-vit"))}


@pytest.mark.slow
@pytest.mark.parametrize("page,group", sorted(doc_tested_groups()))
def test_tested_blocks_run(page, group, tiny_models, tmp_path, monkeypatch, capsys):
    """Run a page's tested blocks in order, in a fresh folder: every command exits 0, every Python
    snippet runs."""
    from hf_transfer.cli import main

    monkeypatch.chdir(tmp_path)
    _fixtures(tmp_path)
    for block in doc_tested_groups()[(page, group)]:
        target = re.search(r"file=(\S+)", block.marker_args)
        if target:
            _write_config(block, tmp_path / target.group(1), tiny_models)
        elif block.lang in PYTHON:
            exec(compile(block.code, block.where, "exec"), {"__name__": "__docs__"})
        else:
            for line in command_lines(block.code):
                argv = shlex.split(line, comments=True)
                assert argv[0] == "hf-transfer", f"{block.where}: only hf-transfer commands are run here: {line}"
                rc = main(argv[1:])
                err = capsys.readouterr().err
                assert rc == 0, f"{block.where}: `{line}` exited {rc}: {err[-2000:]}"
