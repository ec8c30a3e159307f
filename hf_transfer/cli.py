"""`hf-transfer` command line: train, evaluate, predict, ls, cp, layers, convert, export, push, audit, ...

`python -m hf_transfer ...` is the same command (and what `accelerate launch -m hf_transfer`
runs on every process).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

from hf_transfer import recipes_dir
from hf_transfer.errors import HFTransferError


class IntermixedParser(argparse.ArgumentParser):
    """A parser that takes options anywhere among its positionals (`train x.yaml --overwrite
    a.b=1 c.d=2`): argparse's `parse_intermixed_args` for every subcommand. The top-level parser
    (whose positional is the subcommand) parses as usual."""

    _mixing = False

    def parse_known_args(self, args=None, namespace=None):
        positionals = self._get_positional_actions()
        if self._mixing or any(a.nargs in (argparse.PARSER, argparse.REMAINDER) for a in positionals):
            return super().parse_known_args(args, namespace)
        self._mixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._mixing = False


def at_least(minimum: int):
    """An argparse `type`: an integer no smaller than `minimum` ("must be at least 1, got 0")."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def add_overrides(
    parser,
    help_text: str = "a.b=value config overrides, e.g. training.epochs=1 output_dir=runs/x "
    "(options may come before, between or after them)",
) -> None:
    """The optional `a.b=value` overrides positional every config-taking command has."""
    parser.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE", help=help_text)


def _configs_root() -> Path:
    return recipes_dir() / "configs"


def shipped_configs() -> dict[str, Path]:
    """Shipped configs by short name (`bert/sst2_full`)."""
    root = _configs_root()
    return {str(p.relative_to(root).with_suffix("")): p for p in sorted(root.rglob("*.yaml"))}


def resolve_config_path(name: str) -> Path:
    """A config file path, or a shipped config's short name (`bert/sst2_full`)."""
    path = Path(name)
    if path.is_file():
        return path
    configs = shipped_configs()
    key = name[:-5] if name.endswith(".yaml") else name
    for prefix in ("recipes/configs/", "configs/"):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    if key in configs:
        return configs[key]
    import difflib

    close = difflib.get_close_matches(key, list(configs), n=3)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise HFTransferError(f"Config '{name}' is neither a file nor a shipped config.{hint} `hf-transfer ls` lists them.")


def cmd_train(args) -> int:
    from hf_transfer.config import load_config

    if getattr(args, "accelerate_config", None):  # re-run this command under `accelerate launch`
        from hf_transfer.engine.distributed import launch_with_accelerate

        args.config_path = resolve_config_path(args.config)
        return launch_with_accelerate(args)
    cfg = load_config(resolve_config_path(args.config), args.overrides)
    from hf_transfer.run import train  # torch and friends: only once the config is valid

    metrics = train(cfg, overwrite=args.overwrite)
    from accelerate.state import PartialState

    if PartialState().is_main_process:
        shown = {
            k: v
            for k, v in metrics.items()
            if k.startswith(("eval_", "test_")) and isinstance(v, float) and k.count("_") == 1
        }
        print(json.dumps(shown, indent=2))
        print(f"Run folder: {cfg.output_dir}")
        from hf_transfer.run import summary_lines

        print("\n".join(summary_lines(metrics)))
    return 0


def cmd_evaluate(args) -> int:
    from hf_transfer.run import evaluate

    metrics = evaluate(args.run_dir, split=args.split, allow_pickle=args.trust_pickle)
    scalars = {k: v for k, v in metrics.items() if not k.endswith("confusion_matrix")}
    print(json.dumps(scalars, indent=2))
    return 0


def cmd_predict(args) -> int:
    from hf_transfer.run import predict

    for row in predict(args.run_dir, args.inputs, top_k=args.top_k, allow_pickle=args.trust_pickle):
        print(json.dumps(row))
    return 0


