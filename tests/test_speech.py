"""Speech recipes: audio classification and Whisper speech recognition.

A tiny random Whisper (d_model 32, 2+2 layers, 16 mel bins, a 1 s window = 50 encoder frames,
64 target positions; `tiny_models.save_whisper`) is built with a byte-level tokenizer (256 byte symbols, a few merges
and Whisper's special tokens, languages included) so nothing is downloaded. Audio is generated: tones
(a low and a high one, at 16 kHz and 22.05 kHz to exercise resampling), noise, silence, broken
files; and espeak-ng speech where espeak-ng is installed.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from hf_transfer.config import load_config
from hf_transfer.data import audio as audio_mod
from hf_transfer.errors import ConfigError, DataError, ModelError
from hf_transfer.strategies import available_strategies
from hf_transfer.tasks import get_task
from tiny_models import WHISPER_RATE, save_whisper

RATE = WHISPER_RATE
WORDS = {"low": 300.0, "high": 2500.0}


# Tiny models run ~20x slower with 2 threads when other processes load the cores.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------------------------
# A tiny Whisper, built offline


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory) -> Path:
    return save_whisper(tmp_path_factory.mktemp("tiny-whisper"))


@pytest.fixture(scope="module")
def tiny_whisper_multilingual(tmp_path_factory) -> Path:
    return save_whisper(tmp_path_factory.mktemp("tiny-whisper-ml"), multilingual=True)


# ----------------------------------------------------------------------------------------------
# Audio made here


def tone(freq: float, seconds: float = 0.6, rate: int = RATE, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def tones(tmp_path_factory) -> dict:
    """train.csv / test.csv of relative clip paths with a label and a transcript: a low or a high
    tone (every third clip at 22.05 kHz)."""
    root = tmp_path_factory.mktemp("tones")
    out = {}
    for split, n, offset in (("train", 24, 0), ("test", 8, 100)):
        rows = []
        for i in range(n):
            word = "low" if i % 2 == 0 else "high"
            rate = 22_050 if i % 3 == 0 else RATE
            f = root / "clips" / f"{split}_{word}_{i}.wav"
            f.parent.mkdir(parents=True, exist_ok=True)
            sf.write(f, tone(WORDS[word], rate=rate, seed=offset + i), rate)
            rows.append({"path": f"clips/{f.name}", "text": f"the {word} one", "label": word})
        out[split] = write_rows(root / f"{split}.csv", rows)
    out["root"] = root
    return out


def overrides(model: Path, data: dict, out: Path, recipe: str, *extra: str) -> list[str]:
    metric = "wer" if recipe == "speech_recognition" else "accuracy"
    return [
        f"recipe={recipe}",
        f"model.name_or_path={model}",
        f"data.train={data['train']}",
        f"data.eval={data['test']}",
        f"output_dir={out}",
        "training.epochs=1",
        "training.batch_size=8",
        "training.learning_rate=0.003",
        "training.warmup_ratio=0.0",
        "training.report_to=[]",
        f"training.metric_for_best_model={metric}",
        "training.save_strategy=no",
        *extra,
    ]


class _captured:
    """Records of the `hf_transfer` logger in `caplog` (run.train stops it propagating to the root)."""

    def __init__(self, caplog, level=logging.WARNING):
        self.caplog, self.level = caplog, level
        self.logger = logging.getLogger("hf_transfer")

    def __enter__(self):
        self.before = self.logger.level
        self.logger.setLevel(min(self.level, self.before or self.level))
        self.logger.addHandler(self.caplog.handler)

    def __exit__(self, *exc):
        self.logger.removeHandler(self.caplog.handler)
        self.logger.setLevel(self.before)


def _train(model, data, out, recipe, *extra):
    from hf_transfer.run import train

    return train(load_config(None, overrides(model, data, out, recipe, *extra)))


# ----------------------------------------------------------------------------------------------
# Data


def test_folder_of_aiff_clips_is_audio(tmp_path):
    """One extension table for every folder reader: `.aiff` clips are audio to `load_split` too."""
    from hf_transfer.config import DataSource
    from hf_transfer.data.sources import load_split

    for cls in ("no", "yes"):
        (tmp_path / cls).mkdir()
        sf.write(tmp_path / cls / "a.aiff", tone(300), RATE, format="AIFF")
    ds = load_split(DataSource(name=str(tmp_path)))
    assert len(ds) == 2 and ds.features["label"].names == ["no", "yes"]


def test_audio_folder_layouts(tmp_path):
    for split in ("train", "test"):
        for cls in ("no", "yes"):
            (tmp_path / "cls" / split / cls).mkdir(parents=True)
            sf.write(tmp_path / "cls" / split / cls / "a.wav", tone(300), RATE)
    ds = audio_mod.load_audio_folder(tmp_path / "cls", "test")
    assert ds.features["label"].names == ["no", "yes"] and len(ds) == 2
    assert Path(ds[0]["audio"]).is_absolute() and "/test/" in ds[0]["audio"]
    with pytest.raises(DataError, match="none for split 'validation'"):
        audio_mod.load_audio_folder(tmp_path / "cls", "validation")

    asr = tmp_path / "asr"
    (asr / "clips").mkdir(parents=True)
    sf.write(asr / "clips" / "one.wav", tone(300), RATE)
    write_rows(asr / "metadata.csv", [{"file_name": "clips/one.wav", "transcription": "one"}])
    ds = audio_mod.load_audio_folder(asr, "train")
    assert ds.column_names == ["audio", "transcription"]
    assert ds[0]["audio"] == str((asr / "clips" / "one.wav").resolve()) and ds[0]["transcription"] == "one"


def test_audio_metadata_jsonl_error_names_the_file_line(tmp_path):
    """A bad row of metadata.jsonl is named by its line in the file (json's own "line 1" is within the row)."""
    (tmp_path / "clips").mkdir()
    sf.write(tmp_path / "clips" / "one.wav", tone(300), RATE)
    good = json.dumps({"file_name": "clips/one.wav", "transcription": "one"})
    (tmp_path / "metadata.jsonl").write_text(f'{good}\n\n{good}\n{{"file_name": "clips/one.wav",\n')
    with pytest.raises(DataError, match=r"metadata\.jsonl' as JSON lines: line 4: .*line 1 column"):
        audio_mod.load_audio_folder(tmp_path, "train")


def test_read_audio_resamples_and_mixes_down(tmp_path):
    stereo = np.stack([tone(300, rate=44_100), tone(300, rate=44_100)], axis=1)
    sf.write(tmp_path / "s.flac", stereo, 44_100)
    audio = audio_mod.read_audio(str(tmp_path / "s.flac"), RATE)
    assert audio.dtype == np.float32 and audio.ndim == 1 and abs(audio.shape[0] - int(0.6 * RATE)) <= 2
    data = (tmp_path / "s.flac").read_bytes()
    np.testing.assert_allclose(audio_mod.read_audio({"bytes": data, "path": "s.flac"}, RATE), audio)
    arr = audio_mod.read_audio({"array": tone(300, rate=8000), "sampling_rate": 8000}, RATE)
    assert arr.shape[0] == int(0.6 * RATE)


@pytest.fixture
def bad_files(tones, tmp_path) -> dict:
    """The tone training rows plus a corrupt, a silent, an empty and a missing file."""
    root = tones["root"]
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    sf.write(tmp_path / "silent.wav", np.zeros(RATE // 2, dtype=np.float32), RATE)
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), RATE)
    with open(tones["train"]) as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["path"] = str(root / row["path"])
    rows += [
        {"path": "corrupt.wav", "text": "the low one", "label": "low"},
        {"path": "silent.wav", "text": "the high one", "label": "high"},
        {"path": "empty.wav", "text": "the low one", "label": "low"},
        {"path": "missing.wav", "text": "the high one", "label": "high"},
    ]
    return {"train": write_rows(tmp_path / "train.csv", rows), "test": tones["test"], "dir": tmp_path}


@pytest.mark.parametrize("recipe", ["audio_classification", "speech_recognition"])
def test_bad_files_are_skipped_and_counted(recipe, tiny_whisper, bad_files, tmp_path, caplog):
    cfg = load_config(None, overrides(tiny_whisper, bad_files, tmp_path / "run", recipe))
    task = get_task(cfg)
    task.load_processor()
    with _captured(caplog):
        splits = task.load_splits()
    skipped = dict(task.skipped_files["train"])
    d = bad_files["dir"]
    assert set(skipped) == {str(d / n) for n in ("corrupt.wav", "silent.wav", "empty.wav", "missing.wav")}
    assert skipped[str(d / "silent.wav")].startswith("silent")
    assert skipped[str(d / "empty.wav")].startswith("empty")
    assert skipped[str(d / "missing.wav")] == "file not found"
    assert skipped[str(d / "corrupt.wav")].startswith("unreadable")
    assert len(splits.train) == 24 and task.describe_data(splits)["skipped_files"] == {"train": 4, "eval": 0}
    assert "Skipped 4 unusable clip(s) of 28 in the train split" in caplog.text


def test_bad_file_error_names_the_file(tiny_whisper, bad_files, tmp_path):
    cfg = load_config(
        None, overrides(tiny_whisper, bad_files, tmp_path / "run", "audio_classification", "data.on_bad_file=error")
    )
    task = get_task(cfg)
    task.load_processor()
    with pytest.raises(DataError, match=r"corrupt\.wav.*unreadable.*on_bad_file=skip"):
        task.load_splits()


def test_long_audio_error_or_truncate(tiny_whisper, tones, tmp_path):
    sf.write(tmp_path / "long.wav", tone(300, seconds=1.5), RATE)
    rows = [
        {"path": str(tones["root"] / "clips" / f"train_{w}_{i}.wav"), "text": f"the {w} one", "label": w}
        for i, w in enumerate(["low", "high"] * 4)
    ]
    rows.append({"path": "long.wav", "text": "the low one", "label": "low"})
    data = {"train": write_rows(tmp_path / "train.csv", rows), "test": tones["test"]}
    for recipe in ("audio_classification", "speech_recognition"):
        task = get_task(load_config(None, overrides(tiny_whisper, data, tmp_path / "r", recipe)))
        task.load_processor()
        with pytest.raises(
            DataError, match=r"long\.wav.*1\.5 s, longer than the Whisper encoder's 1 s window.*long_audio=truncate"
        ):
            task.load_splits()
        task = get_task(
            load_config(None, overrides(tiny_whisper, data, tmp_path / "r", recipe, "data.long_audio=truncate"))
        )
        task.load_processor()
        splits = task.load_splits()
        assert task.truncated_files["train"] == 1 and max(splits.train["num_samples"]) == RATE


def test_hub_audio_feature_decodes_without_torchcodec(tiny_whisper, tones, tmp_path):
    """A parquet file with a datasets.Audio column (as Hub audio datasets are stored) is read as
    bytes and decoded with soundfile."""
    import datasets

    with open(tones["train"]) as f:
        rows = list(csv.DictReader(f))
    audio = [{"bytes": (tones["root"] / r["path"]).read_bytes(), "path": Path(r["path"]).name} for r in rows]
    ds = datasets.Dataset.from_dict(
        {"audio": audio, "sentence": [r["text"] for r in rows], "label": [r["label"] for r in rows]}
    )
    ds = ds.cast_column("audio", datasets.Audio(decode=False)).cast_column("audio", datasets.Audio(sampling_rate=RATE))
    ds.to_parquet(str(tmp_path / "train.parquet"))
    data = {"train": tmp_path / "train.parquet", "test": tmp_path / "train.parquet"}
    for recipe, extra in (("audio_classification", ()), ("speech_recognition", ("data.text_column=sentence",))):
        task = get_task(load_config(None, overrides(tiny_whisper, data, tmp_path / "r", recipe, *extra)))
        task.load_processor()
        splits = task.load_splits()
        assert task.skipped_files["train"] == [] and len(splits.train) == 24
        item = task.preprocess(splits.train, train=True)[0]
        assert item["audio"].dtype == np.float32 and item["audio"].shape[0] == int(0.6 * RATE)


# ----------------------------------------------------------------------------------------------
# Whisper model pieces


def test_masked_pooling_and_window_cut(tiny_whisper, tmp_path):
    from transformers import AutoModelForAudioClassification, WhisperFeatureExtractor, WhisperForAudioClassification

    from hf_transfer.models.whisper import WhisperForMaskedAudioClassification, cut_encoder_window

    torch.manual_seed(0)
    plain = WhisperForAudioClassification.from_pretrained(tiny_whisper, num_labels=3).eval()
    masked = WhisperForMaskedAudioClassification.from_pretrained(tiny_whisper, num_labels=3).eval()
    masked.load_state_dict(plain.state_dict())
    fe = WhisperFeatureExtractor.from_pretrained(tiny_whisper)
    batch = fe([tone(300, 0.3), tone(2500, 0.9)], sampling_rate=RATE, return_tensors="pt", return_attention_mask=True)
    with torch.no_grad():
        # No mask, or a mask of real frames only: exactly transformers' mean over every frame.
        ref = plain(batch["input_features"]).logits
        torch.testing.assert_close(masked(batch["input_features"]).logits, ref)
        torch.testing.assert_close(
            masked(batch["input_features"], attention_mask=torch.ones_like(batch["attention_mask"])).logits, ref
        )
        # With the mask: the mean over the 15 (0.3 s) and 45 (0.9 s) real frames of 50.
        hidden = plain.encoder(batch["input_features"]).last_hidden_state
        expect = torch.stack([hidden[0, :15].mean(0), hidden[1, :45].mean(0)])
        got = masked(batch["input_features"], attention_mask=batch["attention_mask"]).logits
        torch.testing.assert_close(got, plain.classifier(plain.projector(expect)))

    assert cut_encoder_window(masked, 25) and masked.config.max_source_positions == 25
    assert masked.encoder.embed_positions.weight.shape[0] == 25
    torch.testing.assert_close(masked.encoder.embed_positions.weight, plain.encoder.embed_positions.weight[:25])
    half = torch.randn(2, 16, 50)
    assert masked(half).logits.shape == (2, 3)
    masked.save_pretrained(tmp_path / "cut")
    again = AutoModelForAudioClassification.from_pretrained(tmp_path / "cut").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(half).logits, masked.eval()(half).logits)


