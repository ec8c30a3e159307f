"""`lora`, `ia3` and `adapter`: where the adapters go, the head trained and saved whatever it is
called, exactly which parameters change, a run folder that reloads both ways, and exact resume."""

import json

import pytest
import torch
import transformers as T
from safetensors.torch import load_file

from hf_transfer.config import load_config
from hf_transfer.models.layer_groups import layer_groups
from hf_transfer.run import evaluate, train
from hf_transfer.strategies import build_strategy, strategy_config_class
from hf_transfer.strategies._peft import ADAPTER_DIR, default_target_modules, head_module_names
from hf_transfer.strategies.lora import Lora
from tiny_models import WHISPER_SHORT, bert_config, vit_config, whisper_config

TEXT = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, vocab_size=100, num_labels=3
)
SPEECH = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=37,
    conv_dim=(8, 8),
    conv_stride=(5, 2),
    conv_kernel=(10, 3),
    num_conv_pos_embeddings=8,
    num_conv_pos_embedding_groups=2,
    classifier_proj_size=16,
    num_labels=3,
    layerdrop=0.0,
)  # no LayerDrop: every block runs

# arch -> (model class, config, example inputs, expected head modules, LoRA / IA3 / adapter leaf names)
ARCHS = {
    "bert": (
        T.BertForSequenceClassification,
        lambda: bert_config(vocab_size=100, max_position_embeddings=512, num_labels=3),
        lambda: {"input_ids": torch.randint(5, 100, (2, 7))},
        ["classifier"],
        {"query", "value"},
        {"key", "value", "dense"},
        {"dense"},
    ),
    "roberta": (
        T.RobertaForSequenceClassification,
        lambda: T.RobertaConfig(**TEXT, max_position_embeddings=40),
        lambda: {"input_ids": torch.randint(5, 100, (2, 7))},
        ["classifier"],
        {"query", "value"},
        {"key", "value", "dense"},
        {"dense"},
    ),
    "distilbert": (
        T.DistilBertForSequenceClassification,
        lambda: T.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=37, vocab_size=100, num_labels=3),
        lambda: {"input_ids": torch.randint(5, 100, (2, 7))},
        ["pre_classifier", "classifier"],
        {"q_lin", "v_lin"},
        {"k_lin", "v_lin", "lin2"},
        {"lin1", "lin2"},
    ),
    "vit": (
        T.ViTForImageClassification,
        lambda: vit_config(num_labels=3),
        lambda: {"pixel_values": torch.randn(2, 3, 32, 32)},
        ["classifier"],
        {"q_proj", "v_proj"},
        {"k_proj", "v_proj", "fc2"},
        {"fc1", "fc2"},
    ),
    "wav2vec2": (
        T.Wav2Vec2ForSequenceClassification,
        lambda: T.Wav2Vec2Config(**SPEECH),
        lambda: {"input_values": torch.randn(2, 400)},
        ["projector", "classifier"],
        {"q_proj", "v_proj"},
        {"k_proj", "v_proj", "output_dense"},
        {"intermediate_dense", "output_dense"},
    ),
    "whisper": (
        T.WhisperForAudioClassification,
        lambda: whisper_config(**WHISPER_SHORT, num_labels=3),
        lambda: {"input_features": torch.randn(2, 8, 32)},
        ["projector", "classifier"],
        {"q_proj", "v_proj"},
        {"k_proj", "v_proj", "fc2"},
        {"fc1", "fc2"},
    ),
}
STRATEGIES = ("lora", "ia3", "adapter")


def _build(arch, seed=0):
    cls, config, inputs, *_ = ARCHS[arch]
    torch.manual_seed(seed)
    return cls(config()).eval(), inputs


def _strategy(name, **settings):
    return build_strategy(strategy_config_class(name)(name=name, **settings))


def _adapter_param(name: str) -> bool:
    return any(k in name for k in ("lora_A", "lora_B", "ia3_l"))


@pytest.mark.parametrize("arch", list(ARCHS))
def test_default_targets_and_head_per_architecture(arch):
    model, _ = _build(arch)
    groups = layer_groups(model)
    heads, loose = head_module_names(model, groups)
    assert heads == ARCHS[arch][3] and loose == []
    for roles, expected in zip(
        (("query", "value"), ("key", "value", "ffn_out"), ("ffn_in", "ffn_out")), ARCHS[arch][4:]
    ):
        targets = default_target_modules(model, groups, roles)
        assert {t.rsplit(".", 1)[-1] for t in targets} == expected, roles
        # Adapters only go inside blocks: never into the head, never into the stem.
        assert not any(t.split(".")[0] in heads for t in targets)
        assert len(targets) == len(roles) * sum(g.kind == "block" for g in groups)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_lora_adapts_every_block_linear_layer_and_the_pooler_by_default(arch):
    from hf_transfer.strategies._peft import block_linear_roles

    model, _ = _build(arch)
    groups = layer_groups(model)
    targets = _strategy("lora").resolve_targets(model, groups)
    in_blocks = [n for n, _ in block_linear_roles(model, groups)]
    # The linear layers between the blocks and the head: BERT's pooler (its classifier reads it);
    # the others have none (RoBERTa's classification model has no pooler, ViT and the speech
    # models only a final norm there).
    tops = ["bert.pooler.dense"] if arch == "bert" else []
    assert targets == in_blocks + tops
    assert len(in_blocks) == 6 * sum(g.kind == "block" for g in groups)
    heads = ARCHS[arch][3]
    assert not any(t.split(".")[0] in heads for t in targets)
    assert _strategy("lora", target_modules=["query", "value"]).resolve_targets(model, groups) == ["query", "value"]


