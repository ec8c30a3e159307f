"""`contrastive`: pair sampling with a budget, what trains, the cosine loss, the SetFit-compatible
run folder, resume, and the errors raised before anything trains."""

import json
from collections import Counter

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hf_transfer.config import load_config
from hf_transfer.errors import ConfigError, DataError
from hf_transfer.run import predict, train
from hf_transfer.strategies.contrastive import (
    Contrastive,
    ContrastiveConfig,
    check_labels,
    pair_budget,
    sample_pairs,
)

FAST = ["strategy.name=contrastive", "strategy.C=1.0", "strategy.num_pairs=96"]


def cfg_for(text_overrides, tmp_path, name, *extra):
    base = [o for o in text_overrides if not o.startswith(("output_dir=", "training.epochs="))]
    return load_config(None, base + [f"output_dir={tmp_path / name}", *FAST, *extra])


# ------------------------------------------------------------------------------ pairs


def test_pairs_respect_the_budget_and_balance_classes():
    labels = np.array([0] * 10 + [1] * 5 + [2] * 3)
    pairs = sample_pairs(labels, 301, seed=0)
    assert pairs.shape == (301, 3)
    pos, neg = pairs[pairs[:, 2] == 1], pairs[pairs[:, 2] == 0]
    assert len(pos) == 150 and len(neg) == 151
    i, j = pos[:, 0].astype(int), pos[:, 1].astype(int)
    assert (labels[i] == labels[j]).all() and (i != j).all()
    per_class = Counter(labels[i].tolist())
    assert set(per_class) == {0, 1, 2} and min(per_class.values()) > 30  # uniform over classes, not sizes
    # The 3-example class has 3 distinct pairs: each is used before any is used again.
    small = Counter(tuple(sorted(p)) for p in zip(i[labels[i] == 2], j[labels[i] == 2]))
    assert len(small) == 3 and max(small.values()) - min(small.values()) <= 1
    a, b = neg[:, 0].astype(int), neg[:, 1].astype(int)
    assert (labels[a] != labels[b]).all()
    assert (sample_pairs(labels, 301, seed=0) == pairs).all()  # seeded


def test_grouped_pairs_keep_each_batch_on_a_few_examples_and_the_sampler_keeps_batches_whole():
    from hf_transfer.data.text import EpochSampler
    from hf_transfer.strategies.contrastive import sample_grouped_pairs

    labels = np.repeat(np.arange(24), 8)
    pairs = sample_grouped_pairs(labels, 2000, 16, seed=0)
    i, j, t = pairs[:, 0].astype(int), pairs[:, 1].astype(int), pairs[:, 2]
    assert (labels[i] == labels[j])[t == 1].all() and (labels[i] != labels[j])[t == 0].all() and (i != j).all()
    assert t.sum() == 1000  # half positive, batch by batch
    for b in range(0, 2000, 16):
        batch = pairs[b : b + 16, :2].astype(int)
        assert len(np.unique(batch)) <= 12 and len(np.unique(labels[batch])) <= 4
    assert (sample_grouped_pairs(labels, 2000, 16, seed=0) == pairs).all()  # seeded
    spread = sample_pairs(labels, 2000, seed=0)
    assert np.mean([len(np.unique(spread[b : b + 16, :2])) for b in range(0, 2000, 16)]) > 25
    with pytest.raises(DataError, match="pair_batches=spread"):
        sample_grouped_pairs(np.array([0, 0, 1]), 16, 16)  # one class with two examples
    # The sampler shuffles whole batches: each batch of 16 keeps its pairs together.
    order = list(EpochSampler(100, seed=3, batch_size=16, keep_batches=True))
    assert sorted(order) == list(range(100))
    runs = [order[k : k + 16] for k in range(0, 100, 16)]
    assert all(r == list(range(r[0], r[0] + len(r))) and r[0] % 16 == 0 for r in runs[:-1] if len(r) == 16)
    assert order != list(range(100)) and order == list(EpochSampler(100, seed=3, batch_size=16, keep_batches=True))


