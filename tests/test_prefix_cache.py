"""Frozen-prefix caching: the top trained on cached activations is the uncached model with its
frozen part in eval mode, for every supported encoder, and the engine trains it unchanged."""

import pytest
import torch
import transformers as T
from safetensors.torch import load_file

from hf_transfer.config import load_config
from hf_transfer.data.text import EpochSampler
from hf_transfer.models.layer_groups import layer_groups
from hf_transfer.strategies import build_strategy
from hf_transfer.strategies import prefix_cache as pc
from tiny_models import bert_config, vit_config

TEXT = dict(
    hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=37, vocab_size=100, num_labels=3
)
VISION = {**TEXT, "vocab_size": None, "image_size": 32, "patch_size": 8}
ARCHS = {
    "bert": lambda: T.BertForSequenceClassification(bert_config(**TEXT, max_position_embeddings=512)),
    "roberta": lambda: T.RobertaForSequenceClassification(T.RobertaConfig(**TEXT, max_position_embeddings=40)),
    "electra": lambda: T.ElectraForSequenceClassification(T.ElectraConfig(**TEXT, embedding_size=16)),
    "distilbert": lambda: T.DistilBertForSequenceClassification(
        T.DistilBertConfig(dim=32, n_layers=3, n_heads=2, hidden_dim=37, vocab_size=100, num_labels=3)
    ),
    "vit": lambda: T.ViTForImageClassification(vit_config(**VISION)),
    "deit": lambda: T.DeiTForImageClassification(T.DeiTConfig(**VISION)),
}


def _freeze_below(model, frozen_blocks):
    """Freeze the stem and the first `frozen_blocks` blocks; everything above trains."""
    groups = layer_groups(model)
    block_idx = [i for i, g in enumerate(groups) if g.kind == "block"]
    cut = block_idx[frozen_blocks] if frozen_blocks < len(block_idx) else block_idx[-1] + 1
    for i, g in enumerate(groups):
        g.requires_grad_(i >= cut)
    return groups


def _examples(model, n=6):
    torch.manual_seed(1)
    if getattr(model, "main_input_name", "input_ids") != "input_ids":
        px = torch.randn(n, 3, 32, 32)
        return [{"pixel_values": px[i], "labels": i % 3} for i in range(n)]
    rows = []
    for i in range(n):
        length = 3 + (5 * i) % 7  # assorted lengths: batches need padding
        rows.append({"input_ids": torch.randint(5, 100, (length,)), "labels": i % 3})
    return rows


def _collate(features):
    if "pixel_values" in features[0]:
        return {
            "pixel_values": torch.stack([f["pixel_values"] for f in features]),
            "labels": torch.tensor([f["labels"] for f in features]),
        }
    longest = max(len(f["input_ids"]) for f in features)
    ids = torch.zeros(len(features), longest, dtype=torch.long)
    mask = torch.zeros(len(features), longest, dtype=torch.long)
    for i, f in enumerate(features):
        ids[i, : len(f["input_ids"])] = f["input_ids"]
        mask[i, : len(f["input_ids"])] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([f["labels"] for f in features])}


def _inputs(batch):
    return {k: v for k, v in batch.items() if k != "labels"}


@pytest.mark.parametrize("frozen_blocks", [0, 1, 3])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_top_on_cached_prefix_gives_the_models_logits(arch, frozen_blocks):
    torch.manual_seed(0)
    model = ARCHS[arch]().eval()
    groups = _freeze_below(model, frozen_blocks)
    first = pc.first_trainable_group(groups)
    assert pc.prefix_cache_blocker(model, groups, first) is None
    plan = pc.plan_prefix(model, groups, first)
    assert plan.frozen_blocks == frozen_blocks
    rows = _examples(model)
    cached = pc.build_prefix_cache(model, plan, rows, _collate, batch_size=4)  # other batches than below
    wrapped = pc.PrefixCachedModel(model, plan).eval()
    with torch.no_grad():
        expected = model(**_inputs(_collate(rows))).logits
        got = wrapped(**_inputs(pc.collate_prefix([cached[i] for i in range(len(rows))]))).logits
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        # Raw inputs still run the whole model (a test split, predict).
        torch.testing.assert_close(wrapped(**_inputs(_collate(rows))).logits, expected)
    assert {n for n, _ in wrapped.named_parameters()} == {f"model.{n}" for n, _ in model.named_parameters()}


