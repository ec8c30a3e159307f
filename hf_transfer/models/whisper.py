"""Whisper specifics: pooling over real frames only, and a shorter encoder window.

**Pooling.** transformers' `WhisperForAudioClassification` projects every encoder frame and
averages all 1500 of them. Whisper pads every clip to 30 s, so for a 2 s clip 93% of what is
averaged is padding. `WhisperForMaskedAudioClassification` (same weights, same config, same
state-dict names) averages only the frames that hold audio, read from the feature extractor's
`attention_mask` (one flag per mel frame; encoder frame `j` covers mel frames `2j-1 .. 2j+1`, so
frame `j` is real when mel frame `2j` is). Pooling comes *before* the projector: the projector
is affine, so `mean(projector(h)) == projector(mean(h))`, which is exactly transformers' result
when every frame is real, and the head's first module (`projector`) receives one pooled vector
per clip, so anything that reads the head's input (feature caching, linear probes) sees the
masked pooling too. Without an `attention_mask` it averages every frame, as transformers does.

**Window.** `cut_encoder_window` keeps the first `positions` of the encoder's position
embeddings and sets `max_source_positions` to match, so the encoder takes `2 * positions` mel
frames instead of 3000. A 2 s window costs about 1/15 of the 30 s one (attention more than that).
The result saves and loads with plain transformers (`config.max_source_positions` and the
embedding agree); the feature extractor must pad to the same length (`chunk_length` seconds),
which `set_feature_extractor_window` does.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn
from transformers import WhisperForAudioClassification
from transformers.modeling_outputs import BaseModelOutput, SequenceClassifierOutput

from hf_transfer.errors import ConfigError

logger = logging.getLogger(__name__)

HOP_LENGTH = 160  # samples per mel frame in every Whisper feature extractor
MEL_FRAMES_PER_POSITION = 2  # conv2 has stride 2


def frame_mask(attention_mask: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Encoder-frame mask (batch, num_frames) from a mel-frame `attention_mask` (batch, 2 * num_frames)."""
    mask = attention_mask
    if mask.shape[-1] != num_frames:
        mask = mask[:, ::MEL_FRAMES_PER_POSITION]
    mask = mask[:, :num_frames]
    if mask.shape[-1] < num_frames:
        mask = nn.functional.pad(mask, (0, num_frames - mask.shape[-1]))
    return mask


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over dim 1 of `hidden` (batch, frames, d), counting only frames where `mask` is 1."""
    if mask is None:
        return hidden.mean(dim=1)
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


class WhisperForMaskedAudioClassification(WhisperForAudioClassification):
    """`WhisperForAudioClassification` that averages only the frames holding audio (module doc).

    Same parameters and config as transformers' class, so a checkpoint of either loads into the
    other; the forward takes an extra `attention_mask` (the feature extractor's, per mel frame).
    """

    def forward(
        self,
        input_features: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        encoder_outputs=None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        if self.config.use_weighted_layer_sum:
            kwargs["output_hidden_states"] = True
        if encoder_outputs is None:
            encoder_outputs = self.encoder(input_features, **kwargs)
        elif not isinstance(encoder_outputs, BaseModelOutput):
            encoder_outputs = BaseModelOutput(
                last_hidden_state=encoder_outputs[0],
                hidden_states=encoder_outputs[1] if len(encoder_outputs) > 1 else None,
            )
        if self.config.use_weighted_layer_sum:
            stacked = torch.stack(encoder_outputs.hidden_states, dim=1)
            weights = nn.functional.softmax(self.layer_weights, dim=-1)
            hidden = (stacked * weights.view(-1, 1, 1)).sum(dim=1)
        else:
            hidden = encoder_outputs.last_hidden_state
        mask = frame_mask(attention_mask, hidden.shape[1]) if attention_mask is not None else None
        pooled = masked_mean(hidden, mask)
        logits = self.classifier(self.projector(pooled))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(
                logits.view(-1, self.config.num_labels), labels.to(logits.device).view(-1)
            )
        return SequenceClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=encoder_outputs.hidden_states,
            attentions=encoder_outputs.attentions,
        )


def window_positions(seconds: float, sampling_rate: int = 16_000) -> tuple[int, int]:
    """(whole seconds, encoder positions) of a window of at least `seconds`.

    The window is rounded up to whole seconds because the feature extractor's `chunk_length` is an
    integer number of seconds in transformers (a fractional one breaks its padding once saved).
    """
    if seconds <= 0:
        raise ConfigError(f"data.max_audio_seconds must be positive, got {seconds}.")
    whole = int(math.ceil(seconds - 1e-9))
    frames = whole * sampling_rate // HOP_LENGTH
    return whole, frames // MEL_FRAMES_PER_POSITION


def encoder_of(model: nn.Module) -> nn.Module:
    """The `WhisperEncoder` of a Whisper model (classification, seq2seq, PEFT-wrapped)."""
    base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    for path in ("encoder", "model.encoder"):
        try:
            return base.get_submodule(path)
        except AttributeError:
            continue
    raise ValueError(f"{type(base).__name__} has no Whisper encoder")


def cut_encoder_window(model: nn.Module, positions: int) -> bool:
    """Shorten a Whisper model's encoder window to `positions` frames (2 * positions mel frames).

    Returns:
        True when the model changed, False when it already had that window.

    Raises:
        ConfigError: `positions` is longer than the model's window.
    """
    encoder = encoder_of(model)
    current = encoder.embed_positions.num_embeddings
    if positions == current:
        return False
    if positions > current:
        raise ConfigError(
            f"data.max_audio_seconds asks for {positions * 2 * HOP_LENGTH / 16000:g} s, longer than this "
            f"Whisper's window ({current * 2 * HOP_LENGTH / 16000:g} s). Leave it empty for the full window."
        )
    old = encoder.embed_positions
    new = nn.Embedding(positions, old.embedding_dim, device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(old.weight[:positions])
    new.weight.requires_grad_(old.weight.requires_grad)
    encoder.embed_positions = new
    encoder.max_source_positions = positions
    encoder.config.max_source_positions = positions
    base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    base.config.max_source_positions = positions
    logger.info(
        "Whisper encoder window cut from %d to %d frames (%.1f s -> %.1f s of audio).",
        current,
        positions,
        current * 2 * HOP_LENGTH / 16000,
        positions * 2 * HOP_LENGTH / 16000,
    )
    return True


def set_feature_extractor_window(feature_extractor, whole_seconds: int) -> None:
    """Make a `WhisperFeatureExtractor` pad and cut to `whole_seconds` (saved with it)."""
    fe = feature_extractor
    fe.chunk_length = int(whole_seconds)
    fe.n_samples = int(whole_seconds) * fe.sampling_rate
    fe.nb_max_frames = fe.n_samples // fe.hop_length


def fit_window(feature_extractor, max_audio_seconds: float | None) -> tuple[int, int, str]:
    """Set a Whisper feature extractor's window for `data.max_audio_seconds`.

    Returns:
        (encoder positions to keep, most audio samples per clip, where that limit comes from, for
        messages about clips that are too long).
    """
    fe = feature_extractor
    rate = int(fe.sampling_rate)
    full_seconds = fe.n_samples // rate
    if max_audio_seconds is not None and max_audio_seconds < full_seconds:
        whole, positions = window_positions(max_audio_seconds, rate)
        set_feature_extractor_window(fe, whole)
        where = f"data.max_audio_seconds={max_audio_seconds:g} (encoder window {whole} s)"
    else:
        positions = fe.nb_max_frames // MEL_FRAMES_PER_POSITION
        where = f"the Whisper encoder's {full_seconds} s window"
    max_samples = int(fe.n_samples)
    if max_audio_seconds is not None:
        max_samples = min(max_samples, int(round(max_audio_seconds * rate)))
    return positions, max_samples, where
