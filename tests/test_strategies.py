"""Transfer strategies on tiny random BERT / ViT / Whisper classifiers built from configs (offline).

The matrix drives a few AdamW steps through the same path the engine takes (`apply`, `lr_scales`,
`build_param_groups`, `on_epoch_start`) with synthetic batches, then checks bit for bit which
parameters moved. End-to-end runs go through `hf_transfer.run.train` on the conftest toy data.
"""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers as T
from safetensors.torch import load_file

from conftest import NEGATIVE, POSITIVE, toy_sentences, write_csv
from hf_transfer.config import load_config
from hf_transfer.engine.optim import build_param_groups
from hf_transfer.errors import ConfigError, ModelError
from hf_transfer.models.layer_groups import layer_groups
from hf_transfer.strategies import available_strategies, build_strategy, strategy_config_class
from hf_transfer.strategies._groups import groups_at_depth
from hf_transfer.strategies.auto import choose_strategy, separability, size_band
from tiny_models import WHISPER_SHORT, bert_config, save_related_bert, vit_config, whisper_config

# ----------------------------------------------------------------------------- tiny models


def bert_model():
    return T.BertForSequenceClassification(bert_config(vocab_size=100, max_position_embeddings=512))


def bert_batch(g):
    return {
        "input_ids": torch.randint(0, 100, (4, 8), generator=g),
        "attention_mask": torch.ones(4, 8, dtype=torch.long),
        "labels": torch.randint(0, 2, (4,), generator=g),
    }


def vit_model():
    return T.ViTForImageClassification(vit_config(num_labels=2))


def vit_batch(g):
    return {"pixel_values": torch.randn(4, 3, 32, 32, generator=g), "labels": torch.randint(0, 2, (4,), generator=g)}


def whisper_model():
    return T.WhisperForAudioClassification(whisper_config(**WHISPER_SHORT, num_labels=2, classifier_proj_size=16))


def whisper_batch(g):
    # The encoder wants 2 * max_source_positions input frames.
    return {"input_features": torch.randn(4, 8, 32, generator=g), "labels": torch.randint(0, 2, (4,), generator=g)}


MODELS = {"bert": (bert_model, bert_batch), "vit": (vit_model, vit_batch), "whisper": (whisper_model, whisper_batch)}

# Group names bottom to top, per model (from layer_groups).
GROUP_NAMES = {
    "bert": ["embeddings", "encoder.layer.0", "encoder.layer.1", "pooler", "head"],
    "vit": ["embeddings", "layers.0", "layers.1", "layernorm", "head"],
    "whisper": ["encoder.stem", "encoder.layers.0", "encoder.layers.1", "encoder.layer_norm", "head"],
}
# Which groups train at epochs 0, 1, 2 (indices into GROUP_NAMES: 0 stem, 1 block0, 2 block1, 3 top, 4 head).
SCHEDULES = {
    "full": [{0, 1, 2, 3, 4}] * 3,
    "scratch": [{0, 1, 2, 3, 4}] * 3,  # random weights come from the task; the strategy trains all
    "freeze": [{4}] * 3,
    "partial": [{2, 3, 4}] * 3,  # default trainable_layers=2 is overridden to 1 below
    "gradual_unfreeze": [{4}, {2, 3, 4}, {1, 2, 3, 4}],
    "lp_ft": [{4}, {0, 1, 2, 3, 4}, {0, 1, 2, 3, 4}],
}
SETTINGS = {"partial": {"trainable_layers": 1}}


def make_strategy(name, **kw):
    cls = strategy_config_class(name)
    return build_strategy(cls(name=name, **{**SETTINGS.get(name, {}), **kw}))


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def flags(model):
    return {n: p.requires_grad for n, p in model.named_parameters()}


def trainable_groups(groups):
    return {i for i, g in enumerate(groups) if any(p.requires_grad for p in g.parameters())}


