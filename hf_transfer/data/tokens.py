"""Token-level labelled data: readers, tag schemes, checks, and the word-to-subword alignment.

Three ways to give tagged sentences, each read into rows `{"tokens": [...], "tags": [...]}`:

* **CoNLL files** (`.conll`, `.iob`, `.bio`, `.bioes`, `.tsv` of tokens, or a `.txt` in that form):
  one token per line, its tag in the last column (other columns, such as CoNLL-2003's POS and
  chunk tags, are ignored), a blank line between sentences, `-DOCSTART-` lines skipped.
* **JSON lines** with a list of tokens and a list of tags per line (`tokens` + `tags`; also
  `words`, `ner_tags`), or any file / Hub dataset `data.sources.load_split` reads with such list
  columns (integer tags with a `ClassLabel` feature are turned into their names).
* **Character spans**: a text and `[{start, end, label}]` per row (JSON lines or other data).
  The text is split into words (runs of letters and digits, and single other characters) and the
  spans become scheme tags; a span must start and end on word boundaries and not overlap another.

Every problem is a `DataError` naming the file and the line (row for non-line formats): a tag
outside the set, a tag that is neither `O` nor `B-/I-/E-/S-<type>`, tags and tokens of different
lengths, a span crossing a word boundary or overlapping another. An `I-X` that does not continue
an `X` entity is repaired into `B-X` (counted, logged) or refused (`data.tagging.invalid_tags`).

**Alignment** (`align_word_labels`) is the one place word tags become subword labels: the first
subword of each word carries the word's tag; the other subwords get -100 (`first`) or the word's
tag (`all`, with `B-X` continued as `I-X`, as transformers' run_ner example does). A second column,
`word_labels`, always holds the first-subword labels only: evaluation and prediction read words,
whatever the training alignment.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_transfer.errors import DataError

logger = logging.getLogger(__name__)

IGNORE = -100
TOKENS_CANDIDATES = ("tokens", "words")
TAGS_CANDIDATES = ("tags", "ner_tags", "labels", "label")
SPANS_CANDIDATES = ("entities", "spans", "annotations")
SPAN_TEXT_CANDIDATES = ("text", "sentence", "content")
_TAG = re.compile(r"^([BIES])-(.+)$")
_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)


@dataclass
class Sentence:
    """One tagged sentence and where it came from (for error messages)."""

    tokens: list[str]
    tags: list[str]
    where: str  # "'train.conll' line 12" / "'data.jsonl' line 3" / "row 5 of the train split"
    first_line: int | None = None  # CoNLL: the line of token 0 (token i is on first_line + i)

    def token_where(self, i: int) -> str:
        if self.first_line is not None:
            return self.where.rsplit(" line ", 1)[0] + f" line {self.first_line + i}"
        return f"{self.where}, token {i + 1} ('{self.tokens[i]}')"


@dataclass
class TagReport:
    """What the checks found in one split."""

    sentences: int = 0
    tokens: int = 0
    repaired: int = 0
    repaired_examples: list[str] = field(default_factory=list)
    empty: int = 0


# ------------------------------------------------------------------------------------- readers


def is_conll_file(path: Path) -> bool:
    """A CoNLL-style file: by suffix, and for `.txt` / `.tsv` by content (no JSON, a tag column)."""
    suffix = path.suffix.lower()
    if suffix in (".conll", ".conllx", ".iob", ".iob2", ".bio", ".bioes", ".ner"):
        return True
    if suffix not in (".txt", ".tsv"):
        return False
    try:
        with path.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.strip():
                    return not line.lstrip().startswith(("{", "[")) and len(line.split()) >= 2
    except OSError:
        return False
    return False


def read_conll(path: str | Path, separator: str | None = None, encoding: str | None = None) -> list[Sentence]:
    """Sentences of a CoNLL-style file: token first, tag last, blank lines between sentences."""
    path = Path(path)
    name = path.name
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    start = None
    try:
        text = path.read_text(encoding=encoding or "utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"'{path}' is not {encoding or 'utf-8'} text ({e}). Set data.train.encoding (for example latin-1)."
        ) from None
    except OSError as e:
        raise DataError(f"Cannot read '{path}': {e}") from None
    for n, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("-DOCSTART-"):
            if tokens:
                sentences.append(Sentence(tokens, tags, f"'{name}' line {start}", start))
            tokens, tags, start = [], [], None
            continue
        fields = stripped.split(separator) if separator else stripped.split()
        fields = [f.strip() for f in fields if f.strip()]
        if len(fields) < 2:
            raise DataError(
                f"'{name}' line {n}: expected a token and its tag separated by "
                f"{'whitespace' if not separator else repr(separator)}, got {stripped!r}. CoNLL files hold one "
                "token per line with its tag in the last column, and a blank line between sentences."
            )
        if start is None:
            start = n
        elif start + len(tokens) != n:  # a skipped line inside a sentence breaks token->line arithmetic
            sentences.append(Sentence(tokens, tags, f"'{name}' line {start}", start))
            tokens, tags, start = [], [], n
        tokens.append(fields[0])
        tags.append(fields[-1])
    if tokens:
        sentences.append(Sentence(tokens, tags, f"'{name}' line {start}", start))
    if not sentences:
        raise DataError(f"'{path}' holds no tagged sentences.")
    return sentences


def _find(columns: Iterable[str], wanted: str | None, candidates: tuple[str, ...]) -> str | None:
    columns = list(columns)
    if wanted:
        return wanted if wanted in columns else None
    return next((c for c in candidates if c in columns), None)


def words_with_offsets(text: str) -> list[tuple[str, int, int]]:
    """The words of `text` for span annotations: runs of word characters, single other characters."""
    return [(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]


def spans_to_tags(text: str, spans: list[dict], scheme: str, where: str) -> tuple[list[str], list[str]]:
    """Words of `text` and their scheme tags from character spans `[{start, end, label}]`.

    Raises:
        DataError: A span that is malformed, out of range, crosses a word boundary or overlaps
            another span (naming `where`).
    """
    if not isinstance(text, str):
        raise DataError(f"{where}: the text is {type(text).__name__}, not a string.")
    words = words_with_offsets(text)
    starts = {s: i for i, (_, s, _) in enumerate(words)}
    ends = {e: i for i, (_, _, e) in enumerate(words)}
    tags = ["O"] * len(words)
    parsed = []
    for k, span in enumerate(spans or []):
        if not isinstance(span, dict) or not {"start", "end", "label"} <= set(span):
            raise DataError(f"{where}: span {k + 1} is {span!r}; each span needs start, end and label.")
        try:
            s, e = int(span["start"]), int(span["end"])
        except (TypeError, ValueError):
            raise DataError(f"{where}: span {k + 1} has non-integer offsets {span!r}.") from None
        label = str(span["label"])
        if not 0 <= s < e <= len(text):
            raise DataError(
                f"{where}: span {k + 1} [{s}, {e}) '{label}' is outside the text (length {len(text)}) or empty."
            )
        # Whitespace at a span's edges is not part of the entity.
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        parsed.append((s, e, label, k))
    parsed.sort()
    for (s0, e0, l0, k0), (s1, e1, l1, k1) in zip(parsed, parsed[1:]):
        if s1 < e0:
            raise DataError(
                f"{where}: span {k1 + 1} [{s1}, {e1}) '{l1}' ({text[s1:e1]!r}) overlaps span {k0 + 1} "
                f"[{s0}, {e0}) '{l0}' ({text[s0:e0]!r}). Token classification tags each word once: "
                "keep one of them."
            )
    for s, e, label, k in parsed:
        if s not in starts or e not in ends:
            where_cut = s if s not in starts else e
            word = next((w for w, ws, we in words if ws < where_cut < we), None)
            raise DataError(
                f"{where}: span {k + 1} [{s}, {e}) '{label}' ({text[s:e]!r}) crosses a token boundary"
                + (f" (it cuts the word {word!r})" if word else "")
                + ". Spans must start and end on word boundaries; fix the offsets."
            )
        first, last = starts[s], ends[e]
        n = last - first + 1
        if scheme == "BIOES" and n == 1:
            tags[first] = f"S-{label}"
            continue
        tags[first] = f"B-{label}"
        for i in range(first + 1, last + 1):
            tags[i] = f"E-{label}" if scheme == "BIOES" and i == last else f"I-{label}"
    return [w for w, _, _ in words], tags


def _tag_names(feature) -> list[str] | None:
    """Names of a `Sequence(ClassLabel)` column's ids, else None."""
    inner = getattr(feature, "feature", None)
    if inner is None and isinstance(feature, list) and feature:
        inner = feature[0]
    return list(getattr(inner, "names", None) or []) or None


