"""Offline speech-recognition metrics (WER, CER) under `evaluate`'s names.

The error rates are corpus-level, as `evaluate`'s `wer`/`cer` and jiwer compute them: the edit
operations of all utterances summed, divided by the number of reference words (or characters) of
all utterances summed. That is not the mean of per-utterance rates, which would weigh a one-word
utterance as much as a long one.

The alignments come from jiwer (the library behind `evaluate`'s `wer`/`cer`, which itself would
fetch its script from the Hub: no network on many training machines). What is ours: the corpus
rule for a corpus without reference words (jiwer divides by zero), and the normalisation modes.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

__all__ = [
    "NORMALIZATION_MODES",
    "character_error_rate",
    "compute_asr_metrics",
    "edit_distance",
    "get_normalizer",
    "normalize_text",
    "word_error_rate",
]

logger = logging.getLogger(__name__)

#: Accepted values of `normalization` / `mode`.
NORMALIZATION_MODES: tuple[str, ...] = ("none", "basic", "whisper_english")

SpellingMapping = Mapping[str, str] | str | os.PathLike | None


def edit_distance(reference: Sequence, hypothesis: Sequence) -> int:
    """Levenshtein distance: fewest substitutions, deletions and insertions turning one into the other.

    Args:
        reference: Sequence of hashable tokens (words, characters).
        hypothesis: Sequence of hashable tokens.

    Returns:
        The number of edits (rapidfuzz, which jiwer aligns with).
    """
    from rapidfuzz.distance import Levenshtein

    return int(Levenshtein.distance(reference, hypothesis))


def _check_pairs(predictions: Sequence[str], references: Sequence[str]) -> None:
    if isinstance(predictions, str) or isinstance(references, str):
        raise TypeError("predictions and references must be sequences of strings, not a single string")
    if len(predictions) != len(references):
        raise ValueError(f"predictions and references differ in length: {len(predictions)} vs {len(references)}")


def _corpus_rate(edits: int, reference_units: int, hypothesis_units: int) -> float:
    """Total edits over total reference units, defined also when there are no reference units.

    With no reference units at all the usual ratio divides by zero (jiwer raises). Here the rate
    is then 0.0 when the predictions are empty too (nothing to say, nothing said) and 1.0 when
    they are not (everything said is wrong), which keeps the value finite and JSON-safe.
    """
    if reference_units == 0:
        return 0.0 if hypothesis_units == 0 else 1.0
    return edits / reference_units


def word_error_rate(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus-level word error rate: (S + D + I) / N over all utterances.

    Words are whitespace-separated tokens; no normalisation is applied here (see
    `compute_asr_metrics`). An empty reference within a corpus is allowed: its predicted words count
    as insertions against the corpus total. When the whole corpus has no reference words, the rate
    is 0.0 if there are no predicted words either, else 1.0.

    Args:
        predictions: Hypothesis transcripts.
        references: Reference transcripts, same length.

    Returns:
        The WER as a float (may exceed 1.0 when there are many insertions).

    Raises:
        TypeError: If a single string is passed instead of a list.
        ValueError: If the two lists differ in length.
    """
    return _corpus_error_rate(predictions, references, characters=False)