def drive(model_key, strategy, epochs=3, steps=2, lr=1e-2, seed=0):
    """Engine-like loop: apply, optimizer from lr_scales, on_epoch_start, AdamW steps."""
    build, batch = MODELS[model_key]
    torch.manual_seed(seed)
    model = build()
    before = snapshot(model)
    model_frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    groups = layer_groups(model)
    model = strategy.apply(model, groups)
    optimizer = torch.optim.AdamW(build_param_groups(model, groups, strategy.lr_scales(groups), lr, 0.01), lr=lr)
    g = torch.Generator().manual_seed(seed)
    per_epoch = []
    model.train()
    for epoch in range(epochs):
        strategy.on_epoch_start(epoch, model, groups)
        per_epoch.append(trainable_groups(groups))
        for _ in range(steps):
            b = batch(g)
            labels = b.pop("labels")
            F.cross_entropy(model(**b).logits, labels).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return SimpleNamespace(
        model=model, groups=groups, before=before, optimizer=optimizer, per_epoch=per_epoch, model_frozen=model_frozen
    )


# ----------------------------------------------------------------------------- the matrix


@pytest.mark.parametrize("model_key", list(MODELS))
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_strategy_matrix_changes_exactly_the_trained_groups(name, model_key):
    r = drive(model_key, make_strategy(name))
    assert [g.name for g in r.groups] == GROUP_NAMES[model_key]
    assert r.per_epoch == SCHEDULES[name]
    trained = set().union(*SCHEDULES[name])
    if model_key == "whisper":
        assert r.model_frozen == {"encoder.embed_positions.weight"}
    # Parameters the architecture freezes itself (Whisper's sinusoidal positions) stay frozen
    # under the freezing strategies. `full` uses the base Strategy.apply, which today sets
    # requires_grad on every parameter, so they are not checked there.
    after = dict(r.model.named_parameters())
    for i, grp in enumerate(r.groups):
        for pname in grp.param_names:
            if name in ("full", "scratch") and pname in r.model_frozen:
                continue
            same = torch.equal(after[pname], r.before[pname])
            if i in trained and pname not in r.model_frozen:
                assert not same, f"{name}/{model_key}: {pname} ({grp.name}) should have trained"
            else:
                assert same, f"{name}/{model_key}: {pname} ({grp.name}) should be bit-identical"


@pytest.mark.parametrize("model_key", list(MODELS))
@pytest.mark.parametrize(
    "n, similarity, delegate, expected",
    [
        (99, "low", "partial", [{1, 2, 3, 4}] * 3),  # trainable_layers 2: both blocks, top, head
        (500, "high", "partial", [{2, 3, 4}] * 3),  # trainable_fraction 0.5 of 2 blocks
        (20_000, "low", "full", [{0, 1, 2, 3, 4}] * 3),
    ],
)
def test_strategy_matrix_auto_trains_what_its_choice_trains(n, similarity, delegate, expected, model_key):
    strategy = make_strategy("auto", similarity=similarity)
    strategy.prepare(SimpleNamespace(splits=SimpleNamespace(train=range(n)), cfg=None))
    assert strategy.choice.name == delegate
    r = drive(model_key, strategy)
    assert r.per_epoch == expected
    after = dict(r.model.named_parameters())
    trained = set().union(*expected)
    for i, grp in enumerate(r.groups):
        for pname in grp.param_names:
            if pname in r.model_frozen:
                continue
            assert torch.equal(after[pname], r.before[pname]) != (i in trained), f"auto/{delegate}: {pname}"


PEFT_STRATEGIES = ["lora", "ia3", "adapter", "lora_ffn"]


def test_the_peft_strategies_are_registered():
    """The PEFT matrix runs over the strategies the product ships: a missing one fails here instead
    of shortening the matrix."""
    assert set(PEFT_STRATEGIES) <= set(available_strategies())


