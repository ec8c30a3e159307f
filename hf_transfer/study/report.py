"""What a study writes: `study.csv` (one row per run), `study.md` (mean, sd and 95% interval per
strategy and size; seconds per run; verdicts), `study.json` (the same, plus the verdicts as data)
and `study.png` (the metric against training-set size, one line per strategy, interval bands).

Intervals (`study.stats`): a paired bootstrap over the eval examples and the seeds, from the
per-example predictions every cell records; cells without them fall back to the t-interval over
seeds, cut to the metric's range. With fewer than 3 seeds the verdicts say plainly that the seeds
are too few to judge.

Verdicts, per size:
- **best**: the highest mean (lowest for loss/WER), and the strategies whose paired difference
  from it has an interval that holds 0;
- **transfer vs scratch**: each pretrained strategy minus `scratch`, paired by seed (both trained
  on the seed's subsample) and by eval example, with the 95% interval of the difference; "beyond
  the interval" when the whole interval is above zero;
- **negative transfer**: a pretrained strategy whose mean is worse than scratch's, or a strategy
  that trains the pretrained network whose mean is no better than the frozen baseline's (`logreg`,
  else `feature_extraction`).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from hf_transfer.study.stats import (
    MIN_SEEDS_TO_JUDGE,
    Outcome,
    Summary,
    bootstrap_difference,
    bootstrap_summary,
    can_bootstrap,
    paired_difference,
    summarize,
)

#: Strategies that leave the pretrained network frozen: they are the frozen reference, not judged against it.
FROZEN_STRATEGIES = ("feature_extraction", "freeze", "logreg")
#: Metrics that live in [0, 1]: the plot clips their interval bands there.
BOUNDED_METRICS = ("accuracy", "f1", "precision", "recall")


# ------------------------------------------------------------------------------------------------
# Rows


def collect_rows(study) -> list[dict[str, Any]]:
    """One row per finished cell: label, strategy, kind, size, seed, seconds, chosen, metrics."""
    from hf_transfer.study.compare import cell_result

    rows = []
    for cell in study.cells:
        m = cell_result(cell)
        if m is None:
            continue
        row = {
            "strategy": cell.label,
            "runs": cell.strategy,
            "kind": cell.kind,
            "size": cell.size,
            "per_class": study.per_class,
            "seed": cell.seed,
            "train_size": m.get("train_size"),
            "seconds": m.get("seconds"),
            "chosen": m.get("auto_choice") or "",
            "backend": m.get("backend") or "local",
            "host": m.get("host") or "",
            "run_dir": str(cell.dir),
            "outcome": Outcome.from_metrics(m),
        }
        for k, v in sorted(m.items()):
            if k.startswith(("eval_", "test_")) and isinstance(v, (int, float)) and not isinstance(v, bool):
                row[k] = v
        rows.append(row)
    return rows


def write_csv(rows: list[dict], path: Path) -> None:
    fixed = ["strategy", "runs", "kind", "size", "per_class", "seed", "train_size", "seconds", "chosen"]
    metric_keys = sorted(
        {k for r in rows for k in r if k.startswith(("eval_", "test_"))},
        key=lambda k: (not k.startswith("eval_"), k.count("_") > 1, k),
    )
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fixed + metric_keys + ["backend", "host", "run_dir"], extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)


# ------------------------------------------------------------------------------------------------
# Statistics and verdicts (pure functions of the rows: testable on a constructed table)


def _values(rows, label, size, key) -> dict[int, float]:
    return {
        r["seed"]: float(r[key])
        for r in rows
        if r["strategy"] == label
        and r["size"] == size
        and isinstance(r.get(key), (int, float))
        and not math.isnan(float(r[key]))
    }


def _outcomes(rows, label, size) -> dict[int, Outcome | None]:
    return {r["seed"]: r.get("outcome") for r in rows if r["strategy"] == label and r["size"] == size}


def _bounds(key: str) -> tuple[float, float] | None:
    return (0.0, 1.0) if key.startswith(("eval_", "test_")) and key.split("_", 1)[1] in BOUNDED_METRICS else None


def summaries(rows: list[dict], key: str, bootstrap: bool = True) -> dict[tuple[str, int], Summary]:
    """Per (strategy, size): mean and sd over seeds, with the paired bootstrap interval over eval
    examples and seeds when every seed's cell recorded its predictions (else the t-interval over
    seeds, cut to the metric's range)."""
    out = {}
    metric = key[len("eval_") :] if key.startswith("eval_") else None
    for label, size in {(r["strategy"], r["size"]) for r in rows}:
        vals = _values(rows, label, size, key)
        if not vals:
            continue
        outcomes = _outcomes(rows, label, size)
        if bootstrap and metric and set(outcomes) == set(vals) and can_bootstrap(metric, list(outcomes.values())):
            out[(label, size)] = bootstrap_summary(metric, outcomes)
        else:
            out[(label, size)] = summarize(list(vals.values()), bounds=_bounds(key))
    return out


