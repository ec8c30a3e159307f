"""Run folders of a classifier fitted on frozen features: how they are written and loaded back.

Three layouts, recorded in `feature_classifier.json` (`layout`):

- `head`: the features are exactly the input of the model's one linear head, and the classifier is
  linear: its weights are written into that head. The folder is a plain transformers model.
- `setfit`: text features that a sentence-transformers body reproduces (last layer; mean, CLS,
  max or last-token pooling; optional normalisation): the folder is also a sentence-transformers
  model (`modules.json`, `1_Pooling/`, `2_Normalize`) with a scikit-learn head (`model_head.pkl`,
  `config_setfit.json`), so `setfit.SetFitModel.from_pretrained(run_dir)` loads and predicts
  without hf_transfer.
- `beside`: anything else (several layers, image/audio features that are not the head input;
  label sets' and numbers' linear models, `models.target_probe`, which SetFit's single-label head
  cannot hold): the feature description is in the JSON.

In the `setfit` and `beside` layouts the classifier itself is `classifier.safetensors` (its
tensors: weights, support vectors, kNN's training features) plus `classifier.json` (its kind,
classes and settings), written by `models.probe.classifier_state`. That is all hf_transfer reads
back (`models.probe.StoredClassifier`): nothing in a run folder is unpickled, since unpickling a
file runs whatever code it holds, and a run folder may come from anyone. `model_head.pkl` is
written for SetFit users only (SetFit unpickles it); hf_transfer reads a pickle only from an older
run folder that has nothing else, and only when the caller says it trusts the folder
(`allow_pickle=True`, `hf-transfer evaluate/predict --trust-pickle`).

`attach_feature_classifier(run_dir, model)` gives `hf-transfer evaluate` / `predict` a model whose
logits are the saved classifier's, on features computed as at training time.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import nn

from hf_transfer.errors import ModelError
from hf_transfer.models.features import FeatureExtractor, HeadInput
from hf_transfer.models.probe import EstimatorClassifier, StoredClassifier, classifier_state

logger = logging.getLogger(__name__)

SPEC_FILE = "feature_classifier.json"
#: The classifier's tensors and settings: what hf_transfer loads (no pickle).
CLASSIFIER_TENSORS_FILE = "classifier.safetensors"
CLASSIFIER_SETTINGS_FILE = "classifier.json"
#: Older run folders' pickled classifier (read only with `allow_pickle=True`).
CLASSIFIER_FILE = "classifier.joblib"
SETFIT_HEAD_FILE = "model_head.pkl"
SETFIT_CONFIG_FILE = "config_setfit.json"
#: Our pooling names -> sentence-transformers' legacy config flags, in the order it concatenates them.
_ST_FLAGS = {
    "cls": "pooling_mode_cls_token",
    "max": "pooling_mode_max_tokens",
    "mean": "pooling_mode_mean_tokens",
    "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
    "weightedmean": "pooling_mode_weightedmean_tokens",
    "last_token": "pooling_mode_lasttoken",
}


def setfit_compatible(extractor: FeatureExtractor) -> bool:
    """Whether a sentence-transformers body reproduces these features (module docstring)."""
    modes = list(extractor.pooling)
    return (
        extractor.modality == "text"
        and extractor.spec.layers == "last"
        and bool(modes)
        and all(m in _ST_FLAGS for m in modes)
        and modes == [m for m in _ST_FLAGS if m in modes]
    )  # sentence-transformers' concatenation order


def write_sentence_transformers(out: Path, extractor: FeatureExtractor, dim: int, max_length: int | None) -> None:
    """`modules.json`, `1_Pooling/config.json`, `2_Normalize/`, `sentence_bert_config.json` in `out`
    (the transformers weights and tokenizer are already there)."""
    modes = list(extractor.pooling)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if extractor.normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (out / "2_Normalize").mkdir(exist_ok=True)
    (out / "modules.json").write_text(json.dumps(modules, indent=2))
    (out / "1_Pooling").mkdir(exist_ok=True)
    pooling = {
        "word_embedding_dimension": dim // len(modes),
        **{flag: m in modes for m, flag in _ST_FLAGS.items()},
        "include_prompt": True,
    }
    (out / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))
    bert = {"do_lower_case": False, **({"max_seq_length": int(max_length)} if max_length else {})}
    (out / "sentence_bert_config.json").write_text(json.dumps(bert, indent=2))
    (out / "config_sentence_transformers.json").write_text(
        json.dumps(
            {
                "model_type": "SentenceTransformer",
                "prompts": {},
                "default_prompt_name": None,
                "similarity_fn_name": "cosine",
            },
            indent=2,
        )
    )


def fit_record(extractor: FeatureExtractor, clf, dim: int) -> dict:
    """What a fitted feature classifier records in metrics.json: feature facts and the C selection."""
    described = extractor.describe()
    return {
        "feature_dim": int(dim),
        "classifier_parameters": clf.num_parameters(),
        "feature_pooling": described["pooling"],
        "feature_layers": described["layers"],
        "feature_normalize": described["normalize"],
        "feature_source": described["source"],
        **dict(getattr(clf, "selection", {}) or {}),
    }


def save_feature_run(
    out,
    model: nn.Module,
    task,
    clf,
    extractor: FeatureExtractor,
    *,
    head_written: bool,
    labels: list[str],
    max_length: int | None,
    record: dict,
) -> str:
    """Write the run folder's model, processor, classifier and `feature_classifier.json`.

    Returns:
        The layout: `head`, `setfit` or `beside`.
    """
    out = Path(out)
    model.save_pretrained(out)
    task.save_processor(out)
    dim = int(record.get("feature_dim", 0))
    if head_written:
        layout = "head"
    else:
        # A label set's or a number's linear model (`output` sigmoid / identity) has no SetFit
        # single-label head to pickle: those folders are `beside` (tensors + JSON only).
        single_label = getattr(clf, "output", "softmax") == "softmax"
        layout = "setfit" if setfit_compatible(extractor) and dim and single_label else "beside"
        save_classifier(out, clf, labels)
    if layout == "setfit":
        import joblib

        write_sentence_transformers(out, extractor, dim, max_length)
        # For SetFit users (`SetFitModel.from_pretrained` unpickles it); hf_transfer never reads it.
        joblib.dump(clf.to_sklearn(), out / SETFIT_HEAD_FILE)
        (out / SETFIT_CONFIG_FILE).write_text(
            json.dumps({"labels": list(labels), "normalize_embeddings": False}, indent=2)
        )
    (out / SPEC_FILE).write_text(
        json.dumps(
            {
                "layout": layout,
                "classifier": clf.kind,
                "head_written": head_written,
                "features": extractor.describe(),
                **record,
            },
            indent=2,
            default=str,
        )
    )
    return layout


def save_classifier(out, clf, labels: list[str]) -> None:
    """`classifier.safetensors` (tensors) + `classifier.json` (kind, classes, settings) in `out`."""
    from safetensors.numpy import save_file

    tensors, settings = classifier_state(clf)
    out = Path(out)
    save_file(tensors, str(out / CLASSIFIER_TENSORS_FILE), metadata={"format": "hf_transfer.feature_classifier"})
    (out / CLASSIFIER_SETTINGS_FILE).write_text(json.dumps({**settings, "labels": list(labels)}, indent=2, default=str))


def load_classifier(run_dir) -> StoredClassifier:
    """The classifier `save_classifier` wrote: tensors and JSON only, nothing unpickled."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    run_dir = Path(run_dir)
    try:
        tensors = load_file(str(run_dir / CLASSIFIER_TENSORS_FILE))
        settings = json.loads((run_dir / CLASSIFIER_SETTINGS_FILE).read_text())
    except (OSError, ValueError, SafetensorError) as e:
        raise ModelError(
            f"The classifier in '{run_dir}' ({CLASSIFIER_TENSORS_FILE} + {CLASSIFIER_SETTINGS_FILE}) "
            f"does not load: {type(e).__name__}: {e}"
        ) from None
    return StoredClassifier(tensors, settings)


