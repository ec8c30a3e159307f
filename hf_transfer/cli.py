"""`hf-transfer` command line: train, evaluate, predict, ls, cp, layers, convert, export, push.

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
    from hf_transfer.run import train

    cfg = load_config(resolve_config_path(args.config), args.overrides)
    metrics = train(cfg)
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
    print("Configs (copy with `hf-transfer cp NAME FILE`):")
    for name, path in shipped_configs().items():
        first = path.read_text().splitlines()[0] if path.stat().st_size else ""
        print(f"  {name:28s} {first.lstrip('# ').strip()}")
    return 0


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


def cmd_layers(args) -> int:
    from hf_transfer.models.heads import load_config_checked
    from hf_transfer.models.layer_groups import format_layer_groups, layer_groups

    import transformers

    config = load_config_checked(args.model, args.revision, args.trust_remote_code)
    auto = getattr(transformers, args.auto_class)
    try:
        model = auto.from_config(config, trust_remote_code=args.trust_remote_code)
    except ValueError as e:
        raise HFTransferError(f"'{args.model}' cannot be built as {args.auto_class}: {e}") from None
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
    print(f"Wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hf-transfer", description="Transfer learning for Hugging Face checkpoints.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a run from a config (file or shipped name) plus key=value overrides")
    t.add_argument("config", help="YAML file, or a shipped config name such as bert/sst2_full")
    t.add_argument("overrides", nargs="*", help="a.b=value overrides, e.g. training.epochs=1 output_dir=runs/x")
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
    la.add_argument("--auto-class", default="AutoModelForSequenceClassification",
                    help="transformers Auto class to build (AutoModelForImageClassification, ...)")
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
    return p


def _add_export_commands(sub) -> None:
    """`export` and `push`, when the export package provides them."""
    try:
        from hf_transfer.export import cli as export_cli
    except ImportError:
        return
    export_cli.add_commands(sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except HFTransferError as e:
        logging.getLogger("hf_transfer").debug("error", exc_info=True)
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