@pytest.mark.parametrize("model_key", list(MODELS))
@pytest.mark.parametrize("name", PEFT_STRATEGIES)
def test_strategy_matrix_peft_trains_adapters_and_head_only(name, model_key):
    """Through the engine's path (apply, layer groups of the wrapped model, param groups): every
    pretrained weight stays bit-identical; every adapter weight and the head's trainable copy move."""
    build, batch = MODELS[model_key]
    torch.manual_seed(0)
    model = build()
    before = {id(p): (n, p.detach().clone()) for n, p in model.named_parameters()}
    strategy = make_strategy(name)
    wrapped = strategy.apply(model, layer_groups(model))
    groups = layer_groups(wrapped)
    optimizer = torch.optim.AdamW(build_param_groups(wrapped, groups, strategy.lr_scales(groups), 1e-2, 0.0), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    wrapped.train()
    for epoch in range(3):
        strategy.on_epoch_start(epoch, wrapped, groups)
        for _ in range(2):
            b = batch(g)
            labels = b.pop("labels")
            F.cross_entropy(wrapped(**b).logits, labels).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    new = []
    for pname, p in wrapped.named_parameters():
        if id(p) in before:  # a pretrained (or original head) weight: PEFT keeps the object
            assert torch.equal(p, before[id(p)][1]), f"{name}/{model_key}: {pname} should be bit-identical"
            assert not p.requires_grad, pname
        else:  # adapters and the head's trainable copy (modules_to_save)
            new.append(pname)
            assert p.requires_grad, pname
            assert p.dtype == torch.float32
    moved = [n for n, p in wrapped.named_parameters() if n in new]
    assert any("modules_to_save" in n for n in moved), f"{name}/{model_key}: the head was not trained"
    initial = {n: p.detach().clone() for n, p in build_initial_adapters(name, model_key).items()}
    for pname, p in wrapped.named_parameters():
        if pname in initial:
            assert not torch.equal(p, initial[pname]), f"{name}/{model_key}: {pname} did not train"


def build_initial_adapters(name, model_key):
    """The freshly initialised adapter and head-copy weights (same seed, no training)."""
    build, _ = MODELS[model_key]
    torch.manual_seed(0)
    model = build()
    strategy = make_strategy(name)
    wrapped = strategy.apply(model, layer_groups(model))
    original = {id(p) for p in model.parameters()}
    return {n: p for n, p in wrapped.named_parameters() if id(p) not in original and p.requires_grad}


def test_feature_extraction_trains_nothing_through_the_engine():
    """feature_extraction fits its classifier itself (`fit`): `apply` freezes every parameter."""
    strategy = make_strategy("feature_extraction")
    assert strategy.trains_with_engine is False
    model = bert_model()
    model = strategy.apply(model, layer_groups(model))
    assert not any(p.requires_grad for p in model.parameters())


def expected_scales(decay, head_mult):
    # depth below the top: stem 3, block0 2, block1 1, top 0, head 0 (x head_mult)
    return {0: decay**3, 1: decay**2, 2: decay, 3: 1.0, 4: head_mult}


@pytest.mark.parametrize("model_key", ["bert", "whisper"])
@pytest.mark.parametrize("name", ["full", "freeze", "partial", "gradual_unfreeze", "lp_ft"])
def test_layer_lr_decay_and_head_multiplier_set_each_group_lr(name, model_key):
    base = 1e-3
    r = drive(model_key, make_strategy(name, layer_lr_decay=0.5, head_lr_multiplier=10.0), epochs=1, steps=1, lr=base)
    scales = expected_scales(0.5, 10.0)
    by_name = {n: i for i, n in enumerate(GROUP_NAMES[model_key])}
    seen = set()
    for pg in r.optimizer.param_groups:
        gname = pg["name"].removesuffix(".no_decay")
        assert pg["lr"] == pytest.approx(base * scales[by_name[gname]], rel=1e-12), pg["name"]
        assert pg["lr_scale"] == pytest.approx(scales[by_name[gname]])
        seen.add(gname)
    assert seen == set(GROUP_NAMES[model_key])  # every group (frozen ones too) is in the optimizer
    n_opt = sum(len(pg["params"]) for pg in r.optimizer.param_groups)
    assert n_opt == len(list(r.model.parameters()))


# ----------------------------------------------------------------------------- schedules


def names_at(strategy, epochs, model_key="bert"):
    model = MODELS[model_key][0]()
    groups = layer_groups(model)
    strategy.apply(model, groups)
    out = []
    for e in epochs:
        strategy.on_epoch_start(e, model, groups)
        out.append(
            sorted(GROUP_NAMES[model_key].index(g.name) for g in groups if any(p.requires_grad for p in g.parameters()))
        )
    return out


@pytest.mark.parametrize(
    "settings, expected",
    [
        ({}, [[4], [2, 3, 4], [1, 2, 3, 4], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4]]),
        ({"unfreeze_every": 2}, [[4], [4], [2, 3, 4], [2, 3, 4], [1, 2, 3, 4]]),
        ({"blocks_per_step": 2}, [[4], [1, 2, 3, 4], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4]]),
        ({"milestones": [2, 3]}, [[4], [4], [2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4]]),
    ],
)
def test_gradual_unfreeze_schedule(settings, expected):
    assert names_at(make_strategy("gradual_unfreeze", **settings), range(5)) == expected