@pytest.mark.parametrize("name", STRATEGIES)
@pytest.mark.parametrize("arch", list(ARCHS))
def test_exactly_adapters_and_head_train_and_the_save_reloads_both_ways(arch, name, tmp_path):
    from peft import PeftModel

    model, inputs = _build(arch)
    model.save_pretrained(tmp_path / "base")
    strategy = _strategy(name)
    wrapped = strategy.apply(model, layer_groups(model))
    assert isinstance(wrapped, PeftModel)
    heads = ARCHS[arch][3]

    trainable = {n for n, p in wrapped.named_parameters() if p.requires_grad}
    head_copies = {n for n in trainable if ".modules_to_save.default." in n}
    assert trainable == {n for n in trainable if _adapter_param(n)} | head_copies
    # Every parameter of every head module trains (as its modules_to_save copy).
    expected_heads = {
        f"base_model.model.{h}.modules_to_save.default.{p}"
        for h in heads
        for p, _ in wrapped.base_model.model.get_submodule(h).original_module.named_parameters()
    }
    assert head_copies == expected_heads

    # One optimizer step: exactly the trainable parameters move; everything else is bit-identical.
    before = {n: p.detach().clone() for n, p in wrapped.named_parameters()}
    wrapped.train()
    # Adam with a vanishing eps moves every parameter whose gradient is not exactly zero by ~lr,
    # however small the gradient (the tiny random model's query gradients are ~1e-13).
    opt = torch.optim.Adam([p for p in wrapped.parameters() if p.requires_grad], lr=1e-2, eps=1e-30)
    for _ in range(2):  # LoRA's B starts at zero: A only moves from the second step
        opt.zero_grad()
        wrapped(**inputs()).logits.float().pow(2).sum().backward()
        opt.step()
    wrapped.eval()
    changed = {n for n, p in wrapped.named_parameters() if not torch.equal(p, before[n])}
    assert changed == trainable, sorted(changed ^ trainable)[:6]

    strategy.save_model(wrapped, tmp_path / "run")
    x = inputs()
    with torch.no_grad():
        expected = wrapped(**x).logits
        merged = type(model).from_pretrained(tmp_path / "run").eval()
        torch.testing.assert_close(merged(**x).logits, expected, atol=1e-5, rtol=1e-5)
        base = type(model).from_pretrained(tmp_path / "base").eval()
        for head in heads:  # a fresh head: only the saved adapter can restore the trained one
            for p in base.get_submodule(head).parameters():
                p.normal_()
        reloaded = PeftModel.from_pretrained(base, tmp_path / "run" / ADAPTER_DIR).eval()
        torch.testing.assert_close(reloaded(**x).logits, expected, atol=1e-6, rtol=1e-6)
    info = json.loads((tmp_path / "run" / ADAPTER_DIR / "hf_transfer_adapter.json").read_text())
    assert info["method"] == name and info["modules_to_save"] == heads


def test_target_modules_override_and_describe():
    model, _ = _build("bert")
    strategy = _strategy("lora", target_modules=["query", "key", "value"], r=2)
    wrapped = strategy.apply(model, layer_groups(model))
    adapted = {n.rsplit(".lora_A", 1)[0].rsplit(".", 1)[-1] for n, _ in wrapped.named_parameters() if "lora_A" in n}
    assert adapted == {"query", "key", "value"}
    info = strategy.describe(wrapped)
    assert info["peft_method"] == "lora" and info["modules_to_save"] == ["classifier"]
    assert info["adapted_layer_names"] == ["key", "query", "value"]
    assert 0 < info["trainable_parameters"] < info["frozen_parameters"]


def test_ia3_feedforward_names_select_among_default_targets():
    model, _ = _build("bert")
    wrapped = _strategy("ia3", feedforward_modules=["output.dense"]).apply(model, layer_groups(model))
    shapes = {
        n.split(".ia3_l")[0].split("layer.0.")[-1]: tuple(p.shape)
        for n, p in wrapped.named_parameters()
        if "ia3_l" in n and "layer.0." in n
    }
    # Keys and values are scaled on their outputs, the feed-forward output layer on its input (37).
    assert shapes == {"attention.self.key": (32, 1), "attention.self.value": (32, 1), "output.dense": (1, 37)}


# --------------------------------------------------------------------------- whole runs


