"""Token classification: readers (CoNLL, JSON lines, character spans), tag schemes and repairs,
the word-to-subword alignment, seqeval metrics on known data, bad-input errors, and the recipe end
to end on a tiny BERT (train, evaluate, predict = transformers' pipeline, export, push, strategies)."""

import json
import random

import numpy as np
import pytest
import torch

from hf_transfer.config import TaggingConfig, load_config
from hf_transfer.data import tokens as T
from hf_transfer.errors import ConfigError, DataError
from hf_transfer.metrics.tokens import compute_token_metrics, entity_metrics

PER = "john mary anna peter".split()
LOC = "paris london berlin rome".split()
FILL = "the a is was went to in at and with very good day".split()


def toy_tagged(n, seed):
    """Learnable toy NER: names are PER (two words), cities LOC (one word)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        toks, tags = [], []
        for _ in range(rng.randint(3, 8)):
            r = rng.random()
            if r < 0.15:
                toks += [rng.choice(PER), rng.choice(PER)]
                tags += ["B-PER", "I-PER"]
            elif r < 0.3:
                toks.append(rng.choice(LOC))
                tags.append("B-LOC")
            else:
                toks.append(rng.choice(FILL))
                tags.append("O")
        rows.append((toks, tags))
    return rows


def write_conll(path, rows):
    path.write_text("".join("".join(f"{t} {g}\n" for t, g in zip(toks, tags)) + "\n" for toks, tags in rows))
    return path


@pytest.fixture(scope="module")
def ner_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("ner")
    return {
        "train": write_conll(d / "train.conll", toy_tagged(120, 1)),
        "eval": write_conll(d / "dev.conll", toy_tagged(30, 2)),
        "test": write_conll(d / "test.conll", toy_tagged(30, 3)),
        "dir": d,
    }


def ner_overrides(tiny_bert_dir, ner_data, out, *extra):
    return [
        "recipe=token_classification",
        f"model.name_or_path={tiny_bert_dir}",
        f"data.train={ner_data['train']}",
        f"data.eval={ner_data['eval']}",
        f"output_dir={out}",
        "data.max_length=64",
        "training.epochs=8",
        "training.learning_rate=0.003",
        "training.report_to=[]",
        "training.save_strategy=no",
        "training.warmup_ratio=0.0",
        *extra,
    ]


# ------------------------------------------------------------------------------- readers


def test_conll_reader_takes_the_last_column_skips_docstart_and_whitespace_lines(tmp_path):
    p = tmp_path / "c.conll"
    p.write_text(
        "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ B-NP B-MISC\n"
        "\t\nPeter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n"
    )
    s = T.read_conll(p)
    assert [x.tokens for x in s] == [["EU", "rejects", "German"], ["Peter", "Blackburn"]]
    assert [x.tags for x in s] == [["B-ORG", "O", "B-MISC"], ["B-PER", "I-PER"]]
    assert s[1].token_where(1) == "'c.conll' line 8"


def test_conll_line_without_a_tag_is_named(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_text("John B-PER\nlives O\nthere\n")
    with pytest.raises(DataError, match=r"'bad.txt' line 3: expected a token and its tag"):
        T.read_conll(p)


def test_jsonl_tokens_and_tags_length_mismatch_names_the_line(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text(
        json.dumps({"tokens": ["a", "b"], "tags": ["O", "O"]})
        + "\n\n"
        + json.dumps({"tokens": ["John", "runs"], "tags": ["B-PER"]})
        + "\n"
    )
    with pytest.raises(DataError, match=r"'d.jsonl' line 3: 2 tokens but 1 tags"):
        T.read_jsonl(p, TaggingConfig(), None, "BIO")


def test_spans_become_bio_and_bioes_tags():
    text = "Ada Lovelace met Charles Babbage in London."
    spans = [
        {"start": 0, "end": 12, "label": "PER"},
        {"start": 17, "end": 32, "label": "PER"},
        {"start": 36, "end": 42, "label": "LOC"},
    ]
    words, bio = T.spans_to_tags(text, spans, "BIO", "row 1")
    assert words == ["Ada", "Lovelace", "met", "Charles", "Babbage", "in", "London", "."]
    assert bio == ["B-PER", "I-PER", "O", "B-PER", "I-PER", "O", "B-LOC", "O"]
    _, bioes = T.spans_to_tags(text, spans, "BIOES", "row 1")
    assert bioes == ["B-PER", "E-PER", "O", "B-PER", "E-PER", "O", "S-LOC", "O"]


@pytest.mark.parametrize(
    "spans, message",
    [
        (
            [{"start": 0, "end": 6, "label": "PER"}],
            r"row 4: span 1 \[0, 6\) 'PER' \('Ada Lo'\) crosses a token boundary "
            r"\(it cuts the word 'Lovelace'\)",
        ),
        (
            [{"start": 0, "end": 12, "label": "PER"}, {"start": 4, "end": 16, "label": "X"}],
            r"row 4: span 2 .* overlaps span 1",
        ),
        ([{"start": 5, "end": 99, "label": "PER"}], r"row 4: span 1 \[5, 99\) 'PER' is outside the text"),
        ([{"start": 0, "label": "PER"}], r"row 4: span 1 .* needs start, end and label"),
    ],
)
def test_bad_spans_are_named(spans, message):
    with pytest.raises(DataError, match=message):
        T.spans_to_tags("Ada Lovelace met Babbage", spans, "BIO", "row 4")


# --------------------------------------------------------------------------- tag schemes


def test_scheme_detection_and_bio_repair_is_counted(caplog):
    s = [T.Sentence(["a", "b", "c", "d"], ["O", "I-PER", "I-PER", "I-LOC"], "'x' line 1", 1)]
    assert T.detect_scheme(s, "auto") == "BIO"
    report = T.repair_tags(s, "BIO", "repair", "train")
    assert s[0].tags == ["O", "B-PER", "I-PER", "B-LOC"]
    assert report.repaired == 2
    assert "Repaired 2 tag(s) in the train split" in caplog.text and "'x' line 2: I-PER -> B-PER" in caplog.text


def test_i_without_b_refused_when_asked():
    s = [T.Sentence(["a", "b"], ["O", "I-PER"], "'x.conll' line 10", 10)]
    with pytest.raises(
        DataError,
        match=r"'x.conll' line 11: tag 'I-PER' after 'O' does not continue an entity .*"
        r"data.tagging.invalid_tags=repair",
    ):
        T.repair_tags(s, "BIO", "error", "train")


def test_bioes_repairs():
    s = [T.Sentence(list("abcdef"), ["B-PER", "O", "I-LOC", "E-LOC", "E-ORG", "S-X"], "'y' line 1", 1)]
    assert T.detect_scheme(s, "auto") == "BIOES"
    T.repair_tags(s, "BIOES", "repair", "train")
    assert s[0].tags == ["S-PER", "O", "B-LOC", "E-LOC", "S-ORG", "S-X"]


def test_tag_outside_the_set_and_malformed_tags_are_named():
    s = [T.Sentence(["a", "b"], ["O", "B-FOO"], "'dev.conll' line 5", 5)]
    with pytest.raises(
        DataError,
        match=r"'dev.conll' line 6: tag 'B-FOO' in the eval split is not in the training "
        r"data's tag set: O, B-PER, I-PER",
    ):
        T.check_labels(s, ["O", "B-PER", "I-PER"], "eval", declared=False)
    with pytest.raises(DataError, match=r"'dev.conll' line 5: tag 'PER' is neither O nor B-/I-/E-/S-<type>"):
        T.check_tag_form([T.Sentence(["a"], ["PER"], "'dev.conll' line 5", 5)])


def test_label_set_is_the_scheme_for_every_type():
    s = [T.Sentence(["a", "b"], ["B-PER", "B-LOC"], "r", None)]
    assert T.label_set(s, "BIO", None) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert T.label_set(s, "BIOES", None)[:5] == ["O", "B-LOC", "I-LOC", "E-LOC", "S-LOC"]
    assert T.label_set(s, "BIO", ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])[1] == "B-PER"


# ----------------------------------------------------------------------------- alignment


def test_alignment_first_and_all_subwords():
    labels = ["O", "B-PER", "I-PER"]
    cont = T.continuation_ids(labels)
    word_ids = [None, 0, 0, 0, 1, 2, 2, None]
    tags = [1, 2, 0]
    first, first_words = T.align_word_labels(word_ids, tags, "first", cont)
    assert first == [-100, 1, -100, -100, 2, 0, -100, -100]
    assert first_words == first
    every, every_words = T.align_word_labels(word_ids, tags, "all", cont)
    assert every == [-100, 1, 2, 2, 2, 0, 0, -100]  # B-PER continues as I-PER inside its word
    assert every_words == first


def test_tokenize_and_align_with_a_real_tokenizer(tiny_bert_dir):
    import datasets
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    ds = datasets.Dataset.from_dict({"tokens": [["john", "lives", "in", "paris"]], "tags": [[1, 0, 0, 3]]})
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    out = T.tokenize_and_align(ds, tok, 64, "first", names)[0]
    enc = tok(["john", "lives", "in", "paris"], is_split_into_words=True)
    starts = [i for i, w in enumerate(enc.word_ids()) if w is not None and (i == 0 or enc.word_ids()[i - 1] != w)]
    assert [i for i, v in enumerate(out["labels"]) if v != -100] == starts
    assert [out["labels"][i] for i in starts] == [1, 0, 0, 3]
    assert out["word_labels"] == out["labels"]
    out_all = T.tokenize_and_align(ds, tok, 64, "all", names)[0]
    pieces_of_john = [i for i, w in enumerate(enc.word_ids()) if w == 0]
    assert len(pieces_of_john) > 1 and [out_all["labels"][i] for i in pieces_of_john] == [1] + [2] * (
        len(pieces_of_john) - 1
    )
    assert out_all["word_labels"] == out["word_labels"]


# ------------------------------------------------------------------------------- metrics


def test_entity_metrics_on_known_data():
    # seqeval's README example: one of two predicted entities is right, one of two true ones found.
    y_true = [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    y_pred = [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    m = entity_metrics(y_true, y_pred)
    assert (m["precision"], m["recall"], m["f1"]) == (0.5, 0.5, 0.5)
    assert m["accuracy"] == pytest.approx(8 / 10)  # positions 2 and 3 of the first sentence differ
    assert m["per_type"]["PER"]["f1"] == 1.0 and m["per_type"]["MISC"]["f1"] == 0.0
    # Lenient (conlleval) mode: an I- after O starts an entity; strict mode: it starts nothing.
    lenient = entity_metrics([["B-PER", "I-PER", "O"]], [["I-PER", "I-PER", "O"]])
    strict = entity_metrics([["B-PER", "I-PER", "O"]], [["I-PER", "I-PER", "O"]], strict=True)
    assert lenient["f1"] == 1.0 and strict["f1"] == 0.0
    assert lenient["accuracy"] == strict["accuracy"] == pytest.approx(2 / 3)


def test_token_metrics_read_only_scored_positions():
    names = ["O", "B-PER", "I-PER"]
    refs = np.array([[-100, 1, -100, 2, 0, -100], [-100, 0, 1, -100, -100, -100]])
    preds = np.array([[0, 1, 0, 2, 0, 0], [1, 0, 0, 2, 2, 2]])  # the -100 positions' guesses don't count
    m = compute_token_metrics(preds, refs, names)
    # true: PER(0-1) ; PER(1) — predicted: PER(0-1) ; nothing
    assert m["precision"] == 1.0 and m["recall"] == 0.5 and m["f1"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(4 / 5)
    assert m["f1_per"] == pytest.approx(2 / 3) and m["support_per"] == 2


# ------------------------------------------------------------------------ a whole run


@pytest.fixture(scope="module")
def ner_run(tmp_path_factory, tiny_bert_dir, ner_data):
    from hf_transfer.run import train

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("ner-runs") / "full"
    cfg = load_config(None, ner_overrides(tiny_bert_dir, ner_data, out, f"data.test={ner_data['test']}"))
    return out, train(cfg)


def test_run_learns_and_evaluate_reproduces_it(ner_run):
    from hf_transfer.run import evaluate

    out, metrics = ner_run
    assert metrics["eval_f1"] > 0.5  # toy entities are easy; an untrained head scores ~0
    for k in ("eval_precision", "eval_recall", "eval_accuracy", "test_f1", "eval_f1_per", "eval_f1_loc"):
        assert k in metrics
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["labels"] == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"] and saved["tag_scheme"] == "BIO"
    again = evaluate(out)
    assert again["eval_f1"] == pytest.approx(metrics["eval_f1"])
    assert again["test_f1"] == pytest.approx(metrics["test_f1"])
    from transformers import AutoModelForTokenClassification

    model = AutoModelForTokenClassification.from_pretrained(out)
    assert model.config.id2label[3] == "B-PER"


TEXTS = ["john mary went to paris", "the day in london with anna", "rome", "nothing here at all"]


def _pipeline_entities(folder):
    from transformers import pipeline

    nlp = pipeline("token-classification", model=str(folder), aggregation_strategy="simple", device=-1)
    return [
        [
            {
                "entity_group": e["entity_group"],
                "word": e["word"],
                "start": int(e["start"]),
                "end": int(e["end"]),
                "score": float(e["score"]),
            }
            for e in nlp(t)
        ]
        for t in TEXTS
    ]


def _same_entities(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert [(e["entity_group"], e["word"], e["start"], e["end"]) for e in a] == [
            (e["entity_group"], e["word"], e["start"], e["end"]) for e in b
        ]
        assert [e["score"] for e in a] == pytest.approx([e["score"] for e in b], abs=1e-4)


def test_predict_gives_pipeline_entities_with_character_offsets(ner_run):
    from hf_transfer.run import predict

    out, _ = ner_run
    ours = predict(out, TEXTS)
    assert [r["input"] for r in ours] == TEXTS
    assert any(r["entities"] for r in ours)
    for r in ours:
        for e in r["entities"]:
            assert 0 <= e["start"] < e["end"] <= len(r["input"])
    _same_entities([r["entities"] for r in ours], _pipeline_entities(out))


def test_export_reloads_in_the_plain_pipeline_with_the_same_entities_and_push(ner_run, tmp_path, monkeypatch):
    from huggingface_hub import constants
    from test_export import TOKEN, StandInHub

    from hf_transfer.export.card import validate_card
    from hf_transfer.export.export import export_run
    from hf_transfer.export.push import push_run
    from hf_transfer.run import predict

    out, _ = ner_run
    exp = tmp_path / "export"
    export_run(out, exp, license="mit")  # reload check: logits of the export = the run's
    card = (exp / "README.md").read_text()
    meta = yaml_front(card)
    assert meta["pipeline_tag"] == "token-classification"
    assert meta["widget"] == [{"text": "My name is Sarah and I live in London."}]
    assert 'pipeline("token-classification"' in card and "B-LOC, I-LOC, B-PER, I-PER" in card
    assert validate_card(exp / "README.md") == []
    _same_entities([r["entities"] for r in predict(out, TEXTS)], _pipeline_entities(exp))
    # Push against a local stand-in for the Hub API.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    server = StandInHub({TOKEN: "write"})
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    try:
        run_copy = tmp_path / "run"
        import shutil

        shutil.copytree(out, run_copy)
        result = push_run(run_copy, "alice/tiny-ner", license="mit")
        assert "README.md" in result.uploaded and "model.safetensors" in result.uploaded
        assert b"token-classification" in server.repos["alice/tiny-ner"]["main"]["README.md"]
    finally:
        server.close()


def yaml_front(card: str) -> dict:
    import yaml

    return yaml.safe_load(card.split("---")[1])


def test_feature_extraction_writes_a_per_token_classifier_into_the_head(tiny_bert_dir, ner_data, tmp_path):
    from transformers import AutoModelForTokenClassification, BertModel

    from hf_transfer.run import evaluate, predict, train

    out = tmp_path / "fe"
    m = train(
        load_config(
            None, ner_overrides(tiny_bert_dir, ner_data, out, "strategy.name=feature_extraction", "strategy.C=10")
        )
    )
    assert m["head_written"] and m["run_layout"] == "head" and m["C"] == 10.0
    assert m["trainable_parameters"] == 32 * 5 + 5
    assert m["eval_f1"] > 0.3
    model = AutoModelForTokenClassification.from_pretrained(out)
    base = BertModel.from_pretrained(tiny_bert_dir)
    assert torch.equal(model.bert.encoder.layer[1].output.dense.weight, base.encoder.layer[1].output.dense.weight)
    assert evaluate(out)["eval_f1"] == pytest.approx(m["eval_f1"])
    assert predict(out, ["john went to paris"])[0]["input"] == "john went to paris"


def test_feature_extraction_refuses_settings_it_cannot_write_into_the_head(tiny_bert_dir, ner_data, tmp_path):
    from hf_transfer.run import train

    with pytest.raises(ConfigError, match="must be logistic_regression or linear"):
        train(
            load_config(
                None,
                ner_overrides(
                    tiny_bert_dir,
                    ner_data,
                    tmp_path / "x",
                    "strategy.name=feature_extraction",
                    "strategy.classifier=knn",
                ),
            )
        )


@pytest.mark.parametrize(
    "strategy, extra",
    [
        ("lora", []),
        ("freeze", []),
        ("partial", []),
        ("auto", []),
        ("ia3", []),
        ("gradual_unfreeze", []),
        ("lp_ft", []),
        ("scratch", ["data.tagging.subword_labels=all"]),
    ],
)
def test_strategies_train_a_token_classifier(strategy, extra, tiny_bert_dir, ner_data, tmp_path):
    from transformers import AutoModelForTokenClassification

    from hf_transfer.run import train

    out = tmp_path / strategy
    m = train(
        load_config(
            None, ner_overrides(tiny_bert_dir, ner_data, out, f"strategy.name={strategy}", "training.epochs=2", *extra)
        )
    )
    assert "eval_f1" in m and 0.0 <= m["eval_f1"] <= 1.0
    AutoModelForTokenClassification.from_pretrained(out)
    if strategy == "lora":
        assert json.loads((out / "adapter" / "adapter_config.json").read_text())["task_type"] == "TOKEN_CLS"
    if strategy == "auto":
        assert m["auto_choice"] in ("feature_extraction", "partial", "full") and m["auto_train_size"] == 120


# ------------------------------------------------------------------------- bad input in a run


def test_unknown_eval_tag_fails_before_training_naming_file_and_line(tiny_bert_dir, ner_data, tmp_path):
    from hf_transfer.run import train

    bad = tmp_path / "dev.conll"
    bad.write_text("john B-PER\nwent O\n\nparis B-CITY\n")
    cfg = load_config(None, ner_overrides(tiny_bert_dir, ner_data, tmp_path / "run") + [f"data.eval={bad}"])
    with pytest.raises(DataError, match=r"'dev.conll' line 4: tag 'B-CITY' in the eval split is not in the training"):
        train(cfg)
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_jsonl_and_span_files_train(tiny_bert_dir, ner_data, tmp_path):
    from hf_transfer.run import train

    tok = tmp_path / "train.jsonl"
    tok.write_text("\n".join(json.dumps({"tokens": t, "tags": g}) for t, g in toy_tagged(40, 5)))
    spans = tmp_path / "eval.jsonl"
    rows = []
    for toks, tags in toy_tagged(10, 6):
        text, ents = "", []
        for w, g in zip(toks, tags):
            start = len(text)
            text += w + " "
            if g.startswith("B-"):
                ents.append({"start": start, "end": start + len(w), "label": g[2:]})
            elif g.startswith("I-"):
                ents[-1]["end"] = start + len(w)
        rows.append({"text": text.strip(), "entities": ents})
    spans.write_text("\n".join(json.dumps(r) for r in rows))
    m = train(
        load_config(
            None,
            ner_overrides(tiny_bert_dir, ner_data, tmp_path / "run")
            + [f"data.train={tok}", f"data.eval={spans}", "training.epochs=1"],
        )
    )
    assert m["train_size"] == 40 and m["eval_size"] == 10


def test_settings_that_do_not_apply_are_refused(tiny_bert_dir, ner_data, tmp_path):
    from hf_transfer.run import train

    with pytest.raises(ConfigError, match="use data.max_train_samples"):
        train(load_config(None, ner_overrides(tiny_bert_dir, ner_data, tmp_path / "r", "data.samples_per_class=8")))
    with pytest.raises(ConfigError, match="strategy contrastive trains sentence embeddings"):
        train(load_config(None, ner_overrides(tiny_bert_dir, ner_data, tmp_path / "r", "strategy.name=contrastive")))
    with pytest.raises(ConfigError, match="cache_frozen_prefix keeps one label per example"):
        train(
            load_config(
                None,
                ner_overrides(
                    tiny_bert_dir, ner_data, tmp_path / "r", "strategy.name=freeze", "training.cache_frozen_prefix=true"
                ),
            )
        )


def test_layers_command_on_a_token_classifier(tiny_bert_dir, capsys):
    from hf_transfer.cli import main

    assert main(["layers", str(tiny_bert_dir), "--auto-class", "AutoModelForTokenClassification"]) == 0
    out = capsys.readouterr().out
    assert "BertForTokenClassification" in out and "head" in out


# ---------------------------------------------------------------------- rank and compare


def test_rank_scores_per_word_features(tiny_bert_dir, ner_data, tmp_path):
    from hf_transfer.selection.rank import rank_candidates

    cfg = load_config(None, ner_overrides(tiny_bert_dir, ner_data, tmp_path / "r"))
    report = rank_candidates(cfg, [str(tiny_bert_dir), "random:" + str(tiny_bert_dir)], max_examples=50, repeats=2)
    ok = report.ranked
    assert len(ok) == 2 and all(set(r.scores) == {"knn", "logme", "hscore"} for r in ok)
    # One row per scored word of the 50 sampled sentences (toy sentences hold 3 to 16 words).
    assert 150 <= ok[0].examples <= 800 and ok[0].dim == 32
    assert len(report.labels) == ok[0].examples and set(np.unique(report.labels)) <= set(range(5))


def test_compare_plans_sentence_subsamples_and_runs(tiny_bert_dir, ner_data, tmp_path):
    from hf_transfer.study.compare import plan_study, run_study

    cfg = tmp_path / "ner.yaml"
    cfg.write_text("recipe: token_classification\n")
    over = [
        o
        for o in ner_overrides(tiny_bert_dir, ner_data, tmp_path / "unused", "training.epochs=1")
        if not o.startswith("recipe=")
    ]
    with pytest.raises(DataError, match="feature_extraction"):
        plan_study(cfg, over, strategies="full", sizes="20", baselines="logreg", out_dir=tmp_path / "s0")
    with pytest.raises(ConfigError, match="--per-class"):
        plan_study(cfg, over, strategies="full", sizes="20", per_class=True, out_dir=tmp_path / "s1")
    study = plan_study(
        cfg, over, strategies="full,feature_extraction", sizes="20,40", seeds="0", out_dir=tmp_path / "s", metric="f1"
    )
    small = next(c for c in study.cells if c.size == 20 and c.label == "full")
    big = next(c for c in study.cells if c.size == 40 and c.label == "full")
    assert set(small.cfg.data.train_indices) < set(big.cfg.data.train_indices)  # nested sentence subsamples
    report = run_study(study, jobs=1, echo=lambda line: None)
    assert report is not None
    rows = (tmp_path / "s" / "study.csv").read_text()
    assert "feature_extraction" in rows and "full" in rows


def test_grouping_follows_the_simple_pipeline_and_reads_bioes_as_bio(tiny_bert_dir):
    from transformers import AutoTokenizer

    from hf_transfer.tasks.token_classification import group_entities

    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)

    def t(tag, word, start, score=0.5):
        return {"entity": tag, "score": score, "word": word, "start": start, "end": start + len(word.lstrip("#"))}

    tokens = [
        t("B-PER", "jo", 0, 0.9),
        t("I-PER", "##hn", 2, 0.7),
        t("B-PER", "mary", 5),
        t("O", "in", 10),
        t("I-LOC", "rome", 13),
        t("S-ORG", "un", 18),
        t("E-ORG", "##it", 20),
        t("B-LOC", "x", 23),
    ]
    got = group_entities(tokens, tok)
    assert [(e["entity_group"], e["start"], e["end"]) for e in got] == [
        ("PER", 0, 4),
        ("PER", 5, 9),
        ("LOC", 13, 17),
        ("ORG", 18, 22),
        ("LOC", 23, 24),
    ]
    assert got[0]["score"] == pytest.approx(0.8) and got[0]["word"] == "john"


def test_evaluate_recarves_the_same_eval_split(tiny_bert_dir, ner_data, tmp_path):
    from hf_transfer.run import evaluate, train

    over = [
        o
        for o in ner_overrides(tiny_bert_dir, ner_data, tmp_path / "run", "training.epochs=2")
        if not o.startswith("data.eval=")
    ]
    m = train(load_config(None, over + ["data.eval_fraction=0.25"]))
    assert m["eval_size"] == 30 and m["train_size"] == 90
    assert evaluate(tmp_path / "run")["eval_f1"] == pytest.approx(m["eval_f1"])


def test_dataset_with_classlabel_tag_ids_is_read_by_name(tmp_path):
    import datasets

    from hf_transfer.config import DataSource

    feats = datasets.Features(
        {
            "tokens": datasets.Sequence(datasets.Value("string")),
            "ner_tags": datasets.Sequence(datasets.ClassLabel(names=["O", "B-PER", "I-PER"])),
        }
    )
    ds = datasets.Dataset.from_dict({"tokens": [["Ada", "Lovelace", "wrote"]], "ner_tags": [[1, 2, 0]]}, features=feats)
    path = tmp_path / "train.parquet"
    ds.to_parquet(str(path))
    s = T.read_source(DataSource(name=str(path)), "train", TaggingConfig(), None, "BIO")
    assert s[0].tokens == ["Ada", "Lovelace", "wrote"] and s[0].tags == ["B-PER", "I-PER", "O"]