def _unpickled_classifier(run_dir: Path, layout: str, num_labels: int, kind: str, allow_pickle: bool):
    """An older run folder's pickled classifier, only when the caller trusts the folder."""
    name = SETFIT_HEAD_FILE if layout == "setfit" else CLASSIFIER_FILE
    if not (run_dir / name).is_file():
        raise ModelError(
            f"'{run_dir}' has no classifier: {CLASSIFIER_TENSORS_FILE} and {name} are both missing. "
            "Train the run again."
        )
    if not allow_pickle:
        raise ModelError(
            f"'{run_dir}' keeps its classifier only as a pickle ({name}, written by an older hf-transfer). "
            "Loading a pickle runs whatever code the file holds, so hf-transfer does not unpickle it on its own. "
            "If you trust where this run folder came from, pass --trust-pickle (Python: allow_pickle=True); "
            "otherwise train the run again, which stores the classifier as safetensors."
        )
    import joblib

    logger.warning(
        "Unpickling %s (allowed by --trust-pickle / allow_pickle=True): it runs any code it holds.", run_dir / name
    )
    est = joblib.load(run_dir / name)
    if not hasattr(est, "classes_"):  # the oldest runs pickled hf_transfer's own classifier objects
        return est
    return EstimatorClassifier(est, num_labels, kind=kind)


