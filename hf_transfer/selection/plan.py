"""`hf-transfer plan`: from candidates and a config to a complete, runnable config.

1. The checkpoint: the best candidate by the default metric of `rank` (or `--pick NAME`).
2. The strategy: `auto`'s rule, with `auto`'s own functions (`strategies.auto.separability`
   for the similarity, `choose_strategy` for the data-size x similarity table, `AutoConfig`'s
   threshold), applied to the chosen checkpoint's frozen features of the training data.
3. The budget: enough epochs for about `TARGET_STEPS` optimizer steps (between `MIN_EPOCHS` and
   `MAX_EPOCHS`): 6-10 steps of `full`/`partial` are far too few on small data.
4. The learning rate, by what trains and how large the model is (see `learning_rate`).

The written YAML opens with the command that runs it and a comment block giving the reason for
each choice; it is validated with the config schema before it is written.
"""

from __future__ import annotations

import copy
import datetime
import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import yaml

from hf_transfer.errors import HFTransferError
from hf_transfer.models.families import CONV_FAMILIES
from hf_transfer.selection.rank import RankReport, rank_candidates

#: Optimizer steps the planned budget aims at.
TARGET_STEPS = 100
MIN_EPOCHS, MAX_EPOCHS = 3, 20
#: Auto's similarity sample: the same number of examples `strategy.measure_examples` embeds.
MEASURE_EXAMPLES = 400


@dataclass
class Plan:
    """What `plan` decided, and why."""

    checkpoint: str
    checkpoint_path: str
    strategy: dict[str, Any]
    epochs: float | None
    learning_rate: float | None
    reasons: list[str]
    config: dict[str, Any]
    report: RankReport | None


def learning_rate(strategy: str, family: str, parameters: int) -> float | None:
    """The planned base learning rate (AdamW).

    Transformers: 1e-4 below 40M parameters (the tweets demo's MiniLM-L6 value), 3e-5 up to 150M
    (BERT/MPNet-base range), 1e-5 above; `partial` gets twice that (fewer, higher layers move).
    Convolutional families (EfficientNet, ResNet, ...): ten times the transformer value, as their
    batch-normalised layers are trained with larger steps. `feature_extraction` fits a scikit-learn
    classifier: no learning rate.
    """
    if strategy == "feature_extraction":
        return None
    base = 1e-4 if parameters < 40e6 else 3e-5 if parameters < 150e6 else 1e-5
    if family in CONV_FAMILIES:
        base *= 10
    if strategy == "partial":
        base *= 2
    return float(f"{base:.1g}")


def epochs_for(train_size: int, batch_size: int, accumulation: int) -> int:
    steps_per_epoch = max(1, math.ceil(train_size / (batch_size * accumulation)))
    return int(min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(TARGET_STEPS / steps_per_epoch))))


