"""`auto` measures similarity on `models.features`, and `feature_extraction` reuses what it computed."""

import json

from conftest import NEGATIVE, POSITIVE
from hf_transfer.config import load_config
from hf_transfer.models import features as features_mod
from hf_transfer.run import train
from tiny_models import save_related_bert


def _related_bert(out):
    """A tiny BERT whose cue-word embeddings carry the sentiment: frozen features separate it."""
    return save_related_bert(out, POSITIVE, NEGATIVE)


def test_auto_measures_on_the_shared_features_and_feature_extraction_reuses_them(toy_text_data, tmp_path, monkeypatch):
    model_dir = _related_bert(tmp_path / "related")
    monkeypatch.setenv("HF_TRANSFER_CACHE", str(tmp_path / "cache"))
    seen = []
    original = features_mod.FeatureExtractor.__init__

    def spy(self, model, **kw):
        original(self, model, **kw)
        seen.append(self.describe())

    monkeypatch.setattr(features_mod.FeatureExtractor, "__init__", spy)
    metrics = train(
        load_config(
            None,
            [
                f"model.name_or_path={model_dir}",
                f"data.train={toy_text_data['train']}",
                f"data.eval={toy_text_data['validation']}",
                f"output_dir={tmp_path / 'run'}",
                "training.report_to=[]",
                "strategy.name=auto",
                "strategy.layers=mean",
            ],
        )
    )
    assert metrics["auto_choice"] == "feature_extraction" and metrics["auto_similarity"] == "high"
    # Both the measurement and the fit read the same features: masked mean, every layer averaged.
    assert len(seen) == 2 and seen[0] == seen[1]
    assert seen[0]["pooling"] == "mean" and seen[0]["layers"] == "mean"
    assert metrics["feature_layers"] == "mean"
    # The measurement embedded the whole training split (96 <= measure_examples): the fit read it
    # back from the cache, so there is one cache file for train and one for eval.
    assert len(list((tmp_path / "cache" / "features").glob("*.safetensors"))) == 2
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["C"] > 0 and written["run_layout"] == "beside"
