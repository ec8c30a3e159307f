"""`auto`'s race: candidate strategies trained and scored on inner folds of the training data.

The eval split is never read. The training split is cut once, stratified and seeded, into an
inner training part and an inner held-out part (`holdout_fraction`, at least one example of each
class on each side). Each candidate is built exactly as the real run would build it (the same
settings, budget rules, head initialisation and engine, or its own `fit` for `feature_extraction`
and `contrastive`), trained on the inner training part and scored (accuracy) on the inner
held-out part, in a scratch folder that is deleted afterwards.

Candidates run in the order of the prior (the data-size x similarity table and the class-count
rule in `auto`), so the race can stop early without losing the prior's pick: after each
candidate, the time spent is compared with the cost limit, `(max_cost - 1)` times the estimated
whole-run time of the prior's first pick (its inner run's seconds divided by the inner training
fraction, or scaled by its work on the whole split against the inner part when known; the
seconds `auto` spent before the race, measuring similarity, count against the limit); the next
candidate runs only if its estimate still fits: the first candidate's
seconds scaled by the two candidates' work (`estimated_work`: examples passed through the model
by each one's budget), or, when that is not known, the most expensive candidate seen.
The winner is the best inner accuracy; a tie (within
`tie`) goes to the candidate earlier in the prior order, which is also the cheaper one when the
prior lists cheap candidates first.

With few examples the held-out part is too small to tell strategies apart (two examples a class
give a standard error of 10 points or more), so `auto` only races when the held-out part has at
least `min_holdout` (128) examples; below that the prior decides alone, and the record says so.
At 64 held-out examples an accuracy near 0.9 has a standard error of 0.04, wider than the gaps
between the strategies (fortunes, 64 a class, seed 0: the race picked `contrastive` on 0.938
against 0.906-0.922, then scored 0.854 on the eval split, below `full` 0.871, `lp_ft` 0.867 and
`lora` 0.879).
"""

from __future__ import annotations

import copy
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


@dataclass
class RaceEntry:
    """One candidate's result: inner held-out accuracy (None when it did not run) and seconds."""

    name: str
    settings: dict[str, Any]
    accuracy: float | None = None
    seconds: float = 0.0
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.name,
            **({"settings": self.settings} if self.settings else {}),
            "inner_accuracy": None if self.accuracy is None else round(self.accuracy, 4),
            "seconds": round(self.seconds, 2),
            **({"note": self.note} if self.note else {}),
        }


@dataclass
class RaceResult:
    """The winner (index into `entries`), every entry, the seconds spent and the limit applied."""

    winner: int
    entries: list[RaceEntry]
    seconds: float
    limit_seconds: float | None
    holdout: int
    inner_train: int
    notes: list[str] = field(default_factory=list)


def inner_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified indices `(inner_train, held_out)`: about `fraction` of each class held out, at
    least one example of each class on each side (a class with one example stays in training)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, held = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        k = int(round(fraction * len(idx)))
        k = min(max(k, 1), len(idx) - 1) if len(idx) > 1 else 0
        held.extend(idx[:k])
        train.extend(idx[k:])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(held, dtype=np.int64))


def run_race(
    candidates: list[tuple[str, dict[str, Any]]],
    score: Callable[[str, dict[str, Any]], float],
    *,
    train_fraction: float,
    max_cost: float,
    tie: float = 0.0,
    clock: Callable[[], float] = time.time,
    work: list[float | None] | None = None,
    whole_work: float | None = None,
    spent_before: float = 0.0,
) -> RaceResult:
    """Score candidates in order within the cost limit (module docstring).

    Args:
        candidates: `(strategy name, settings)` in the prior's order; the first always runs.
        score: Trains one candidate on the inner training part, returns its held-out accuracy.
        train_fraction: Inner training examples / all training examples (for the estimates).
        max_cost: The whole auto run may cost this many times the prior pick's whole run.
        tie: Accuracy differences up to this count as a tie (the earlier candidate wins).
        clock: Seconds (tests pass a fake clock).
        work: Per candidate, its estimated work (`estimated_work`; None: unknown). A candidate is
            estimated at the first one's seconds scaled by their work; an unknown one at the
            most expensive seen.
        whole_work: The first candidate's estimated work on the whole training split: its whole
            run is then estimated at its inner seconds x `whole_work / work[0]` (a budget need
            not grow with the examples: a capped pair budget, a minimum step count), else at its
            inner seconds / `train_fraction`.
        spent_before: Seconds `auto` spent before the race (the similarity measurement): they
            count against the limit.
    """
    entries = [RaceEntry(n, dict(s)) for n, s in candidates]
    work = list(work) if work is not None else [None] * len(entries)
    spent, limit, costliest, first_seconds = float(spent_before), None, 0.0, 0.0
    notes: list[str] = []
    for i, entry in enumerate(entries):
        if limit is not None:
            known = work[i] is not None and work[0]
            estimate = first_seconds * work[i] / work[0] if known else costliest
            if spent + estimate > limit:
                entry.note = (
                    f"not run: the race had spent {spent:.0f} s of its {limit:.0f} s limit and this "
                    f"candidate was estimated at {estimate:.0f} s"
                )
                continue
        t0 = clock()
        entry.accuracy = float(score(entry.name, entry.settings))
        entry.seconds = clock() - t0
        spent += entry.seconds
        costliest = max(costliest, entry.seconds)
        if i == 0:
            first_seconds = entry.seconds
            if whole_work and work[0]:
                whole_run = entry.seconds * whole_work / work[0]
            else:
                whole_run = entry.seconds / max(train_fraction, 1e-6)
            limit = max(0.0, (max_cost - 1.0)) * whole_run
            notes.append(
                f"cost limit {limit:.0f} s = ({max_cost:g} - 1) x {whole_run:.0f} s, the estimated whole "
                f"run of the first candidate ({entry.name})"
                + (f"; {spent_before:.0f} s spent before the race count against it" if spent_before else "")
            )
    ran = [i for i, e in enumerate(entries) if e.accuracy is not None]
    best = max(entries[i].accuracy for i in ran)
    winner = next(i for i in ran if entries[i].accuracy >= best - tie)
    return RaceResult(winner, entries, spent - spent_before, limit, 0, 0, notes)