def test_lp_ft_schedule_and_partial_fraction():
    assert names_at(make_strategy("lp_ft", probe_epochs=2), range(4)) == [[4], [4], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4]]
    assert names_at(make_strategy("partial", trainable_layers=2), [0]) == [[1, 2, 3, 4]]
    assert names_at(make_strategy("partial", trainable_layers=0), [0]) == [[4]]
    assert names_at(make_strategy("partial", trainable_fraction=0.5), [0]) == [[2, 3, 4]]


@pytest.mark.parametrize(
    "settings",
    [{"trainable_layers": 1}, {"trainable_layers": 2}, {"trainable_fraction": 0.4}, {"trainable_fraction": 1.0}],
)
def test_partial_and_contrastive_count_their_top_blocks_alike(settings):
    from hf_transfer.strategies._groups import top_blocks

    groups = layer_groups(bert_model())  # 2 blocks
    expected = top_blocks(groups, settings.get("trainable_layers", 2), settings.get("trainable_fraction"))
    assert expected == (
        settings["trainable_layers"]
        if "trainable_layers" in settings
        else max(1, int(np.ceil(settings["trainable_fraction"] * 2)))
    )
    for name in ("partial", "contrastive"):
        assert make_strategy(name, **settings).trainable_blocks(groups) == expected
    for name in ("partial", "contrastive"):
        with pytest.raises(ConfigError, match=r"trainable_fraction must be in \(0, 1\]"):
            make_strategy(name, trainable_fraction=1.5)


def test_adapter_says_what_it_is_on_the_model_card():
    from hf_transfer.strategies.base import strategy_class

    for name in ("adapter", "lora_ffn"):
        summary = strategy_class(name).summary()
        assert "LoRA on the feed-forward layers" in summary and "linear parallel adapter" in summary
        assert "bottleneck" not in summary


def test_on_epoch_start_reports_changes_only_and_is_idempotent():
    s = make_strategy("gradual_unfreeze")
    model = bert_model()
    groups = layer_groups(model)
    s.apply(model, groups)
    assert s.on_epoch_start(0, model, groups) is False  # apply already set epoch 0
    assert s.on_epoch_start(1, model, groups) is True
    assert s.on_epoch_start(1, model, groups) is False
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    # Replaying earlier epochs and coming back gives the same set (derived from the epoch alone).
    s.on_epoch_start(0, model, groups)
    assert s.on_epoch_start(1, model, groups) is True
    assert flags == {n: p.requires_grad for n, p in model.named_parameters()}
    assert type(s).changes_trainable_set is True
    assert getattr(make_strategy("partial"), "changes_trainable_set", False) is False


@pytest.mark.parametrize(
    "name, settings",
    [("gradual_unfreeze", {}), ("gradual_unfreeze", {"milestones": [1, 2]}), ("lp_ft", {"probe_epochs": 2})],
)
def test_resume_keeps_the_schedule(name, settings):
    first = make_strategy(name, **settings)
    m1 = bert_model()
    g1 = layer_groups(m1)
    first.apply(m1, g1)
    for e in range(3):
        first.on_epoch_start(e, m1, g1)
    state = json.loads(json.dumps(first.state_dict()))  # as trainer_state.json stores it
    flags1 = {n: p.requires_grad for n, p in m1.named_parameters()}

    # What Trainer.load_checkpoint does: fresh model + apply, load_state_dict, replay epochs 0..2.
    second = make_strategy(name, **settings)
    m2 = bert_model()
    g2 = layer_groups(m2)
    second.apply(m2, g2)
    second.load_state_dict(state)
    for e in range(3):
        second.on_epoch_start(e, m2, g2)
    assert {n: p.requires_grad for n, p in m2.named_parameters()} == flags1
    assert second.state_dict() == state
    # The uninterrupted run and the resumed one agree on the next epoch too.
    assert first.on_epoch_start(3, m1, g1) == second.on_epoch_start(3, m2, g2)
    assert flags(m1) == flags(m2)


