"""Tests for hf_transfer.models.layer_groups on tiny random models built offline from configs."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import re  # noqa: E402

import pytest  # noqa: E402
import transformers as T  # noqa: E402
from torch import nn  # noqa: E402

from hf_transfer.errors import ModelError  # noqa: E402
from hf_transfer.models.layer_groups import (  # noqa: E402
    LayerGroup,
    block_groups,
    format_layer_groups,
    layer_groups,
    split_groups,
)
from tiny_models import WHISPER_SHORT, bert_config, resnet_config, vit_config, whisper_config  # noqa: E402

# --------------------------------------------------------------------------- tiny configs

TEXT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, vocab_size=100)
VISION = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, image_size=32, patch_size=8
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
    vocab_size=20,
    classifier_proj_size=16,
)


def bert_cfg():
    return bert_config(vocab_size=100, max_position_embeddings=512)


def distilbert_cfg():
    return T.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=37, vocab_size=100)


def whisper_encoder(config):
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    return WhisperEncoder(config)


# --------------------------------------------------------------------------- helpers


def check_partition(model: nn.Module, groups: list[LayerGroup]) -> None:
    """Every parameter in exactly one group, names and objects agreeing with named_parameters()."""
    expected = dict(model.named_parameters())
    names = [n for g in groups for n in g.param_names]
    assert len(names) == len(set(names)), "a parameter is in two groups"
    assert set(names) == set(expected)
    for g in groups:
        assert g.kind in {"stem", "block", "top", "head"}
        assert len(g.parameters()) == len(g.param_names)
        for name, param in zip(g.param_names, g.parameters()):
            assert param is expected[name]
        assert g.num_parameters() == sum(p.numel() for p in g.parameters())
    assert sum(g.num_parameters() for g in groups) == sum(p.numel() for p in model.parameters())


def kinds(groups: list[LayerGroup]) -> str:
    return " ".join(g.kind for g in groups)


def head_names(groups: list[LayerGroup]) -> set[str]:
    return {n for g in groups if g.kind == "head" for n in g.param_names}


# One tower: optional stem, blocks, optional top, optional head, in that order.
ONE_TOWER = re.compile(r"^(stem )?(block ?)+( ?top)?( head)?$")


# --------------------------------------------------------------------------- per-architecture cases

# (id, builder, number of blocks, group names expected (None: skip), head parameter names)
CASES = [
    (
        "bert-seqcls",
        lambda: T.BertForSequenceClassification(bert_cfg()),
        2,
        ["embeddings", "encoder.layer.0", "encoder.layer.1", "pooler", "head"],
        {"classifier.weight", "classifier.bias"},
    ),
    (
        "bert-bare",
        lambda: T.BertModel(bert_cfg()),
        2,
        ["embeddings", "encoder.layer.0", "encoder.layer.1", "pooler"],
        set(),
    ),
    (
        "roberta-seqcls",
        lambda: T.RobertaForSequenceClassification(T.RobertaConfig(**TEXT)),
        2,
        ["embeddings", "encoder.layer.0", "encoder.layer.1", "head"],
        {"classifier.dense.weight", "classifier.dense.bias", "classifier.out_proj.weight", "classifier.out_proj.bias"},
    ),
    (
        "distilbert-seqcls",
        lambda: T.DistilBertForSequenceClassification(distilbert_cfg()),
        2,
        ["embeddings", "transformer.layer.0", "transformer.layer.1", "head"],
        {"pre_classifier.weight", "pre_classifier.bias", "classifier.weight", "classifier.bias"},
    ),
    ("distilbert-bare", lambda: T.DistilBertModel(distilbert_cfg()), 2, None, set()),
    (
        # embedding_size != hidden_size adds embeddings_project, which belongs to the stem.
        "electra-seqcls",
        lambda: T.ElectraForSequenceClassification(T.ElectraConfig(embedding_size=16, **TEXT)),
        2,
        ["stem", "encoder.layer.0", "encoder.layer.1", "head"],
        {"classifier.dense.weight", "classifier.dense.bias", "classifier.out_proj.weight", "classifier.out_proj.bias"},
    ),
    (
        "vit-imgcls",
        lambda: T.ViTForImageClassification(vit_config()),
        2,
        None,
        {"classifier.weight", "classifier.bias"},
    ),
    ("vit-bare", lambda: T.ViTModel(vit_config()), 2, None, set()),
    (
        "deit-imgcls",
        lambda: T.DeiTForImageClassification(T.DeiTConfig(**VISION)),
        2,
        None,
        {"classifier.weight", "classifier.bias"},
    ),
    (
        "deit-teacher",
        lambda: T.DeiTForImageClassificationWithTeacher(T.DeiTConfig(**VISION)),
        2,
        None,
        {
            "cls_classifier.weight",
            "cls_classifier.bias",
            "distillation_classifier.weight",
            "distillation_classifier.bias",
        },
    ),
    (
        "efficientnet-imgcls",
        lambda: T.EfficientNetForImageClassification(
            T.EfficientNetConfig(image_size=32, hidden_dim=64, width_coefficient=0.25, depth_coefficient=0.25)
        ),
        # One block per repeat: ceil(0.25 * r) is 1 for each of the 7 default stages.
        7,
        None,
        {"classifier.weight", "classifier.bias"},
    ),
    (
        "resnet-imgcls",
        lambda: T.ResNetForImageClassification(resnet_config(depths=[1, 2])),
        2,  # one block per stage
        ["embedder", "encoder.stages.0", "encoder.stages.1", "head"],
        {"classifier.1.weight", "classifier.1.bias"},
    ),
    (
        "convnext-imgcls",
        lambda: T.ConvNextForImageClassification(T.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2)),
        2,
        ["embeddings", "encoder.stages.0", "encoder.stages.1", "layernorm", "head"],
        {"classifier.weight", "classifier.bias"},
    ),
    (
        "wav2vec2-seqcls",
        lambda: T.Wav2Vec2ForSequenceClassification(T.Wav2Vec2Config(**SPEECH, use_weighted_layer_sum=True)),
        2,
        # Post-norm encoder: encoder.layer_norm runs before the blocks, so no top group.
        ["stem", "encoder.layers.0", "encoder.layers.1", "head"],
        {"layer_weights", "projector.weight", "projector.bias", "classifier.weight", "classifier.bias"},
    ),
    (
        "wav2vec2-ctc-stable",
        lambda: T.Wav2Vec2ForCTC(T.Wav2Vec2Config(**SPEECH, do_stable_layer_norm=True, feat_extract_norm="layer")),
        2,
        ["stem", "encoder.layers.0", "encoder.layers.1", "encoder.layer_norm", "head"],
        {"lm_head.weight", "lm_head.bias"},
    ),
    (
        "hubert-seqcls",
        lambda: T.HubertForSequenceClassification(T.HubertConfig(**SPEECH)),
        2,
        ["stem", "encoder.layers.0", "encoder.layers.1", "head"],
        {"projector.weight", "projector.bias", "classifier.weight", "classifier.bias"},
    ),
    (
        "whisper-audiocls",
        lambda: T.WhisperForAudioClassification(whisper_config(**WHISPER_SHORT, use_weighted_layer_sum=True)),
        2,
        ["encoder.stem", "encoder.layers.0", "encoder.layers.1", "encoder.layer_norm", "head"],
        {"layer_weights", "projector.weight", "projector.bias", "classifier.weight", "classifier.bias"},
    ),
    (
        "whisper-encoder-bare",
        lambda: whisper_encoder(whisper_config(**WHISPER_SHORT)),
        2,
        ["stem", "layers.0", "layers.1", "layer_norm"],
        set(),
    ),
]


@pytest.mark.parametrize("build,num_blocks,names,head", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_single_tower_architectures(build, num_blocks, names, head):
    model = build()
    groups = layer_groups(model)
    check_partition(model, groups)
    assert ONE_TOWER.match(kinds(groups)), kinds(groups)
    assert groups[0].kind == "stem"
    assert len(block_groups(groups)) == num_blocks
    assert head_names(groups) == head
    if head:
        assert groups[-1].kind == "head" and groups[-1].name == "head"
    else:
        assert all(g.kind != "head" for g in groups)
    if names is not None:
        assert [g.name for g in groups] == names
    # Each block group holds exactly the one block module it is named after.
    for g in block_groups(groups):
        assert len(g.modules) == 1
        assert all(f".{g.name}." in f".{n}" for n in g.param_names)


def test_vit_top_holds_final_norm_and_pooler():
    model = T.ViTModel(vit_config())
    groups = layer_groups(model)
    # transformers 5 names ViT's block list "layers" (4.x: "encoder.layer").
    assert [g.name for g in groups] == ["embeddings", "layers.0", "layers.1", "top"]
    top = groups[-1]
    assert top.modules == [model.layernorm, model.pooler]
    assert "embeddings.cls_token" in groups[0].param_names


def test_wav2vec2_stem_contents():
    model = T.Wav2Vec2ForSequenceClassification(T.Wav2Vec2Config(**SPEECH))
    stem = layer_groups(model)[0]
    prefixes = {n.split(".")[1] for n in stem.param_names}
    assert prefixes == {"masked_spec_embed", "feature_extractor", "feature_projection", "encoder"}
    assert any(n.startswith("wav2vec2.encoder.pos_conv_embed.") for n in stem.param_names)
    assert "wav2vec2.encoder.layer_norm.weight" in stem.param_names


# --------------------------------------------------------------------------- Whisper encoder-decoder

WHISPER_TWO_TOWERS = [
    "encoder.stem",
    "encoder.layers.0",
    "encoder.layers.1",
    "encoder.layer_norm",
    "decoder.stem",
    "decoder.layers.0",
    "decoder.layers.1",
    "decoder.layer_norm",
]


def test_whisper_conditional_generation_tied_head():
    model = T.WhisperForConditionalGeneration(whisper_config(**WHISPER_SHORT))
    assert model.proj_out.weight is model.model.decoder.embed_tokens.weight
    groups = layer_groups(model)
    check_partition(model, groups)
    assert [g.name for g in groups] == WHISPER_TWO_TOWERS
    assert kinds(groups) == "stem block block top stem block block top"
    # The tied output projection is reported once, with the decoder embeddings; no head group.
    decoder_stem = groups[4]
    assert "model.decoder.embed_tokens.weight" in decoder_stem.param_names
    assert not any(n.startswith("proj_out") for g in groups for n in g.param_names)
    encoder_stem = groups[0]
    assert encoder_stem.modules == [
        model.model.encoder.conv1,
        model.model.encoder.conv2,
        model.model.encoder.embed_positions,
    ]
    stem, blocks, top, head = split_groups(groups)
    assert (len(stem), len(blocks), len(top), len(head)) == (2, 4, 2, 0)


def test_whisper_conditional_generation_untied_head():
    model = T.WhisperForConditionalGeneration(whisper_config(**WHISPER_SHORT, tie_word_embeddings=False))
    groups = layer_groups(model)
    check_partition(model, groups)
    assert [g.name for g in groups] == WHISPER_TWO_TOWERS + ["head"]
    assert groups[-1].param_names == ["proj_out.weight"]


def test_whisper_bare_model():
    model = T.WhisperModel(whisper_config(**WHISPER_SHORT))
    groups = layer_groups(model)
    check_partition(model, groups)
    assert [g.name for g in groups] == WHISPER_TWO_TOWERS


# --------------------------------------------------------------------------- fallback and errors


class ToyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.extras = nn.ModuleList([nn.Linear(8, 8), nn.ReLU()])  # mixed types: not a block list
        self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8)) for _ in range(3)])
        self.norm = nn.LayerNorm(8)
        self.out = nn.Linear(8, 2)


def test_generic_fallback_on_plain_module():
    model = ToyNet()
    groups = layer_groups(model)
    check_partition(model, groups)
    assert [g.name for g in groups] == ["stem", "blocks.0", "blocks.1", "blocks.2", "top"]
    assert kinds(groups) == "stem block block block top"
    # A plain module has no base_model_prefix, so it has no head: everything after the blocks is top.
    assert groups[-1].param_names == ["norm.weight", "norm.bias", "out.weight", "out.bias"]


def test_generic_fallback_on_unlisted_architecture_keeps_head():
    config = T.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100, n_positions=32)
    model = T.GPT2ForSequenceClassification(config)
    groups = layer_groups(model)
    check_partition(model, groups)
    assert [g.name for g in groups] == ["stem", "h.0", "h.1", "ln_f", "head"]
    assert groups[-1].param_names == ["score.weight"]


def test_model_without_blocks_raises_clear_error():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ModelError) as info:
        layer_groups(model)
    message = str(info.value)
    assert "Sequential" in message
    assert "no repeated block list" in message
    assert "bert" in message and "whisper" in message  # names the supported architectures


# --------------------------------------------------------------------------- PEFT


def test_peft_lora_bert_classifier():
    import peft  # a core dependency: missing is a failure, not a skip

    base = T.BertForSequenceClassification(bert_cfg())
    config = peft.LoraConfig(
        task_type="SEQ_CLS", r=4, target_modules=["query", "value"], modules_to_save=["classifier"]
    )
    model = peft.get_peft_model(base, config)
    groups = layer_groups(model)
    check_partition(model, groups)  # names as in the wrapped model
    assert [g.name for g in groups] == ["embeddings", "encoder.layer.0", "encoder.layer.1", "pooler", "head"]
    assert all(n.startswith("base_model.model.") for g in groups for n in g.param_names)

    # LoRA matrices belong to the block whose attention they adapt.
    for i, block in enumerate(block_groups(groups)):
        lora = [n for n in block.param_names if "lora_" in n]
        assert len(lora) == 4  # lora_A and lora_B on query and value
        assert all(f".encoder.layer.{i}." in n for n in lora)
    assert not any("lora_" in n for g in groups if g.kind != "block" for n in g.param_names)

    head = groups[-1]
    assert any(".classifier.modules_to_save." in n for n in head.param_names)
    assert all(n.startswith("base_model.model.classifier.") for n in head.param_names)
    # Only the LoRA matrices and the trainable classifier copy are trainable.
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n for g in groups for n, p in zip(g.param_names, g.parameters()) if p.requires_grad} == trainable
    assert head.num_parameters(trainable_only=True) == 32 * 2 + 2


# --------------------------------------------------------------------------- helpers and formatting


def test_split_groups_and_requires_grad():
    model = T.BertForSequenceClassification(bert_cfg())
    groups = layer_groups(model)
    stem, blocks, top, head = split_groups(groups)
    assert [g.name for g in stem] == ["embeddings"]
    assert [g.name for g in blocks] == ["encoder.layer.0", "encoder.layer.1"]
    assert [g.name for g in top] == ["pooler"]
    assert [g.name for g in head] == ["head"]
    stem[0].requires_grad_(False)
    assert not any(p.requires_grad for p in model.bert.embeddings.parameters())
    assert stem[0].num_parameters(trainable_only=True) == 0


def test_format_layer_groups_table():
    model = T.BertForSequenceClassification(bert_cfg())
    groups = layer_groups(model)
    for g in groups[:-1]:
        g.requires_grad_(False)
    text = format_layer_groups(groups)
    lines = text.splitlines()
    assert lines[0].split() == ["#", "group", "kind", "params", "trainable"]
    assert len(lines) == 2 + len(groups) + 2  # header, rule, rows, rule, total
    assert lines[2].split()[:3] == ["0", "embeddings", "stem"]
    assert lines[-3].split()[:3] == ["4", "head", "head"]
    total = sum(p.numel() for p in model.parameters())
    assert lines[-1].split() == ["total", f"{total:,}", "66"]


def test_layer_groups_is_deterministic():
    model = T.BertForSequenceClassification(bert_cfg())
    first = [(g.name, g.kind, g.param_names) for g in layer_groups(model)]
    second = [(g.name, g.kind, g.param_names) for g in layer_groups(model)]
    assert first == second
