"""`hf-transfer rank` and `hf-transfer plan` (registered by `hf_transfer.cli`)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path


def _candidates(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def _load(args):
    from hf_transfer.cli import resolve_config_path
    from hf_transfer.config import load_config

    return load_config(resolve_config_path(args.config), args.overrides)


def cmd_rank(args) -> int:
    from hf_transfer.selection.rank import rank_candidates, write_report
    from hf_transfer.utils import setup_logging

    setup_logging()
    cfg = _load(args)
    report = rank_candidates(
        cfg,
        _candidates(args.candidates),
        metrics=_candidates(args.metrics),
        layers=args.layers,
        max_examples=args.max_examples,
        repeats=args.repeats,
        seed=args.seed,
        default_metric=args.default_metric,
        group_column=args.group_column,
    )
    jpath, mpath = write_report(report, args.output_dir)
    print(report.to_markdown())
    print(f"Wrote {jpath} and {mpath}")
    for r in report.results:
        if r.error is None and r.licence_warning:
            print(f"warning: {r.name}: {r.licence_warning}", file=sys.stderr)
    return 0 if not report.failed else 1


def cmd_plan(args) -> int:
    from hf_transfer.selection.plan import make_plan, write_plan
    from hf_transfer.selection.rank import write_report
    from hf_transfer.utils import setup_logging

    setup_logging()
    cfg = _load(args)
    plan = make_plan(
        cfg,
        _candidates(args.candidates),
        pick=args.pick,
        metric=args.metric,
        layers=args.layers,
        max_examples=args.max_examples,
        seed=args.seed,
        output_dir=args.run_dir,
        group_column=args.group_column,
    )
    command = "hf-transfer " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "hf-transfer plan"
    out = write_plan(plan, args.output, command)
    write_report(plan.report, Path(args.output).parent / f"{Path(args.output).stem}_rank")
    print("\n".join(f"- {r}" for r in plan.reasons))
    print(f"Wrote {out}; run it with: hf-transfer train {out}")
    return 0


def add_commands(sub) -> None:
    """Add `rank` and `plan` to the `hf-transfer` subcommands."""
    from hf_transfer.cli import add_overrides, at_least
    from hf_transfer.selection.metrics import METRICS
    from hf_transfer.selection.rank import DEFAULT_METRICS

    def common(p):
        p.add_argument("config", help="YAML file or shipped config name: its recipe and data are used")
        add_overrides(p)
        p.add_argument(
            "--candidates",
            required=True,
            help="comma-separated checkpoints: Hub ids, folders, pkg://..., asset:NAME, random:CANDIDATE",
        )
        p.add_argument(
            "--layers",
            choices=["last", "mean"],
            default="last",
            help="features of the last layer, or the mean over every block's pooled output",
        )
        p.add_argument(
            "--max-examples", type=at_least(1), default=2000, help="seeded sample of the training split (default 2000)"
        )
        p.add_argument("--seed", type=int, default=0, help="seed of the sample (and of the subsamples)")
        p.add_argument(
            "--group-column",
            default=None,
            help="training-data column with each example's group (speaker, patient): knn leaves "
            "out whole groups, so features that recognise a group do not score as transfer, "
            "and is then the default metric",
        )

    r = sub.add_parser("rank", help="rank candidate checkpoints for a config's data from one frozen forward pass each")
    common(r)
    r.add_argument("--metrics", default=",".join(DEFAULT_METRICS), help=f"comma-separated, from {', '.join(METRICS)}")
    r.add_argument(
        "--default-metric",
        default=None,
        help="the metric the overall rank follows (default: logme; knn with --group-column)",
    )
    r.add_argument("--repeats", type=at_least(0), default=5, help="subsamples for the stability table (0 = none)")
    r.add_argument("-o", "--output-dir", default="rank", help="folder for rank.json and rank.md")
    r.set_defaults(func=cmd_rank)

    p = sub.add_parser("plan", help="choose checkpoint, strategy, budget and learning rate; write a runnable config")
    common(p)
    p.add_argument("--pick", help="use this candidate instead of the top-ranked one")
    p.add_argument(
        "--metric", default=None, help="ranking metric (default: rank's default, logme; knn with --group-column)"
    )
    p.add_argument("--run-dir", default=None, help="output_dir of the planned config (default: <output_dir>-planned)")
    p.add_argument("-o", "--output", required=True, help="the planned YAML to write")
    p.set_defaults(func=cmd_plan)