def test_max_audio_seconds_cuts_the_classifier_window(tiny_whisper, tones, tmp_path):
    """A 2 s Whisper cut to 1 s: features, model and the saved run folder all use 100 mel frames."""
    from transformers import AutoFeatureExtractor, WhisperFeatureExtractor, WhisperForConditionalGeneration

    two = tmp_path / "two-second"
    model = WhisperForConditionalGeneration.from_pretrained(tiny_whisper)
    model.config.max_source_positions = 100
    model.model.encoder.embed_positions = torch.nn.Embedding(100, 32)
    model.save_pretrained(two)
    fe = WhisperFeatureExtractor(feature_size=16, sampling_rate=RATE, chunk_length=2)
    fe.save_pretrained(two)
    metrics = _train(two, tones, tmp_path / "run", "audio_classification", "data.max_audio_seconds=0.8")
    assert metrics["audio_window_seconds"] == 0.8
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["max_source_positions"] == 50
    assert AutoFeatureExtractor.from_pretrained(tmp_path / "run").nb_max_frames == 100
    from hf_transfer.run import predict

    out = predict(tmp_path / "run", [str(tones["root"] / "clips" / "test_low_0.wav")])
    assert out[0]["label"] in WORDS


# ----------------------------------------------------------------------------------------------
# Audio classification