def estimated_work(strategy, training, examples: int, classes: int) -> float:
    """Examples a candidate passes through the model on `examples` training examples, by the
    budget its run would get (`engine.budget.resolve_budget`: the user's epochs or steps, else the
    strategy's defaults): what the race's cost estimates scale by.

    `contrastive` encodes at most two examples per pair, then its end-to-end pass (when it has
    one) passes every example once per epoch; `feature_extraction` makes one forward
    pass per example, about a third of a training pass. Measured on MiniLM at 64 a class
    (docs/benchmarks/fewshot.md): `contrastive` took 7-9x `partial`'s time and 4-5x `full`'s;
    "costliest seen so far" had let it start a race it then overran by 3x. Precision is not
    counted: where `contrastive` trains in bf16 and the others in fp32 (its default on hardware
    with native bf16), its estimate is about twice its real cost, which errs on the safe side."""
    import math

    from hf_transfer.engine.budget import resolve_budget

    if strategy.name == "feature_extraction":
        return examples / 3.0
    batch = max(1, int(training.batch_size) * int(training.gradient_accumulation_steps))
    per_step = batch
    extra = 0.0
    if strategy.name == "contrastive":
        from hf_transfer.strategies.contrastive import pair_budget

        # The end-to-end pass after the pairs: one training pass per example per epoch.
        epochs = strategy.end_to_end_epochs(examples) if hasattr(strategy, "end_to_end_epochs") else 0.0
        extra = math.ceil(epochs * math.ceil(examples / batch)) * batch
        examples, per_step = pair_budget(strategy.config, examples), 2 * batch
    steps = resolve_budget(training, strategy, math.ceil(examples / batch), num_classes=classes).total_steps
    return float(steps * per_step + extra)


def score_on_inner_split(
    ctx,
    name: str,
    settings: dict[str, Any],
    train_idx: np.ndarray,
    held_idx: np.ndarray,
    make_config: Callable[[str, dict[str, Any]], Any],
) -> float:
    """Train strategy `name` on the inner training rows of `ctx.splits.train` and return its
    accuracy on the inner held-out rows; nothing outside a scratch folder is written."""
    import torch

    from hf_transfer.data.text import EpochSampler
    from hf_transfer.engine.trainer import Trainer
    from hf_transfer.models.layer_groups import layer_groups
    from hf_transfer.strategies.base import RunContext, build_strategy
    from hf_transfer.utils import set_seed_all

    cfg = copy.deepcopy(ctx.cfg)
    tr = cfg.training
    tr.save_strategy, tr.eval_strategy, tr.load_best_model_at_end = "no", "no", False
    tr.report_to, tr.resume_from_checkpoint, tr.early_stopping_patience = [], None, 0
    task = ctx.task
    full = ctx.splits.train
    splits = SimpleNamespace(train=full.select(train_idx.tolist()), eval=full.select(held_idx.tolist()), test=None)
    work = Path(tempfile.mkdtemp(prefix="hf-transfer-auto-race-"))
    inner = RunContext(cfg, task, splits, work)
    try:
        strategy = build_strategy(make_config(name, settings))
        strategy.prepare(inner)
        set_seed_all(tr.seed)
        model = task.build_model(from_scratch=strategy.from_scratch)
        strategy.init_head(inner, model)
        groups = layer_groups(model)
        adapted = strategy.apply(model, groups)
        if adapted is not model:
            groups = layer_groups(adapted)
        if not strategy.trains_with_engine:
            metrics = strategy.fit(inner, adapted, groups)
        else:
            train_ds = task.preprocess(splits.train, train=True)
            eval_ds = task.preprocess(splits.eval, train=False)
            # Batched as the real run batches (`steps.train_with_engine`): grouped by length when
            # `data.group_by_length`, which also sets the pace the cost estimates scale from.
            lengths = task.lengths(train_ds) if cfg.data.group_by_length else None
            sampler = EpochSampler(len(train_ds), tr.seed, lengths, tr.batch_size)
            trainer = Trainer(
                tr,
                task,
                adapted,
                strategy,
                groups,
                train_dataset=train_ds,
                eval_dataset=eval_ds,
                collate_fn=task.collate,
                train_sampler=sampler,
                output_dir=work,
            )
            metrics = trainer.train()
            trainer.accelerator.free_memory()
        return float(metrics["eval_accuracy"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