class FeatureClassifierModel(nn.Module):
    """A transformers model whose outputs are a saved classifier's, on its frozen features.

    `model(**inputs).logits` computes the features as the run did and returns the classifier's
    logits (log-probabilities, or an SVM's decision function).
    """

    def __init__(self, model: nn.Module, classifier, extractor: FeatureExtractor):
        super().__init__()
        self.model = model
        self.classifier = classifier
        self.extractor = extractor

    @property
    def config(self):
        return self.model.config

    def forward(self, **inputs):
        from transformers.modeling_outputs import SequenceClassifierOutput

        inputs.pop("labels", None)
        with torch.no_grad():
            x = self.extractor(inputs)
        logits = self.classifier.logits(x.cpu().numpy())
        return SequenceClassifierOutput(logits=torch.as_tensor(logits, dtype=torch.float32, device=x.device))


def _legacy_extractor(model: nn.Module, info: dict) -> FeatureExtractor:
    """Runs written before the layouts: features were the input of the head module `module`."""
    fx = FeatureExtractor(model, modality="text" if info.get("text", True) else "image")
    fx.pooling, fx.source = ("head_input",), "head input (older run folder)"
    fx._head_input = HeadInput(
        [info["module"]], info.get("linear"), info.get("pooling_setting", "auto"), info.get("text", True)
    )
    return fx


def attach_feature_classifier(run_dir, model: nn.Module, allow_pickle: bool = False) -> nn.Module:
    """`model` itself, or wrapped in `FeatureClassifierModel` when the run's classifier lives
    beside the model (layouts `setfit` and `beside`). For `hf-transfer evaluate` / `predict`.

    Args:
        allow_pickle: Read an older run folder's pickled classifier when it has no
            `classifier.safetensors` (unpickling runs code from the file: only for folders you trust).
    """
    run_dir = Path(run_dir)
    spec_path = run_dir / SPEC_FILE
    if not spec_path.is_file():
        return model
    info = json.loads(spec_path.read_text())
    layout = info.get("layout") or ("head" if info.get("head_written", True) else "beside")
    if layout == "head":
        return model
    if (run_dir / CLASSIFIER_TENSORS_FILE).is_file():
        clf = load_classifier(run_dir)
        if clf.num_labels != int(model.config.num_labels):
            raise ModelError(
                f"The classifier in '{run_dir}' has {clf.num_labels} labels, the model "
                f"{model.config.num_labels}: the folder's files come from different runs."
            )
    else:
        clf = _unpickled_classifier(
            run_dir, layout, int(model.config.num_labels), str(info.get("classifier")), allow_pickle
        )
    if "features" in info:
        fx = FeatureExtractor.from_description(model, info["features"], name_or_path=str(run_dir))
    else:
        fx = _legacy_extractor(model, info)
    return FeatureClassifierModel(model, clf, fx).eval()