CLS_STRATEGIES = ["full", "freeze", "partial", "lora", "scratch"]


def test_the_speech_strategies_are_registered():
    """The lists these tests run over are the strategies the product ships: one missing is a failure,
    not a silently shorter list."""
    assert set(CLS_STRATEGIES) | set(ASR_STRATEGIES) | {"freeze"} <= set(available_strategies())


@pytest.mark.parametrize("strategy", CLS_STRATEGIES)
def test_audio_classification_strategies(strategy, tiny_whisper, tones, tmp_path):
    from hf_transfer.run import evaluate, predict

    metrics = _train(
        tiny_whisper,
        tones,
        tmp_path / "run",
        "audio_classification",
        f"strategy.name={strategy}",
        "training.epochs=6",
        "training.learning_rate=0.01",
        "training.eval_strategy=no",
    )
    assert metrics["strategy"] == strategy
    again = evaluate(tmp_path / "run", split="eval")
    assert again["eval_loss"] == pytest.approx(metrics["eval_loss"], rel=1e-4)
    # eval_accuracy is the share of the eval clips the saved model labels right, clip by clip.
    rows = list(csv.DictReader(tones["test"].read_text().splitlines()))
    predicted = predict(tmp_path / "run", [str(tones["root"] / r["path"]) for r in rows])
    accuracy = sum(p["label"] == r["label"] for p, r in zip(predicted, rows)) / len(rows)
    assert metrics["eval_accuracy"] == pytest.approx(accuracy)
    rows = predict(tmp_path / "run", [str(tones["root"] / "clips" / "test_high_1.wav")], top_k=2)
    assert rows[0]["label"] in WORDS and len(rows[0]["top"]) == 2


