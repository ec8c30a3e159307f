"""`models/features.py`: pooling per checkpoint convention, layers, errors, the split-level cache."""

import json
import logging

import numpy as np
import pytest
import torch
import transformers as T

from hf_transfer.errors import ConfigError
from hf_transfer.models.features import (
    FeatureExtractor,
    FeatureSpec,
    HeadInputCapture,
    extract,
    find_head,
    locate_head_input,
    unwrap_model,
)
from tiny_models import ASSETS, bert_config, save_bert, vit_config, whisper_config


def _bert(cls=T.BertModel, **kw):
    torch.manual_seed(0)
    return cls(bert_config(**kw)).eval()


def _padded_batch():
    """Two sentences, the second padded: ids, mask (right padding)."""
    ids = torch.tensor([[2, 10, 11, 12, 13, 3], [2, 14, 15, 3, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    return {"input_ids": ids, "attention_mask": mask}


@torch.no_grad()
def test_text_pooling_matches_a_direct_computation_and_ignores_padding():
    bert = _bert()
    batch = _padded_batch()
    hidden = bert(**batch).last_hidden_state
    fx = FeatureExtractor(bert, modality="text", name_or_path=None)
    assert fx.describe()["pooling"] == "mean" and "without a trained pooler" in fx.describe()["source"]
    x = fx(batch)
    torch.testing.assert_close(x[0], hidden[0].mean(0))
    torch.testing.assert_close(x[1], hidden[1, :4].mean(0))
    # The padded example's features equal those of the same sentence alone (padding ignored).
    alone = fx({"input_ids": batch["input_ids"][1:, :4], "attention_mask": batch["attention_mask"][1:, :4]})
    torch.testing.assert_close(alone[0], x[1], atol=1e-5, rtol=1e-5)

    cls = FeatureExtractor(bert, modality="text", spec=FeatureSpec(pooling="cls"))(batch)
    torch.testing.assert_close(cls, hidden[:, 0])
    mx = FeatureExtractor(bert, modality="text", spec=FeatureSpec(pooling="max"))(batch)
    torch.testing.assert_close(mx[1], hidden[1, :4].max(0).values)
    last = FeatureExtractor(bert, modality="text", spec=FeatureSpec(pooling="last_token"))(batch)
    torch.testing.assert_close(last[1], hidden[1, 3])
    normed = FeatureExtractor(bert, modality="text", spec=FeatureSpec(normalize=True))(batch)
    torch.testing.assert_close(normed, torch.nn.functional.normalize(x, dim=-1))
    torch.testing.assert_close(normed.norm(dim=-1), torch.ones(2))


@torch.no_grad()
def test_trained_pooler_rule():
    clf = _bert(T.BertForSequenceClassification, architectures=["BertForSequenceClassification"], num_labels=2)
    fx = FeatureExtractor(clf, modality="text")
    assert fx.describe()["pooling"] == "pooler"
    batch = _padded_batch()
    torch.testing.assert_close(fx(batch), clf.bert(**batch).pooler_output)
    # The same model whose pooler hf_transfer had to initialise: not trained, so the mean.
    clf.hf_transfer_new_weights = ["bert.pooler.dense.weight", "classifier.weight"]
    assert FeatureExtractor(clf, modality="text").describe()["pooling"] == "mean"
    # A bare-encoder checkpoint (all-MiniLM-L6-v2's case): pooler weights exist, never trained.
    bare = _bert(T.BertForSequenceClassification, architectures=["BertModel"], num_labels=2)
    assert FeatureExtractor(bare, modality="text").describe()["pooling"] == "mean"


def _st_folder(tmp_path, pooling: dict, normalize: bool = True):
    """A tiny sentence-transformers folder: BERT + tokenizer at the root, 1_Pooling, Normalize."""
    folder = tmp_path / "st"
    save_bert(folder, _bert())
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, **pooling}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64, "do_lower_case": False}))
    return folder


@pytest.mark.parametrize(
    "pooling",
    [
        {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False},
        {"pooling_mode_max_tokens": True, "pooling_mode_mean_tokens": False},
        {"pooling_mode": ["mean", "lasttoken"]},
    ],
)
def test_sentence_transformers_folder_is_pooled_as_sentence_transformers_pools_it(tmp_path, pooling):
    from sentence_transformers import SentenceTransformer

    folder = _st_folder(tmp_path, pooling)
    texts = ["the film was great", "bad", "a very dull and boring story about nothing"]
    st = SentenceTransformer(str(folder), device="cpu")
    expected = st.encode(texts, convert_to_tensor=True)
    tok = T.AutoTokenizer.from_pretrained(folder)
    model = T.AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2).eval()
    fx = FeatureExtractor(model, modality="text", name_or_path=str(folder))
    assert fx.normalize and fx.describe()["source"].startswith("sentence-transformers folder")
    with torch.no_grad():
        x = fx(dict(tok(texts, padding=True, return_tensors="pt")))
    assert x.shape == expected.shape
    torch.testing.assert_close(x, expected.float(), atol=1e-5, rtol=1e-5)