def cmd_ls(args) -> int:
    root = recipes_dir()
    scripts = {p.stem: p for p in sorted(root.glob("*.py")) if not p.name.startswith("_")}
    print("Recipes (`recipe: NAME` in a config; a script runs it with --config):")
    for name, info, origin in _registered_recipes():
        where = scripts.get(name) or origin or f"hf-transfer train (recipe: {name})"
        print(f"  {name:28s} {info.pipeline_tag or '-':28s} {where}")
    print("Strategies (`strategy.name: NAME`):")
    for name, summary, origin in _registered_strategies():
        print(f"  {name:28s} {summary}{f'  [{origin}]' if origin else ''}")
    broken = [p for p in _plugins() if p.error]
    for p in broken:
        print(f"  ! plugin {p.name} ({p.group}, package {p.distribution or '?'}) failed to load: {p.error}")
    print("Configs (run with `hf-transfer train NAME`, copy with `hf-transfer cp NAME FILE`):")
    for name, path in shipped_configs().items():
        print(f"  {name:28s} {_config_summary(path)}")
    return 0


def _plugins():
    from hf_transfer.registry import plugins

    return plugins()


def _origin(module: str) -> str:
    """'' for hf_transfer's own modules, else 'plugin: <installed package that declared it>'."""
    top = module.split(".")[0]
    if top == "hf_transfer":
        return ""
    for p in _plugins():
        if p.value.split(":")[0].split(".")[0] == top and p.distribution:
            return f"plugin: {p.distribution}"
    from importlib.metadata import packages_distributions

    dists = packages_distributions().get(top) or [top]
    return f"plugin: {dists[0]}"


def _registered_recipes():
    """(name, RecipeInfo, origin) of every registered recipe, built-ins first."""
    from hf_transfer.registry import available_recipes, recipe_info, task_class

    return [(name, recipe_info(name), _origin(task_class(name).__module__)) for name in available_recipes()]


def _registered_strategies():
    """(name, one-line summary, origin) of every registered strategy."""
    from hf_transfer.registry import available_strategies, strategy_class

    out = []
    for name in available_strategies():
        cls = strategy_class(name)
        out.append((name, cls.summary(), _origin(cls.__module__)))
    return out


def _config_summary(path: Path) -> str:
    """A config's description: the first sentence of its leading comment, however many lines it
    wraps over (its leading command line is skipped: it may name scripts, such as bench/ data
    preparation, that only a source checkout has)."""
    needs_checkout = False
    words: list[str] = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("# ").strip()
        if not words and text.startswith(("hf-transfer ", "python ", "accelerate ")):
            needs_checkout = needs_checkout or "bench/" in text
        elif text:
            words.append(text)
        elif words:
            break  # a blank comment line ends the description
    summary = _first_sentence(" ".join(words))
    # Its data is written by a benchmark script that ships with the source, not the package.
    return ("[data: prepared by a benchmark of the source repository] " if needs_checkout and summary else "") + summary


def _first_sentence(text: str) -> str:
    """`text` up to its first full stop outside parentheses that ends a sentence ("tiny.en" and
    "e.g." inside a sentence do not)."""
    depth = 0
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if ch == "." and depth == 0 and (i + 1 == len(text) or text[i + 1] == " ") and not text[:i].endswith(" e.g"):
            return text[: i + 1]
    return text


def _recipe_script(name: str) -> Path | None:
    """The shipped recipe script `name` names (`text_classification` as `ls` prints it, or with
    `.py`), or None."""
    for candidate in (name, f"{name}.py"):
        path = recipes_dir() / candidate
        if path.suffix == ".py" and path.is_file() and not path.name.startswith("_"):
            return path
    return None