def test_audio_classification_learns_tones(tiny_whisper, tones, tmp_path):
    metrics = _train(
        tiny_whisper,
        tones,
        tmp_path / "run",
        "audio_classification",
        "training.epochs=12",
        "training.learning_rate=0.01",
        "training.eval_strategy=no",
    )
    assert metrics["eval_accuracy"] == 1.0


def _tiny_wav2vec2(path: Path) -> None:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    config = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        conv_dim=(16, 16),
        conv_stride=(5, 4),
        conv_kernel=(10, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
    )
    Wav2Vec2Model(config).save_pretrained(path)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=RATE, padding_value=0.0, do_normalize=True, return_attention_mask=True
    ).save_pretrained(path)


def _tiny_ast(path: Path) -> None:
    from transformers import ASTConfig, ASTFeatureExtractor, ASTModel

    config = ASTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        num_mel_bins=32,
        max_length=100,
        frequency_stride=8,
        time_stride=8,
    )
    ASTModel(config).save_pretrained(path)
    ASTFeatureExtractor(num_mel_bins=32, max_length=100).save_pretrained(path)


@pytest.mark.parametrize("family", [pytest.param("wav2vec2", marks=pytest.mark.slow), "ast"])
def test_other_audio_classifiers(family, tones, tmp_path):
    """Any AutoModelForAudioClassification checkpoint: tiny wav2vec2 (attention mask, pooled over real
    frames by transformers) and AST (fixed-length spectrogram) learn low vs high tones exactly."""
    from hf_transfer.run import predict

    torch.manual_seed(0)
    {"wav2vec2": _tiny_wav2vec2, "ast": _tiny_ast}[family](tmp_path / family)
    metrics = _train(
        tmp_path / family,
        tones,
        tmp_path / "run",
        "audio_classification",
        "strategy.name=full",
        "training.epochs=12",
        "training.learning_rate=0.01",
        "training.eval_strategy=no",
    )
    assert metrics["eval_accuracy"] == 1.0
    clips = [str(tones["root"] / "clips" / f"test_{word}_{i}.wav") for i, word in ((0, "low"), (1, "high"))]
    assert [r["label"] for r in predict(tmp_path / "run", clips)] == ["low", "high"]