def character_error_rate(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus-level character error rate: (S + D + I) / N over all utterances' characters.

    As in `evaluate`'s `cer`, spaces between words count as characters, while leading/trailing
    whitespace is stripped and each run of whitespace counts as one space. Empty references are
    treated as in `word_error_rate`.

    Args:
        predictions: Hypothesis transcripts.
        references: Reference transcripts, same length.

    Returns:
        The CER as a float (may exceed 1.0).

    Raises:
        TypeError: If a single string is passed instead of a list.
        ValueError: If the two lists differ in length.
    """
    return _corpus_error_rate(predictions, references, characters=True)


def _corpus_error_rate(predictions, references, characters: bool) -> float:
    """Total edits over total reference words (or characters), aligned by jiwer."""
    import jiwer

    _check_pairs(predictions, references)
    if len(references) == 0:
        return _corpus_rate(0, 0, 0)
    # Each run of whitespace is one space and the ends are stripped, for words and characters alike.
    refs = [" ".join(str(t).split()) for t in references]
    hyps = [" ".join(str(t).split()) for t in predictions]
    out = (jiwer.process_characters if characters else jiwer.process_words)(refs, hyps)
    edits = out.substitutions + out.deletions + out.insertions
    return _corpus_rate(edits, sum(map(len, out.references)), sum(map(len, out.hypotheses)))


# Typographic apostrophes are mapped to "'" so that "it’s" and "it's" are the same word.
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})
# Anything that is neither a word character, whitespace nor an apostrophe; "_" counts as punctuation.
_PUNCTUATION = re.compile(r"[^\w\s']|_")


def _basic_normalize(text: str) -> str:
    """Lowercase, punctuation (except apostrophes) to spaces, whitespace collapsed and stripped.

    Punctuation becomes a space rather than vanishing so that "well-known" gives two words, as
    Whisper's normalisers do, instead of the non-word "wellknown".
    """
    text = text.lower().translate(_APOSTROPHES)
    return " ".join(_PUNCTUATION.sub(" ", text).split())


def _load_spelling_mapping(source: SpellingMapping) -> dict[str, str] | None:
    """Read the British-to-American spelling map Whisper's English normaliser uses.

    Args:
        source: A dict; a path to Whisper's `normalizer.json`; or a folder holding one (a
            Whisper checkpoint or tokenizer folder); or None.

    Returns:
        The mapping, or None when `source` is None or a folder without `normalizer.json`.
    """
    if source is None:
        return None
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    if path.is_dir():
        path = path / "normalizer.json"
        if not path.is_file():
            return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def get_normalizer(mode: str = "basic", english_spelling_mapping: SpellingMapping = None) -> Callable[[str], str]:
    """Build a text normaliser once, to apply to many transcripts.

    Modes:
        - "none": text unchanged.
        - "basic": lowercase, punctuation except apostrophes replaced by spaces, whitespace
          collapsed and stripped.
        - "whisper_english": transformers' `EnglishTextNormalizer` (the normaliser behind
          Whisper's published English WERs: contractions expanded, numbers standardised, fillers
          such as "uh" dropped, British spellings mapped to American). It runs offline; only the
          spelling map comes from a file, Whisper's `normalizer.json`. Without one the normaliser
          still runs with an empty map, so every other rule applies and only spellings such as
          "colour" stay as they are; a warning says so. Should a later transformers change
          `EnglishTextNormalizer`'s constructor, `BasicTextNormalizer` from the same module is
          used, and should the module be gone, "basic" (each with a warning).

    Args:
        mode: One of `NORMALIZATION_MODES`.
        english_spelling_mapping: For "whisper_english": a dict, a path to `normalizer.json`, or a
            Whisper checkpoint folder holding one.

    Returns:
        A function from a string to its normalised form (leading/trailing whitespace stripped).

    Raises:
        ValueError: If `mode` is unknown.
    """
    if mode == "none":
        return lambda text: text
    if mode == "basic":
        return _basic_normalize
    if mode != "whisper_english":
        raise ValueError(f"unknown normalization mode {mode!r}; choose one of {', '.join(NORMALIZATION_MODES)}")

    try:
        from transformers.models.whisper.english_normalizer import BasicTextNormalizer, EnglishTextNormalizer
    except ImportError:
        # Only if a future transformers moves the module; "basic" is the nearest offline rule set.
        logger.warning("transformers' Whisper normalizers are unavailable; using 'basic' normalization")
        return _basic_normalize
    mapping = _load_spelling_mapping(english_spelling_mapping)
    if mapping is None:
        logger.warning(
            "whisper_english normalization without Whisper's normalizer.json: British spellings "
            "are not mapped to American ones; pass english_spelling_mapping to match Whisper exactly"
        )
        mapping = {}
    try:
        english = EnglishTextNormalizer(mapping)
    except TypeError:
        # A changed constructor in a later transformers: keep evaluating rather than fail the run.
        logger.warning("EnglishTextNormalizer could not be built; using Whisper's BasicTextNormalizer")
        basic = BasicTextNormalizer()
        return lambda text: basic(text).strip()
    return lambda text: english(text).strip()


def normalize_text(text: str, mode: str = "basic", english_spelling_mapping: SpellingMapping = None) -> str:
    """Normalise one transcript; see `get_normalizer` for the modes.

    For many transcripts, call `get_normalizer` once instead: building the Whisper normaliser is
    not free.

    Args:
        text: Transcript.
        mode: One of `NORMALIZATION_MODES`.
        english_spelling_mapping: Spelling map source for "whisper_english".

    Returns:
        The normalised text.
    """
    return get_normalizer(mode, english_spelling_mapping)(text)


def compute_asr_metrics(
    predictions: Sequence[str],
    references: Sequence[str],
    normalization: str = "basic",
    english_spelling_mapping: SpellingMapping = None,
) -> dict[str, float]:
    """WER and CER after normalising both sides the same way.

    Normalisation can empty a reference (a transcript that is only "[noise]" or "uh"); that is
    handled as described in `word_error_rate`.

    Args:
        predictions: Hypothesis transcripts.
        references: Reference transcripts, same length.
        normalization: One of `NORMALIZATION_MODES`; "basic" by default so that casing and
            punctuation, which most ASR references do not agree on, are not counted as errors.
        english_spelling_mapping: Spelling map source for "whisper_english".

    Returns:
        `{"wer": float, "cer": float}`.
    """
    _check_pairs(predictions, references)
    normalize = get_normalizer(normalization, english_spelling_mapping)
    preds = [normalize(text) for text in predictions]
    refs = [normalize(text) for text in references]
    return {"wer": word_error_rate(preds, refs), "cer": character_error_rate(preds, refs)}