def make_plan(
    cfg,
    candidates: list[str],
    *,
    pick: str | None = None,
    metric: str | None = None,
    metrics: list[str] | tuple[str, ...] | None = None,
    layers: str = "last",
    max_examples: int = 2000,
    repeats: int = 0,
    seed: int = 0,
    output_dir: str | None = None,
    group_column: str | None = None,
) -> Plan:
    """Rank (unless `pick` is given with a single candidate), choose the strategy and budget, and
    build the planned config as plain data.

    Args:
        cfg: The user's TrainConfig.
        candidates: Candidate names.
        pick: Use this candidate instead of the top-ranked one (it must be among `candidates`, or
            the only one).
        metric: The ranking metric (default: rank's default metric).
        metrics: Metrics to compute (default: rank's defaults).
        layers, max_examples, repeats, seed, group_column: As for `rank`.
        output_dir: `output_dir` of the planned config (default: the config's own, plus `-planned`).
    """
    from hf_transfer.config import config_from_dict, config_to_dict
    from hf_transfer.selection.rank import DEFAULT_METRICS
    from hf_transfer.strategies.auto import AutoConfig, choose_strategy, pairs_fit, separability, train_labels
    from hf_transfer.tasks import get_task

    if pick is not None and pick not in candidates:
        candidates = [*candidates, pick]
    metrics = list(metrics or DEFAULT_METRICS)
    if metric and metric not in metrics:
        metrics.append(metric)
    report = rank_candidates(
        cfg,
        candidates,
        metrics=metrics,
        layers=layers,
        max_examples=max_examples,
        repeats=repeats,
        seed=seed,
        default_metric=metric,
        keep_features=True,
        group_column=group_column,
    )
    m = report.default_metric
    if pick is not None:
        chosen = next(r for r in report.results if r.name == pick)
        if chosen.error:
            raise HFTransferError(f"--pick {pick}: {chosen.error}")
        why_checkpoint = f"picked by the user (--pick); ranked {chosen.ranks[m]} of {len(report.ranked)} by {m}"
    else:
        chosen = report.best()
        runner = report.ranked[1] if len(report.ranked) > 1 else None
        why_checkpoint = (
            f"ranked 1st of {len(report.ranked)} by {m} ({chosen.scores[m]:.4f}"
            + (f"; next `{runner.name}` {runner.scores[m]:.4f}" if runner else "")
            + ")"
        )
        st = report.stability.get(m)
        if st and st["too_close_to_call"]:
            why_checkpoint += f"; too close to call over {report.repeats} subsamples, top-1 kept {st['top1_kept']:.0%}"

    # Similarity as `auto` measures it: held-out linear separability of the frozen features.
    X = report.features[chosen.name][:MEASURE_EXAMPLES]
    y = report.labels[:MEASURE_EXAMPLES]
    auto_defaults = AutoConfig()
    score, bacc = separability(X, y, seed)
    if score is None:
        similarity = "high"
        why_similarity = "could not be measured (a class has fewer than 2 examples); assumed high, as auto does"
    else:
        similarity = "high" if score >= auto_defaults.similarity_threshold else "low"
        why_similarity = (
            f"separability {score:.3f} (balanced accuracy {bacc:.3f} on held-out folds, {len(y)} examples) "
            f"{'>=' if similarity == 'high' else '<'} auto's threshold {auto_defaults.similarity_threshold}"
        )

    task = get_task(cfg)
    task.load_processor()
    train = task.load_splits().train
    train_size = len(train)
    labels = train_labels(train)
    classes = len(np.unique(labels)) if labels is not None and labels.ndim == 1 else None
    pairs = pairs_fit(SimpleNamespace(cfg=cfg, task=task), labels)
    choice = choose_strategy(train_size, similarity, classes=classes, score=score, pairs=pairs)
    strategy = {"name": choice.name, **choice.settings}
    raw = copy.deepcopy(config_to_dict(cfg))
    raw["model"]["name_or_path"] = chosen.path
    raw["output_dir"] = output_dir or f"{str(raw['output_dir']).rstrip('/')}-planned"
    # Keep the user's settings shared by every strategy (layer-wise LR, head multiplier).
    shared = {k: v for k, v in (raw.get("strategy") or {}).items() if k in ("layer_lr_decay", "head_lr_multiplier")}
    raw["strategy"] = {**strategy, **({} if choice.name == "feature_extraction" else shared)}
    t = raw["training"]
    lr = learning_rate(choice.name, chosen.family or "", chosen.parameters or 0)
    reasons = [
        f"checkpoint: `{chosen.name}` -> {chosen.path}: {why_checkpoint}; {chosen.parameters / 1e6:.1f}M parameters, "
        f"family {chosen.family}, licence {chosen.licence}"
        + (f" (WARNING: {chosen.licence_warning})" if chosen.licence_warning else ""),
        f"similarity: {similarity}: {why_similarity}",
        f"strategy: {choice.name} {choice.settings or ''}".rstrip() + f": auto's table, {choice.reason}",
    ]
    if choice.name == "feature_extraction":
        reasons.append("budget: frozen features once + a scikit-learn classifier; no epochs or learning rate apply")
        epochs = t.get("epochs")
    elif choice.name == "contrastive":
        # Its budget is a number of pairs (one pass), not epochs over the examples: left to it.
        reasons.append(
            "budget: contrastive's own: one pass over its pairs (20 per example, 256 to 1,600) at its "
            "default learning rate, then a classifier on the trained features"
        )
        epochs, lr = t.get("epochs"), t.get("learning_rate")
    else:
        epochs = epochs_for(train_size, int(t["batch_size"]), int(t["gradient_accumulation_steps"]))
        steps = epochs * max(1, math.ceil(train_size / (int(t["batch_size"]) * int(t["gradient_accumulation_steps"]))))
        t["epochs"] = epochs
        t["max_steps"] = None
        reasons.append(
            f"budget: {epochs} epochs = {steps} optimizer steps at batch {t['batch_size']} "
            f"(aim {TARGET_STEPS} steps, {MIN_EPOCHS}..{MAX_EPOCHS} epochs)"
        )
        t["learning_rate"] = lr
        reasons.append(
            f"learning rate: {lr:g} ({choice.name}, {chosen.parameters / 1e6:.0f}M parameters, "
            f"{'convolutional' if (chosen.family or '') in CONV_FAMILIES else 'transformer'} family)"
        )
    config_from_dict(copy.deepcopy(raw), "planned config")  # the schema's checks before anything is written
    return Plan(
        checkpoint=chosen.name,
        checkpoint_path=chosen.path,
        strategy=raw["strategy"],
        epochs=epochs,
        learning_rate=lr,
        reasons=reasons,
        config=raw,
        report=report,
    )


def render_yaml(plan: Plan, out_path: str | Path, command: str) -> str:
    """The planned config as YAML text, with its comment block."""
    lines = [
        f"# hf-transfer train {out_path}",
        f"# Planned by `{command}` on {datetime.date.today().isoformat()}.",
        "#",
    ]
    for reason in plan.reasons:
        words, line = reason.split(" "), "#"
        for w in words:
            if len(line) + len(w) + 1 > 100 and line != "#":
                lines.append(line)
                line = "#  "
            line += " " + w
        lines.append(line)
    return "\n".join(lines) + "\n" + yaml.safe_dump(plan.config, sort_keys=False)


def write_plan(plan: Plan, out_path: str | Path, command: str) -> Path:
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_yaml(plan, out, command), encoding="utf-8")
    return out


__all__ = ["Plan", "epochs_for", "learning_rate", "make_plan", "render_yaml", "write_plan"]
