"""Gradient checkpointing with every engine strategy on tiny BERT, ViT and Whisper models.

For each (model, strategy) the same model computes one loss twice, without and with
`training.gradient_checkpointing` (`hf_transfer.engine.distributed.enable_gradient_checkpointing`).
Dropout is 0 so both passes are the same function: every trainable parameter must get the same
gradient (to float tolerance), frozen ones none, and the checkpointed blocks must really run twice
(forward, then the recompute in backward). A last test shows the trap this avoids: reentrant
checkpointing above a frozen prefix silently leaves the trainable blocks without gradients.
"""

from __future__ import annotations

import pytest
import torch

from hf_transfer.engine.distributed import enable_gradient_checkpointing, transformers_model
from hf_transfer.errors import ConfigError, ModelError
from hf_transfer.models.layer_groups import layer_groups
from hf_transfer.strategies import build_strategy, strategy_config_class

# (strategy, settings, epoch whose trainable set is checked)
STRATEGIES = [
    ("full", {}, 0),
    ("scratch", {}, 0),
    ("freeze", {}, 0),
    ("partial", {"trainable_layers": 1}, 0),
    ("gradual_unfreeze", {}, 1),  # head + top block
    ("lp_ft", {"probe_epochs": 1}, 0),  # head only (probe)
    ("lp_ft", {"probe_epochs": 1}, 1),  # everything
    ("lora", {"dropout": 0.0}, 0),
    ("ia3", {}, 0),
    ("adapter", {"dropout": 0.0}, 0),
]


# Tiny models run ~20x slower with 2 threads when other processes load the cores.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_bert():
    from transformers import BertForSequenceClassification

    from tiny_models import bert_config

    cfg = bert_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=3)
    model = BertForSequenceClassification(cfg)
    g = torch.Generator().manual_seed(1)
    batch = {
        "input_ids": torch.randint(5, cfg.vocab_size, (4, 12), generator=g),
        "attention_mask": torch.ones(4, 12, dtype=torch.long),
        "labels": torch.tensor([0, 1, 2, 1]),
    }
    batch["attention_mask"][0, 8:] = 0
    return model, batch


