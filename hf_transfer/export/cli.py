"""`hf-transfer export` and `hf-transfer push`, added to the main parser by `hf_transfer.cli`."""

from __future__ import annotations

import logging
import sys


def _log_to_console() -> None:
    from hf_transfer.utils import setup_logging

    setup_logging(None)
    logging.getLogger("hf_transfer").setLevel(logging.INFO)


def cmd_export_onnx(args) -> int:
    from hf_transfer.run import export_onnx

    _log_to_console()
    r = export_onnx(args.run_dir, args.out_dir, quantize=args.quantize, min_agreement=args.min_int8_agreement)
    print(f"Exported to {r.folder} (ONNX; served file: {r.model_file}):")
    for p in sorted(r.folder.iterdir()):
        print(f"  {p.name:32s} {p.stat().st_size:>12,d} bytes")
    print(f"  fp32 parity: largest logit difference {r.fp32_max_abs_diff:.2g} on {r.sample_rows} sample rows")
    if r.int8_agreement is not None:
        print(
            f"  int8: predicted labels equal to PyTorch's on {100 * r.int8_agreement:.2f}% of "
            f"{r.eval_examples or r.sample_rows} examples"
        )
    if r.accuracy:
        print("  eval accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in r.accuracy.items()))
    return 0


def cmd_export(args) -> int:
    from hf_transfer.export.card import validate_card
    from hf_transfer.export.export import export_run

    if getattr(args, "format", "hub") == "onnx":
        return cmd_export_onnx(args)
    if getattr(args, "quantize", None) or getattr(args, "min_int8_agreement", None) is not None:
        from hf_transfer.errors import ExportError

        raise ExportError("--quantize and --min-int8-agreement apply to --format onnx only.")
    _log_to_console()
    out = export_run(
        args.run_dir,
        args.out_dir,
        merge_adapter=args.merge,
        baseline=args.baseline,
        license=args.license,
        language=args.language,
        repo_id=args.repo_id,
    )
    print(f"Exported to {out} (reload check passed):")
    for p in sorted(out.iterdir()):
        print(f"  {p.name:32s} {p.stat().st_size:>12,d} bytes")
    problems = validate_card(out / "README.md")
    if problems:
        print("The model card needs fixing before `hf-transfer push` accepts it:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
    return 0


def cmd_push(args) -> int:
    from hf_transfer.export.push import push_run

    _log_to_console()
    result = push_run(
        args.run_dir,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        commit_message=args.commit_message,
        export_dir=args.export_dir,
        merge_adapter=args.merge,
        baseline=args.baseline,
        license=args.license,
        language=args.language,
    )
    where = f"{result.repo_id}@{result.revision}"
    if result.commit_url is None:
        print(f"{where} already holds this model: nothing uploaded ({len(result.unchanged)} files unchanged).")
        return 0
    print(f"Pushed to {where}: {result.commit_url}")
    print(f"  uploaded ({len(result.uploaded)}): {', '.join(result.uploaded) or '-'}")
    if result.deleted:
        print(f"  deleted stale ({len(result.deleted)}): {', '.join(result.deleted)}")
    print(f"  unchanged ({len(result.unchanged)}): {', '.join(result.unchanged) or '-'}")
    return 0


def _card_options(p) -> None:
    merge = p.add_mutually_exclusive_group()
    merge.add_argument(
        "--merge",
        dest="merge",
        action="store_true",
        default=None,
        help="for LoRA/IA3/adapter runs: ship merged weights (plain transformers)",
    )
    merge.add_argument(
        "--no-merge",
        dest="merge",
        action="store_false",
        help="for LoRA/IA3/adapter runs: ship the PEFT adapter unmerged (loads with peft on the "
        "base model). Default: the run's strategy.merge / export.merge_adapter",
    )
    p.add_argument(
        "--baseline", metavar="RUN", help="scratch-baseline run folder (or metrics JSON) for the card's results table"
    )
    p.add_argument(
        "--license",
        metavar="ID",
        help="licence id for the card (apache-2.0, mit, ...) when the base model's is unknown",
    )
    p.add_argument(
        "--language",
        metavar="CODE",
        action="append",
        help="language code for the card (en, ja, ...); repeat for several",
    )


def add_commands(subparsers) -> None:
    """Add `export` and `push` to the `hf-transfer` sub-command parser."""
    e = subparsers.add_parser(
        "export",
        help="write a Hub-ready folder (weights, processor, card) for a run and check it reloads",
        description="Write a Hub-ready folder for a finished run (weights, processor, model "
        "card, images) and check that it reloads to the run's own outputs.",
    )
    e.add_argument("run_dir", help="the run folder (output_dir of a finished `hf-transfer train`)")
    e.add_argument(
        "out_dir",
        help="the folder to write (an earlier export there is replaced; any other non-empty folder is refused)",
    )
    _card_options(e)
    e.add_argument("--repo-id", help="the Hub repository it is meant for (named in the card's usage snippet)")
    e.add_argument(
        "--format",
        choices=("hub", "onnx"),
        default="hub",
        help="hub: transformers weights and card (default); onnx: an ONNX Runtime model, checked "
        "against PyTorch (needs the onnx extra)",
    )
    e.add_argument(
        "--quantize",
        choices=("int8",),
        help="with --format onnx: also write the dynamic int8 model and serve it by default",
    )
    e.add_argument(
        "--min-int8-agreement",
        type=float,
        default=None,
        metavar="FRACTION",
        help="with --quantize int8: the share of eval labels the int8 model must predict as PyTorch "
        "does (default 0.99); below it nothing is written",
    )
    e.set_defaults(func=cmd_export)

    p = subparsers.add_parser("push", help="export a finished run and push it to the Hub (no retraining)")
    p.add_argument("run_dir", help="the run folder (output_dir of a finished `hf-transfer train`)")
    p.add_argument("--repo-id", required=True, help="target repository, user/name (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--revision", metavar="BRANCH", help="branch to push to (created if missing)")
    p.add_argument("--commit-message", metavar="TEXT")
    p.add_argument("--export-dir", help="where to export first (default RUN_DIR/export)")
    _card_options(p)
    p.set_defaults(func=cmd_push)
