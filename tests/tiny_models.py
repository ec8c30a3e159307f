"""Tiny random models for the tests, built offline from configs (as transformers' ModelTester
classes do): one function per family for the config, and one that saves a model with what loads it
(tokenizer or processor) into a folder, like a Hub checkpoint.

Each config function holds the family's usual test sizes; a test that needs other sizes passes them
as keyword arguments, which override the defaults. `seed` seeds torch right before the weights are
drawn (None: the caller's random state, unseeded).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch

ASSETS = Path(__file__).parent / "assets"

#: The encoder shape shared by the tiny BERT and ViT.
ENCODER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)


def _seed(seed: int | None) -> None:
    if seed is not None:
        torch.manual_seed(seed)


# ------------------------------------------------------------------------------------------- BERT


def bert_vocab_size() -> int:
    """Tokens in the tiny WordPiece vocabulary (tests/assets/tiny-bert/vocab.txt)."""
    return len((ASSETS / "tiny-bert" / "vocab.txt").read_text().splitlines())


def bert_config(**kw):
    """BertConfig for the tiny tokenizer in tests/assets/tiny-bert: 2 blocks of width 32, 64 positions."""
    from transformers import BertConfig

    base = dict(vocab_size=bert_vocab_size(), **ENCODER, max_position_embeddings=64, type_vocab_size=2)
    base.update(kw)
    return BertConfig(**base)


def copy_bert_tokenizer(out: Path) -> Path:
    """Copy the tiny tokenizer files (tests/assets/tiny-bert) into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for f in (ASSETS / "tiny-bert").iterdir():
        shutil.copy(f, out / f.name)
    return out


def save_bert(out: Path, model=None, seed: int | None = 0, **kw) -> Path:
    """A BERT folder with the tiny tokenizer: `model` if given, else a bare backbone (`BertModel`,
    no head) of `bert_config(**kw)`: like a Hub base checkpoint."""
    from transformers import BertModel

    if model is None:
        _seed(seed)
        model = BertModel(bert_config(**kw))
    model.save_pretrained(out)
    return copy_bert_tokenizer(out)


def save_related_bert(out: Path, positive: list[str], negative: list[str]) -> Path:
    """The tiny BERT 'pretrained on a related task': the first 8 embedding dimensions of the
    `positive` cue words' tokens are +2, of the `negative` ones -2, so frozen features separate
    sentences by their cue words."""
    from transformers import AutoTokenizer, BertModel

    tok = AutoTokenizer.from_pretrained(ASSETS / "tiny-bert")
    torch.manual_seed(0)
    model = BertModel(bert_config())
    with torch.no_grad():
        for words, sign in ((positive, 1.0), (negative, -1.0)):
            ids = tok.convert_tokens_to_ids([t for w in words for t in tok.tokenize(w)])
            model.embeddings.word_embeddings.weight[ids, :8] = 2.0 * sign
    return save_bert(out, model)


# -------------------------------------------------------------------------------------------- ViT


def vit_config(**kw):
    """ViTConfig for 32x32 images in 8x8 patches (16 patches + CLS), the ENCODER shape."""
    from transformers import ViTConfig

    base = dict(image_size=32, patch_size=8, **ENCODER)
    base.update(kw)
    return ViTConfig(**base)


def save_vit(out: Path, model_cls=None, seed: int | None = 0, **kw) -> Path:
    """A ViT (bare `ViTModel` unless `model_cls`) and its image processor sized to the config."""
    from transformers import ViTImageProcessor, ViTModel

    out = Path(out)
    config = vit_config(**kw)
    _seed(seed)
    (model_cls or ViTModel)(config).save_pretrained(out)
    ViTImageProcessor(size={"height": config.image_size, "width": config.image_size}).save_pretrained(out)
    return out


# ----------------------------------------------------------------------------------------- ResNet


def resnet_config(**kw):
    """ResNetConfig with two stages of one block (widths 8 and 16)."""
    from transformers import ResNetConfig

    base = dict(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1])
    base.update(kw)
    return ResNetConfig(**base)


def save_resnet(out: Path, image_size: int, model_cls=None, seed: int | None = 0, **kw) -> Path:
    """A ResNet (`ResNetForImageClassification` unless `model_cls`) with an image processor that
    resizes to `image_size` squares."""
    from transformers import ResNetForImageClassification, ViTImageProcessor

    out = Path(out)
    _seed(seed)
    (model_cls or ResNetForImageClassification)(resnet_config(**kw)).save_pretrained(out)
    ViTImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(out)
    return out