def test_bf16_on_cpu(tiny_whisper, tones, tmp_path):
    """bf16 autocast runs on CPU and gives the fp32 run's loss to bf16 precision."""
    for recipe in ("audio_classification", "speech_recognition"):
        runs = {
            p: _train(
                tiny_whisper,
                tones,
                tmp_path / f"{recipe}_{p}",
                recipe,
                f"training.mixed_precision={p}",
                "training.max_steps=1",
                "training.eval_strategy=no",
            )
            for p in ("no", "bf16")
        }
        assert runs["bf16"]["train_steps"] == 1 and runs["bf16"]["mixed_precision"] == "bf16"
        # Same seed, same data, one step: only the arithmetic differs (bf16 keeps ~3 significant digits).
        assert runs["bf16"]["eval_loss"] == pytest.approx(runs["no"]["eval_loss"], rel=0.05)


def test_lora_saved_and_reloaded(tiny_whisper, tones, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForAudioClassification, WhisperForConditionalGeneration

    from hf_transfer.tasks.audio_classification import AutoAudioClassifier

    _train(
        tiny_whisper,
        tones,
        tmp_path / "cls",
        "audio_classification",
        "strategy.name=lora",
        "training.learning_rate=0.01",
    )
    run = tmp_path / "cls"
    merged = AutoAudioClassifier.from_pretrained(run).eval()
    base = AutoAudioClassifier.from_pretrained(tiny_whisper, config=merged.config)
    adapted = PeftModel.from_pretrained(base, run / "adapter").eval()
    x = torch.randn(2, 16, 100)
    mask = torch.ones(2, 100, dtype=torch.long)
    mask[0, 40:] = 0
    with torch.no_grad():
        torch.testing.assert_close(
            adapted(input_features=x, attention_mask=mask).logits,
            merged(input_features=x, attention_mask=mask).logits,
            rtol=1e-4,
            atol=1e-5,
        )
    assert type(AutoModelForAudioClassification.from_pretrained(run)).__name__ == "WhisperForAudioClassification"

    _train(tiny_whisper, tones, tmp_path / "asr", "speech_recognition", "strategy.name=lora")
    merged = WhisperForConditionalGeneration.from_pretrained(tmp_path / "asr").eval()
    adapted = PeftModel.from_pretrained(
        WhisperForConditionalGeneration.from_pretrained(tiny_whisper), tmp_path / "asr" / "adapter"
    ).eval()
    dec = torch.tensor([[264, 370, 83]])
    with torch.no_grad():
        torch.testing.assert_close(
            adapted(input_features=x, decoder_input_ids=dec).logits,
            merged(input_features=x, decoder_input_ids=dec).logits,
            rtol=1e-4,
            atol=1e-5,
        )


# ----------------------------------------------------------------------------------------------
# Speech recognition


def _asr_task(model, data, tmp_path, *extra):
    task = get_task(load_config(None, overrides(model, data, tmp_path / "run", "speech_recognition", *extra)))
    task.load_processor()
    return task


def test_asr_labels_decoder_start_and_loss(tiny_whisper, tones, tmp_path):
    task = _asr_task(tiny_whisper, tones, tmp_path)
    tok = task.tokenizer
    sot, notime, eot = (
        tok.convert_tokens_to_ids(t) for t in ("<|startoftranscript|>", "<|notimestamps|>", "<|endoftext|>")
    )
    assert tok("the low one").input_ids[0] == sot  # the tokenizer adds the decoder start...
    ids = task.label_ids("the low one")
    assert ids[0] == notime and ids[-1] == eot and sot not in ids  # ...which the labels drop
    assert tok.decode(ids, skip_special_tokens=True) == "the low one"

    splits = task.load_splits()
    data = task.preprocess(splits.train, train=True)
    batch = task.collate([data[0], data[1], data[2]])
    assert batch["input_features"].shape == (3, 16, 100)
    lengths = [len(data[i]["labels"]) for i in range(3)]
    assert batch["labels"].shape[1] == max(lengths) and (batch["labels"] == -100).sum() == sum(
        max(lengths) - n for n in lengths
    )
    assert task.num_items(batch) == sum(lengths)

    model = task.build_model()
    model.eval()
    with torch.no_grad():
        # Summed loss == transformers' own (labels -> shift right with decoder_start) mean x tokens.
        own = model(input_features=batch["input_features"], labels=batch["labels"]).loss
        assert task.loss(model, batch).item() == pytest.approx(own.item() * task.num_items(batch), rel=1e-5)
        out = task.eval_outputs(model, batch)
    assert out["predictions"].shape[0] == 3 and out["num_tokens"].tolist() == lengths


def test_asr_metrics_on_known_strings(tiny_whisper, tones, tmp_path):
    task = _asr_task(tiny_whisper, tones, tmp_path)
    refs = ["The cat sat on the mat.", "hello world"]
    hyps = ["the cat sat on a mat", "Hello, word!"]

    def pad(rows):
        width = max(map(len, rows))
        return np.array([r + [-100] * (width - len(r)) for r in rows])

    # Predictions as generate returns them (prompt first), references as labels (no decoder start).
    prompt = task.tokenizer.prefix_tokens
    arrays = {
        "predictions": pad([prompt + task.tokenizer(h, add_special_tokens=False).input_ids for h in hyps]),
        "references": pad([task.label_ids(r) for r in refs]),
        "loss_sum": np.array([3.0, 1.0]),
        "num_tokens": np.array([6, 2]),
    }
    metrics = task.compute_metrics(arrays)
    # basic normalisation: "the cat sat on the mat" vs "the cat sat on a mat" (1 sub), "hello world"
    # vs "hello word" (1 sub): 2 errors / 8 words; characters: "the"->"a" 3 edits, "l" deleted 1.
    assert metrics["wer"] == pytest.approx(2 / 8)
    assert metrics["cer"] == pytest.approx(4 / (len("the cat sat on the mat") + len("hello world")))
    assert metrics["loss"] == pytest.approx(0.5)


ASR_STRATEGIES = ["full", "partial", "lora", "scratch"]


@pytest.mark.parametrize("strategy", ASR_STRATEGIES)
def test_asr_strategies_train_and_transcribe(strategy, tiny_whisper, tones, tmp_path):
    from hf_transfer.run import evaluate, load_run_model, open_finished_run

    extra = ["strategy.trainable_layers=2"] if strategy == "partial" else []
    metrics = _train(tiny_whisper, tones, tmp_path / "run", "speech_recognition", f"strategy.name={strategy}", *extra)
    assert {"eval_wer", "eval_cer", "eval_loss"} <= set(metrics) and metrics["strategy"] == strategy
    if strategy == "partial":  # the frozen-encoder recipe: decoder blocks train, encoder and embeddings do not
        assert metrics["trainable_groups"] == ["decoder.layers.0", "decoder.layers.1", "decoder.layer_norm"]
    assert evaluate(tmp_path / "run", split="eval")["eval_loss"] == pytest.approx(metrics["eval_loss"], rel=1e-4)
    run = open_finished_run(tmp_path / "run")
    cfg = run.config
    cfg.model.name_or_path = str(tmp_path / "run")
    task = get_task(cfg)
    task.load_processor()
    model = load_run_model(run, task)
    rows = task.predict(model, [str(tones["root"] / "clips" / "test_low_0.wav")])
    assert rows[0]["input"].endswith("test_low_0.wav") and isinstance(rows[0]["text"], str)


def test_asr_learns_tone_words(tiny_whisper, tones, tmp_path):
    metrics = _train(
        tiny_whisper,
        tones,
        tmp_path / "run",
        "speech_recognition",
        "training.epochs=25",
        "training.learning_rate=0.01",
        "training.eval_strategy=no",
    )
    assert metrics["eval_wer"] < 0.5


def test_freeze_needs_a_head_for_asr(tiny_whisper, tones, tmp_path):
    with pytest.raises(ModelError, match="no separate head group"):
        _train(tiny_whisper, tones, tmp_path / "run", "speech_recognition", "strategy.name=freeze")


def test_asr_multilingual_prompt(tiny_whisper_multilingual, tiny_whisper, tones, tmp_path, caplog):
    with _captured(caplog):
        task = _asr_task(tiny_whisper_multilingual, tones, tmp_path)
    assert "taken to be english" in caplog.text
    tok = task.tokenizer
    assert tok.convert_ids_to_tokens(task.label_ids("hi")[:3]) == ["<|en|>", "<|transcribe|>", "<|notimestamps|>"]

    cfg = load_config(None, overrides(tiny_whisper_multilingual, tones, tmp_path / "run", "speech_recognition"))
    cfg.data.language = "fr"  # not in the config schema yet: read when present
    task = get_task(cfg)
    task.load_processor()
    assert task.tokenizer.convert_ids_to_tokens(task.label_ids("salut")[:2]) == ["<|fr|>", "<|transcribe|>"]
    model = task.build_model()
    assert model.generation_config.language == "fr" and model.generation_config.task == "transcribe"
    assert task.generate_kwargs()["language"] == "fr"
    with torch.no_grad():
        out = task.generate(model.eval(), input_features=torch.randn(1, 16, 100))
    assert out.shape[0] == 1

    cfg = load_config(None, overrides(tiny_whisper, tones, tmp_path / "run", "speech_recognition"))
    cfg.data.language = "fr"
    with pytest.raises(ConfigError, match="English-only"):
        get_task(cfg).load_processor()


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_espeak_speech_asr_step(tiny_whisper, tmp_path):
    folder = tmp_path / "speech"
    folder.mkdir()
    rows = []
    for voice in ("en-us", "en-gb+f3", "en-gb-scotland+m3"):
        for i, text in enumerate(("seven of hearts", "queen of spades")):
            f = folder / f"{voice.replace('+', '_')}_{i}.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-w", str(f), text], check=True, capture_output=True)
            rows.append({"file_name": f.name, "transcription": text})
    write_rows(folder / "metadata.csv", rows)
    data = {"train": folder, "test": folder}
    metrics = _train(
        tiny_whisper, data, tmp_path / "run", "speech_recognition", "training.max_steps=1", "data.long_audio=truncate"
    )
    assert metrics["train_size"] == 6 and metrics["skipped_files"]["train"] == 0