def cmd_cp(args) -> int:
    src = _recipe_script(args.name) or resolve_config_path(args.name)
    dest = Path(args.dest)
    if dest.is_dir():
        dest = dest / src.name
    if dest.exists() and not args.force:
        raise HFTransferError(f"'{dest}' exists; pass --force to overwrite it.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    print(f"Copied {src} -> {dest}")
    return 0


# Task heads `hf-transfer layers` picks between, in this order of preference, with the
# transformers mapping (model_type -> class name) that says which model types have one.
_LAYERS_AUTO_CLASSES = (
    ("AutoModelForSequenceClassification", "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES"),
    ("AutoModelForImageClassification", "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES"),
    ("AutoModelForAudioClassification", "MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES"),
    ("AutoModelForSpeechSeq2Seq", "MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES"),
    ("AutoModelForCTC", "MODEL_FOR_CTC_MAPPING_NAMES"),
)


def detect_auto_class(config) -> tuple[str, str]:
    """The transformers Auto class a checkpoint's config calls for, and why.

    Its `architectures` first (a `ViTForImageClassification` is an image classifier), then the
    first task above that its `model_type` supports (a bare `ViTModel` backbone: image).
    """
    from transformers.models.auto import modeling_auto

    mappings = [(auto, getattr(modeling_auto, table, {})) for auto, table in _LAYERS_AUTO_CLASSES]
    for arch in getattr(config, "architectures", None) or []:
        for auto, mapping in mappings:
            if arch in mapping.values():
                return auto, f"its architecture {arch}"
    for auto, mapping in mappings:
        if config.model_type in mapping:
            return auto, f"model_type '{config.model_type}'"
    return "AutoModel", f"model_type '{config.model_type}' has none of the task heads hf-transfer trains"


def _auto_class_named(name: str):
    import transformers

    known = sorted(n for n in dir(transformers) if n.startswith("AutoModel"))
    if name not in known:
        import difflib

        close = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
        raise HFTransferError(
            f"--auto-class {name!r} is not a transformers Auto class. "
            + (f"Did you mean: {', '.join(close)}? " if close else "")
            + "Common ones: "
            + ", ".join(a for a, _ in _LAYERS_AUTO_CLASSES)
            + "."
        )
    return getattr(transformers, name)


def cmd_layers(args) -> int:
    from hf_transfer.models.heads import load_config_checked
    from hf_transfer.models.layer_groups import format_layer_groups, layer_groups
    from hf_transfer.paths import check_model_path

    if args.auto_class:
        auto = _auto_class_named(args.auto_class)
    check_model_path(args.model, key="MODEL")
    config = load_config_checked(args.model, args.revision, args.trust_remote_code)
    if not args.auto_class:
        args.auto_class, why = detect_auto_class(config)
        auto = _auto_class_named(args.auto_class)
        print(f"{args.auto_class} (from {why}; --auto-class picks another)")
    try:
        model = auto.from_config(config, trust_remote_code=args.trust_remote_code)
    except ValueError as e:
        first = str(e).split("\n")[0].split(". Should be one of")[0].split("Model type should be one of")[0]
        raise HFTransferError(
            f"'{args.model}' ({config.model_type}) cannot be built as {args.auto_class}: {first.strip()} "
            f"For this checkpoint hf-transfer would use {detect_auto_class(config)[0]}."
        ) from None
    print(f"{type(model).__name__} ({config.model_type}) from {args.model}")
    print(format_layer_groups(layer_groups(model)))
    return 0


def cmd_convert(args) -> int:
    from hf_transfer.paths import resolve

    args.src = resolve(args.src)
    if args.kind == "efficientnet-lite":
        from hf_transfer.importers.efficientnet_lite import convert_efficientnet_lite

        out = convert_efficientnet_lite(args.src, args.out)
    else:
        from hf_transfer.importers.ctranslate2_whisper import convert_ctranslate2_whisper

        out = convert_ctranslate2_whisper(args.src, args.out)
    from hf_transfer.files import respect_umask

    respect_umask(out)  # safetensors writes 600: the user's umask decides
    print(f"Wrote {out}")
    return 0


#: One example per command, shown by `hf-transfer --help`. A command added elsewhere may instead
#: carry its own: `parser.set_defaults(example="hf-transfer NAME ...")`.
EXAMPLES = {
    "train": "hf-transfer train bert/sst2_full training.epochs=1 output_dir=runs/sst2",
    "evaluate": "hf-transfer evaluate runs/sst2",
    "predict": 'hf-transfer predict runs/sst2 "a gripping, beautifully shot film"',
    "ls": "hf-transfer ls",
    "cp": "hf-transfer cp minilm/tweets_full my_run.yaml",
    "layers": "hf-transfer layers google-bert/bert-base-uncased",
    "convert": "hf-transfer convert efficientnet-lite lite0.pth models/lite0",
    "export": "hf-transfer export runs/sst2 exports/sst2 --license apache-2.0",
    "push": "hf-transfer push runs/sst2 --repo-id you/bert-sst2 --license apache-2.0",
    "compare": (
        "hf-transfer compare my_run.yaml --strategies full,lora,scratch --sizes 8,64 --per-class -o studies/mine"
    ),
    "shift": "hf-transfer shift my_run.yaml --target data/production.csv",
    "pretrain": "hf-transfer pretrain my_mlm.yaml output_dir=runs/my_mlm",
    "rank": "hf-transfer rank my_run.yaml --candidates asset:all-minilm-l6-v2,asset:all-mpnet-base-v2",
    "audit": "hf-transfer audit minilm/tweets_full -o audit --fix drop",
    "plan": "hf-transfer plan my_run.yaml --candidates asset:all-minilm-l6-v2,asset:all-mpnet-base-v2 -o planned.yaml",
}


def commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommand parsers of `parser`, by name, in the order they were added."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def command_help(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each subcommand's one-line description (the `help=` it was added with)."""
    if hasattr(parser, "command_help"):
        return dict(parser.command_help)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {a.dest: a.help or "" for a in action._choices_actions}
    return {}


def _command_listing(parser: argparse.ArgumentParser) -> str:
    """`--help`'s list: every command, its one-line description and one example."""
    helps = command_help(parser)
    lines = ["commands (`hf-transfer COMMAND --help` for its options):"]
    for name, sub in commands(parser).items():
        example = EXAMPLES.get(name) or sub.get_default("example") or ""
        lines.append(f"  {name:10s} {helps.get(name, '')}")
        lines.append(f"  {'':10s}   e.g. {example}" if example else f"  {'':10s}   (no example)")
    lines.append("")
    lines.append("`python -m hf_transfer ...` is the same command. Docs: docs/ in the source, or the project site.")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from hf_transfer import __version__

    p = argparse.ArgumentParser(
        prog="hf-transfer",
        description="Transfer learning for Hugging Face checkpoints.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"hf-transfer {__version__}")
    # Every subcommand takes its options anywhere among its positionals (IntermixedParser).
    sub = p.add_subparsers(
        dest="command",
        required=True,
        metavar="COMMAND",
        help="one of the commands below",
        parser_class=IntermixedParser,
    )

    t = sub.add_parser("train", help="train a run from a config (file or shipped name) plus key=value overrides")
    t.add_argument("config", help="YAML file, or a shipped config name such as bert/sst2_full")
    add_overrides(t)
    t.add_argument(
        "--accelerate-config",
        metavar="FILE",
        help="run under `accelerate launch --config_file FILE` (recipes/accelerate/*.yaml: "
        "several GPUs, FSDP, DeepSpeed, several nodes); see docs/distributed.md",
    )
    t.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a finished or interrupted run already in output_dir (refused otherwise)",
    )
    t.set_defaults(func=cmd_train)

    e = sub.add_parser(
        "evaluate",
        help="metrics of a finished run on its eval and test splits",
        description="Load a finished run folder and score it on the eval and/or test split its "
        "config.yaml names; prints the metrics as JSON.",
    )
    e.add_argument("run_dir", help="the run folder (output_dir of a finished `hf-transfer train`)")
    e.add_argument(
        "--split",
        choices=["auto", "eval", "test"],
        default="auto",
        help="which split to score: eval, test, or auto (every one the run has; default)",
    )
    _trust_pickle_option(e)
    e.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser(
        "predict",
        help="predict labels for texts (or files, by recipe) with a finished run",
        description="Predict with a finished run folder; prints one JSON line per input.",
    )
    pr.add_argument("run_dir", help="the run folder (output_dir of a finished `hf-transfer train`)")
    pr.add_argument(
        "inputs", nargs="+", help="texts (text recipes), or image / audio file paths (image and audio recipes)"
    )
    pr.add_argument(
        "--top-k",
        type=at_least(1),
        default=1,
        metavar="K",
        help="how many labels to print per input, most probable first (default 1)",
    )
    _trust_pickle_option(pr)
    pr.set_defaults(func=cmd_predict)

    ls = sub.add_parser("ls", help="list the recipes, the strategies (other packages' too) and the shipped configs")
    ls.set_defaults(func=cmd_ls)

    cp = sub.add_parser(
        "cp",
        help="copy a shipped config (or recipe script) to edit",
        description="Copy a shipped config or recipe script (names as `hf-transfer ls` prints "
        "them) to a file you can edit.",
    )
    cp.add_argument(
        "name",
        help="a config name from `hf-transfer ls` (bert/sst2_full) or a recipe script's name "
        "(text_classification, or text_classification.py)",
    )
    cp.add_argument("dest", help="the file to write, or a folder to copy into under the shipped file's name")
    cp.add_argument("--force", action="store_true", help="overwrite DEST when it exists (refused otherwise)")
    cp.set_defaults(func=cmd_cp)

    la = sub.add_parser("layers", help="print a model's layer groups with parameter counts")
    la.add_argument("model", help="Hub id or local folder (only the config is read)")
    la.add_argument(
        "--auto-class",
        default=None,
        help="transformers Auto class to build (default: detected from the config's "
        "architectures / model_type; AutoModelForImageClassification, ...)",
    )
    la.add_argument("--revision", help="the Hub revision (branch, tag or commit) of MODEL")
    la.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run code shipped with MODEL to build it (read that code first)",
    )
    la.set_defaults(func=cmd_layers)

    cv = sub.add_parser("convert", help="import a checkpoint from outside the Hub into a transformers folder")
    cv.add_argument(
        "kind",
        choices=["efficientnet-lite", "ctranslate2-whisper"],
        help="the source format: efficientnet-lite (.pth) or ctranslate2-whisper (model folder)",
    )
    cv.add_argument("src", help="the checkpoint to import (file or folder; pkg://package/path works)")
    cv.add_argument("out", help="the transformers folder to write")
    cv.set_defaults(func=cmd_convert)

    _add_export_commands(sub)
    from hf_transfer.study.cli import add_commands as add_study_commands

    add_study_commands(sub)  # compare
    _add_domain_commands(sub)  # shift, pretrain
    from hf_transfer.selection.cli import add_commands as add_selection_commands

    add_selection_commands(sub)  # rank, plan
    from hf_transfer.data_audit.cli import add_commands as add_audit_commands

    add_audit_commands(sub)  # audit
    p.epilog = _command_listing(p)
    p.command_help = command_help(p)
    sub._choices_actions.clear()  # listed once, with examples, in the epilog
    return p


