"""Speech recognition: Whisper sequence-to-sequence fine-tuning, any size, scored by generation.

Labels. The transcript is tokenised with Whisper's tokenizer, whose prefix tokens carry the
decoder prompt: `<|startoftranscript|>` (the decoder start), then for multilingual checkpoints the
language and the task (`<|en|>`, `<|transcribe|>`), then `<|notimestamps|>`; the text, then
`<|endoftext|>`. The decoder start is stripped from the labels, because the model prepends it
itself: transformers' Whisper builds `decoder_input_ids` by shifting the labels right with
`decoder_start_token_id` in front (`shift_tokens_right`), exactly as done here before the forward
pass (so the loss can be summed per token instead of the model's mean). The rest of the prompt
stays in the labels, as in transformers' fine-tuning examples: it is always the same, so the model
learns it at once, and generation forces it anyway. Labels are padded with -100 (ignored by the
loss; the shift turns them into the pad token, which sits after `<|endoftext|>` and is never
attended by a real token). English-only checkpoints (`*.en`) take no language or task token.

Evaluation generates a transcript for every clip (greedy, or beam search) and scores it against
the reference with corpus-level WER and CER after text normalisation, under `evaluate`'s names:
`eval_wer`, `eval_cer` (lower is better: set `training.metric_for_best_model: wer`), plus
`eval_loss`, the cross-entropy per label token. The encoder runs once per batch: the loss pass's
encoder output is handed to `generate`.

Strategies. Whisper's output projection is tied to the decoder's token embeddings, so the model
has no separate head group: `freeze`, `lp_ft` and `gradual_unfreeze` (which start from a head)
do not apply. What works: `full`; `partial` with `trainable_layers` = the number of decoder layers
(or `trainable_fraction: 0.5` for the usual equal-depth Whisper), which trains the decoder blocks
and final norm and keeps the encoder *and* the token embeddings frozen (the frozen-encoder recipe);
`lora`; `scratch` as the baseline.

Settings: `data.language` (multilingual checkpoints; default English), `data.asr_task`
(`transcribe` or `translate`), `data.text_normalization` (`basic`, `none`, `whisper_english`),
`training.generation_num_beams` (1). `data.max_length` caps label and generated tokens.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor, GenerationConfig
from transformers.modeling_outputs import BaseModelOutput
from transformers.models.whisper.modeling_whisper import shift_tokens_right

from hf_transfer.data import audio as audio_mod
from hf_transfer.data import labels as labels_mod
from hf_transfer.data.sources import load_split
from hf_transfer.errors import ConfigError, DataError, ModelError
from hf_transfer.models.heads import load_config_checked
from hf_transfer.models.whisper import cut_encoder_window, fit_window
from hf_transfer.paths import resolve
from hf_transfer.tasks.base import Splits, Task, register_task

logger = logging.getLogger(__name__)

TASKS = ("transcribe", "translate")
DEFAULT_LANGUAGE = "english"


def core_model(model):
    """The transformers model inside DDP / PEFT wrappers."""
    while hasattr(model, "module") and not hasattr(model, "generate"):
        model = model.module
    getter = getattr(model, "get_base_model", None)
    return getter() if callable(getter) else model


def _generator(model):
    """The object to call `generate` on (a PEFT wrapper forwards it; DDP does not)."""
    while not hasattr(model, "generate") and hasattr(model, "module"):
        model = model.module
    return model


@register_task(
    "speech_recognition",
    "automatic-speech-recognition",
    metrics=("wer", "cer"),
    lower_is_better=True,
    example_input="path/to/audio.wav",
    modality="audio",
    targets="text",
)
class SpeechRecognitionTask(Task):
    """Audio in, transcript out (Whisper encoder-decoder)."""

    auto_model_cls = AutoModelForSpeechSeq2Seq

    def __init__(self, cfg):
        super().__init__(cfg)
        self.tokenizer = None
        self.feature_extractor = None
        self.generation_config: GenerationConfig | None = None
        self.multilingual = False
        self.language: str | None = None
        self.asr_task: str | None = None
        self.window: audio_mod.AudioWindow | None = None
        self.whisper_positions: int | None = None
        self.skipped_files: dict[str, list[tuple[str, str]]] = {}
        self.truncated_files: dict[str, int] = {}
        self.truncated_labels: dict[str, int] = {}
        self.normalization = cfg.data.text_normalization
        self.num_beams = int(cfg.training.generation_num_beams)

    # Processor ---------------------------------------------------------------------------
    def load_processor(self):
        m, d = self.cfg.model, self.cfg.data
        path = resolve(m.name_or_path)
        config = load_config_checked(path, m.revision, m.trust_remote_code)
        if config.model_type != "whisper":
            raise ModelError(
                f"recipe speech_recognition fine-tunes Whisper checkpoints; '{m.name_or_path}' is a "
                f"{config.model_type!r} model. Use a Whisper checkpoint (openai/whisper-small, ...)."
            )
        self.model_config = config
        try:
            processor = AutoProcessor.from_pretrained(path, revision=m.revision, trust_remote_code=m.trust_remote_code)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ModelError(
                f"Cannot load the processor (tokenizer + feature extractor) of '{m.name_or_path}': {e}"
            ) from None
        self.tokenizer = getattr(processor, "tokenizer", None)
        self.feature_extractor = getattr(processor, "feature_extractor", None)
        if self.tokenizer is None or self.feature_extractor is None:
            raise ModelError(f"'{m.name_or_path}' has no Whisper tokenizer and feature extractor (WhisperProcessor).")
        try:
            self.generation_config = GenerationConfig.from_pretrained(path, revision=m.revision)
        except (OSError, ValueError):
            self.generation_config = None
        gen = self.generation_config
        multilingual = getattr(gen, "is_multilingual", None) if gen is not None else None
        self.multilingual = bool(multilingual) if multilingual is not None else config.vocab_size >= 51865
        self._set_language_and_task()

        rate = int(self.feature_extractor.sampling_rate)
        self.whisper_positions, max_samples, where = fit_window(self.feature_extractor, d.max_audio_seconds)
        self.window = audio_mod.AudioWindow(rate, max_samples, where, d.long_audio, d.on_bad_file)

        prefix = len(self.tokenizer.prefix_tokens)
        self.max_label_tokens = min(int(d.max_length), int(config.max_target_positions) - 1)
        self.max_new_tokens = max(1, min(int(d.max_length), int(config.max_target_positions) - prefix))
        self.processor = processor
        return processor

    def _set_language_and_task(self) -> None:
        d, tok = self.cfg.data, self.tokenizer
        language = d.language
        task = d.asr_task
        if task is not None and task not in TASKS:
            raise ConfigError(f"data.asr_task must be one of {', '.join(TASKS)}, got {task!r}.")
        if not self.multilingual:
            if language not in (None, "en", "english") or task == "translate":
                raise ConfigError(
                    f"'{self.cfg.model.name_or_path}' is an English-only Whisper: it takes no language or "
                    "task token. Leave data.language and data.asr_task empty, or use a multilingual checkpoint."
                )
            self.language, self.asr_task = None, None
            tok.language, tok.task, tok.predict_timestamps = None, None, False
            tok.set_prefix_tokens()
            return
        gen_language = getattr(self.generation_config, "language", None) if self.generation_config else None
        language = language or getattr(tok, "language", None) or gen_language
        if language is None:
            logger.warning(
                "Multilingual Whisper without a language: transcripts are taken to be %s. Set "
                "data.language (a Whisper language name or code) for other languages.",
                DEFAULT_LANGUAGE,
            )
            language = DEFAULT_LANGUAGE
        self.language = str(language).strip("<|>").lower()
        self.asr_task = task or getattr(tok, "task", None) or "transcribe"
        try:
            tok.set_prefix_tokens(language=self.language, task=self.asr_task, predict_timestamps=False)
        except ValueError as e:
            raise ConfigError(f"data.language={language!r}: {e}") from None

    # Data -------------------------------------------------------------------------------
    def load_splits(self) -> Splits:
        """Train/eval/test with their audio and transcript columns, eval carved when not given,
        subsampled, every clip checked once (see `hf_transfer.data.audio`)."""
        d = self.cfg.data
        seed = getattr(d, "seed", None)
        seed = self.cfg.training.seed if seed is None else seed
        train = labels_mod.apply_filter(load_split(d.train, "train"), d.filter, "train")
        self.audio_col = audio_mod.find_audio_column(train, d.audio_column)
        self.text_col = audio_mod.find_transcript_column(train, d.text_column)
        train = self._prepare_columns(train, audio_mod.source_dir(d.train), "train")
        eval_ds = test_ds = None
        if d.eval is not None and d.eval.name:
            eval_ds = self._load_other(d.eval, "eval")
        else:
            n_eval = max(1, int(round(len(train) * d.eval_fraction)))
            if n_eval >= len(train):
                raise DataError(
                    f"The train split has {len(train)} rows: too few to carve an eval split from. "
                    "Give data.eval, or more training data."
                )
            parts = train.train_test_split(test_size=n_eval, seed=seed)
            train, eval_ds = parts["train"], parts["test"]
            logger.info("No data.eval given: carved %d eval rows from train.", len(eval_ds))
        if d.test is not None and d.test.name:
            test_ds = self._load_other(d.test, "test")
        train = self._subsample(train, d.max_train_samples, seed)
        eval_ds = self._subsample(eval_ds, d.max_eval_samples, seed)
        out = {}
        for role, ds in (("train", train), ("eval", eval_ds), ("test", test_ds)):
            if ds is None:
                out[role] = None
                continue
            ds, check = audio_mod.check_audio(ds, self.audio_col, self._window(), role)
            self.skipped_files[role] = check.skipped
            self.truncated_files[role] = check.truncated
            out[role] = ds
        return Splits(out["train"], out["eval"], out["test"])

    def _prepare_columns(self, ds, base: Path | None, role: str):
        missing = sum(1 for t in ds[self.text_col] if t is None)
        if missing:
            raise DataError(
                f"{missing} rows of the {role} split have no transcript in column '{self.text_col}'. Remove "
                "them, or give an empty string for clips without speech."
            )
        ds = audio_mod.undecoded(ds, self.audio_col)
        return audio_mod.resolve_paths(ds, self.audio_col, base, role)

    def _load_other(self, source, role: str):
        ds = labels_mod.apply_filter(load_split(source, role), self.cfg.data.filter, role)
        for col, key in ((self.audio_col, "data.audio_column"), (self.text_col, "data.text_column")):
            if col not in ds.column_names:
                raise DataError(
                    f"The {role} split has no column '{col}' (the train split's, {key}). Its columns "
                    f"are: {', '.join(ds.column_names)}."
                )
        return self._prepare_columns(ds, audio_mod.source_dir(source), role)

    @staticmethod
    def _subsample(ds, n: int | None, seed: int):
        if ds is None or n is None or n >= len(ds):
            return ds
        return ds.shuffle(seed=seed).select(range(n))

    def _window(self) -> audio_mod.AudioWindow:
        if self.window is None:
            raise ModelError("load_processor() must run before the audio is read (it sets the sampling rate).")
        return self.window

    def label_ids(self, text: str) -> list[int]:
        """Token ids the decoder learns for `text`: prompt without the decoder start, text, end."""
        ids = self.tokenizer(text or "").input_ids
        start = self.decoder_start_token_id
        if ids and ids[0] == start:
            ids = ids[1:]
        return ids

    @property
    def decoder_start_token_id(self) -> int:
        start = getattr(self.model_config, "decoder_start_token_id", None)
        if start is None:
            start = self.tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
        return int(start)

    def preprocess(self, ds, train: bool):
        targets, cut = [], 0
        for text in ds[self.text_col]:
            ids = self.label_ids(str(text))
            if len(ids) > self.max_label_tokens:
                ids = ids[: self.max_label_tokens - 1] + [ids[-1]]  # keep <|endoftext|>
                cut += 1
            targets.append(ids)
        if cut:
            logger.warning(
                "%d transcripts are longer than %d tokens and were cut (data.max_length, and "
                "the decoder's max_target_positions).",
                cut,
                self.max_label_tokens,
            )
        return audio_mod.AudioDataset(ds, self.audio_col, self._window(), targets)

    def features(self, clips: list[np.ndarray]) -> torch.Tensor:
        fe = self.feature_extractor
        out = fe(
            clips,
            sampling_rate=self.window.sampling_rate,
            return_tensors="pt",
            padding="max_length",
            max_length=fe.n_samples,
            truncation=True,
        )
        return out["input_features"]

    def collate(self, features):
        width = max(len(f["labels"]) for f in features)
        labels = torch.full((len(features), width), -100, dtype=torch.long)
        for i, f in enumerate(features):
            labels[i, : len(f["labels"])] = torch.tensor(f["labels"], dtype=torch.long)
        return {"input_features": self.features([f["audio"] for f in features]), "labels": labels}

    def describe_data(self, splits: Splits) -> dict[str, Any]:
        info: dict[str, Any] = {"train_size": len(splits.train)}
        if splits.eval is not None:
            info["eval_size"] = len(splits.eval)
        if splits.test is not None:
            info["test_size"] = len(splits.test)
        info["skipped_files"] = {role: len(v) for role, v in self.skipped_files.items()}
        if any(self.truncated_files.values()):
            info["truncated_files"] = dict(self.truncated_files)
        info["language"] = self.language
        info["asr_task"] = self.asr_task
        info["text_normalization"] = self.normalization
        return info

    # Model ------------------------------------------------------------------------------
    def build_model(self, from_scratch: bool = False):
        m = self.cfg.model
        path = resolve(m.name_or_path)
        try:
            if from_scratch:
                model = AutoModelForSpeechSeq2Seq.from_config(copy.deepcopy(self.model_config))
                logger.info("Built %s from random initialisation (scratch baseline).", type(model).__name__)
            else:
                model = AutoModelForSpeechSeq2Seq.from_pretrained(
                    path, revision=m.revision, trust_remote_code=m.trust_remote_code
                )
        except (OSError, ValueError) as e:
            raise ModelError(f"Cannot load '{m.name_or_path}' as a speech sequence-to-sequence model: {e}") from None
        if self.generation_config is not None:
            model.generation_config = copy.deepcopy(self.generation_config)
        gen = model.generation_config
        # The prompt comes from language/task (multilingual) or nothing (English-only), never
        # from the deprecated forced_decoder_ids, which would clash with them.
        gen.forced_decoder_ids = None
        if hasattr(model.config, "forced_decoder_ids"):
            model.config.forced_decoder_ids = None
        if self.multilingual:
            gen.language, gen.task = self.language, self.asr_task
        if getattr(gen, "no_timestamps_token_id", None) is None:
            gen.no_timestamps_token_id = self.tokenizer.convert_tokens_to_ids("<|notimestamps|>")
        if self.whisper_positions is not None:
            cut_encoder_window(model, self.whisper_positions)
        return model

    def save_processor(self, out_dir) -> None:
        if self.processor is not None:
            self.processor.save_pretrained(out_dir)
            # transformers 5 nests the feature extractor in processor_config.json; the standalone
            # file keeps the folder readable by older tools too.
            self.feature_extractor.save_pretrained(out_dir)

    # Engine hooks -----------------------------------------------------------------------
    def num_items(self, batch) -> int:
        return int((batch["labels"] != -100).sum())

    def _forward(self, model, batch):
        cfg = core_model(model).config
        decoder_input_ids = shift_tokens_right(batch["labels"], cfg.pad_token_id, cfg.decoder_start_token_id)
        return model(input_features=batch["input_features"], decoder_input_ids=decoder_input_ids, use_cache=False)

    def _token_losses(self, logits, labels, smoothing: float = 0.0) -> torch.Tensor:
        per = F.cross_entropy(
            logits.float().transpose(1, 2), labels, ignore_index=-100, reduction="none", label_smoothing=smoothing
        )
        return per  # (batch, tokens), 0 where ignored

    def loss(self, model, batch) -> torch.Tensor:
        out = self._forward(model, batch)
        return self._token_losses(out.logits, batch["labels"], self.cfg.training.label_smoothing).sum()

    def generate_kwargs(self) -> dict[str, Any]:
        # max_length (prompt included) rather than max_new_tokens, which transformers warns about on
        # every batch when the generation config also holds a max_length.
        prompt = len(self.tokenizer.prefix_tokens)
        kwargs: dict[str, Any] = {"max_length": prompt + self.max_new_tokens, "num_beams": self.num_beams}
        if self.multilingual:
            kwargs.update(language=self.language, task=self.asr_task)
        return kwargs

    def generate(self, model, input_features=None, encoder_outputs=None) -> torch.Tensor:
        """Token ids (batch, length) generated for the clips; the prompt included."""
        kwargs = self.generate_kwargs()
        if encoder_outputs is not None:
            kwargs["encoder_outputs"] = encoder_outputs
        else:
            kwargs["input_features"] = input_features
        out = _generator(model).generate(**kwargs)
        return out if isinstance(out, torch.Tensor) else out["sequences"]

    def eval_outputs(self, model, batch) -> dict[str, torch.Tensor]:
        labels = batch["labels"]
        out = self._forward(model, batch)
        per = self._token_losses(out.logits, labels)
        encoder = BaseModelOutput(last_hidden_state=out.encoder_last_hidden_state)
        generated = self.generate(model, encoder_outputs=encoder)
        return {
            "predictions": generated,
            "references": labels,
            "loss_sum": per.sum(dim=1),
            "num_tokens": (labels != -100).sum(dim=1),
        }

    def decode(self, ids: np.ndarray | torch.Tensor) -> list[str]:
        """Texts of token-id rows (-100 padding and special tokens dropped)."""
        rows = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        return [self.tokenizer.decode([t for t in row if t >= 0], skip_special_tokens=True).strip() for row in rows]

    def compute_metrics(self, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
        from hf_transfer.metrics.speech import compute_asr_metrics

        predictions = self.decode(arrays["predictions"])
        references = self.decode(arrays["references"])
        mapping = getattr(self.tokenizer, "english_spelling_normalizer", None)
        metrics: dict[str, Any] = dict(compute_asr_metrics(predictions, references, self.normalization, mapping))
        tokens = float(np.sum(arrays["num_tokens"])) if "num_tokens" in arrays else 0.0
        metrics["loss"] = float(np.sum(arrays["loss_sum"]) / tokens) if tokens else float("nan")
        for ref, hyp in list(zip(references, predictions))[:3]:
            logger.info("  ref: %s\n  hyp: %s", ref, hyp)
        return metrics

    # Prediction -------------------------------------------------------------------------
    def predict_inputs(self, paths: list[str]) -> dict[str, torch.Tensor]:
        """Model inputs (`input_features`) for audio files."""
        return {"input_features": self.features(audio_mod.load_audio_files(paths, self._window()))}

    @torch.no_grad()
    def predict(self, model, inputs: list[str], top_k: int = 1) -> list[dict[str, Any]]:
        """Transcribe audio files: one `{"input": path, "text": transcript}` per file."""
        model.eval()
        batch_size = self.cfg.training.eval_batch_size or self.cfg.training.batch_size
        device = next(core_model(model).parameters()).device
        results = []
        for start in range(0, len(inputs), batch_size):
            chunk = inputs[start : start + batch_size]
            feats = self.predict_inputs(chunk)["input_features"].to(device)
            texts = self.decode(self.generate(model, input_features=feats))
            results.extend({"input": str(p), "text": t} for p, t in zip(chunk, texts))
        return results
