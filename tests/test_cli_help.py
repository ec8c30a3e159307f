"""`hf-transfer --help` lists every command with a one-line description and one example, and
`python -m hf_transfer` is the same command as `hf-transfer`."""

import shutil
import subprocess
import sys

import pytest

from hf_transfer.cli import EXAMPLES, build_parser, command_help, commands, main


def test_help_lists_every_command_with_a_description_and_an_example(capsys):
    parser = build_parser()
    names = list(commands(parser))
    assert {"train", "evaluate", "predict", "ls", "cp", "compare", "rank", "plan", "export", "push"} <= set(names)
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    helps = command_help(parser)
    lines = out.splitlines()
    for name in names:
        described = [
            i for i, line in enumerate(lines) if line.split()[:1] == [name] and helps[name] and helps[name] in line
        ]
        assert described, f"`hf-transfer --help` does not describe {name}"
        example = lines[described[0] + 1].strip()
        assert example.startswith(f"e.g. hf-transfer {name}"), f"{name}: no example under its description: {example!r}"
        assert EXAMPLES.get(name) or parser._subparsers  # examples come from EXAMPLES or the parser
    assert out.count("e.g. hf-transfer") == len(names)


def test_each_example_parses():
    """Every example is a valid command line for its parser (options and positionals)."""
    import shlex

    parser = build_parser()
    for name, sub in commands(parser).items():
        example = EXAMPLES.get(name) or sub.get_default("example")
        args = parser.parse_args(shlex.split(example)[1:])
        assert args.command == name


def test_python_dash_m_is_the_same_command():
    outs = [
        subprocess.run([sys.executable, "-m", "hf_transfer", "--help"], capture_output=True, text=True, timeout=300)
    ]
    exe = shutil.which("hf-transfer")
    if exe:
        outs.append(subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=300))
    assert all(o.returncode == 0 for o in outs)
    assert outs[0].stdout.startswith("usage: hf-transfer ") and len({o.stdout for o in outs}) == 1
    bad = subprocess.run([sys.executable, "-m", "hf_transfer", "trian"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "invalid choice: 'trian'" in bad.stderr
