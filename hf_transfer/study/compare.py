"""`hf-transfer compare`: strategies x training-set sizes x seeds on the user's own data.

    hf-transfer compare my_run.yaml --strategies full,feature_extraction,scratch --sizes 8,64 \
        --per-class --seeds 0,1,2 --baselines logreg --jobs 2 -o studies/mine

Planning, all before any run: the training pool (train rows after `data.filter` and the eval
carve-out, carved with the config's data seed, so the eval split is the same for every cell) is
loaded once; for each seed, nested stratified subsamples of every size are drawn
(`study.sampling`) and written into each cell's config as `data.train_indices`. A cell is one
(strategy or baseline, size, seed): its own run folder under `cells/`. A finished cell (its
`metrics.json` present, its config the planned one) is skipped on the next invocation; an
interrupted one is rerun, from its latest checkpoint when it saved one. The folder's `study.yaml`
records the command and the config; a different config is refused.

Per-strategy settings: `--set LABEL:key=value` applies to the cells of one entry of
`--strategies`; an entry that is not a strategy name is a variant when `--set` gives it a
`strategy.name` (`--strategies full,full+llrd --set full+llrd:strategy.name=full
--set full+llrd:strategy.layer_lr_decay=0.8`).

The work is split by concern: `study.planning` (parsing, checks, `plan_study`), `study.cell_state`
(`Cell`, `Study`, a cell's status and result on disk) and `study.runner` (`run_study`, worker
pool, progress). This module keeps every name importable from `hf_transfer.study.compare`.
"""

from hf_transfer.study.cell_state import (  # noqa: F401
    STUDY_FILE,
    Cell,
    Study,
    cell_result,
    cell_status,
    config_differences,
)
from hf_transfer.study.planning import (  # noqa: F401
    CLASSIFICATION_METRICS,
    LOWER_IS_BETTER,
    check_baselines,
    check_strategy_labels,
    format_command,
    parse_int_list,
    parse_name_list,
    parse_sets,
    plan_study,
)
from hf_transfer.study.runner import run_study  # noqa: F401

__all__ = [
    "CLASSIFICATION_METRICS",
    "LOWER_IS_BETTER",
    "STUDY_FILE",
    "Cell",
    "Study",
    "cell_result",
    "cell_status",
    "check_baselines",
    "check_strategy_labels",
    "config_differences",
    "format_command",
    "parse_int_list",
    "parse_name_list",
    "parse_sets",
    "plan_study",
    "run_study",
]
