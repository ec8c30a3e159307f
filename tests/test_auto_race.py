"""`auto`'s race on inner folds of the training data: the choice logic and what it reads."""

import numpy as np
import pytest

from hf_transfer.strategies.auto_race import inner_split, run_race


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _scorer(clock, table):
    """Each candidate 'trains' for its seconds and scores its accuracy."""

    def score(name, settings):
        seconds, accuracy = table[name]
        clock.t += seconds
        return accuracy

    return score


def test_a_clear_winner_is_chosen_and_the_race_stops_at_its_cost_limit():
    clock = FakeClock()
    table = {"partial": (30, 0.60), "feature_extraction": (3, 0.62), "contrastive": (20, 0.81), "lora": (30, 0.70)}
    r = run_race([(n, {}) for n in table], _scorer(clock, table), train_fraction=0.75, max_cost=3.0, clock=clock)
    assert r.entries[r.winner].name == "contrastive"
    assert [e.accuracy for e in r.entries] == [0.60, 0.62, 0.81, None]
    # limit: (3 - 1) x 30 / 0.75 = 80 s; 30 + 3 + 20 + 30 = 83 > 80, but the check is before each
    # run against the costliest seen (30): 53 + 30 = 83 > 80, so lora does not run.
    assert r.limit_seconds == pytest.approx(80.0)
    assert r.entries[3].accuracy is None and "not run" in r.entries[3].note
    assert r.seconds == pytest.approx(53.0)


def test_known_work_keeps_an_expensive_candidate_out_before_it_runs():
    """With each candidate's work known, a candidate 8x the first's work is not started when it
    cannot fit; cheaper ones after it still run (the old estimate, the costliest seen, let it start)."""
    clock = FakeClock()
    table = {"partial": (30, 0.60), "feature_extraction": (3, 0.62), "contrastive": (240, 0.81), "full": (40, 0.70)}
    order = [(n, {}) for n in table]
    work = [1200.0, 130.0, 9600.0, 1500.0]  # contrastive: 8x partial's work; full 1.25x
    r = run_race(order, _scorer(clock, table), train_fraction=0.75, max_cost=3.0, clock=clock, work=work)
    assert [e.accuracy for e in r.entries] == [0.60, 0.62, None, 0.70]
    assert "estimated at 240 s" in r.entries[2].note and r.entries[r.winner].name == "full"
    assert r.seconds == pytest.approx(73.0) and r.seconds <= r.limit_seconds == pytest.approx(80.0)


def test_the_whole_run_is_estimated_by_work_and_time_before_the_race_counts():
    """A first candidate whose budget barely grows with the data (inner work 3000, whole 3200) is
    estimated at 32 s for the whole run, not 30 / 0.75 = 40 s; the 10 s spent measuring before
    the race count against the limit. Either alone would have let the third candidate start."""
    clock = FakeClock()
    table = {"full": (30, 0.60), "feature_extraction": (3, 0.62), "lora": (30, 0.70)}
    order = [(n, {}) for n in table]
    work = [3000.0, 300.0, 2400.0]
    r = run_race(
        order,
        _scorer(clock, table),
        train_fraction=0.75,
        max_cost=3.0,
        clock=clock,
        work=work,
        whole_work=3200.0,
        spent_before=10.0,
    )
    assert r.limit_seconds == pytest.approx(64.0)  # (3 - 1) x 30 x 3200 / 3000
    assert [e.accuracy for e in r.entries] == [0.60, 0.62, None]  # 10 + 33 + 24 = 67 > 64
    assert "spent 43 s" in r.entries[2].note and "spent before the race" in r.notes[0]
    assert r.seconds == pytest.approx(33.0)  # the race's own seconds
    clock = FakeClock()
    r = run_race(order, _scorer(clock, table), train_fraction=0.75, max_cost=3.0, clock=clock, work=work)
    assert r.limit_seconds == pytest.approx(80.0) and r.entries[2].accuracy == 0.70  # 33 + 24 <= 80


def test_estimated_work_follows_the_run_budget():
    from hf_transfer.config import TrainingConfig
    from hf_transfer.strategies.auto_race import estimated_work
    from hf_transfer.strategies.base import build_strategy, strategy_config_class

    def strategy(name):
        return build_strategy(strategy_config_class(name)(name=name))

    training = TrainingConfig(batch_size=16)
    assert estimated_work(strategy("full"), training, 400, 4) == 75 * 16  # 3 epochs of 25 steps
    assert estimated_work(strategy("full"), training, 192, 4) == 60 * 16  # raised to 50 steps: 5 epochs of 12
    assert estimated_work(strategy("lp_ft"), training, 100, 24) == 98 * 16  # 4 a class: 96, 14 epochs of 7
    # 1,600 pairs (the cap), once, then the end-to-end pass: 2 epochs of 12 steps of 16 examples.
    assert estimated_work(strategy("contrastive"), training, 192, 4) == 100 * 32 + 24 * 16
    assert estimated_work(strategy("contrastive"), training, 64, 4) == 80 * 32  # 1,280 pairs, no pass
    assert estimated_work(strategy("feature_extraction"), training, 192, 4) == 64
    # The user's budget, not the defaults: 5 epochs.
    assert estimated_work(strategy("full"), TrainingConfig(batch_size=16, epochs=5), 400, 4) == 125 * 16