def test_budget_is_capped_whatever_the_data_size_and_class_count():
    c = ContrastiveConfig()
    assert pair_budget(c, 16) == 320  # 20 per example
    assert pair_budget(c, 4) == c.min_pairs  # at least min_pairs
    assert pair_budget(c, 100_000) == c.max_pairs  # never more than max_pairs
    assert pair_budget(ContrastiveConfig(num_pairs=50), 100_000) == 50
    labels = np.repeat(np.arange(500), 3)  # 500 classes: pairs stay at the budget
    pairs = sample_pairs(labels, pair_budget(c, len(labels)), seed=1)
    assert len(pairs) == c.max_pairs


def test_single_example_class_and_single_class_are_clear_errors():
    with pytest.raises(DataError, match="'rare'.*single training example.*negatives_only"):
        check_labels(np.array([0, 0, 1, 1, 2]), ["a", "b", "rare"])
    assert check_labels(np.array([0, 0, 1, 1, 2]), mode="negatives_only") == [2]
    with pytest.raises(DataError, match="at least two classes"):
        check_labels(np.array([1, 1, 1]), ["a", "b"])


def test_single_example_class_fails_before_training(text_overrides, tmp_path):
    import csv

    rows = list(csv.DictReader(open([o for o in text_overrides if o.startswith("data.train=")][0].split("=", 1)[1])))
    rows.append({"text": "a lonely neutral sentence", "label": "neutral"})
    path = tmp_path / "train_single.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["text", "label"])
        w.writeheader()
        w.writerows(rows)
    cfg = cfg_for(text_overrides, tmp_path, "single", f"data.train={path}", "data.eval=null")
    with pytest.raises(DataError, match="'neutral'.*single training example"):
        train(cfg)
    assert not (tmp_path / "single" / "model.safetensors").exists()
    assert not (tmp_path / "single" / "checkpoints").exists()


# ------------------------------------------------------------------------------ training


def pair_loss(run_dir, cfg, state: dict) -> float:
    """SetFit's cosine loss over the run's pairs, with the body weights `state`."""
    import pandas as pd
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hf_transfer.strategies.contrastive import pair_budget

    model = AutoModelForSequenceClassification.from_pretrained(run_dir).eval()
    model.load_state_dict(state, strict=False)
    tok = AutoTokenizer.from_pretrained(run_dir)
    data = pd.read_csv(cfg.data.train.name)
    labels = data["label"].astype("category").cat.codes.to_numpy()
    pairs = sample_pairs(labels, pair_budget(cfg.strategy, len(labels)), seed=cfg.training.seed)
    with torch.no_grad():
        batch = tok(list(data["text"]), padding=True, return_tensors="pt")
        h = model.bert(**batch).last_hidden_state
        m = batch["attention_mask"].unsqueeze(-1).float()
        emb = (h * m).sum(1) / m.sum(1)
    i, j, t = torch.as_tensor(pairs[:, 0]).long(), torch.as_tensor(pairs[:, 1]).long(), torch.as_tensor(pairs[:, 2])
    return float(((torch.cosine_similarity(emb[i], emb[j]) - t.float()) ** 2).mean())


def test_default_trains_the_top_two_thirds_of_the_blocks():
    from types import SimpleNamespace

    from hf_transfer.strategies.contrastive import Contrastive

    def blocks(n):
        return [SimpleNamespace(kind="stem")] + [SimpleNamespace(kind="block")] * n + [SimpleNamespace(kind="head")]

    default = Contrastive(ContrastiveConfig())
    assert [default.trainable_blocks(blocks(b)) for b in (0, 1, 2, 3, 6, 12, 24)] == [0, 1, 2, 2, 4, 8, 16]
    assert Contrastive(ContrastiveConfig(trainable_layers=6)).trainable_blocks(blocks(6)) == 6  # set: kept
    assert Contrastive(ContrastiveConfig(trainable_fraction=0.5)).trainable_blocks(blocks(6)) == 3
    with pytest.raises(ConfigError, match="none that hf_transfer recognises"):  # not "only 0 blocks"
        default.apply(None, blocks(0))


