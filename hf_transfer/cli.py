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
            key = key[len(prefix):]
    if key in configs:
        return configs[key]
    import difflib

    close = difflib.get_close_matches(key, list(configs), n=3)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise HFTransferError(
        f"Config '{name}' is neither a file nor a shipped config.{hint} `hf-transfer ls` lists them."
    )


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
        shown = {k: v for k, v in metrics.items() if k.startswith(("eval_", "test_")) and isinstance(v, float) and k.count("_") == 1}
        print(json.dumps(shown, indent=2))
        print(f"Run folder: {cfg.output_dir}")
    return 0


def cmd_evaluate(args) -> int:
    from hf_transfer.run import evaluate

    metrics = evaluate(args.run_dir, split=args.split)
    scalars = {k: v for k, v in metrics.items() if not k.endswith("confusion_matrix")}
    print(json.dumps(scalars, indent=2))
    return 0


def cmd_predict(args) -> int:
    from hf_transfer.run import predict

    for row in predict(args.run_dir, args.inputs, top_k=args.top_k):
        print(json.dumps(row))
    return 0


def cmd_ls(args) -> int:
    root = recipes_dir()
    print("Recipes:")
    for p in sorted(root.glob("*.py")):
        if not p.name.startswith("_"):
            print(f"  {p.stem:28s} {p}")
    print("Configs (run with `hf-transfer train NAME`, copy with `hf-transfer cp NAME FILE`):")
    for name, path in shipped_configs().items():
        print(f"  {name:28s} {_config_summary(path)}")
    return 0


def _config_summary(path: Path) -> str:
    """A config's first comment line that describes it (its leading command line is skipped: it
    may name scripts, such as bench/ data preparation, that only a source checkout has)."""
    needs_checkout = False
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("# ").strip()
        if text.startswith(("hf-transfer ", "python ", "accelerate ")):
            needs_checkout = needs_checkout or "bench/" in text
        elif text:
            # Its data is written by a benchmark script that ships with the source, not the package.
            return ("[data: prepared by a benchmark of the source repository] " if needs_checkout else "") + text
    return ""


def cmd_cp(args) -> int:
    src = resolve_config_path(args.name) if not (recipes_dir() / args.name).is_file() else recipes_dir() / args.name
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
            + "Common ones: " + ", ".join(a for a, _ in _LAYERS_AUTO_CLASSES) + "."
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


def build_parser() -> argparse.ArgumentParser:
    from hf_transfer import __version__

    p = argparse.ArgumentParser(prog="hf-transfer", description="Transfer learning for Hugging Face checkpoints.")
    p.add_argument("--version", action="version", version=f"hf-transfer {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a run from a config (file or shipped name) plus key=value overrides")
    t.add_argument("config", help="YAML file, or a shipped config name such as bert/sst2_full")
    t.add_argument("overrides", nargs="*", help="a.b=value overrides, e.g. training.epochs=1 output_dir=runs/x")
    t.add_argument("--accelerate-config", metavar="FILE",
                   help="run under `accelerate launch --config_file FILE` (recipes/accelerate/*.yaml: "
                        "several GPUs, FSDP, DeepSpeed, several nodes); see docs/distributed.md")
    t.add_argument("--overwrite", action="store_true",
                   help="replace a finished or interrupted run already in output_dir (refused otherwise)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="metrics of a finished run on its eval and test splits")
    e.add_argument("run_dir")
    e.add_argument("--split", choices=["auto", "eval", "test"], default="auto")
    e.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="predict labels for texts (or files, by recipe) with a finished run")
    pr.add_argument("run_dir")
    pr.add_argument("inputs", nargs="+")
    pr.add_argument("--top-k", type=int, default=1)
    pr.set_defaults(func=cmd_predict)

    ls = sub.add_parser("ls", help="list the shipped recipes and configs")
    ls.set_defaults(func=cmd_ls)

    cp = sub.add_parser("cp", help="copy a shipped config (or recipe script) to edit")
    cp.add_argument("name", help="config name from `hf-transfer ls`, e.g. bert/sst2_full")
    cp.add_argument("dest")
    cp.add_argument("--force", action="store_true")
    cp.set_defaults(func=cmd_cp)

    la = sub.add_parser("layers", help="print a model's layer groups with parameter counts")
    la.add_argument("model", help="Hub id or local folder (only the config is read)")
    la.add_argument("--auto-class", default=None,
                    help="transformers Auto class to build (default: detected from the config's "
                         "architectures / model_type; AutoModelForImageClassification, ...)")
    la.add_argument("--revision")
    la.add_argument("--trust-remote-code", action="store_true")
    la.set_defaults(func=cmd_layers)

    cv = sub.add_parser("convert", help="import a checkpoint from outside the Hub into a transformers folder")
    cv.add_argument("kind", choices=["efficientnet-lite", "ctranslate2-whisper"])
    cv.add_argument("src")
    cv.add_argument("out")
    cv.set_defaults(func=cmd_convert)

    _add_export_commands(sub)
    from hf_transfer.study.cli import add_commands as add_study_commands

    add_study_commands(sub)  # compare
    _add_domain_commands(sub)  # shift, pretrain
    from hf_transfer.selection.cli import add_commands as add_selection_commands

    add_selection_commands(sub)  # rank, plan
    from hf_transfer.data_audit.cli import add_commands as add_audit_commands

    add_audit_commands(sub)  # audit
    return p