def _difference(rows, a: str, b: str, size: int, key: str) -> Summary | None:
    """a minus b at `size`, paired by seed: the paired bootstrap over eval examples and seeds when
    both recorded their predictions on the same examples, else the t-interval over seeds."""
    metric = key[len("eval_") :] if key.startswith("eval_") else None
    oa, ob = _outcomes(rows, a, size), _outcomes(rows, b, size)
    common = sorted(set(oa) & set(ob))
    if metric and common and can_bootstrap(metric, [oa[s] for s in common] + [ob[s] for s in common]):
        return bootstrap_difference(metric, {s: oa[s] for s in common}, {s: ob[s] for s in common})
    return paired_difference(_values(rows, a, size, key), _values(rows, b, size, key))


def _kind(rows, label) -> dict:
    r = next(r for r in rows if r["strategy"] == label)
    return {"kind": r.get("kind", "train"), "runs": r.get("runs", label)}


def verdicts(
    rows: list[dict],
    metric: str = "accuracy",
    higher_is_better: bool = True,
    scratch_label: str | None = None,
    frozen_label: str | None = None,
) -> dict[str, Any]:
    """Best per size, transfer against scratch, and negative-transfer alarms.

    Args:
        rows: One dict per run with `strategy` (label), `runs` (strategy name or baseline),
            `kind` (`train`, `logreg`, `setfit`), `size`, `seed`, `chosen` (auto's pick) and
            `eval_<metric>`.
        metric: The metric judged.
        higher_is_better: False for loss, WER, CER.
        scratch_label: The scratch reference (default: the label that runs `scratch`).
        frozen_label: The frozen reference (default: `logreg`, else a `feature_extraction` label).
    """
    key = f"eval_{metric}"
    sign = 1.0 if higher_is_better else -1.0
    labels = list(dict.fromkeys(r["strategy"] for r in rows))
    info = {lab: _kind(rows, lab) for lab in labels}
    if scratch_label is None:
        scratch_label = next((lab for lab in labels if info[lab]["runs"] == "scratch"), None)
    if frozen_label is None:
        frozen_label = (
            "logreg"
            if "logreg" in labels
            else next((lab for lab in labels if info[lab]["runs"] == "feature_extraction"), None)
        )
    stats = summaries(rows, key)
    sizes = sorted({r["size"] for r in rows})

    def pretrained(lab):
        return info[lab]["kind"] == "train" and info[lab]["runs"] != "scratch"

    def trains_backbone(lab, size):
        if not pretrained(lab) or info[lab]["runs"] in FROZEN_STRATEGIES:
            return False
        chosen = {r.get("chosen") for r in rows if r["strategy"] == lab and r["size"] == size} - {"", None}
        return not (chosen and chosen <= set(FROZEN_STRATEGIES))

    out: dict[str, Any] = {
        "metric": metric,
        "higher_is_better": higher_is_better,
        "scratch": scratch_label,
        "frozen_reference": frozen_label,
        "best": [],
        "transfer_vs_scratch": [],
        "negative_transfer": [],
    }
    for size in sizes:
        here = {lab: stats[(lab, size)] for lab in labels if (lab, size) in stats}
        if not here:
            continue
        best = max(here, key=lambda lab: sign * here[lab].mean)
        b = here[best]
        tied = []
        for lab, s in here.items():
            if lab == best:
                continue
            d = _difference(rows, best, lab, size, key)
            if d is not None and d.method == "bootstrap":  # the paired difference's interval holds 0
                if d.low <= 0 <= d.high:
                    tied.append(lab)
            elif b.has_interval and s.has_interval and (s.high >= b.low if higher_is_better else s.low <= b.high):
                tied.append(lab)
        out["best"].append(
            {
                "size": size,
                "strategy": best,
                "mean": b.mean,
                "low": _num(b.low),
                "high": _num(b.high),
                "seeds": b.n,
                "interval": b.method,
                "tied_within_interval": tied,
            }
        )
        scratch = here.get(scratch_label) if scratch_label else None
        for lab in here:
            if not pretrained(lab):
                continue
            entry = {"size": size, "strategy": lab, "mean": here[lab].mean}
            if scratch is not None:
                diff = _difference(rows, lab, scratch_label, size, key)
                gain = _gain(diff, sign)
                entry.update(
                    {
                        "scratch_mean": scratch.mean,
                        **gain,
                        "beats_scratch_beyond_interval": gain["gain_low"] is not None and gain["gain_low"] > 0,
                    }
                )
                out["transfer_vs_scratch"].append(entry)
                if sign * (here[lab].mean - scratch.mean) < 0:
                    out["negative_transfer"].append(
                        {
                            "size": size,
                            "strategy": lab,
                            "against": scratch_label,
                            "reason": "worse than scratch",
                            "mean": here[lab].mean,
                            "reference_mean": scratch.mean,
                            **gain,
                            "beyond_interval": gain["gain_high"] is not None and gain["gain_high"] < 0,
                        }
                    )
            frozen = here.get(frozen_label) if frozen_label else None
            if (
                frozen is not None
                and lab != frozen_label
                and trains_backbone(lab, size)
                and sign * (here[lab].mean - frozen.mean) <= 0
            ):
                diff = _difference(rows, lab, frozen_label, size, key)
                gain = _gain(diff, sign)
                out["negative_transfer"].append(
                    {
                        "size": size,
                        "strategy": lab,
                        "against": frozen_label,
                        "reason": f"no better than the frozen baseline ({frozen_label})",
                        "mean": here[lab].mean,
                        "reference_mean": frozen.mean,
                        **gain,
                        "beyond_interval": gain["gain_high"] is not None and gain["gain_high"] < 0,
                    }
                )
    return out


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def _gain(diff: Summary | None, sign: float) -> dict:
    """The paired difference, oriented so that positive means better."""
    if diff is None:
        return {
            "gain": None,
            "gain_low": None,
            "gain_high": None,
            "paired_seeds": 0,
            "interval": None,
            "too_few_seeds": True,
        }
    lo, hi = (diff.low, diff.high) if sign > 0 else (-diff.high, -diff.low)
    return {
        "gain": sign * diff.mean,
        "gain_low": _num(lo),
        "gain_high": _num(hi),
        "paired_seeds": diff.n,
        "interval": diff.method,
        "eval_examples": diff.examples,
        "too_few_seeds": diff.n < MIN_SEEDS_TO_JUDGE,
    }