def test_default_run_leaves_the_lowest_third_of_the_blocks_frozen(text_overrides, tmp_path):
    from transformers import BertModel

    from tiny_models import save_bert

    three = save_bert(tmp_path / "three-blocks", num_hidden_layers=3)
    overrides = [o for o in text_overrides if not o.startswith("model.name_or_path=")]
    cfg = cfg_for([*overrides, f"model.name_or_path={three}"], tmp_path, "run", "strategy.num_pairs=64")
    metrics = train(cfg)
    assert metrics["trainable_groups"] == ["encoder.layer.1", "encoder.layer.2"]
    before = {f"bert.{k}": v for k, v in BertModel.from_pretrained(three).state_dict().items()}
    after = load_file(str(tmp_path / "run" / "model.safetensors"))
    moved = {k for k in before if k in after and not torch.equal(before[k], after[k])}
    assert any(k.startswith("bert.encoder.layer.1.") for k in moved)
    assert any(k.startswith("bert.encoder.layer.2.") for k in moved)
    assert not any(k.startswith(("bert.encoder.layer.0.", "bert.embeddings.")) for k in moved)


def test_end_to_end_pass_trains_the_same_blocks_with_a_probe_head_and_lowers_its_loss(text_overrides, tmp_path):
    """After the pairs, the same top blocks and a linear head started as a probe train with
    cross-entropy: the lowest block and the embeddings stay byte-identical, the top blocks end
    elsewhere than after the pairs alone, the pass's loss falls, and the pass is recorded."""
    from transformers import BertModel

    from tiny_models import save_bert

    three = save_bert(tmp_path / "three-blocks", num_hidden_layers=3)
    overrides = [o for o in text_overrides if not o.startswith("model.name_or_path=")]
    overrides.append(f"model.name_or_path={three}")
    e2e = ("strategy.num_pairs=64", "strategy.end_to_end_epochs=3", "strategy.end_to_end_learning_rate=0.001")
    m = train(cfg_for(overrides, tmp_path, "e2e", *e2e))
    pairs_only = train(cfg_for(overrides, tmp_path, "pairs", "strategy.num_pairs=64", "strategy.end_to_end_epochs=0"))
    assert m["end_to_end_steps"] == 3 * 6  # 96 examples, batches of 16
    assert m["train_steps"] == 4 + 18 and pairs_only["train_steps"] == 4
    assert "end_to_end_steps" not in pairs_only
    assert m["end_to_end_learning_rate"] == 0.001 and m["end_to_end_probe_train_accuracy"] > 0.5
    history = json.loads((tmp_path / "e2e" / "history.json").read_text())
    phase = [r["loss"] for r in history if r.get("phase") == "end_to_end" and "loss" in r]
    assert len(phase) == 18 and np.mean(phase[-3:]) < np.mean(phase[:3])
    before = {f"bert.{k}": v for k, v in BertModel.from_pretrained(three).state_dict().items()}
    after = load_file(str(tmp_path / "e2e" / "model.safetensors"))
    alone = load_file(str(tmp_path / "pairs" / "model.safetensors"))
    moved = {k for k in before if k in after and not torch.equal(after[k], alone[k])}
    assert any(k.startswith("bert.encoder.layer.2.") for k in moved)  # the pass trained the top
    assert not any(k.startswith(("bert.encoder.layer.0.", "bert.embeddings.")) for k in moved)
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("bert.encoder.layer.0."))