# Domain shift and continued pretraining (hf_transfer.domain) ----------------------------------
def cmd_pretrain(args) -> int:
    from hf_transfer.config import load_config

    overrides = list(args.overrides)
    if not any(o.split("=", 1)[0].strip() == "recipe" for o in overrides):
        overrides.insert(0, "recipe=masked_lm")
    cfg = load_config(resolve_config_path(args.config), overrides)
    if cfg.recipe != "masked_lm":
        from hf_transfer.errors import ConfigError

        raise ConfigError(f"`hf-transfer pretrain` trains recipe masked_lm; the config says recipe {cfg.recipe}. "
                          "Remove the recipe key (or use `hf-transfer train`).")
    from hf_transfer.run import train

    metrics = train(cfg, overwrite=args.overwrite)
    from accelerate.state import PartialState

    if PartialState().is_main_process:
        shown = {k: v for k, v in metrics.items() if k in ("eval_loss", "eval_perplexity", "eval_accuracy")}
        print(json.dumps(shown, indent=2))
        print(f"Pretrained checkpoint: {cfg.output_dir}")
        print(f"Fine-tune it: hf-transfer train YOUR_RUN.yaml model.name_or_path={cfg.output_dir}")
    return 0


def cmd_shift(args) -> int:
    from hf_transfer.config import load_config
    from hf_transfer.domain.shift import shift_report

    overrides = list(args.overrides) + [f"data.target={args.target}"]
    cfg = load_config(resolve_config_path(args.config), overrides)
    report = shift_report(cfg, args.output_dir, max_examples=args.max_examples, permutations=args.permutations,
                          seed=args.seed)
    print(report["verdict"])
    print(f"Report: {report['files']['markdown']}")
    return 0  # a shift is a finding, not a failure


def _add_domain_commands(sub) -> None:
    """`shift` and `pretrain` (hf_transfer.domain)."""
    s = sub.add_parser("shift", help="measure the domain shift between the training data and a target set")
    s.add_argument("config", help="the run's YAML config (model, recipe, data.train)")
    s.add_argument("--target", required=True, help="target data: csv/jsonl/parquet file or folder, labels optional")
    s.add_argument("-o", "--output-dir", default=None, help="where shift.json, shift.md and the plot go "
                   "(default: <output_dir>/shift)")
    s.add_argument("--max-examples", type=int, default=2000, help="examples per side (seeded subsample)")
    s.add_argument("--permutations", type=int, default=500, help="permutations for the MMD p-value")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("overrides", nargs="*", help="a.b=value config overrides")
    s.set_defaults(func=cmd_shift)

    p = sub.add_parser("pretrain", help="continued masked-LM pretraining on unlabelled in-domain text")
    p.add_argument("config", help="YAML config: model.name_or_path (an encoder) and data.train (texts)")
    p.add_argument("overrides", nargs="*", help="a.b=value overrides")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in output_dir")
    p.set_defaults(func=cmd_pretrain)


def _add_export_commands(sub) -> None:
    """`export` and `push`, when the export package provides them."""
    try:
        from hf_transfer.export import cli as export_cli
    except ImportError:
        return
    export_cli.add_commands(sub)


def recipe_main(recipe: str, description: str | None = None, argv: list[str] | None = None) -> int:
    """The entry point of every `recipes/<recipe>.py` script: `--config` takes a file or a shipped
    config's short name (`bert/sst2_full`), from any working folder, plus `a.b=value` overrides;
    errors print as one line, like `hf-transfer train`.

    Usage in a recipe script::

        if __name__ == "__main__":
            sys.exit(recipe_main("text_classification", __doc__))
    """
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML file, or a shipped config name such as bert/sst2_full")
    parser.add_argument("overrides", nargs="*", help="a.b=value overrides, e.g. training.epochs=1 output_dir=runs/x")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a finished or interrupted run already in output_dir (refused otherwise)")
    args = parser.parse_args(argv)
    args.overrides = [*args.overrides, f"recipe={recipe}"]
    return _handled(cmd_train, args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