def test_unreadable_pooling_config_falls_back_to_the_masked_mean_with_a_warning(tmp_path, caplog):
    folder = _st_folder(tmp_path, {"pooling_mode_cls_token": True})
    (folder / "1_Pooling" / "config.json").write_text("{not json")
    model = T.AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2).eval()
    with caplog.at_level(logging.WARNING):
        fx = FeatureExtractor(model, modality="text", name_or_path=str(folder))
    assert "unreadable" in caplog.text and "Falling back" in caplog.text
    d = fx.describe()
    assert d["pooling"] == "mean" and "unreadable" in d["source"] and d["normalize"] is False
    batch = _padded_batch()
    with torch.no_grad():
        torch.testing.assert_close(fx(batch)[1], model.bert(**batch).last_hidden_state[1, :4].mean(0))


@torch.no_grad()
def test_layers_mean_and_concat():
    bert = _bert()
    batch = _padded_batch()
    hs = bert(**batch, output_hidden_states=True).hidden_states  # embeddings + 2 blocks
    m = batch["attention_mask"].unsqueeze(-1).float()
    pooled = [(h * m).sum(1) / m.sum(1) for h in hs]
    mean = FeatureExtractor(bert, modality="text", spec=FeatureSpec(layers="mean"))(batch)
    torch.testing.assert_close(mean, (pooled[1] + pooled[2]) / 2)
    concat = FeatureExtractor(bert, modality="text", spec=FeatureSpec(layers=(0, -1), combine="concat"))(batch)
    assert concat.shape == (2, 64)
    torch.testing.assert_close(concat, torch.cat([pooled[0], pooled[2]], -1))
    one = FeatureExtractor(bert, modality="text", spec=FeatureSpec(layers=[1]))(batch)
    torch.testing.assert_close(one, pooled[1])


def test_a_layer_the_model_lacks_is_a_config_error_before_any_forward_pass():
    bert = _bert()

    def forward(*a, **k):
        raise AssertionError("no forward pass expected")

    bert.forward = forward
    with pytest.raises(ConfigError, match="this model has 2 layers"):
        FeatureExtractor(bert, modality="text", spec=FeatureSpec(layers=(3,)))
    with pytest.raises(ConfigError, match="this model has 2 layers"):
        FeatureExtractor(bert, modality="text", spec=FeatureSpec(layers=(-4,)))
    with pytest.raises(ConfigError):
        FeatureSpec(layers="first")
    with pytest.raises(ConfigError):
        FeatureSpec(pooling="pooler", layers="mean")


@torch.no_grad()
def test_vit_features_are_cls_after_the_final_norm_which_the_head_reads():
    torch.manual_seed(0)
    vit = T.ViTForImageClassification(vit_config(num_labels=3)).eval()
    pix = {"pixel_values": torch.randn(2, 3, 32, 32)}
    fx = FeatureExtractor(vit, modality="image")
    x = fx(pix)
    spec = locate_head_input(vit, text=False)
    assert spec.linear == "classifier" and find_head(vit) == ["classifier"]
    with HeadInputCapture(vit, spec) as cap:
        vit(**pix)
        head_in, _ = cap.features()
    torch.testing.assert_close(x, head_in)
    torch.testing.assert_close(x, vit.vit(**pix).last_hidden_state[:, 0])
    # head_input pooling gives the same vectors.
    torch.testing.assert_close(FeatureExtractor(vit, modality="image", spec=FeatureSpec(pooling="head_input"))(pix), x)


@torch.no_grad()
def test_cnn_features_are_the_pooled_map_the_head_reads():
    torch.manual_seed(0)
    net = T.ConvNextForImageClassification(
        T.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, num_labels=3)
    ).eval()
    pix = {"pixel_values": torch.randn(2, 3, 32, 32)}
    spec = locate_head_input(net, text=False)
    with HeadInputCapture(net, spec) as cap:
        net(**pix)
        head_in, _ = cap.features()
    torch.testing.assert_close(FeatureExtractor(net, modality="image")(pix), head_in)
    both = FeatureExtractor(net, modality="image", spec=FeatureSpec(layers=(1, 2), combine="concat"))(pix)
    assert both.shape == (2, 8 + 16)
    with pytest.raises(ConfigError, match="combine: concat"):
        FeatureExtractor(net, modality="image", spec=FeatureSpec(layers=(1, 2)))(pix)