# ---------------------------------------------------------------------------------------- Whisper

#: Sample rate of the tiny Whisper's feature extractor.
WHISPER_RATE = 16_000


def whisper_config(**kw):
    """WhisperConfig with a 1 s window: 16 mel bins, 100 frames = 2 x 50 encoder positions; width 32,
    2 + 2 layers of 4 heads; a 96-token vocabulary whose ids 0 (pad, bos, eos) and 1 (decoder start)
    replace Whisper's 50256+ special tokens, which do not fit it."""
    from transformers import WhisperConfig

    base = dict(
        vocab_size=96,
        num_mel_bins=16,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_source_positions=50,
        max_target_positions=32,
        decoder_start_token_id=1,
        pad_token_id=0,
        bos_token_id=0,
        eos_token_id=0,
    )
    base.update(kw)
    return WhisperConfig(**base)


#: A shorter Whisper for structure tests: 8 mel bins, 32 input frames (16 positions), 2 heads, FFN 37,
#: a 100-token vocabulary with pad 0, bos 1, eos 2, decoder start 3; `whisper_config(**WHISPER_SHORT)`.
WHISPER_SHORT = dict(
    encoder_attention_heads=2,
    decoder_attention_heads=2,
    encoder_ffn_dim=37,
    decoder_ffn_dim=37,
    vocab_size=100,
    num_mel_bins=8,
    max_source_positions=16,
    max_target_positions=16,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    decoder_start_token_id=3,
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (Whisper's byte-level BPE alphabet)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return bytes_to_unicode()


def save_whisper(out: Path, multilingual: bool = False, seed: int = 0) -> Path:
    """A WhisperForConditionalGeneration folder (model, generation config, processor) with a
    371-token byte-level tokenizer laid out like Whisper's (specials after the text tokens:
    <|endoftext|>, <|startoftranscript|>, the 100 languages, tasks, <|notimestamps|>) and
    64 target positions."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import (
        GenerationConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    vocab = {c: i for i, c in enumerate(_bytes_to_unicode().values())}
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("Ġ", "o"), ("o", "n"), ("Ġ", "s"), ("e", "n")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = [
        "<|endoftext|>",
        "<|startoftranscript|>",
        *[f"<|{c}|>" for c in LANGUAGES],
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nospeech|>",
        "<|notimestamps|>",
    ]
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    with tempfile.TemporaryDirectory() as tmp:
        tok.save(str(Path(tmp) / "tokenizer.json"))
        tokenizer = WhisperTokenizer.from_pretrained(
            tmp,
            pad_token="<|endoftext|>",
            extra_special_tokens=specials[1:],
            model_max_length=64,
            clean_up_tokenization_spaces=False,
            language=None,
            task=None,
            predict_timestamps=False,
        )
    for key in ("is_local", "local_files_only", "name_or_path"):
        tokenizer.init_kwargs.pop(key, None)
    ids = {s: tokenizer.convert_tokens_to_ids(s) for s in specials}
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    config = whisper_config(
        vocab_size=len(tokenizer),
        max_target_positions=64,
        decoder_start_token_id=sot,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    gen = GenerationConfig(
        decoder_start_token_id=sot,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        no_timestamps_token_id=ids["<|notimestamps|>"],
        is_multilingual=multilingual,
        max_length=64,
    )
    if multilingual:
        gen.lang_to_id = {f"<|{c}|>": ids[f"<|{c}|>"] for c in LANGUAGES}
        gen.task_to_id = {t: ids[f"<|{t}|>"] for t in ("translate", "transcribe")}
    model.generation_config = gen
    out = Path(out)
    model.save_pretrained(out)
    fe = WhisperFeatureExtractor(feature_size=16, sampling_rate=WHISPER_RATE, hop_length=160, chunk_length=1, n_fft=400)
    WhisperProcessor(feature_extractor=fe, tokenizer=tokenizer).save_pretrained(out)
    fe.save_pretrained(out)
    return out


def sentence_transformers_copy(tiny_bert_dir, tmp_path):
    """The tiny BERT as a sentence-transformers folder (mean pooling + Normalize), whose frozen
    features are L2-normalised by convention: the head's input is not."""
    out = tmp_path / "st"
    shutil.copytree(tiny_bert_dir, out)
    (out / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
            ]
        )
    )
    (out / "1_Pooling").mkdir()
    (out / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True})
    )
    (out / "2_Normalize").mkdir()
    return out