def read_rows(
    rows: Iterable[dict],
    source: str,
    columns: list[str],
    tagging,
    text_column: str | None,
    scheme: str,
    line_based: bool,
    tag_names: list[str] | None = None,
    numbers: list[int] | None = None,
) -> list[Sentence]:
    """Sentences from mapping rows (JSON lines, or a dataset's rows); `numbers`: each row's line
    (or row) number, default 1, 2, ..."""
    tok_col = _find(columns, tagging.tokens_column, TOKENS_CANDIDATES)
    tag_col = _find(columns, tagging.tags_column, TAGS_CANDIDATES)
    span_col = _find(columns, tagging.spans_column, SPANS_CANDIDATES)
    text_col = _find(columns, text_column, SPAN_TEXT_CANDIDATES)
    unit = "line" if line_based else "row"
    if tok_col and tag_col and not tagging.spans_column:
        mode = "tokens"
    elif span_col and text_col:
        mode = "spans"
    else:
        for key, wanted in (
            ("data.tagging.tokens_column", tagging.tokens_column),
            ("data.tagging.tags_column", tagging.tags_column),
            ("data.tagging.spans_column", tagging.spans_column),
            ("data.text_column", text_column),
        ):
            if wanted and wanted not in columns:
                raise DataError(f"{source} has no column '{wanted}' ({key}). Its columns are: {', '.join(columns)}.")
        raise DataError(
            f"{source}: cannot tell how the tokens are tagged (columns: {', '.join(columns)}). Give either a "
            f"list of tokens and a list of tags per row ({'/'.join(TOKENS_CANDIDATES)} + {'/'.join(TAGS_CANDIDATES)}, "
            "or data.tagging.tokens_column / tags_column), or a text and character spans "
            f"[{{start, end, label}}] ({'/'.join(SPAN_TEXT_CANDIDATES)} + {'/'.join(SPANS_CANDIDATES)}, or "
            "data.text_column / data.tagging.spans_column), or a CoNLL file (token and tag per line)."
        )
    out = []
    for k, row in enumerate(rows):
        n = numbers[k] if numbers is not None else k + 1
        where = f"{source} {unit} {n}"
        if mode == "spans":
            spans = row.get(span_col)
            if isinstance(spans, str):
                try:
                    spans = json.loads(spans)
                except ValueError:
                    raise DataError(
                        f"{where}: the spans column '{span_col}' is not a JSON list: {spans[:80]!r}"
                    ) from None
            if spans is not None and not isinstance(spans, list):
                raise DataError(
                    f"{where}: the spans column '{span_col}' holds {type(spans).__name__}, not a list of "
                    "{start, end, label}."
                )
            tokens, tags = spans_to_tags(row.get(text_col), spans or [], "BIOES" if scheme == "BIOES" else "BIO", where)
        else:
            tokens, tags = row.get(tok_col), row.get(tag_col)
            if not isinstance(tokens, (list, tuple)) or not isinstance(tags, (list, tuple)):
                raise DataError(
                    f"{where}: '{tok_col}' and '{tag_col}' must both be lists (got "
                    f"{type(tokens).__name__} and {type(tags).__name__})."
                )
            tokens = [str(t) for t in tokens]
            if tag_names is not None:
                try:
                    tags = [tag_names[int(t)] for t in tags]
                except (IndexError, ValueError, TypeError):
                    raise DataError(
                        f"{where}: tag ids {list(tags)[:10]} are not ids of the column's names {tag_names}."
                    ) from None
            else:
                tags = [str(t) for t in tags]
        if len(tokens) != len(tags):
            raise DataError(f"{where}: {len(tokens)} tokens but {len(tags)} tags; every token needs exactly one tag.")
        out.append(Sentence(list(tokens), list(tags), where))
    return out


