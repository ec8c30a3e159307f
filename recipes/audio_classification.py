"""Audio classification recipe: any AutoModelForAudioClassification checkpoint (the Whisper encoder,
wav2vec2, HuBERT, WavLM, AST), a new head for your classes, a transfer strategy.

    python recipes/audio_classification.py --config whisper/digits_cls_full training.epochs=1

Data: a Hub audio dataset (decoded with soundfile, no torchcodec needed), a local folder with one
folder per class (optionally inside train/ validation/ test/), or a csv/jsonl of audio paths and
labels (data.audio_column, data.label_column; relative paths are read against the file's folder).
Clips are resampled to the checkpoint's rate. Unreadable, empty and silent files are skipped and
counted (data.on_bad_file=error to stop instead); clips longer than the model's window raise an
error unless data.long_audio=truncate. Whisper pools over the frames that hold audio, and
data.max_audio_seconds cuts its 30 s encoder window for short clips (a 2 s window costs about a
fifteenth of the full one).

From another repository, the same in a few lines:

    from hf_transfer import load_config, train
    metrics = train(load_config("my_run.yaml", ["recipe=audio_classification", "strategy.name=lora"]))
"""

import sys

from hf_transfer.cli import recipe_main

if __name__ == "__main__":
    sys.exit(recipe_main("audio_classification", __doc__))
