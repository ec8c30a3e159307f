"""Audio classification: any `AutoModelForAudioClassification` checkpoint (Whisper encoder,
wav2vec2, HuBERT, WavLM, AST, ...) with a new head.

Clips are decoded with soundfile and resampled with soxr to the feature extractor's rate (see
`hf_transfer.data.audio`), then featurised by the checkpoint's own feature extractor per batch.

Whisper: a Whisper checkpoint of any kind (an ASR `WhisperForConditionalGeneration`, a bare
encoder, an audio classifier) becomes `WhisperForMaskedAudioClassification`: transformers'
`WhisperForAudioClassification` (encoder, projector, classifier) whose mean pooling counts only the
frames that hold audio, not the padding up to 30 s (`hf_transfer.models.whisper`). With
`data.max_audio_seconds` the encoder window itself is cut (position embeddings sliced, rounded up
to whole seconds), so short clips cost a fraction of the 30 s forward pass.

wav2vec2 / HuBERT / WavLM pool over real frames themselves when given the attention mask their
feature extractor returns. AST takes a fixed-length spectrogram (10.24 s for the AudioSet
checkpoints) and reads its [CLS]/distillation tokens, so there is no padding to mask.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

from hf_transfer.data import audio as audio_mod
from hf_transfer.errors import ModelError
from hf_transfer.models.heads import load_config_checked, load_for_classification
from hf_transfer.models.whisper import (
    WhisperForMaskedAudioClassification,
    cut_encoder_window,
    fit_window,
)
from hf_transfer.tasks.base import ClassificationTask, Splits, register_task

logger = logging.getLogger(__name__)


def _is_whisper_fe(fe) -> bool:
    from transformers import WhisperFeatureExtractor

    return isinstance(fe, WhisperFeatureExtractor)


def _is_ast_fe(fe) -> bool:
    from transformers import ASTFeatureExtractor

    return isinstance(fe, ASTFeatureExtractor)


class AutoAudioClassifier:
    """`AutoModelForAudioClassification`, except that Whisper gets `WhisperForMaskedAudioClassification`.

    Used as the task's `auto_model_cls`, so training, `hf-transfer evaluate` and `predict` all pool
    over real frames. The run folder also loads with plain `AutoModelForAudioClassification`
    (identical weights), which then averages over the padding as transformers does.
    """

    @staticmethod
    def _whisper(config) -> bool:
        return getattr(config, "model_type", None) == "whisper"

    @classmethod
    def from_config(cls, config, **kwargs):
        if cls._whisper(config):
            return WhisperForMaskedAudioClassification(config)
        return AutoModelForAudioClassification.from_config(config, **kwargs)

    @classmethod
    def from_pretrained(cls, name_or_path, *args, **kwargs):
        config = kwargs.get("config")
        if config is None:
            config = load_config_checked(
                str(name_or_path), kwargs.get("revision"), kwargs.get("trust_remote_code", False)
            )
        if cls._whisper(config):
            kwargs.pop("trust_remote_code", None)
            return WhisperForMaskedAudioClassification.from_pretrained(name_or_path, *args, **kwargs)
        return AutoModelForAudioClassification.from_pretrained(name_or_path, *args, **kwargs)


@register_task("audio_classification", "audio-classification", example_input="path/to/audio.wav", modality="audio")
class AudioClassificationTask(ClassificationTask):
    """A clip in, one label out."""

    auto_model_cls = AutoAudioClassifier
    hub_auto_class = "AutoModelForAudioClassification"

    def __init__(self, cfg):
        super().__init__(cfg)
        #: Unusable clips skipped, by split: (path or `row N`, reason).
        self.skipped_files: dict[str, list[tuple[str, str]]] = {}
        self.truncated_files: dict[str, int] = {}
        self.window: audio_mod.AudioWindow | None = None
        self.whisper_positions: int | None = None

    # Data -------------------------------------------------------------------------------
    def input_column(self, ds) -> str:
        return audio_mod.find_audio_column(ds, self.cfg.data.audio_column)

    def load_splits(self) -> Splits:
        """The shared loading (labels, eval carve-out, subsampling), then every clip checked once."""
        splits = super().load_splits()
        d = self.cfg.data
        train_dir = audio_mod.source_dir(d.train)
        dirs = {
            "train": train_dir,
            "eval": audio_mod.source_dir(d.eval) if d.eval is not None and d.eval.name else train_dir,
            "test": audio_mod.source_dir(d.test),
        }
        out = {}
        for role, ds in (("train", splits.train), ("eval", splits.eval), ("test", splits.test)):
            if ds is None:
                out[role] = None
                continue
            ds = audio_mod.undecoded(ds, self.input_col)
            ds = audio_mod.resolve_paths(ds, self.input_col, dirs[role], role)
            ds, check = audio_mod.check_audio(ds, self.input_col, self._window(), role)
            self.skipped_files[role] = check.skipped
            self.truncated_files[role] = check.truncated
            out[role] = ds
        if self.skipped_files.get("train"):
            self.recount_labels(out["train"], "unusable clips", "usable training clip")
        return Splits(out["train"], out["eval"], out["test"])

    def _window(self) -> audio_mod.AudioWindow:
        if self.window is None:
            raise ModelError("load_processor() must run before the audio is read (it sets the sampling rate).")
        return self.window

    def preprocess(self, ds, train: bool):
        return audio_mod.AudioDataset(ds, self.input_col, self._window(), list(ds["labels"]))

    def lengths(self, ds):
        if self.whisper_positions is not None or not isinstance(ds, audio_mod.AudioDataset):
            return None  # Whisper pads every clip to its window: grouping by length saves nothing
        return ds.lengths

    def features(self, clips: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """The checkpoint's features for a list of clips (already at the right rate and length)."""
        fe = self.processor
        kwargs: dict[str, Any] = {"sampling_rate": self.window.sampling_rate, "return_tensors": "pt"}
        if _is_whisper_fe(fe):
            kwargs.update(padding="max_length", max_length=fe.n_samples, truncation=True, return_attention_mask=True)
        elif not _is_ast_fe(fe):
            kwargs.update(padding=True)
            if getattr(fe, "return_attention_mask", False):
                kwargs["return_attention_mask"] = True
        out = fe(clips, **kwargs)
        return {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}

    def collate(self, features):
        batch = self.features([f["audio"] for f in features])
        batch["labels"] = torch.tensor([int(f["labels"]) for f in features], dtype=torch.long)
        return batch

    def describe_data(self, splits: Splits) -> dict[str, Any]:
        info = super().describe_data(splits)
        info["skipped_files"] = {role: len(v) for role, v in self.skipped_files.items()}
        if any(self.truncated_files.values()):
            info["truncated_files"] = dict(self.truncated_files)
        if self.window is not None and self.window.max_samples:
            info["audio_window_seconds"] = self.window.max_samples / self.window.sampling_rate
        return info

    # Model ------------------------------------------------------------------------------
    def load_processor(self):
        d = self.cfg.data
        fe = self.checkpoint_processor(
            AutoFeatureExtractor,
            "feature extractor",
            "An audio checkpoint needs a preprocessor_config.json (its sampling rate and features).",
        )
        rate = int(fe.sampling_rate)
        max_samples, where = None, ""
        if _is_whisper_fe(fe):
            self.whisper_positions, max_samples, where = fit_window(fe, d.max_audio_seconds)
        elif d.max_audio_seconds is not None:
            max_samples = int(round(d.max_audio_seconds * rate))
            where = f"data.max_audio_seconds={d.max_audio_seconds:g}"
        elif _is_ast_fe(fe):
            max_samples = int(fe.max_length) * rate // 100  # 10 ms frame shift
            where = f"the AST input length ({max_samples / rate:g} s)"
        self.window = audio_mod.AudioWindow(rate, max_samples, where, d.long_audio, d.on_bad_file)
        self.processor = fe
        return fe

    def build_model(self, from_scratch: bool = False):
        m = self.cfg.model
        model = load_for_classification(
            self.auto_model_cls,
            m.name_or_path,
            self.labels.id2label,
            revision=m.revision,
            trust_remote_code=m.trust_remote_code,
            from_scratch=from_scratch,
        )
        if getattr(model.config, "model_type", None) == "whisper" and self.whisper_positions is not None:
            cut_encoder_window(model, self.whisper_positions)
        return model

    def predict_inputs(self, paths: list[str]):
        """Model inputs for audio files, read and fitted like the training clips."""
        return self.features(audio_mod.load_audio_files(paths, self._window()))
