"""`hf-transfer audit` (registered by `hf_transfer.cli`)."""

from __future__ import annotations


def cmd_audit(args) -> int:
    from hf_transfer.cli import resolve_config_path
    from hf_transfer.config import load_config
    from hf_transfer.data_audit.core import audit
    from hf_transfer.utils import setup_logging

    setup_logging()
    cfg = load_config(resolve_config_path(args.config), args.overrides)
    report = audit(
        cfg,
        args.output_dir,
        fix=args.fix,
        method=args.method,
        near_threshold=args.near_threshold,
        text_threshold=args.text_threshold,
        folds=args.folds,
        seed=args.seed,
        all_rows=args.all_rows,
        plots=not args.no_plot,
    )
    s = report["summary"]
    print(f"Likely label errors: {s['label_issues']}" + ("" if s.get("searched") else " (not searched)"))
    print(
        f"Duplicate groups in train: {s['duplicate_groups']} ({s['duplicate_rows']} extra copies); "
        f"conflicts: {s['conflicts']}"
    )
    print(f"Eval/test rows also in train: {s['leaks']}")
    print(
        f"Outliers: {s['outliers']}"
        + (
            f"; texts over data.max_length: {s['over_max_length']}, very short: {s['very_short']}"
            if "over_max_length" in s
            else ""
        )
    )
    for note in report["notes"]:
        print(f"Note: {note}")
    print(f"Report: {report['files']['markdown']} (and audit.json)")
    if "clean" in report["files"]:
        f = report["fix"]
        print(
            f"Fix file: {f['file']} ({f['rows_out']} of {f['rows_in']} rows; {f['dropped']} dropped, "
            f"{f['relabelled']} relabelled): train on it with data.train={f['file']}"
        )
    return 0  # findings are not failures


def add_commands(sub) -> None:
    """Add `audit` to the `hf-transfer` subcommands."""
    from hf_transfer.data_audit.checks import DEFAULT_METHOD, MAX_FOLDS, METHODS
    from hf_transfer.data_audit.core import FIXES, NEAR_THRESHOLD, TEXT_THRESHOLD

    a = sub.add_parser("audit", help="find label errors, duplicates, train/eval leaks and outliers in a config's data")
    a.add_argument("config", help="YAML file or shipped config name: its recipe, model and data are used")
    a.add_argument("overrides", nargs="*", help="a.b=value overrides of the config")
    a.add_argument("-o", "--output-dir", default="audit", help="folder for audit.md, audit.json, audit.png, clean.csv")
    a.add_argument(
        "--fix",
        choices=FIXES,
        default="drop",
        help="clean.csv: flagged training rows dropped, label errors relabelled, or no fix file",
    )
    a.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD, help="cleanlab's filter_by for label errors")
    a.add_argument(
        "--near-threshold",
        type=float,
        default=NEAR_THRESHOLD,
        help="embedding cosine similarity from which rows are near duplicates",
    )
    a.add_argument(
        "--text-threshold",
        type=float,
        default=TEXT_THRESHOLD,
        help="character n-gram TF-IDF cosine similarity from which texts are near duplicates (2 = off)",
    )
    a.add_argument("--folds", type=int, default=MAX_FOLDS, help="cross-validation folds for the probabilities")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument(
        "--all-rows",
        action="store_true",
        help="ignore the config's subsampling (samples_per_class, max_*_samples): audit every row",
    )
    a.add_argument("--no-plot", action="store_true", help="skip audit.png")
    a.set_defaults(func=cmd_audit)