def read_jsonl(
    path: Path, tagging, text_column: str | None, scheme: str, encoding: str | None = None
) -> list[Sentence]:
    rows, columns = [], []
    try:
        lines = path.read_text(encoding=encoding or "utf-8").splitlines()
    except OSError as e:
        raise DataError(f"Cannot read '{path}': {e}") from None
    kept_lines = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise DataError(f"'{path.name}' line {n} is not JSON ({e}).") from None
        if not isinstance(row, dict):
            raise DataError(f"'{path.name}' line {n} is a JSON {type(row).__name__}, not an object.")
        rows.append(row)
        kept_lines.append(n)
        for k in row:
            if k not in columns:
                columns.append(k)
    if not rows:
        raise DataError(f"'{path}' holds no rows.")
    return read_rows(rows, f"'{path.name}'", columns, tagging, text_column, scheme, line_based=True, numbers=kept_lines)


def read_source(source, role: str, tagging, text_column: str | None, scheme: str) -> list[Sentence]:
    """The sentences of one split (`DataSource`): CoNLL, JSON lines, or anything `load_split` reads."""
    from hf_transfer.paths import resolve

    name = resolve(source.name) if source.name.startswith("pkg://") else source.name
    path = Path(name).expanduser()
    if path.is_file() and is_conll_file(path):
        return read_conll(path, tagging.column_separator, source.encoding)
    if path.is_file() and path.suffix.lower() in (".jsonl", ".ndjson"):
        return read_jsonl(path, tagging, text_column, scheme, source.encoding)
    if path.is_file() and path.suffix.lower() in (".txt", ".tsv"):
        return read_conll(path, tagging.column_separator, source.encoding)
    from hf_transfer.data.sources import load_split

    ds = load_split(source, role)
    tag_col = _find(ds.column_names, tagging.tags_column, TAGS_CANDIDATES)
    names = _tag_names(ds.features[tag_col]) if tag_col else None
    label = f"'{path.name}'" if path.exists() else f"the {role} split ('{source.name}')"
    return read_rows(ds, label, ds.column_names, tagging, text_column, scheme, line_based=False, tag_names=names)