def test_end_to_end_settings_are_checked():
    default = Contrastive(ContrastiveConfig())
    # Unset: from 81 examples (20 pairs each would pass the 1600-pair cap), single labels only.
    assert [default.end_to_end_epochs(n) for n in (16, 80, 81, 1536)] == [0.0, 0.0, 2.0, 2.0]
    assert default.end_to_end_epochs(1536, multilabel=True) == 0.0
    assert Contrastive(ContrastiveConfig(max_pairs=3200)).end_to_end_epochs(81) == 0.0  # the cap moves it
    assert Contrastive(ContrastiveConfig(end_to_end_epochs=0.5)).end_to_end_epochs(16) == 0.5  # set: kept
    assert Contrastive(ContrastiveConfig(end_to_end_epochs=0)).end_to_end_epochs(1536) == 0.0
    with pytest.raises(ConfigError, match="end_to_end_epochs must be a number of passes >= 0"):
        ContrastiveConfig(end_to_end_epochs=-1)
    with pytest.raises(ConfigError, match="end_to_end_learning_rate must be in"):
        ContrastiveConfig(end_to_end_learning_rate=2)


@pytest.mark.slow
def test_only_the_chosen_top_blocks_move_and_the_loss_falls(text_overrides, tiny_bert_dir, tmp_path):
    from transformers import BertModel

    cfg = cfg_for(
        text_overrides,
        tmp_path,
        "run",
        "strategy.trainable_layers=1",
        "strategy.num_pairs=480",
        "strategy.end_to_end_epochs=0",  # the pairs alone: their loss is what this test measures
        "training.learning_rate=0.003",
    )
    metrics = train(cfg)
    before = {f"bert.{k}": v for k, v in BertModel.from_pretrained(tiny_bert_dir).state_dict().items()}
    after = load_file(str(tmp_path / "run" / "model.safetensors"))
    moved = {k for k in before if k in after and not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith("bert.encoder.layer.1.") for k in moved)  # top block only
    assert any(k.startswith("bert.encoder.layer.1.") and "weight" in k for k in moved)
    assert metrics["trainable_groups"] == ["encoder.layer.1"]
    assert metrics["contrastive_pairs"] == 480 and metrics["train_steps"] == 30
    assert json.loads((tmp_path / "run" / "history.json").read_text())[0]["loss"] > 0
    # The cosine loss over every training pair, pretrained body against trained body.
    assert pair_loss(tmp_path / "run", cfg, after) < 0.8 * pair_loss(tmp_path / "run", cfg, before)
    assert metrics["eval_accuracy"] >= 0.6  # tiny random model: above chance (0.5)
    assert metrics["budget"]["sources"]["learning_rate"] == "training.learning_rate"


def test_run_folder_loads_with_setfit_and_predicts_like_hf_transfer(text_overrides, tmp_path):
    setfit = pytest.importorskip("setfit")
    metrics = train(cfg_for(text_overrides, tmp_path, "run"))
    assert metrics["run_layout"] == "setfit" and metrics["contrastive_prefix_cached"] is True
    assert metrics["budget"]["sources"]["learning_rate"] == "training.learning_rate"
    texts = ["a great and wonderful film", "the worst , most boring plot", "lovely acting", "dull and bland"]
    ours = [r["label"] for r in predict(tmp_path / "run", texts)]
    model = setfit.SetFitModel.from_pretrained(str(tmp_path / "run"))
    assert list(model.predict(texts)) == ours


def test_pair_training_takes_bf16_where_the_hardware_has_it_unless_told(text_overrides, tmp_path, monkeypatch):
    """Unset `training.mixed_precision`: bf16 autocast on a device with native bf16, fp32 on one
    without; `training.mixed_precision=no` is kept. The classifier's features are fp32 either way."""
    from hf_transfer.engine import distributed as dist

    monkeypatch.setattr(dist, "native_bf16", lambda device_type: True)
    fast = train(cfg_for(text_overrides, tmp_path, "native"))
    assert fast["mixed_precision"] == "bf16"
    assert json.loads((tmp_path / "native" / "metrics.json").read_text())["mixed_precision"] == "bf16"
    assert train(cfg_for(text_overrides, tmp_path, "asked", "training.mixed_precision=no"))["mixed_precision"] == "no"
    monkeypatch.setattr(dist, "native_bf16", lambda device_type: False)
    assert train(cfg_for(text_overrides, tmp_path, "emulated"))["mixed_precision"] == "no"