def tiny_vit():
    from transformers import ViTForImageClassification

    from tiny_models import vit_config

    cfg = vit_config(num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = ViTForImageClassification(cfg)
    g = torch.Generator().manual_seed(1)
    return model, {"pixel_values": torch.randn(4, 3, 32, 32, generator=g), "labels": torch.tensor([0, 1, 2, 1])}


def _whisper_config():
    from tiny_models import whisper_config

    return whisper_config(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, num_labels=3)


def tiny_whisper_asr():
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration(_whisper_config())
    g = torch.Generator().manual_seed(1)
    return model, {
        "input_features": torch.randn(2, 16, 100, generator=g),
        "labels": torch.randint(3, 96, (2, 7), generator=g),
    }


def tiny_whisper_audio_classification():
    from transformers import WhisperForAudioClassification

    model = WhisperForAudioClassification(_whisper_config())
    g = torch.Generator().manual_seed(1)
    return model, {"input_features": torch.randn(2, 16, 100, generator=g), "labels": torch.tensor([0, 2])}


HEAD_FIRST = ("freeze", "gradual_unfreeze", "lp_ft")

MODELS = {
    "bert": tiny_bert,
    "vit": tiny_vit,
    "whisper_asr": tiny_whisper_asr,
    "whisper_audio": tiny_whisper_audio_classification,
}


def adapted(model_name: str, strategy_name: str, settings: dict, epoch: int):
    torch.manual_seed(0)
    model, batch = MODELS[model_name]()
    strategy = build_strategy(strategy_config_class(strategy_name)(name=strategy_name, **settings))
    groups = layer_groups(model)
    model = strategy.apply(model, groups)
    groups = layer_groups(model)
    for e in range(epoch + 1):
        strategy.on_epoch_start(e, model, groups)
    return model, batch, strategy


def gradients(model, batch) -> dict[str, torch.Tensor | None]:
    model.zero_grad(set_to_none=True)
    model.train()
    loss = model(**batch).loss
    loss.backward()
    return {n: (p.grad.clone() if p.grad is not None else None) for n, p in model.named_parameters()}


def count_block_calls(model) -> dict[str, int]:
    """Forward calls of every checkpointable block (`GradientCheckpointingLayer`), by name."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    calls: dict[str, int] = {}
    for name, m in model.named_modules():
        if isinstance(m, GradientCheckpointingLayer):
            calls[name] = 0

            def pre(mod, args, kwargs, name=name):
                calls[name] += 1

            # The checkpoint wraps the class's `forward`, so a hook on the module's `forward`
            # attribute is not enough: count through a forward pre-hook on the submodules called
            # inside it (each block's first child runs once per forward and once per recompute).
            first = next(iter(m.children()))
            first.register_forward_pre_hook(pre, with_kwargs=True)
    return calls


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("strategy_name,settings,epoch", STRATEGIES, ids=[f"{s}-e{e}" for s, _, e in STRATEGIES])
def test_same_gradients_with_checkpointing(model_name, strategy_name, settings, epoch):
    if model_name == "whisper_asr" and strategy_name in HEAD_FIRST:
        with pytest.raises(ModelError, match="no separate head group"):
            adapted(model_name, strategy_name, settings, epoch)
        return  # Whisper's output layer is tied to its input embeddings: these strategies refuse it
    model, batch, strategy = adapted(model_name, strategy_name, settings, epoch)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable, "the strategy left nothing trainable"
    plain = gradients(model, batch)

    done = enable_gradient_checkpointing(model, getattr(strategy, "changes_trainable_set", False))
    assert done == "on"
    assert transformers_model(model).is_activation_checkpointing
    calls = count_block_calls(model)
    ckpt = gradients(model, batch)

    for name, g in ckpt.items():
        if name not in trainable:
            assert g is None, f"frozen {name} got a gradient"
            assert plain[name] is None
            continue
        assert (g is None) == (plain[name] is None), (
            f"{name}: gradient with checkpointing {g is not None}, without {plain[name] is not None}"
        )
        if g is not None:
            torch.testing.assert_close(g, plain[name], rtol=1e-4, atol=1e-6, msg=f"gradient of {name} differs")
    # Every trainable parameter inside a block got a gradient (the reentrant trap leaves them None).
    block_params = [n for n in trainable if ".layer." in n or ".layers." in n]
    missing = [n for n in block_params if ckpt[n] is None]
    assert not missing, f"trainable block parameters without a gradient: {missing[:5]}"

    # Blocks with trainable parameters, or below one that has some, ran again in backward.
    rerun = {n for n, c in calls.items() if c == 2}
    trainable_blocks = {b for b in calls if any(t.startswith(b + ".") or f".{b}." in f".{t}" for t in trainable)}
    assert trainable_blocks <= rerun, f"not recomputed: {sorted(trainable_blocks - rerun)}"
    assert all(c in (1, 2) for c in calls.values()), calls


@pytest.mark.parametrize("model_name", ["bert", "vit"])
def test_frozen_prefix_is_not_backpropagated(model_name):
    """`partial`: the frozen lower block runs once (no recompute: nothing there needs a gradient),
    since the input-gradient hooks transformers adds for text models are removed again."""
    model, batch, strategy = adapted(model_name, "partial", {"trainable_layers": 1}, 0)
    enable_gradient_checkpointing(model)
    assert not getattr(transformers_model(model), "_require_grads_hooks", None)
    calls = count_block_calls(model)
    gradients(model, batch)
    lower = [n for n in calls if n.endswith(".0")]
    upper = [n for n in calls if n.endswith(".1")]
    assert lower and upper
    assert all(calls[n] == 1 for n in lower), calls
    assert all(calls[n] == 2 for n in upper), calls


def test_nothing_trainable_skips_checkpointing():
    model, batch = tiny_bert()
    for p in model.parameters():
        p.requires_grad_(False)
    assert enable_gradient_checkpointing(model).startswith("off")
    assert not model.is_activation_checkpointing
    # A schedule that unfreezes later still gets it.
    assert enable_gradient_checkpointing(model, may_unfreeze_later=True) == "on"


def test_feature_extraction_runs_with_checkpointing_setting(text_overrides, toy_text_data, tmp_path):
    """A fully frozen base (feature_extraction never runs the engine) trains as before: the same
    metrics as without the setting, and eval_accuracy is what the saved model scores on the eval file."""
    import csv

    from hf_transfer.config import load_config
    from hf_transfer.run import predict, train

    base = [o for o in text_overrides if not o.startswith("output_dir=")] + ["strategy.name=feature_extraction"]
    plain = train(load_config(None, base + [f"output_dir={tmp_path / 'plain'}"]))
    metrics = train(load_config(None, base + ["training.gradient_checkpointing=true", f"output_dir={tmp_path / 'fe'}"]))
    assert metrics["eval_accuracy"] == pytest.approx(plain["eval_accuracy"])
    assert metrics["eval_loss"] == pytest.approx(plain["eval_loss"], abs=1e-5)

    rows = list(csv.DictReader(toy_text_data["validation"].read_text().splitlines()))
    predicted = predict(tmp_path / "fe", [r["text"] for r in rows])  # the saved folder, read back
    accuracy = sum(p["label"] == r["label"] for p, r in zip(predicted, rows)) / len(rows)
    assert metrics["eval_accuracy"] == pytest.approx(accuracy)


def test_unsupported_architecture_is_a_config_error():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3))
    with pytest.raises(ConfigError, match="gradient_checkpointing=false"):
        enable_gradient_checkpointing(model)


def test_reentrant_checkpointing_loses_gradients_above_frozen_prefix():
    """Why non-reentrant: with `use_reentrant=True` the trainable top block of a `partial` model gets
    no gradient, because its input (the frozen block's output) does not require grad."""
    import warnings

    model, batch, _ = adapted("bert", "partial", {"trainable_layers": 1}, 0)
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": True})
    from hf_transfer.engine.distributed import remove_input_grad_hooks

    remove_input_grad_hooks(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        grads = gradients(model, batch)
    top = [n for n in grads if ".layer.1." in n]
    assert top and all(grads[n] is None for n in top)


def test_engine_run_with_checkpointing(text_overrides, tmp_path):
    """End to end through the engine: `partial` + checkpointing trains like `partial` without it
    (dropout off), and metrics.json says checkpointing was on."""
    from hf_transfer.config import load_config
    from hf_transfer.run import train

    base = [o for o in text_overrides if not o.startswith("output_dir=")] + [
        "strategy.name=partial",
        "strategy.trainable_layers=1",
        "training.epochs=1",
        "training.save_strategy=no",
    ]
    # The tiny model keeps its dropout here: non-reentrant checkpointing replays the forward with
    # the RNG state it saved, so the recompute draws the same dropout masks.
    a = train(load_config(None, base + [f"output_dir={tmp_path / 'a'}"]))
    b = train(load_config(None, base + [f"output_dir={tmp_path / 'b'}", "training.gradient_checkpointing=true"]))
    assert a["gradient_checkpointing"] == "off" and b["gradient_checkpointing"] == "on"
    assert abs(a["eval_loss"] - b["eval_loss"]) < 1e-4
