"""The `hf-transfer compare` subcommand (parser and command); the work is in `study.compare`."""

from __future__ import annotations


def add_commands(sub) -> None:
    c = sub.add_parser(
        "compare",
        help="transfer study: strategies x sizes x seeds against scratch and baselines, same splits",
        description="Run every strategy at every training-set size and seed on the same eval split "
        "(nested stratified subsamples), resumably, and write study.csv, study.md, study.json "
        "and study.png with verdicts (best per size, transfer vs scratch, negative transfer).",
    )
    c.add_argument("config", help="YAML file, or a shipped config name such as minilm/tweets_full")
    from hf_transfer.cli import add_overrides

    add_overrides(c, "a.b=value overrides applied to every cell (options may come before, between or after them)")
    c.add_argument(
        "--strategies", required=True, help="comma-separated, e.g. full,partial,feature_extraction,lora,scratch"
    )
    c.add_argument(
        "--sizes", required=True, help="training-set sizes, comma-separated: totals, or per class with --per-class"
    )
    c.add_argument("--per-class", action="store_true", help="--sizes count examples per class")
    c.add_argument(
        "--seeds", default="0,1,2", help="seeds (default 0,1,2): each draws its own subsample and training seed"
    )
    c.add_argument("--baselines", default="", help="logreg (frozen features + scikit-learn) and/or setfit (text only)")
    c.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="LABEL:KEY=VALUE",
        help="a setting for one entry of --strategies or --baselines only (repeatable), e.g. "
        "scratch:training.learning_rate=3e-4; with LABEL:strategy.name=NAME an entry is a variant",
    )
    c.add_argument("--metric", default="accuracy", help="eval metric the verdicts judge (default accuracy; f1, loss)")
    c.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="cells at once: 1 runs them one after another in this process, N in N worker processes "
        "(each with cores/N torch threads unless OMP_NUM_THREADS is set)",
    )
    c.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="local: this process or --jobs worker processes (default); ray: one Ray task per cell "
        "(needs the ray extra; docs/distributed.md)",
    )
    c.add_argument(
        "--address",
        default=None,
        help="with --backend ray: the cluster to join (auto, host:6379, ray://host:10001); "
        "default: RAY_ADDRESS, else a local Ray instance",
    )
    c.add_argument(
        "--cpus-per-cell",
        type=float,
        default=None,
        help="with --backend ray: CPUs each cell's task declares (its torch threads), default 1",
    )
    c.add_argument(
        "--gpus-per-cell",
        type=float,
        default=0.0,
        help="with --backend ray: GPUs each cell's task declares (default 0)",
    )
    c.add_argument(
        "--rerun-changed",
        action="store_true",
        help="run again (replacing them) the finished cells whose settings changed since they ran (refused otherwise)",
    )
    c.add_argument("-o", "--output-dir", default=None, help="study folder (default studies/<config name>)")
    c.set_defaults(func=cmd_compare)


def cmd_compare(args) -> int:
    from hf_transfer.cli import resolve_config_path
    from hf_transfer.errors import ConfigError
    from hf_transfer.study.compare import plan_study, run_study

    if args.jobs < 1:  # before the config and the data are read
        raise ConfigError(f"--jobs must be at least 1 (cells run at once), got {args.jobs}.")
    if args.backend != "ray" and (args.address or args.cpus_per_cell is not None or args.gpus_per_cell):
        raise ConfigError("--address, --cpus-per-cell and --gpus-per-cell apply to --backend ray only.")
    if args.backend == "ray":
        from hf_transfer.study.ray_backend import check_ray_settings

        check_ray_settings(args.cpus_per_cell, args.gpus_per_cell)
    config = resolve_config_path(args.config)
    study = plan_study(
        config,
        args.overrides,
        strategies=args.strategies,
        sizes=args.sizes,
        seeds=args.seeds,
        per_class=args.per_class,
        baselines=args.baselines,
        sets=args.sets,
        jobs=args.jobs,
        out_dir=args.output_dir,
        metric=args.metric,
        config_name=args.config,
        rerun_changed=args.rerun_changed,
    )
    print(
        f"Study {study.out_dir}: {len(study.cells)} cells "
        f"({len(study.labels) + len(study.baselines)} strategies/baselines x {len(study.sizes)} sizes x "
        f"{len(study.seeds)} seeds), eval split {study.pool['eval_size']} rows.",
        flush=True,
    )
    report = run_study(
        study,
        jobs=args.jobs,
        echo=lambda line: print(line, flush=True),
        backend=args.backend,
        address=args.address,
        cpus_per_cell=args.cpus_per_cell,
        gpus_per_cell=args.gpus_per_cell,
    )
    print()
    print((study.out_dir / "study.md").read_text())
    print(f"Wrote {study.out_dir / 'study.csv'}, study.md, study.json, study.png")
    return 1 if report.get("failed_cells") else 0