@torch.no_grad()
def test_whisper_features_are_the_mean_over_real_frames():
    from hf_transfer.models.whisper import WhisperForMaskedAudioClassification

    torch.manual_seed(0)
    model = WhisperForMaskedAudioClassification(
        whisper_config(
            d_model=16,
            encoder_layers=2,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=20,
            decoder_ffn_dim=20,
            num_mel_bins=8,
            max_source_positions=10,
            num_labels=3,
        )
    ).eval()
    feats = torch.randn(2, 8, 20)
    mask = torch.zeros(2, 20, dtype=torch.long)
    mask[0, :20] = 1
    mask[1, :8] = 1  # 8 mel frames of audio = the first 4 encoder positions
    fx = FeatureExtractor(model, modality="audio")
    x = fx({"input_features": feats, "attention_mask": mask})
    hidden = model.encoder(feats).last_hidden_state
    torch.testing.assert_close(x[0], hidden[0].mean(0))
    torch.testing.assert_close(x[1], hidden[1, :4].mean(0))
    # Exactly the vector the masked classifier's head (projector) receives.
    with HeadInputCapture(model, locate_head_input(model, text=False)) as cap:
        model(input_features=feats, attention_mask=mask)
        head_in, _ = cap.features()
    torch.testing.assert_close(x, head_in)
    mean_layers = FeatureExtractor(model, modality="audio", spec=FeatureSpec(layers="mean"))
    assert mean_layers({"input_features": feats, "attention_mask": mask}).shape == (2, 16)


def test_unwrap_model_sees_through_peft():
    from peft import LoraConfig, get_peft_model

    model = _bert(T.BertForSequenceClassification, num_labels=2)
    wrapped = get_peft_model(model, LoraConfig(target_modules=["query"], r=2))
    assert unwrap_model(wrapped) is model
    assert find_head(wrapped) == ["classifier"]


class _ToyTask:
    """The pieces of a task `extract` uses."""

    def __init__(self, tok):
        self.tok = tok
        self.cfg = None

    def preprocess(self, ds, train):
        return [dict(self.tok(r["text"]), **({"labels": r["labels"]} if "labels" in r else {})) for r in ds]

    def collate(self, rows):
        return T.DataCollatorWithPadding(self.tok)(rows)

    def model_inputs(self, batch):
        return {k: v for k, v in batch.items() if k != "labels"}

    def save_processor(self, out):
        self.tok.save_pretrained(out)


def test_extract_caches_by_content_and_spec_and_allows_unlabelled_data(tmp_path, monkeypatch):
    import datasets

    tok = T.AutoTokenizer.from_pretrained(ASSETS / "tiny-bert")
    task = _ToyTask(tok)
    ds = datasets.Dataset.from_dict({"text": ["good film", "bad plot here", "fine"], "labels": [1, 0, 1]})
    fx = FeatureExtractor(_bert(T.BertForSequenceClassification, num_labels=2), modality="text")
    first = extract(fx, task, ds, batch_size=2, device="cpu", cache_dir=str(tmp_path))
    assert not first.cache_hit and first.X.shape == (3, 32) and first.y.tolist() == [1, 0, 1]
    assert first.X.dtype == np.float32

    def boom(*a, **k):
        raise AssertionError("the model ran although the features were cached")

    monkeypatch.setattr(FeatureExtractor, "__call__", boom)
    second = extract(fx, task, ds, batch_size=2, device="cpu", cache_dir=str(tmp_path))
    assert second.cache_hit and np.array_equal(second.X, first.X)
    monkeypatch.undo()
    # Another spec is another key.
    other = FeatureExtractor(fx.model, modality="text", spec=FeatureSpec(pooling="cls"))
    third = extract(other, task, ds, batch_size=2, device="cpu", cache_dir=str(tmp_path))
    assert not third.cache_hit and len(list(tmp_path.glob("*.safetensors"))) == 2
    unlabelled = extract(fx, task, ds.remove_columns("labels"), batch_size=2, device="cpu", cache=False)
    assert unlabelled.y is None and np.allclose(unlabelled.X, first.X, atol=1e-6)


@torch.no_grad()
def test_extract_batches_texts_by_length_and_returns_them_in_the_split_order(monkeypatch):
    """Shortest first, so each batch pads to about its own length; the rows and labels come back in
    the split's order, and they are the features of each text on its own."""
    import datasets

    tok = T.AutoTokenizer.from_pretrained(ASSETS / "tiny-bert")
    task = _ToyTask(tok)
    texts = [" ".join(["good"] * n + ["film"]) for n in (9, 1, 5, 2, 12, 3)]
    ds = datasets.Dataset.from_dict({"text": texts, "labels": [0, 1, 0, 1, 0, 1]})
    fx = FeatureExtractor(_bert(T.BertForSequenceClassification, num_labels=2), modality="text")
    widths = []
    original = FeatureExtractor.__call__

    def spy(self, inputs):
        widths.append(inputs["input_ids"].shape[1])
        return original(self, inputs)

    monkeypatch.setattr(FeatureExtractor, "__call__", spy)
    got = extract(fx, task, ds, batch_size=2, device="cpu", cache=False)
    monkeypatch.undo()
    assert widths == sorted(widths) and widths[0] < widths[-1]  # shortest first
    one_by_one = np.concatenate([fx(dict(tok([t], return_tensors="pt"))).numpy() for t in texts])
    assert np.allclose(got.X, one_by_one, atol=1e-5)
    assert got.y.tolist() == [0, 1, 0, 1, 0, 1]