def _trust_pickle_option(parser) -> None:
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="a feature-extraction run folder from an older hf-transfer keeps its classifier only as "
        "a pickle (classifier.joblib / model_head.pkl): unpickle it. Unpickling runs any code the "
        "file holds: only for run folders you trust (current runs need no pickle)",
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The `hf-transfer` command line parsed (options anywhere among each command's positionals)."""
    return build_parser().parse_args(argv)


# Domain shift and continued pretraining (hf_transfer.domain) ----------------------------------
def cmd_pretrain(args) -> int:
    from hf_transfer.config import load_config

    overrides = list(args.overrides)
    if not any(o.split("=", 1)[0].strip() == "recipe" for o in overrides):
        overrides.insert(0, "recipe=masked_lm")
    cfg = load_config(resolve_config_path(args.config), overrides)
    if cfg.recipe != "masked_lm":
        from hf_transfer.errors import ConfigError

        raise ConfigError(
            f"`hf-transfer pretrain` trains recipe masked_lm; the config says recipe {cfg.recipe}. "
            "Remove the recipe key (or use `hf-transfer train`)."
        )
    from hf_transfer.run import train

    metrics = train(cfg, overwrite=args.overwrite)
    from accelerate.state import PartialState

    if PartialState().is_main_process:
        shown = {k: v for k, v in metrics.items() if k in ("eval_loss", "eval_perplexity", "eval_accuracy")}
        print(json.dumps(shown, indent=2))
        print(f"Pretrained checkpoint: {cfg.output_dir}")
        from hf_transfer.run import summary_lines

        print("\n".join(summary_lines(metrics)))
        print(f"Fine-tune it: hf-transfer train YOUR_RUN.yaml model.name_or_path={cfg.output_dir}")
    return 0


def cmd_shift(args) -> int:
    from hf_transfer.config import load_config
    from hf_transfer.domain.shift import shift_report
    from hf_transfer.utils import setup_logging

    setup_logging(None)  # its progress lines, like every other command's
    overrides = list(args.overrides) + [f"data.target={args.target}"]
    cfg = load_config(resolve_config_path(args.config), overrides)
    report = shift_report(
        cfg, args.output_dir, max_examples=args.max_examples, permutations=args.permutations, seed=args.seed
    )
    print(report["verdict"])
    print(f"Report: {report['files']['markdown']}")
    return 0  # a shift is a finding, not a failure


def _add_domain_commands(sub) -> None:
    """`shift` and `pretrain` (hf_transfer.domain)."""
    s = sub.add_parser("shift", help="measure the domain shift between the training data and a target set")
    s.add_argument("config", help="the run's YAML config (model, recipe, data.train)")
    s.add_argument("--target", required=True, help="target data: csv/jsonl/parquet file or folder, labels optional")
    s.add_argument(
        "-o",
        "--output-dir",
        default=None,
        help="where shift.json, shift.md and the plot go (default: <output_dir>/shift)",
    )
    s.add_argument("--max-examples", type=at_least(5), default=2000, help="examples per side (seeded subsample)")
    s.add_argument("--permutations", type=at_least(1), default=500, help="permutations for the MMD p-value")
    s.add_argument("--seed", type=int, default=0, help="seed of the subsamples, folds and permutations")
    add_overrides(s)
    s.set_defaults(func=cmd_shift)

    p = sub.add_parser("pretrain", help="continued masked-LM pretraining on unlabelled in-domain text")
    p.add_argument("config", help="YAML config: model.name_or_path (an encoder) and data.train (texts)")
    add_overrides(p)
    p.add_argument("--overwrite", action="store_true", help="replace a run already in output_dir")
    p.set_defaults(func=cmd_pretrain)


def _add_export_commands(sub) -> None:
    """`export` and `push`, when the export package provides them."""
    try:
        from hf_transfer.export import cli as export_cli
    except ImportError:
        return
    export_cli.add_commands(sub)


def recipe_parser(description: str | None = None, prog: str | None = None) -> argparse.ArgumentParser:
    """The options every `recipes/<recipe>.py` script takes (`recipe_main`)."""
    parser = IntermixedParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML file, or a shipped config name such as bert/sst2_full")
    add_overrides(parser)
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a finished or interrupted run already in output_dir (refused otherwise)",
    )
    return parser