def test_ties_go_to_the_prior_order_and_the_first_candidate_always_runs():
    clock = FakeClock()
    table = {"feature_extraction": (2, 0.70), "full": (40, 0.70)}
    r = run_race([(n, {}) for n in table], _scorer(clock, table), train_fraction=0.75, max_cost=3.0, clock=clock)
    assert r.entries[r.winner].name == "feature_extraction"
    clock = FakeClock()
    r = run_race(
        [("full", {}), ("feature_extraction", {})],
        _scorer(clock, table),
        train_fraction=0.75,
        max_cost=1.0,
        clock=clock,
    )
    assert r.winner == 0 and r.entries[1].accuracy is None  # max_cost 1: no budget beyond the pick itself


def test_inner_split_is_stratified_and_keeps_every_class_on_both_sides():
    labels = np.repeat(np.arange(4), [8, 8, 3, 1])
    tr, held = inner_split(labels, 0.25, seed=0)
    assert len(np.intersect1d(tr, held)) == 0 and len(tr) + len(held) == len(labels)
    assert sorted(np.unique(labels[tr])) == [0, 1, 2, 3]
    assert np.bincount(labels[held], minlength=4).tolist() == [2, 2, 1, 0]
    assert np.array_equal(inner_split(labels, 0.25, seed=0)[1], held)


def test_auto_races_on_training_data_only_and_records_it(text_overrides, tmp_path, monkeypatch, one_torch_thread):
    """The race's scorer sees only rows of the training split; the eval split is read once, by the
    final run's evaluation, never during the choice."""
    import json

    from hf_transfer.config import load_config
    from hf_transfer.run import train
    from hf_transfer.strategies import auto_race

    seen = {}
    real = auto_race.score_on_inner_split

    def spy(ctx, name, settings, train_idx, held_idx, make_config):
        seen.setdefault("rows", set()).update(ctx.splits.train.select(held_idx.tolist())["text"])
        seen.setdefault("names", []).append(name)
        return real(ctx, name, settings, train_idx, held_idx, make_config)

    monkeypatch.setattr(auto_race, "score_on_inner_split", spy)
    from hf_transfer.data import text as text_data

    samplers = []
    real_sampler = text_data.EpochSampler

    class SpySampler(real_sampler):
        def __init__(self, num_samples, seed, lengths=None, *args, **kwargs):
            samplers.append((num_samples, lengths is not None))
            super().__init__(num_samples, seed, lengths, *args, **kwargs)

    monkeypatch.setattr(text_data, "EpochSampler", SpySampler)
    cfg = load_config(
        None,
        text_overrides
        + [
            "strategy.name=auto",
            "strategy.min_holdout=16",
            "strategy.race_candidates=[feature_extraction,freeze]",
            "strategy.max_cost=100",  # every candidate runs (the cost limit is tested with a fake clock above)
            "training.save_strategy=no",
            "training.epochs=1",
        ],
    )
    metrics = train(cfg)
    import pandas as pd

    eval_texts = set(pd.read_csv(cfg.data.eval.name).text)
    train_texts = set(pd.read_csv(cfg.data.train.name).text)
    assert seen["rows"] <= train_texts and not (seen["rows"] & (eval_texts - train_texts))
    assert seen["names"][1:] == [n for n in ("feature_extraction", "freeze") if n != seen["names"][0]]
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["auto_decided_by"].startswith("race on 72 training / 24 held-out")
    ran = [e for e in saved["auto_race"] if e["inner_accuracy"] is not None]
    assert saved["auto_choice"] == max(ran, key=lambda e: e["inner_accuracy"])["strategy"]
    assert saved["auto_race_seconds"] > 0 and metrics["auto_choice"] == saved["auto_choice"]
    # `freeze` trained in the race batched as a real run: grouped by length (data.group_by_length).
    assert (72, True) in samplers


def test_auto_without_enough_held_out_examples_keeps_the_prior(text_overrides, tmp_path, one_torch_thread):
    from hf_transfer.config import load_config
    from hf_transfer.run import train

    cfg = load_config(None, text_overrides + ["strategy.name=auto", "training.save_strategy=no", "training.epochs=1"])
    metrics = train(cfg)
    assert "fewer than strategy.min_holdout=128" in metrics["auto_decided_by"] and "auto_race" not in metrics


def test_auto_gives_the_race_each_candidates_work():
    from types import SimpleNamespace

    from hf_transfer.config import TrainingConfig
    from hf_transfer.strategies.auto import AutoChoice
    from hf_transfer.strategies.base import build_strategy, strategy_config_class

    auto = build_strategy(strategy_config_class("auto")(name="auto"))
    auto.choice = AutoChoice("partial", {"trainable_fraction": 0.5}, "medium", "high", "")
    order = [("partial", {"trainable_fraction": 0.5}), ("feature_extraction", {}), ("contrastive", {}), ("full", {})]
    ctx = SimpleNamespace(cfg=SimpleNamespace(training=TrainingConfig(batch_size=16)))
    # contrastive: 1,600 pairs, then its end-to-end pass (2 epochs of 25 steps of 16)
    assert auto._race_work(ctx, order, 400, 4) == [1200.0, 400 / 3, 3200.0 + 800.0, 1200.0]
    ctx.cfg.training = TrainingConfig(batch_size=16, max_steps=10)  # the user's budget counts (not in the pass)
    assert auto._race_work(ctx, order, 400, 4) == [160.0, 400 / 3, 320.0 + 800.0, 160.0]
    assert auto._race_work(SimpleNamespace(cfg=None), order, 400, 4) == [None] * 4