def test_groups_at_depth_two_towers_whisper_seq2seq():
    # Whisper seq2seq: encoder stem/blocks/top, decoder stem/blocks/top, tied head (no head group).
    model = T.WhisperForConditionalGeneration(whisper_model().config)
    groups = layer_groups(model)
    names = [g.name for g in groups_at_depth(groups, 3)]
    assert names[0] == "encoder.layers.1" and "decoder.stem" in names and "encoder.stem" not in names
    with pytest.raises(ModelError, match="no separate head group"):
        make_strategy("freeze").apply(model, groups)


def test_partial_rejects_more_layers_than_blocks():
    model = bert_model()
    with pytest.raises(ConfigError, match="only 2 blocks"):
        make_strategy("partial", trainable_layers=3).apply(model, layer_groups(model))
    with pytest.raises(ConfigError, match="trainable_layers"):
        load_config(
            None, ["model.name_or_path=x", "data.train=y", "strategy.name=partial", "strategy.trainable_layers=-1"]
        )
    with pytest.raises(ConfigError, match="milestones"):
        load_config(
            None,
            ["model.name_or_path=x", "data.train=y", "strategy.name=gradual_unfreeze", "strategy.milestones=[3, 1]"],
        )


# ----------------------------------------------------------------------------- auto


@pytest.mark.parametrize(
    "n, sim, name, settings",
    [
        (50, "high", "partial", {"trainable_layers": 2}),
        (99, "low", "partial", {"trainable_layers": 2}),
        (100, "high", "partial", {"trainable_fraction": 0.5}),
        (10_000, "low", "full", {}),
        (10_001, "high", "full", {}),
        (50_000, "low", "full", {}),
    ],
)
def test_auto_table(n, sim, name, settings):
    choice = choose_strategy(n, sim, available=["freeze", "partial", "full"])
    assert (choice.name, choice.settings) == (name, settings)
    assert choice.size_band == size_band(n)
    if n > 10_000 and sim == "low":
        assert "scratch" in choice.reason
    near_perfect = choose_strategy(50, "high", available=["feature_extraction"], score=0.95)
    assert near_perfect.name == "feature_extraction" and "near-perfectly" in near_perfect.reason
    assert choose_strategy(50, "high", available=["freeze"], score=0.95).name == "freeze"
    assert choose_strategy(50, "high", available=["feature_extraction"], score=0.8).name == "partial"


@pytest.mark.parametrize("sim", ["high", "low"])
def test_auto_table_picks_contrastive_for_few_text_examples_per_class(sim):
    both = ["contrastive", "partial", "full", "feature_extraction"]
    assert choose_strategy(64, sim, available=both, pairs=True).name == "contrastive"
    assert choose_strategy(64, sim, available=both, pairs=False).name == "partial"  # data contrastive cannot pair
    assert choose_strategy(64, sim, available=["partial", "full"], pairs=True).name == "partial"  # not installed
    # medium and large: the table (contrastive measured below full and lora at 64 a class)
    assert choose_strategy(256, sim, available=both, pairs=True, classes=4).name != "contrastive"
    assert choose_strategy(20_000, sim, available=both, pairs=True, classes=400).name == "full"
    # Few a class whatever the total: 24 classes x 8 is 192 rows (medium) and still few-shot; x 64 is not.
    assert choose_strategy(192, sim, available=both, pairs=True, classes=24).name == "contrastive"
    assert "8 per class" in choose_strategy(192, sim, available=both, pairs=True, classes=24).reason
    assert choose_strategy(192, sim, available=both, pairs=False, classes=24).name != "contrastive"
    assert choose_strategy(1536, sim, available=both, pairs=True, classes=24).name != "contrastive"
    assert "16 per class" in choose_strategy(64, sim, available=both, pairs=True, classes=4).reason
    assert choose_strategy(64, "high", available=both, pairs=True, score=0.95).name == "feature_extraction"