# ------------------------------------------------------------------------------- tag schemes


def entity_type(tag: str) -> str | None:
    m = _TAG.match(tag)
    return m.group(2) if m else None


def check_tag_form(sentences: list[Sentence]) -> None:
    """Every tag is `O` or `B-/I-/E-/S-<type>`."""
    for s in sentences:
        for i, t in enumerate(s.tags):
            if t != "O" and not _TAG.match(t):
                raise DataError(
                    f"{s.token_where(i)}: tag {t!r} is neither O nor B-/I-/E-/S-<type> (BIO or BIOES). "
                    "Tags without a prefix (IO tagging) need one: write B- on each entity's first token."
                )


def detect_scheme(sentences: list[Sentence], wanted: str) -> str:
    """`BIO` or `BIOES`: as configured, else BIOES when any E-/S- tag occurs."""
    if wanted != "auto":
        return wanted
    for s in sentences:
        for t in s.tags:
            if t[:2] in ("E-", "S-"):
                return "BIOES"
    return "BIO"


def repair_tags(sentences: list[Sentence], scheme: str, policy: str, role: str) -> TagReport:
    """Fix (or refuse) entities that do not start properly, in place.

    BIO: `I-X` not after `B-X`/`I-X` becomes `B-X`. BIOES: `I-X`/`E-X` not continuing an `X`
    entity become `B-X`/`S-X`, and a `B-X`/`I-X` that the next tag does not continue becomes
    `S-X`/`E-X`. Also rejects E-/S- tags in BIO data.
    """
    report = TagReport()
    for s in sentences:
        report.sentences += 1
        report.tokens += len(s.tags)
        if not s.tags:
            report.empty += 1
        tags = s.tags
        for i, t in enumerate(tags):
            prefix, typ = t[:1], entity_type(t)
            if scheme == "BIO" and prefix in ("E", "S") and typ is not None:
                raise DataError(f"{s.token_where(i)}: tag {t!r} is BIOES, but data.tagging.scheme is BIO.")
            prev = tags[i - 1] if i > 0 else "O"
            continues = typ is not None and entity_type(prev) == typ and prev[:1] in ("B", "I")
            if prefix in ("I", "E") and typ is not None and not continues:
                fixed = ("B-" if prefix == "I" else "S-") + typ if scheme == "BIOES" else "B-" + typ
                _repair(s, i, fixed, prev, policy, report, role, "does not continue an entity of its type")
            if scheme == "BIOES" and tags[i][:1] in ("B", "I") and typ is not None:
                nxt = tags[i + 1] if i + 1 < len(tags) else "O"
                if not (entity_type(nxt) == typ and nxt[:1] in ("I", "E")):
                    fixed = ("S-" if tags[i][:1] == "B" else "E-") + typ
                    _repair(s, i, fixed, prev, policy, report, role, "is not followed by I-/E- of its type")
    if report.repaired:
        logger.warning(
            "Repaired %d tag(s) in the %s split that broke the %s scheme (data.tagging.invalid_tags=repair), "
            "for example %s.",
            report.repaired,
            role,
            scheme,
            "; ".join(report.repaired_examples),
        )
    return report


