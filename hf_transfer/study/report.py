"""What a study writes: `study.csv` (one row per run), `study.md` (mean, sd and 95% interval per
strategy and size; seconds per run; verdicts), `study.json` (the same, plus the verdicts as data)
and `study.png` (the metric against training-set size, one line per strategy, interval bands).

Verdicts, per size:
- **best**: the highest mean (lowest for loss/WER), and the strategies whose interval overlaps it;
- **transfer vs scratch**: each pretrained strategy minus `scratch`, paired by seed (both trained
  on the seed's subsample), with the 95% t-interval of the difference; "beyond the interval" when
  the whole interval is above zero;
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

from hf_transfer.study.stats import Summary, paired_difference, summarize

#: Strategies that leave the pretrained network frozen: they are the frozen reference, not judged against it.
FROZEN_STRATEGIES = ("feature_extraction", "freeze", "logreg")
BASELINE_KINDS = ("logreg", "setfit")
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
        row = {"strategy": cell.label, "runs": cell.strategy, "kind": cell.kind, "size": cell.size,
               "per_class": study.per_class, "seed": cell.seed, "train_size": m.get("train_size"),
               "seconds": m.get("seconds"), "chosen": m.get("auto_choice") or "", "backend": m.get("backend") or "local",
               "host": m.get("host") or "", "run_dir": str(cell.dir)}
        for k, v in sorted(m.items()):
            if k.startswith(("eval_", "test_")) and isinstance(v, (int, float)) and not isinstance(v, bool):
                row[k] = v
        rows.append(row)
    return rows


def write_csv(rows: list[dict], path: Path) -> None:
    fixed = ["strategy", "runs", "kind", "size", "per_class", "seed", "train_size", "seconds", "chosen"]
    metric_keys = sorted({k for r in rows for k in r if k.startswith(("eval_", "test_"))},
                         key=lambda k: (not k.startswith("eval_"), k.count("_") > 1, k))
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fixed + metric_keys + ["backend", "host", "run_dir"], extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)


# ------------------------------------------------------------------------------------------------
# Statistics and verdicts (pure functions of the rows: testable on a constructed table)


def _values(rows, label, size, key) -> dict[int, float]:
    return {r["seed"]: float(r[key]) for r in rows
            if r["strategy"] == label and r["size"] == size and isinstance(r.get(key), (int, float))
            and not math.isnan(float(r[key]))}


def summaries(rows: list[dict], key: str) -> dict[tuple[str, int], Summary]:
    out = {}
    for label, size in {(r["strategy"], r["size"]) for r in rows}:
        vals = _values(rows, label, size, key)
        if vals:
            out[(label, size)] = summarize(list(vals.values()))
    return out


def _kind(rows, label) -> dict:
    r = next(r for r in rows if r["strategy"] == label)
    return {"kind": r.get("kind", "train"), "runs": r.get("runs", label)}


def verdicts(rows: list[dict], metric: str = "accuracy", higher_is_better: bool = True,
             scratch_label: str | None = None, frozen_label: str | None = None) -> dict[str, Any]:
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
        frozen_label = ("logreg" if "logreg" in labels else
                        next((lab for lab in labels if info[lab]["runs"] == "feature_extraction"), None))
    stats = summaries(rows, key)
    sizes = sorted({r["size"] for r in rows})

    def pretrained(lab):
        return info[lab]["kind"] == "train" and info[lab]["runs"] != "scratch"

    def trains_backbone(lab, size):
        if not pretrained(lab) or info[lab]["runs"] in FROZEN_STRATEGIES:
            return False
        chosen = {r.get("chosen") for r in rows if r["strategy"] == lab and r["size"] == size} - {"", None}
        return not (chosen and chosen <= set(FROZEN_STRATEGIES))

    out: dict[str, Any] = {"metric": metric, "higher_is_better": higher_is_better, "scratch": scratch_label,
                           "frozen_reference": frozen_label, "best": [], "transfer_vs_scratch": [],
                           "negative_transfer": []}
    for size in sizes:
        here = {lab: stats[(lab, size)] for lab in labels if (lab, size) in stats}
        if not here:
            continue
        best = max(here, key=lambda lab: sign * here[lab].mean)
        b = here[best]
        tied = [lab for lab, s in here.items() if lab != best and b.has_interval and s.has_interval
                and (s.high >= b.low if higher_is_better else s.low <= b.high)]
        out["best"].append({"size": size, "strategy": best, "mean": b.mean, "low": _num(b.low),
                            "high": _num(b.high), "tied_within_interval": tied})
        scratch = here.get(scratch_label) if scratch_label else None
        for lab in here:
            if not pretrained(lab):
                continue
            entry = {"size": size, "strategy": lab, "mean": here[lab].mean}
            if scratch is not None:
                diff = paired_difference(_values(rows, lab, size, key), _values(rows, scratch_label, size, key))
                gain = _gain(diff, sign)
                entry.update({"scratch_mean": scratch.mean, **gain,
                              "beats_scratch_beyond_interval": gain["gain_low"] is not None and gain["gain_low"] > 0})
                out["transfer_vs_scratch"].append(entry)
                if sign * (here[lab].mean - scratch.mean) < 0:
                    out["negative_transfer"].append({
                        "size": size, "strategy": lab, "against": scratch_label, "reason": "worse than scratch",
                        "mean": here[lab].mean, "reference_mean": scratch.mean, **gain,
                        "beyond_interval": gain["gain_high"] is not None and gain["gain_high"] < 0})
            frozen = here.get(frozen_label) if frozen_label else None
            if frozen is not None and lab != frozen_label and trains_backbone(lab, size) \
                    and sign * (here[lab].mean - frozen.mean) <= 0:
                diff = paired_difference(_values(rows, lab, size, key), _values(rows, frozen_label, size, key))
                gain = _gain(diff, sign)
                out["negative_transfer"].append({
                    "size": size, "strategy": lab, "against": frozen_label,
                    "reason": f"no better than the frozen baseline ({frozen_label})",
                    "mean": here[lab].mean, "reference_mean": frozen.mean, **gain,
                    "beyond_interval": gain["gain_high"] is not None and gain["gain_high"] < 0})
    return out


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def _gain(diff: Summary | None, sign: float) -> dict:
    """The paired difference, oriented so that positive means better."""
    if diff is None:
        return {"gain": None, "gain_low": None, "gain_high": None, "paired_seeds": 0}
    lo, hi = (diff.low, diff.high) if sign > 0 else (-diff.high, -diff.low)
    return {"gain": sign * diff.mean, "gain_low": _num(lo), "gain_high": _num(hi), "paired_seeds": diff.n}


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
    lines = [f"# Transfer study: {study.record['config_file']}", "",
             f"Command: `{study.command}`", "",
             f"Training pool {pool['train_pool']} rows ({', '.join(f'{k} {v}' for k, v in pool['train_pool_per_class'].items())}); "
             f"eval split {pool['eval_size']} rows, the same for every cell. Sizes are "
             f"{'per class' if pc else 'totals'}, nested and stratified; seeds {seeds}. "
             f"{len(rows)} of {len(study.cells)} runs finished.", "",
             f"## {metric}: mean ± sd [95% t-interval] over seeds", ""]
    head = "| strategy | " + " | ".join(_size_name(s, pc) for s in sizes) + " |"
    lines += [head, "|---|" + "---|" * len(sizes)]
    for lab in labels:
        cells = []
        for s in sizes:
            st = table_stats.get((lab, s))
            if st is None:
                cells.append("not run")
            elif st.n == 1:
                cells.append(f"{_fmt(st.mean)} (1 seed)")
            else:
                cells.append(f"{_fmt(st.mean)} ± {_fmt(st.sd)} [{_fmt(st.low)}, {_fmt(st.high)}]")
        chosen = sorted({r["chosen"] for r in rows if r["strategy"] == lab and r.get("chosen")})
        name = lab + (f" (chose {', '.join(chosen)})" if chosen else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    other = "f1" if metric != "f1" else "accuracy"
    other_stats = summaries(rows, f"eval_{other}")
    sec_stats = summaries(rows, "seconds")
    lines += ["", f"## {'macro-F1' if other == 'f1' else other} (mean ± sd) and seconds per run", "",
              "| strategy | " + " | ".join(f"{_size_name(s, pc)} {'macro-F1' if other == 'f1' else other} | "
                                           f"{_size_name(s, pc)} s/run" for s in sizes) + " |",
              "|---|" + "---|---|" * len(sizes)]
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


def backend_line(rows: list[dict]) -> str:
    """Which backend ran the finished cells (`study.csv` has it per cell: `backend`, `host`)."""
    counts: dict[str, int] = {}
    hosts: dict[str, set] = {}
    for r in rows:
        b = r.get("backend") or "local"
        counts[b] = counts.get(b, 0) + 1
        hosts.setdefault(b, set()).add(r.get("host") or "?")
    parts = [f"{b} {n} cell{'s' if n != 1 else ''} on {len(hosts[b])} host{'s' if len(hosts[b]) != 1 else ''}"
             for b, n in sorted(counts.items())]
    return "Backends: " + ("; ".join(parts) if parts else "no cell finished") + " (per cell: `backend`, `host` in study.csv)."


def verdict_lines(verdict: dict, per_class: bool) -> list[str]:
    lines = []
    metric = verdict["metric"]
    for b in verdict["best"]:
        tied = f"; tied within the interval: {', '.join(b['tied_within_interval'])}" if b["tied_within_interval"] else ""
        lines.append(f"- {_size_name(b['size'], per_class)}: best is **{b['strategy']}** ({metric} {_fmt(b['mean'])}){tied}.")
    if verdict["scratch"] is None:
        lines.append("- No `scratch` cells: transfer against scratch was not measured (add scratch to --strategies).")
    for t in verdict["transfer_vs_scratch"]:
        if t["gain_low"] is None:
            how = "one seed: no interval"
        elif t["beats_scratch_beyond_interval"]:
            how = "beats scratch beyond the interval"
        else:
            how = "not beyond the interval"
        lines.append(f"- {_size_name(t['size'], per_class)}: {t['strategy']} − scratch = {_signed(t['gain'])} "
                     f"[{_signed(t['gain_low'])}, {_signed(t['gain_high'])}] ({t['paired_seeds']} paired seeds): {how}.")
    if verdict["negative_transfer"]:
        for n in verdict["negative_transfer"]:
            sure = " (beyond the interval)" if n["beyond_interval"] else " (within the interval: may be noise)"
            lines.append(f"- **NEGATIVE TRANSFER** {_size_name(n['size'], per_class)}: {n['strategy']} is {n['reason']}: "
                         f"{_fmt(n['mean'])} against {_fmt(n['reference_mean'])}{sure}.")
    else:
        checks = []
        if verdict["scratch"]:
            checks.append("every pretrained strategy is above scratch")
        if verdict["frozen_reference"]:
            checks.append(f"every fine-tuning strategy is above the frozen baseline ({verdict['frozen_reference']})")
        lines.append("- No negative-transfer alarm: " + " and ".join(checks) + "." if checks else
                     "- Negative transfer not checked: no scratch cells and no frozen baseline.")
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
        if study.metric in BOUNDED_METRICS:  # few seeds give t-intervals past 0 and 1: draw what can happen
            lo, hi = [max(v, 0.0) for v in lo], [min(v, 1.0) for v in hi]
        ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)
    if len(study.sizes) > 1 and max(study.sizes) / min(study.sizes) >= 4:
        ax.set_xscale("log", base=2)
    ax.set_xticks(study.sizes)
    ax.set_xticklabels([str(s) for s in study.sizes])
    ax.set_xlabel("training examples per class" if study.per_class else "training examples")
    ax.set_ylabel(f"eval {study.metric}")
    ax.set_title(f"{study.metric} against training-set size (mean, 95% interval over seeds)", fontsize=10)
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
    verdict = verdicts(rows, study.metric, higher) if rows else {"metric": study.metric, "best": [],
                                                                 "transfer_vs_scratch": [], "negative_transfer": [],
                                                                 "scratch": None, "frozen_reference": None}
    table_stats = summaries(rows, f"eval_{study.metric}")
    (out / "study.md").write_text(markdown(study, rows, verdict, table_stats))
    plot(study, table_stats, out / "study.png")
    report = {
        "command": study.command, "metric": study.metric, "per_class": study.per_class,
        "pool": study.pool, "cells": len(study.cells), "finished": len(rows),
        "summary": [{"strategy": lab, "size": size, **st.to_dict(),
                     "seconds_mean": (summaries(rows, "seconds").get((lab, size)) or Summary(0, math.nan, 0, 0, 0)).mean,
                     "chosen": sorted({r["chosen"] for r in rows if r["strategy"] == lab and r["size"] == size and r["chosen"]})}
                    for (lab, size), st in sorted(table_stats.items(), key=lambda kv: (kv[0][1], kv[0][0]))],
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