# ------------------------------------------------------------------------------------------------
# Writing


def _fmt(x, digits=3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _signed(x, digits=3) -> str:
    return "n/a" if x is None else f"{x:+.{digits}f}"


def _size_name(size: int, per_class: bool) -> str:
    return f"n={size}/class" if per_class else f"n={size}"


def markdown(study, rows: list[dict], verdict: dict, table_stats: dict) -> str:
    metric = study.metric
    labels = [lab for lab in study.labels + study.baselines if any(r["strategy"] == lab for r in rows)]
    sizes = [s for s in study.sizes if any(r["size"] == s for r in rows)]
    pc = study.per_class
    pool = study.pool
    seeds = ",".join(map(str, study.seeds))
    lines = [
        f"# Transfer study: {study.record['config_file']}",
        "",
        f"Command: `{study.command}`",
        "",
        f"Training pool {pool['train_pool']} rows "
        f"({', '.join(f'{k} {v}' for k, v in pool['train_pool_per_class'].items())}); "
        f"eval split {pool['eval_size']} rows, {_eval_split_note(study, rows)}. Sizes are "
        f"{'per class' if pc else 'totals'}, nested and stratified; seeds {seeds}. "
        f"{len(rows)} of {len(study.cells)} runs finished.",
        "",
        f"## {metric}: mean ± sd over seeds [95% interval]",
        "",
    ]
    head = "| strategy | " + " | ".join(_size_name(s, pc) for s in sizes) + " |"
    lines += [head, "|---|" + "---|" * len(sizes)]
    for lab in labels:
        cells = []
        for s in sizes:
            st = table_stats.get((lab, s))
            if st is None:
                cells.append("not run")
            elif st.n == 1:
                interval = f" [{_fmt(st.low)}, {_fmt(st.high)}]" if st.has_interval else ""
                cells.append(f"{_fmt(st.mean)}{interval} (1 seed)")
            else:
                cells.append(f"{_fmt(st.mean)} ± {_fmt(st.sd)} [{_fmt(st.low)}, {_fmt(st.high)}]")
        chosen = sorted({r["chosen"] for r in rows if r["strategy"] == lab and r.get("chosen")})
        name = lab + (f" (chose {', '.join(chosen)})" if chosen else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", _interval_note(table_stats)]
    other = "f1" if metric != "f1" else "accuracy"
    other_stats = summaries(rows, f"eval_{other}", bootstrap=False)
    sec_stats = summaries(rows, "seconds", bootstrap=False)
    lines += [
        "",
        f"## {'macro-F1' if other == 'f1' else other} (mean ± sd) and seconds per run",
        "",
        "| strategy | "
        + " | ".join(
            f"{_size_name(s, pc)} {'macro-F1' if other == 'f1' else other} | {_size_name(s, pc)} s/run" for s in sizes
        )
        + " |",
        "|---|" + "---|---|" * len(sizes),
    ]
    for lab in labels:
        cells = []
        for s in sizes:
            o, t = other_stats.get((lab, s)), sec_stats.get((lab, s))
            cells.append("n/a" if o is None else (f"{_fmt(o.mean)} ± {_fmt(o.sd)}" if o.n > 1 else _fmt(o.mean)))
            cells.append("n/a" if t is None else f"{t.mean:.1f}")
        lines.append(f"| {lab} | " + " | ".join(cells) + " |")
    lines += ["", "## Verdicts", ""]
    lines += verdict_lines(verdict, pc)
    lines += ["", "Plot: `study.png`. Runs: `study.csv`; each cell is a run folder under `cells/`.", ""]
    lines += [backend_line(rows), ""]
    return "\n".join(lines)


def _eval_split_note(study, rows: list[dict]) -> str:
    """Whether every finished cell ran on the data the study was planned on (its `cell.json`
    records the data fingerprint): only then is the eval split the same for every cell."""
    from hf_transfer.study.cell_state import cell_data_fingerprint

    planned = study.pool.get("fingerprint")
    finished = {r.get("run_dir") for r in rows}
    seen = [cell_data_fingerprint(c) for c in study.cells if str(c.dir) in finished]
    if planned and seen and all(f == planned for f in seen):
        return f"the same for every cell (data fingerprint {planned})"
    other = sum(1 for f in seen if f and f != planned)
    unknown = sum(1 for f in seen if not f)
    parts = []
    if other:
        parts.append(
            f"**{other} cell(s) ran on other data** (another training pool or eval split): their results "
            "are not comparable with the rest"
        )
    if unknown or not planned:
        parts.append(
            f"{unknown or len(seen)} cell(s) did not record which data they ran on: that they share "
            "this eval split is not checked"
        )
    return "; ".join(parts) if parts else "no finished cells"


def _interval_note(table_stats: dict) -> str:
    methods = {st.method for st in table_stats.values() if st.has_interval}
    examples = sorted({st.examples for st in table_stats.values() if st.method == "bootstrap"})
    parts = []
    if "bootstrap" in methods:
        parts.append(
            f"Intervals: paired bootstrap over the {'/'.join(map(str, examples))} eval examples and the "
            "seeds (each replicate redraws both, the same draw for every strategy), 95% percentile."
        )
    if "t" in methods:
        parts.append(
            "Cells that did not record per-example predictions: Student-t interval over seeds, cut to "
            "the metric's range."
        )
    return " ".join(parts) or "No intervals: one seed, and no per-example predictions recorded."


def _seeds_line(verdict: dict) -> str | None:
    """Plain words when the seeds are too few to judge how much results move from seed to seed."""
    seeds = [b.get("seeds") for b in verdict["best"] if b.get("seeds")]
    if not seeds or min(seeds) >= MIN_SEEDS_TO_JUDGE:
        return None
    n = min(seeds)
    return (
        f"- **Only {n} seed{'s' if n != 1 else ''}: too few to judge** how much a result moves from one seed "
        "(subsample and initialisation) to the next. The intervals count the eval examples and these seeds "
        f"only; run at least {MIN_SEEDS_TO_JUDGE} seeds (e.g. --seeds 0,1,2,3,4) before relying on a verdict."
    )


def _interval_words(t: dict) -> str:
    if t.get("interval") == "bootstrap":
        return f"paired bootstrap over {t.get('eval_examples')} eval examples and {t['paired_seeds']} seed(s)"
    return f"t-interval over {t['paired_seeds']} paired seeds"


def backend_line(rows: list[dict]) -> str:
    """Which backend ran the finished cells (`study.csv` has it per cell: `backend`, `host`)."""
    counts: dict[str, int] = {}
    hosts: dict[str, set] = {}
    for r in rows:
        b = r.get("backend") or "local"
        counts[b] = counts.get(b, 0) + 1
        hosts.setdefault(b, set()).add(r.get("host") or "?")
    parts = [
        f"{b} {n} cell{'s' if n != 1 else ''} on {len(hosts[b])} host{'s' if len(hosts[b]) != 1 else ''}"
        for b, n in sorted(counts.items())
    ]
    return (
        "Backends: "
        + ("; ".join(parts) if parts else "no cell finished")
        + " (per cell: `backend`, `host` in study.csv)."
    )


def verdict_lines(verdict: dict, per_class: bool) -> list[str]:
    lines = []
    metric = verdict["metric"]
    few = _seeds_line(verdict)
    if few:
        lines.append(few)
    for b in verdict["best"]:
        tied = (
            f"; no clear difference from {', '.join(b['tied_within_interval'])} (the paired interval holds 0)"
            if b["tied_within_interval"]
            else ""
        )
        lines.append(
            f"- {_size_name(b['size'], per_class)}: best is **{b['strategy']}** ({metric} {_fmt(b['mean'])}){tied}."
        )
    if verdict["scratch"] is None:
        lines.append("- No `scratch` cells: transfer against scratch was not measured (add scratch to --strategies).")
    for t in verdict["transfer_vs_scratch"]:
        if t["gain_low"] is None:
            how = "one seed and no per-example predictions: no interval"
        elif t["beats_scratch_beyond_interval"]:
            how = "beats scratch beyond the interval"
        elif t["gain_high"] is not None and t["gain_high"] < 0:
            how = "worse than scratch beyond the interval"
        else:
            how = "no clear difference (the interval holds 0)"
        if t["gain_low"] is not None and t.get("too_few_seeds"):
            how += f" (only {t['paired_seeds']} seed{'s' if t['paired_seeds'] != 1 else ''}: see above)"
        interval = (
            f"[{_signed(t['gain_low'])}, {_signed(t['gain_high'])}] ({_interval_words(t)})"
            if t["gain_low"] is not None
            else f"({t['paired_seeds']} paired seeds)"
        )
        lines.append(
            f"- {_size_name(t['size'], per_class)}: {t['strategy']} − scratch = {_signed(t['gain'])} {interval}: {how}."
        )
    if verdict["negative_transfer"]:
        for n in verdict["negative_transfer"]:
            sure = " (beyond the interval)" if n["beyond_interval"] else " (within the interval: may be noise)"
            lines.append(
                f"- **NEGATIVE TRANSFER** {_size_name(n['size'], per_class)}: {n['strategy']} is {n['reason']}: "
                f"{_fmt(n['mean'])} against {_fmt(n['reference_mean'])}{sure}."
            )
    else:
        checks = []
        if verdict["scratch"]:
            checks.append("every pretrained strategy is above scratch")
        if verdict["frozen_reference"]:
            checks.append(f"every fine-tuning strategy is above the frozen baseline ({verdict['frozen_reference']})")
        lines.append(
            "- No negative-transfer alarm: " + " and ".join(checks) + "."
            if checks
            else "- Negative transfer not checked: no scratch cells and no frozen baseline."
        )
    return lines


def plot(study, table_stats: dict, path: Path) -> Path | None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = [lab for lab in study.labels + study.baselines if any(k[0] == lab for k in table_stats)]
    if not labels:
        return None
    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for lab in labels:
        pts = sorted((s, st) for (l2, s), st in table_stats.items() if l2 == lab)
        xs = [s for s, _ in pts]
        ys = [st.mean for _, st in pts]
        style = "--" if lab in study.baselines else "-"
        (line,) = ax.plot(xs, ys, style, marker="o", label=lab)
        lo = [st.low if st.has_interval else st.mean for _, st in pts]
        hi = [st.high if st.has_interval else st.mean for _, st in pts]
        if study.metric in BOUNDED_METRICS:  # the metric's range (bootstrap intervals stay inside it already)
            lo, hi = [max(v, 0.0) for v in lo], [min(v, 1.0) for v in hi]
        ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)
    if len(study.sizes) > 1 and max(study.sizes) / min(study.sizes) >= 4:
        ax.set_xscale("log", base=2)
    ax.set_xticks(study.sizes)
    ax.set_xticklabels([str(s) for s in study.sizes])
    ax.set_xlabel("training examples per class" if study.per_class else "training examples")
    ax.set_ylabel(f"eval {study.metric}")
    ax.set_title(f"{study.metric} against training-set size (mean over seeds, 95% interval)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def write_report(study) -> dict[str, Any]:
    """Write study.csv, study.md, study.json and study.png from the finished cells."""
    from hf_transfer.study.compare import LOWER_IS_BETTER

    out = study.out_dir
    rows = collect_rows(study)
    write_csv(rows, out / "study.csv")
    higher = study.metric not in LOWER_IS_BETTER
    verdict = (
        verdicts(rows, study.metric, higher)
        if rows
        else {
            "metric": study.metric,
            "best": [],
            "transfer_vs_scratch": [],
            "negative_transfer": [],
            "scratch": None,
            "frozen_reference": None,
        }
    )
    table_stats = summaries(rows, f"eval_{study.metric}")
    (out / "study.md").write_text(markdown(study, rows, verdict, table_stats))
    plot(study, table_stats, out / "study.png")
    report = {
        "command": study.command,
        "metric": study.metric,
        "per_class": study.per_class,
        "pool": study.pool,
        "cells": len(study.cells),
        "finished": len(rows),
        "summary": [
            {
                "strategy": lab,
                "size": size,
                **st.to_dict(),
                "seconds_mean": (summaries(rows, "seconds").get((lab, size)) or Summary(0, math.nan, 0, 0, 0)).mean,
                "chosen": sorted(
                    {r["chosen"] for r in rows if r["strategy"] == lab and r["size"] == size and r["chosen"]}
                ),
            }
            for (lab, size), st in sorted(table_stats.items(), key=lambda kv: (kv[0][1], kv[0][0]))
        ],
        "verdicts": verdict,
    }
    (out / "study.json").write_text(json.dumps(_clean(report), indent=2, default=str))
    return report


def _clean(x):
    """NaN -> None, recursively: study.json stays strict JSON."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x