def _repair(s: Sentence, i: int, fixed: str, prev: str, policy: str, report: TagReport, role: str, why: str) -> None:
    t = s.tags[i]
    if policy == "error":
        raise DataError(
            f"{s.token_where(i)}: tag {t!r} after {prev!r} {why} (an {t[:2]} without a B-). Fix the data, or set "
            "data.tagging.invalid_tags=repair to rewrite it as "
            f"{fixed!r}."
        )
    s.tags[i] = fixed
    report.repaired += 1
    if len(report.repaired_examples) < 3:
        report.repaired_examples.append(f"{s.token_where(i)}: {t} -> {fixed}")


def scheme_labels(types: Iterable[str], scheme: str) -> list[str]:
    """`O` plus every tag of the scheme for each entity type, types sorted."""
    prefixes = ("B", "I", "E", "S") if scheme == "BIOES" else ("B", "I")
    return ["O"] + [f"{p}-{t}" for t in sorted(set(types)) for p in prefixes]


def label_set(sentences: list[Sentence], scheme: str, declared: list[str] | None) -> list[str]:
    """The tag set in id order: the declared one, else the scheme's tags of the types in `sentences`."""
    if declared:
        declared = [str(x) for x in declared]
        if len(set(declared)) != len(declared):
            raise DataError(f"data.tagging.labels lists a tag twice: {declared}.")
        for t in declared:
            if t != "O" and not _TAG.match(t):
                raise DataError(f"data.tagging.labels: {t!r} is neither O nor B-/I-/E-/S-<type>.")
        return declared
    types = {entity_type(t) for s in sentences for t in s.tags} - {None}
    if not types:
        raise DataError("The training split has no entity tags (every tag is O): there is nothing to learn.")
    return scheme_labels(types, scheme)


def check_labels(sentences: list[Sentence], labels: list[str], role: str, declared: bool) -> None:
    """Every tag is in the tag set; the error names the file and line of the first that is not."""
    known = set(labels)
    for s in sentences:
        for i, t in enumerate(s.tags):
            if t not in known:
                origin = "the declared tag set (data.tagging.labels)" if declared else "the training data's tag set"
                raise DataError(
                    f"{s.token_where(i)}: tag {t!r} in the {role} split is not in {origin}: {', '.join(labels)}. "
                    + (
                        "Add it to data.tagging.labels or fix the data."
                        if declared
                        else "Fix the data, or declare the full tag set with data.tagging.labels."
                    )
                )


def to_rows(sentences: list[Sentence], labels: list[str]) -> dict[str, list]:
    """Columns for a `datasets.Dataset`: tokens, tag ids, and where each row came from."""
    ids = {t: i for i, t in enumerate(labels)}
    return {
        "tokens": [s.tokens for s in sentences],
        "tags": [[ids[t] for t in s.tags] for s in sentences],
        "source": [s.where for s in sentences],
    }