def test_pairs_fit_needs_text_single_labels_and_two_examples_a_class():
    from hf_transfer.strategies.auto import pairs_fit

    def ctx(recipe, **task):
        return SimpleNamespace(cfg=SimpleNamespace(recipe=recipe), task=SimpleNamespace(**task))

    two_each = np.array([0, 0, 1, 1, 2, 2])
    assert pairs_fit(ctx("text_classification"), two_each)
    assert not pairs_fit(ctx("text_classification"), np.array([0, 0, 1, 1, 2]))  # a class with one example
    assert not pairs_fit(ctx("text_classification"), np.array([0, 0, 0]))  # one class
    assert not pairs_fit(ctx("image_classification"), two_each)  # measured on text only
    assert not pairs_fit(ctx("text_classification", target_kind="multilabel"), two_each)
    assert not pairs_fit(ctx("token_classification", token_level=True), two_each)
    assert not pairs_fit(ctx("text_regression"), np.array([0.5, 0.1, 0.3]))  # numbers
    assert not pairs_fit(SimpleNamespace(cfg=None), two_each)


def test_separability_score():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 40)
    separable = rng.normal(size=(120, 8)) + np.eye(3, 8)[y] * 6
    score, bacc = separability(separable, y)
    assert score > 0.95 and bacc > 0.95
    score, _ = separability(rng.normal(size=(120, 8)), y)
    assert score < 0.3
    assert separability(rng.normal(size=(3, 4)), np.array([0, 0, 1])) == (None, None)


@pytest.fixture(scope="module")
def related_bert_dir(tmp_path_factory):
    """A tiny BERT 'pretrained on a related task': the cue words carry a sentiment direction."""
    return save_related_bert(tmp_path_factory.mktemp("related-bert"), POSITIVE, NEGATIVE)


def auto_prepare(model_dir, train_csv, tmp_path, *extra):
    from hf_transfer.strategies import RunContext
    from hf_transfer.tasks import get_task

    cfg = load_config(
        None,
        [
            f"model.name_or_path={model_dir}",
            f"data.train={train_csv}",
            f"output_dir={tmp_path / 'run'}",
            "strategy.name=auto",
            *extra,
        ],
    )
    task = get_task(cfg)
    task.load_processor()
    splits = task.load_splits()
    strategy = build_strategy(cfg.strategy)
    strategy.prepare(RunContext(cfg, task, splits, tmp_path))
    return strategy, task


def test_auto_measures_high_similarity_on_a_related_checkpoint(related_bert_dir, toy_text_data, tmp_path):
    s, task = auto_prepare(related_bert_dir, toy_text_data["train"], tmp_path)
    assert s.choice.similarity == "high" and s.measurement.score >= 0.9
    expected = "feature_extraction"
    assert s.choice.name == expected and s.choice.size_band == "small"
    model = task.build_model()
    groups = layer_groups(model)
    model = s.apply(model, groups)
    info = s.describe(model)
    assert info["strategy"] == "auto" and info["auto_choice"] == expected
    assert info["auto_similarity"] == "high" and info["auto_train_size"] == s.train_size
    assert info["auto_similarity_score"] == pytest.approx(s.measurement.score, abs=1e-4)
    assert "Measured separability" in info["auto_reason"]
    json.dumps(info)  # metrics.json-ready


def test_auto_measures_low_similarity_on_random_labels(related_bert_dir, tmp_path):
    import random

    rows = toy_sentences(96, seed=1)
    rng = random.Random(0)
    for r in rows:
        r["label"] = rng.choice(["negative", "positive"])
    s, task = auto_prepare(related_bert_dir, write_csv(tmp_path / "random.csv", rows), tmp_path)
    assert s.choice.similarity == "low" and s.measurement.score < 0.5
    # 96 single-label texts, two classes: few examples per class, so contrastive pairs.
    assert s.choice.name == "contrastive"
    # Delegation: the chosen contrastive strategy does the freezing (the blocks only) and the fit.
    model = task.build_model()
    groups = layer_groups(model)
    s.apply(model, groups)
    assert trainable_groups(groups) == {1, 2}
    assert s.lr_scales(groups) == s.delegate.lr_scales(groups)
    assert s.on_epoch_start(1, model, groups) is False
    assert s.changes_trainable_set is False and s.from_scratch is False and s.trains_with_engine is False
    assert s.state_dict()["auto_choice"] == "contrastive"