def _lora_overrides(tiny_bert_dir, toy_text_data, out, *extra):
    return [
        f"model.name_or_path={tiny_bert_dir}",
        f"data.train={toy_text_data['train']}",
        f"data.eval={toy_text_data['validation']}",
        f"output_dir={out}",
        "training.report_to=[]",
        "training.epochs=2",
        "training.batch_size=16",
        "training.learning_rate=0.01",
        "training.warmup_ratio=0.0",
        "strategy.name=lora",
        "strategy.r=4",
        *extra,
    ]


def test_lora_run_saves_a_folder_that_reloads_like_the_trained_model(
    tiny_bert_dir, toy_text_data, tmp_path, monkeypatch
):
    from peft import PeftModel

    seen = {}
    apply, save = Lora.apply, Lora.save_model

    def spy_apply(self, model, groups):
        wrapped = apply(self, model, groups)
        seen["initial"] = {n: p.detach().clone() for n, p in wrapped.named_parameters()}
        return wrapped

    def spy_save(self, model, out_dir):
        seen["model"] = model
        return save(self, model, out_dir)

    monkeypatch.setattr(Lora, "apply", spy_apply)
    monkeypatch.setattr(Lora, "save_model", spy_save)
    out = tmp_path / "run"
    metrics = train(
        load_config(
            None, _lora_overrides(tiny_bert_dir, toy_text_data, out, "training.save_strategy=no", "training.epochs=1")
        )
    )
    assert metrics["peft_method"] == "lora" and metrics["modules_to_save"] == ["classifier"]
    # `hf-transfer evaluate` reads the merged root with plain transformers: the same metrics.
    assert evaluate(out, split="eval")["eval_accuracy"] == pytest.approx(metrics["eval_accuracy"])

    trained = seen["model"].eval()
    changed = {n for n, p in trained.named_parameters() if not torch.equal(p, seen["initial"][n])}
    expected = {n for n, p in trained.named_parameters() if "lora_" in n or "classifier.modules_to_save" in n}
    assert changed == expected  # only LoRA matrices and the head copy; the rest bit-identical
    assert "base_model.model.classifier.original_module.weight" not in changed

    batch = {"input_ids": torch.randint(5, 60, (3, 9)), "attention_mask": torch.ones(3, 9, dtype=torch.long)}
    with torch.no_grad():
        expected_logits = trained(**batch).logits
        plain = T.AutoModelForSequenceClassification.from_pretrained(out).eval()
        torch.testing.assert_close(plain(**batch).logits, expected_logits, atol=1e-5, rtol=1e-5)
        base = T.AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2).eval()
        peft = PeftModel.from_pretrained(base, out / ADAPTER_DIR).eval()
        torch.testing.assert_close(peft(**batch).logits, expected_logits, atol=1e-6, rtol=1e-6)
    saved = load_file(out / ADAPTER_DIR / "adapter_model.safetensors")
    assert any("classifier" in k for k in saved) and all("lora_" in k or "classifier" in k for k in saved)


@pytest.fixture(scope="module")
def tiny_bert_no_dropout(tmp_path_factory):
    """The tiny BERT without dropout: resume is then checked for the PEFT state alone (adapter,
    head copy, optimizer, scheduler, data position), independent of RNG restoration."""
    from tiny_models import save_bert

    return save_bert(
        tmp_path_factory.mktemp("tiny-bert-no-dropout"), hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )


def test_lora_resumed_mid_run_ends_with_the_uninterrupted_weights(tiny_bert_no_dropout, toy_text_data, tmp_path):
    # 96 examples / 16 = 6 steps per epoch, 12 in all; step 8 is in the middle of epoch 1.
    common = [
        "training.save_strategy=steps",
        "training.save_steps=4",
        "training.save_total_limit=5",
        "training.load_best_model_at_end=false",
        "training.logging_steps=1",
        "strategy.dropout=0.0",
    ]
    full = tmp_path / "full"
    train(load_config(None, _lora_overrides(tiny_bert_no_dropout, toy_text_data, full, *common)))
    checkpoint = full / "checkpoints" / "step_8"
    assert (checkpoint / "trainer_state.json").is_file()

    resumed = tmp_path / "resumed"
    train(
        load_config(
            None,
            _lora_overrides(
                tiny_bert_no_dropout, toy_text_data, resumed, *common, f"training.resume_from_checkpoint={checkpoint}"
            ),
        )
    )
    for name in (f"{ADAPTER_DIR}/adapter_model.safetensors", "model.safetensors"):
        a, b = load_file(full / name), load_file(resumed / name)
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=1e-5)
    history = json.loads((resumed / "history.json").read_text())
    full_history = json.loads((full / "history.json").read_text())
    # It continued from step 9 (steps 1-8 come from the checkpoint) with the same losses.
    assert [h["step"] for h in history if "loss" in h] == list(range(1, 13))
    assert [h["loss"] for h in history if "loss" in h] == pytest.approx(
        [h["loss"] for h in full_history if "loss" in h]
    )