# --------------------------------------------------------------------------------- alignment


def continuation_ids(labels: list[str]) -> list[int]:
    """For `subword_labels: all`: the label id each tag continues with inside a word (B-X -> I-X
    when the set has I-X; every other tag keeps its own id)."""
    ids = {t: i for i, t in enumerate(labels)}
    return [ids.get("I-" + t[2:], i) if t.startswith("B-") else i for i, t in enumerate(labels)]


def align_word_labels(
    word_ids: list[int | None], word_tags: list[int], mode: str, cont: list[int] | None = None
) -> tuple[list[int], list[int]]:
    """Subword labels for one tokenised sentence.

    Args:
        word_ids: The fast tokenizer's `word_ids()`: the word of each subword, None for special tokens.
        word_tags: Tag id per word.
        mode: `first` (other subwords -100) or `all` (other subwords get `cont[tag]`).
        cont: `continuation_ids(labels)`; identity when None.

    Returns:
        `(labels, word_labels)`: the training labels, and the first-subword-only labels.
    """
    labels, first = [], []
    previous = None
    for w in word_ids:
        if w is None:
            labels.append(IGNORE)
            first.append(IGNORE)
        elif w != previous:
            labels.append(word_tags[w])
            first.append(word_tags[w])
        else:
            tag = word_tags[w]
            labels.append((cont[tag] if cont is not None else tag) if mode == "all" else IGNORE)
            first.append(IGNORE)
        previous = w
    return labels, first


def tokenize_and_align(ds, tokenizer, max_length: int, mode: str, labels: list[str]):
    """Tokenise pre-split words (`is_split_into_words`) and align tags: columns input_ids (...),
    `labels` (training alignment) and `word_labels` (first subword of each word). Words cut by
    truncation are counted in the log."""
    cont = continuation_ids(labels)
    has_tags = "tags" in ds.column_names
    cut = {"words": 0, "sentences": 0}

    def tok(batch):
        enc = tokenizer(batch["tokens"], is_split_into_words=True, truncation=True, max_length=max_length)
        all_labels, all_first = [], []
        for i in range(len(batch["tokens"])):
            word_ids = enc.word_ids(i)
            n_words = len(batch["tokens"][i])
            seen = len({w for w in word_ids if w is not None})
            if seen < n_words:
                # Words with no subword at all (e.g. a lone control character) also land here.
                cut["words"] += n_words - seen
                cut["sentences"] += 1
            tags = batch["tags"][i] if has_tags else [0] * n_words
            lab, first = align_word_labels(word_ids, tags, mode, cont)
            all_labels.append(lab)
            all_first.append(first)
        enc["labels"] = all_labels
        enc["word_labels"] = all_first
        return dict(enc)

    out = ds.map(
        tok,
        batched=True,
        remove_columns=ds.column_names,
        desc="Tokenizing and aligning tags",
        load_from_cache_file=False,
    )
    if cut["words"]:
        logger.warning(
            "%d word(s) in %d sentence(s) have no subword within data.max_length=%d (truncated, or "
            "characters the tokenizer drops): they are not trained on or scored.",
            cut["words"],
            cut["sentences"],
            max_length,
        )
    return out


def pad_token_batch(features: list[dict], tokenizer) -> dict[str, Any]:
    """Dynamic padding: the tokenizer pads its inputs, `labels` / `word_labels` are padded with -100."""
    import torch

    label_keys = [k for k in ("labels", "word_labels") if k in features[0]]
    plain = [{k: v for k, v in f.items() if k not in label_keys} for f in features]
    batch = tokenizer.pad(plain, padding=True, return_tensors="pt")
    width = batch["input_ids"].shape[1]
    right = tokenizer.padding_side == "right"
    for k in label_keys:
        rows = []
        for f in features:
            v = list(f[k])
            pad = [IGNORE] * (width - len(v))
            rows.append(v + pad if right else pad + v)
        batch[k] = torch.tensor(rows, dtype=torch.long)
    return dict(batch)