def test_auto_similarity_override_skips_measuring(tmp_path):
    cfg_cls = strategy_config_class("auto")
    s = build_strategy(cfg_cls(name="auto", similarity="low", layer_lr_decay=0.8))
    ctx = SimpleNamespace(splits=SimpleNamespace(train=range(20_000)), cfg=None)
    s.prepare(ctx)  # no model is built: there is no task in this context
    assert s.choice.name == "full" and "scratch" in s.choice.reason
    assert s.delegate.config.layer_lr_decay == 0.8
    model = bert_model()
    groups = layer_groups(model)
    s.apply(model, groups)
    info = s.describe(model)
    assert info["auto_similarity_score"] is None and info["frozen_parameters"] == 0


# ----------------------------------------------------------------------------- end to end


def _base_weights(tiny_bert_dir):
    return {f"bert.{k}": v for k, v in load_file(str(Path(tiny_bert_dir) / "model.safetensors")).items()}


@pytest.mark.parametrize(
    "name, extra",
    [
        ("freeze", []),
        ("gradual_unfreeze", ["training.load_best_model_at_end=false"]),
        ("feature_extraction", []),  # the fitted linear classifier is written into the head
    ],
)
def test_end_to_end_frozen_backbone_is_saved_unchanged(name, extra, text_overrides, tiny_bert_dir, tmp_path):
    from hf_transfer.run import train

    cfg = load_config(None, text_overrides + [f"strategy.name={name}", "training.save_strategy=no", *extra])
    metrics = train(cfg)
    out = Path(cfg.output_dir)
    saved = load_file(str(out / "model.safetensors"))
    base = _base_weights(tiny_bert_dir)
    # Epochs 0-1: freeze trains the head only; gradual_unfreeze adds layer.1 + pooler in epoch 1.
    moving = ("bert.encoder.layer.1.", "bert.pooler.") if name == "gradual_unfreeze" else ()
    for k, v in base.items():
        if k.startswith(moving):
            assert not torch.equal(saved[k], v), k
        else:
            assert torch.equal(saved[k], v), k
    assert not torch.equal(saved["classifier.weight"], torch.zeros_like(saved["classifier.weight"]))
    written = json.loads((out / "metrics.json").read_text())
    assert written["strategy"] == name and metrics["strategy"] == name
    if name == "feature_extraction":  # nothing in the network trains; the classifier is fitted apart
        assert written["trainable_parameters"] == 0 and written["classifier_parameters"] > 0
    else:
        assert written["trainable_parameters"] > 0 and written["frozen_parameters"] > 0


# ----------------------------------------------------------------------------- DDP


@pytest.mark.parametrize("similarity", ["low", "measure"])
def test_auto_end_to_end(similarity, text_overrides, toy_text_data, related_bert_dir, tmp_path):
    """`auto` through run.train: the choice lands in metrics.json and the delegate does the work."""
    import csv

    from hf_transfer.run import predict, train

    cfg = load_config(
        None,
        text_overrides
        + [
            f"model.name_or_path={related_bert_dir}",
            "strategy.name=auto",
            f"strategy.similarity={similarity}",
            "training.epochs=1",
            "training.save_strategy=no",
        ],
    )
    train(cfg)
    out = Path(cfg.output_dir)
    written = json.loads((out / "metrics.json").read_text())
    assert written["strategy"] == "auto" and written["auto_train_size"] == 96
    if similarity == "low":
        assert written["auto_choice"] == "contrastive" and written["auto_similarity_score"] is None
        moving = ("bert.encoder.",)  # the pairs train the blocks (both of 2), not the pooler
    else:
        assert written["auto_choice"] == "feature_extraction" and written["auto_similarity_score"] >= 0.9
        moving = ()
    # eval_accuracy is what the saved run folder scores on the eval file, text by text.
    rows = list(csv.DictReader(toy_text_data["validation"].read_text().splitlines()))
    predicted = predict(out, [r["text"] for r in rows])
    accuracy = sum(p["label"] == r["label"] for p, r in zip(predicted, rows)) / len(rows)
    assert written["eval_accuracy"] == pytest.approx(accuracy)
    base = {f"bert.{k}": v for k, v in load_file(str(related_bert_dir / "model.safetensors")).items()}
    saved = load_file(str(out / "model.safetensors"))
    for k, v in base.items():
        assert torch.equal(saved[k], v) != k.startswith(moving), k
