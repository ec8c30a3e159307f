"""Speech recognition recipe: Whisper (any size) fine-tuned sequence to sequence, scored by
generation with WER and CER (eval_wer, eval_cer; lower is better).

    python recipes/speech_recognition.py --config whisper/cards_asr_partial training.epochs=1

Data: a Hub audio dataset with a transcript column, a local folder with a metadata.csv
(file_name, transcription), or a csv/jsonl of audio paths and transcripts (data.audio_column,
data.text_column). Strategies: full; partial with trainable_layers = the decoder's layer count
(the frozen-encoder recipe: decoder blocks train, encoder and token embeddings stay frozen); lora;
scratch as the baseline. Transcribe files with a finished run:

    hf-transfer predict runs/my-asr-run clip1.wav clip2.flac

From another repository, the same in a few lines:

    from hf_transfer import load_config, train
    metrics = train(load_config("my_run.yaml", ["recipe=speech_recognition"]))
"""

import sys

from hf_transfer.cli import recipe_main

if __name__ == "__main__":
    sys.exit(recipe_main("speech_recognition", __doc__))