def test_length_groups_split_right_padded_rows_by_length_and_refuse_left_padding():
    from hf_transfer.strategies.contrastive import length_groups

    lengths = torch.tensor([3, 9, 1, 7, 5, 2, 8, 4])
    mask = (torch.arange(10)[None, :] < lengths[:, None]).long()
    groups = length_groups(mask, 4)
    assert [g.tolist() for g in groups] == [[2, 5], [0, 7], [4, 3], [6, 1]]  # shortest first
    assert length_groups(mask, 1) is None and length_groups(mask[:7], 4) is None  # one group; < 2 rows a group
    assert length_groups(mask.flip(1), 4) is None  # left padding: cutting columns would drop tokens
    assert length_groups(torch.ones(8, 5, dtype=torch.long), 4) is None  # no padding to save


def test_grouped_forward_gives_the_whole_batch_embeddings_and_gradients(tiny_bert_dir):
    """Rows of similar length run together, each group cut to its longest row: the embeddings and
    the gradients are those of the one padded batch, and no group runs at the batch's width."""
    from transformers import AutoTokenizer, BertModel

    from hf_transfer.models.features import FeatureExtractor
    from hf_transfer.strategies.contrastive import PairEncoder

    torch.manual_seed(0)
    model = BertModel.from_pretrained(tiny_bert_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    texts = [" ".join(["good"] * n + ["film"]) for n in (1, 12, 3, 7, 2, 20, 5, 9, 4, 15)]
    batch = dict(tok(texts, padding=True, return_tensors="pt"))
    widths = []
    extractor = FeatureExtractor(model, modality="text", name_or_path=str(tiny_bert_dir))

    def spy(inputs):
        widths.append(inputs["input_ids"].shape[1])
        return extractor(inputs)

    results = {}
    for buckets in (1, 4):
        model.zero_grad()
        widths.clear()
        emb = PairEncoder(model, spy, None, buckets)(**batch)
        (emb**2).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results[buckets] = (emb.detach(), grads, list(widths))
    (one, g1, w1), (four, g4, w4) = results[1], results[4]
    assert w1 == [batch["input_ids"].shape[1]] and len(w4) == 4 and max(w4[:-1]) < w1[0]
    assert torch.allclose(one, four, atol=1e-5)
    assert g1.keys() == g4.keys() and all(torch.allclose(g1[k], g4[k], atol=1e-4) for k in g1)


def test_grouped_pair_training_trains_the_same_body(text_overrides, tiny_bert_dir, tmp_path):
    """A whole run (cached prefix, engine, classifier) with grouped rows against one padded batch:
    the same losses and the same body (dropout off: its masks follow the shapes)."""
    import shutil

    quiet = shutil.copytree(tiny_bert_dir, tmp_path / "no-dropout")
    config = json.loads((quiet / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (quiet / "config.json").write_text(json.dumps(config))
    # bf16 rounds by shape. The pairs only: after them the end-to-end pass (the same `PairEncoder`)
    # would turn last-bit differences into Adam steps of the learning rate's size.
    extra = (f"model.name_or_path={quiet}", "training.mixed_precision=no", "strategy.end_to_end_epochs=0")
    grouped = train(cfg_for(text_overrides, tmp_path, "grouped", "strategy.length_buckets=4", *extra))
    padded = train(cfg_for(text_overrides, tmp_path, "padded", "strategy.length_buckets=1", *extra))
    assert grouped["contrastive_prefix_cached"] is True
    losses = [
        [r["loss"] for r in json.loads((tmp_path / d / "history.json").read_text()) if "loss" in r]
        for d in ("grouped", "padded")
    ]
    assert len(losses[0]) == 6 and np.allclose(losses[0], losses[1], rtol=1e-5)
    a = load_file(str(tmp_path / "grouped" / "model.safetensors"))
    b = load_file(str(tmp_path / "padded" / "model.safetensors"))
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    assert grouped["eval_accuracy"] == padded["eval_accuracy"]


@pytest.mark.slow
@pytest.mark.parametrize("batches", ["spread", "grouped"])
def test_interrupted_contrastive_run_resumes_exactly(text_overrides, tmp_path, crash_at_step, batches):
    extra = (
        "training.save_strategy=steps",
        "training.save_steps=3",
        f"strategy.pair_batches={batches}",
        "strategy.end_to_end_epochs=0",  # the pairs alone (the pass's resume: the next test)
    )
    with crash_at_step(4):
        train(cfg_for(text_overrides, tmp_path, "run", *extra))
    assert (tmp_path / "run" / "checkpoints" / "step_3" / "trainer_state.json").is_file()
    resumed = train(cfg_for(text_overrides, tmp_path, "run", *extra, "training.resume_from_checkpoint=latest"))
    straight = train(cfg_for(text_overrides, tmp_path, "straight", *extra))
    assert resumed["train_steps"] == straight["train_steps"] == 6
    a = load_file(str(tmp_path / "run" / "model.safetensors"))
    b = load_file(str(tmp_path / "straight" / "model.safetensors"))
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    assert resumed["eval_accuracy"] == straight["eval_accuracy"]
    assert straight["contrastive_pair_batches"] == batches


@pytest.mark.slow
def test_run_interrupted_in_the_end_to_end_pass_resumes_exactly(text_overrides, tmp_path, crash_at_step):
    """6 pair steps, then 12 steps of the pass: a crash at the pass's step 8 resumes from the
    pass's own checkpoint (the pairs are not trained again) and ends where a straight run does."""
    extra = ("training.save_strategy=steps", "training.save_steps=3")
    with crash_at_step(8):
        train(cfg_for(text_overrides, tmp_path, "run", *extra))
    assert (tmp_path / "run" / "checkpoints" / "step_6" / "trainer_state.json").is_file()
    assert (tmp_path / "run" / "end_to_end" / "checkpoints" / "step_6" / "trainer_state.json").is_file()
    resumed = train(cfg_for(text_overrides, tmp_path, "run", *extra, "training.resume_from_checkpoint=latest"))
    straight = train(cfg_for(text_overrides, tmp_path, "straight", *extra))
    assert resumed["end_to_end_steps"] == straight["end_to_end_steps"] == 12
    assert resumed["train_steps"] == straight["train_steps"] == 18
    a = load_file(str(tmp_path / "run" / "model.safetensors"))
    b = load_file(str(tmp_path / "straight" / "model.safetensors"))
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    assert resumed["eval_accuracy"] == straight["eval_accuracy"]


@pytest.mark.slow
def test_two_processes_train_identical_bodies(text_overrides, tmp_path, tiny_bert_dir):
    from test_multiprocess import base_weights, launch, rank_weights

    out = tmp_path / "ddp"
    base = [o for o in text_overrides if not o.startswith(("output_dir=", "training.epochs="))]
    launch(base + FAST + [f"output_dir={out}", "training.batch_size=8", "training.save_strategy=no"])
    weights = rank_weights(out)  # the pair encoder: `model.` + the transformers names
    key = "bert.encoder.layer.1.attention.self.query.weight"
    assert not torch.equal(weights[f"model.{key}"], base_weights(tiny_bert_dir)[key])  # it trained
    assert torch.equal(weights[f"model.{key}"], load_file(str(out / "model.safetensors"))[key])
    assert json.loads((out / "metrics.json").read_text())["run_layout"] == "setfit"
    assert (out / "model_head.pkl").is_file()