def recipe_main(recipe: str, description: str | None = None, argv: list[str] | None = None) -> int:
    """The entry point of every `recipes/<recipe>.py` script: `--config` takes a file or a shipped
    config's short name (`bert/sst2_full`), from any working folder, plus `a.b=value` overrides;
    errors print as one line, like `hf-transfer train`.

    Usage in a recipe script::

        if __name__ == "__main__":
            sys.exit(recipe_main("text_classification", __doc__))
    """
    parser = recipe_parser(description)
    args = parser.parse_args(argv)
    args.overrides = [*args.overrides, f"recipe={recipe}"]
    _quiet()
    return _handled(cmd_train, args)


def _quiet() -> None:
    """One console policy for every command (hf_transfer.quiet), before any library loads."""
    from hf_transfer.quiet import quiet_libraries

    quiet_libraries()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _quiet()
    return _handled(args.func, args)


def _handled(func, args) -> int:
    """Run a command: user errors as one line (exit 2), Ctrl-C (130), a closed pipe quietly."""
    try:
        rc = func(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
        return rc
    except HFTransferError as e:
        logging.getLogger("hf_transfer").debug("error", exc_info=True)
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _closed_pipe()


def _closed_pipe() -> int:
    """The reader went away (`hf-transfer ls | head`): stop quietly, as Unix tools do."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush cannot fail again
    except (OSError, ValueError):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