def test_setup_prefix_cache_caches_what_it_can_and_otherwise_says_why_and_reads_nothing(caplog):
    import logging
    from types import SimpleNamespace

    torch.manual_seed(0)
    model = ARCHS["bert"]().eval()
    groups = _freeze_below(model, 2)
    rows = _examples(model)
    task = SimpleNamespace(collate=_collate, model_inputs=_inputs)
    asked = []

    def datasets():
        asked.append(True)
        return [rows, None]

    with caplog.at_level(logging.INFO, logger=pc.logger.name):
        off = pc.setup_prefix_cache(model, groups, task, datasets, augmentation=True, log_name="x: ")
        assert off is None and not asked and "x: frozen-prefix cache off: the training data is augmented" in caplog.text
        assert pc.setup_prefix_cache(model, groups, task, datasets, changes_trainable_set=True) is None and not asked
        cache = pc.setup_prefix_cache(model, groups, task, datasets, batch_size=4, device="cpu")
    assert asked == [True] and cache.plan.frozen_blocks == 2 and cache.datasets[1] is None
    assert cache.collate is pc.collate_prefix and cache.examples == len(rows)
    plan = pc.plan_prefix(model, groups, pc.first_trainable_group(groups))
    direct = pc.build_prefix_cache(model, plan, rows, _collate, batch_size=4)
    for i in range(len(rows)):
        assert torch.equal(cache.datasets[0][i][pc.HIDDEN_KEY], direct[i][pc.HIDDEN_KEY])


def test_training_on_the_cache_equals_training_with_the_frozen_part_in_eval_mode():
    def train_steps(cached: bool):
        torch.manual_seed(0)
        model = ARCHS["bert"]()  # dropout 0.1 everywhere
        groups = _freeze_below(model, 1)
        rows = _examples(model, 8)
        if cached:
            plan = pc.plan_prefix(model, groups, pc.first_trainable_group(groups))
            data = pc.build_prefix_cache(model, plan, rows, _collate)
            model_to_train, collate = pc.PrefixCachedModel(model, plan), pc.collate_prefix
        else:
            pc.hold_eval_mode([m for g in groups[: pc.first_trainable_group(groups)] for m in g.modules])
            data, model_to_train, collate = rows, model, _collate
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        model_to_train.train()
        torch.manual_seed(123)  # the same dropout masks above the cut in both
        for start in (0, 4, 0, 4):
            batch = collate([data[i] for i in range(start, start + 4)])
            loss = torch.nn.functional.cross_entropy(model_to_train(**_inputs(batch)).logits, batch["labels"])
            opt.zero_grad()
            loss.backward()
            opt.step()
        return {n: p.detach().clone() for n, p in model.named_parameters()}

    a, b = train_steps(cached=False), train_steps(cached=True)
    assert not torch.equal(a["classifier.weight"], ARCHS["bert"]().classifier.weight)
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=1e-5)


def test_what_blocks_caching():
    torch.manual_seed(0)
    model = ARCHS["bert"]()
    groups = _freeze_below(model, 1)
    first = pc.first_trainable_group(groups)
    assert pc.prefix_cache_blocker(model, groups, first) is None
    assert "augmented" in pc.prefix_cache_blocker(model, groups, first, augmentation=True)
    assert "nothing below the cut" in pc.prefix_cache_blocker(model, groups, 0)
    groups[1].requires_grad_(False)
    groups[0].parameters()[0].requires_grad_(True)  # a trainable embedding below the cut
    assert "below the cut is trainable" in pc.prefix_cache_blocker(model, groups, first)
    audio = T.Wav2Vec2ForSequenceClassification(
        T.Wav2Vec2Config(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=37,
            conv_dim=(8, 8),
            conv_stride=(5, 2),
            conv_kernel=(10, 3),
            num_conv_pos_embeddings=8,
            num_conv_pos_embedding_groups=2,
        )
    )
    assert "wav2vec2" in pc.prefix_cache_blocker(audio, layer_groups(audio), 1)


def _engine_run(cfg_overrides, tmp_path, name, cached):
    """`partial` (top block trains) through the engine, with or without the prefix cache."""
    from hf_transfer.engine.trainer import Trainer
    from hf_transfer.models.heads import set_seed_all
    from hf_transfer.tasks import get_task

    cfg = load_config(
        None,
        [o for o in cfg_overrides if not o.startswith("output_dir=")]
        + [
            f"output_dir={tmp_path / name}",
            "strategy.name=partial",
            "strategy.trainable_layers=1",
            "training.epochs=1",
            "training.save_strategy=no",
            "data.group_by_length=false",
        ],
    )
    set_seed_all(cfg.training.seed)
    task = get_task(cfg)
    task.load_processor()
    splits = task.load_splits()
    strategy = build_strategy(cfg.strategy)
    set_seed_all(cfg.training.seed)
    model = task.build_model()
    model = strategy.apply(model, layer_groups(model))
    groups = layer_groups(model)
    train_ds, eval_ds = task.preprocess(splits.train, train=True), task.preprocess(splits.eval, train=False)
    first = pc.first_trainable_group(groups)
    if cached:
        model, train_ds, eval_ds, collate = pc.prefix_cached_training(model, groups, train_ds, eval_ds, task)
        groups = layer_groups(model)
    else:
        pc.hold_eval_mode([m for g in groups[:first] for m in g.modules])
        collate = task.collate
    sampler = EpochSampler(len(train_ds), cfg.training.seed, None, cfg.training.batch_size)
    trainer = Trainer(cfg.training, task, model, strategy, groups, train_ds, eval_ds, collate, sampler, tmp_path / name)
    metrics = trainer.train()
    trainer.unwrapped_model().save_pretrained(tmp_path / name)
    return metrics


def test_engine_trains_the_cached_top_like_the_uncached_model(text_overrides, tmp_path):
    plain = _engine_run(text_overrides, tmp_path, "plain", cached=False)
    cached = _engine_run(text_overrides, tmp_path, "cached", cached=True)
    a, b = load_file(tmp_path / "plain" / "model.safetensors"), load_file(tmp_path / "cached" / "model.safetensors")
    assert a.keys() == b.keys()  # the wrapper saves the plain transformers model
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=1e-4)
    assert cached["eval_accuracy"] == pytest.approx(plain["eval_accuracy"])
    assert cached["eval_loss"] == pytest.approx(plain["eval_loss"], abs=1e-5)


def test_cache_frozen_prefix_through_train(text_overrides, tmp_path):
    """`training.cache_frozen_prefix` wires the cache into a normal run: same weights as without it,
    and the run folder still loads with plain transformers."""
    import json

    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    from hf_transfer.config import load_config
    from hf_transfer.run import train

    common = [o for o in text_overrides if not o.startswith("output_dir=")] + [
        "strategy.name=partial",
        "strategy.trainable_layers=1",
        "training.save_strategy=no",
        "training.max_steps=4",
        "training.load_best_model_at_end=false",
    ]
    # Frozen blocks in eval mode either way would be needed for exact equality with dropout on.
    import transformers

    orig = transformers.BertConfig.__init__

    def no_dropout(self, *a, **kw):
        orig(self, *a, **kw)
        self.hidden_dropout_prob = 0.0
        self.attention_probs_dropout_prob = 0.0

    transformers.BertConfig.__init__ = no_dropout
    try:
        cached = train(
            load_config(None, common + [f"output_dir={tmp_path / 'cached'}", "training.cache_frozen_prefix=true"])
        )
        plain = train(load_config(None, common + [f"output_dir={tmp_path / 'plain'}"]))
    finally:
        transformers.BertConfig.__init__ = orig
    a, b = (
        load_file(str(tmp_path / "cached" / "model.safetensors")),
        load_file(str(tmp_path / "plain" / "model.safetensors")),
    )
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    assert cached["eval_accuracy"] == pytest.approx(plain["eval_accuracy"])
    AutoModelForSequenceClassification.from_pretrained(tmp_path / "cached")
    assert "Frozen-prefix cache on" in (tmp_path / "cached" / "train.log").read_text()
    assert json.loads((tmp_path / "cached" / "metrics.json").read_text())["eval_accuracy"] == cached["eval_accuracy"]
