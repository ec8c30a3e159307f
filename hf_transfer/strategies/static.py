"""`static`: a static embedding model distilled from the checkpoint (model2vec), a classifier on it.

For CPU inference at thousands of texts per second. model2vec's `distill` runs every token of
the checkpoint's vocabulary through the checkpoint once, reduces the output vectors with PCA
(`pca_dims`) and weights them by token frequency (SIF); a text's embedding is then the mean of
its tokens' vectors, L2-normalised: a table look-up, no transformer at inference. The
distillation needs a local checkpoint folder (a sentence-transformers or transformers text
encoder; offline) and is cached per (checkpoint, `pca_dims`) under the feature cache, so a second
run on the same checkpoint starts at once. Then `models.probe` fits the classifier
(`logistic_regression`, C chosen as in `feature_extraction`) on the training texts' embeddings.

Texts are tokenised with the checkpoint's own tokenizer (saved in the run folder as by every
run); the static table is re-indexed to its token ids (special tokens and tokens the static
model dropped count for nothing). **The run folder**: `model.safetensors` (the table `embeddings`
(vocabulary x `pca_dims`), the mask `known`, the classifier `head.weight` / `head.bias`), `config.json`
(`model_type: hf_transfer_static`, labels, dimensions), `static.json` (how it was made) and the
tokenizer files. No pickle. `hf-transfer evaluate` / `predict` load it
(`load_static_classifier`); in Python, `StaticClassifier.from_run(run_dir)`.

Requires the optional `model2vec` package (`pip install model2vec`; its `distill` extra pins
other versions of transformers, which hf_transfer does not need: model2vec and skeletoken with
`--no-deps` are enough). Text classification only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from hf_transfer.errors import ConfigError, HFTransferError
from hf_transfer.run_folder import STATIC_INFO_FILE as STATIC_INFO
from hf_transfer.strategies.base import Strategy, StrategyConfig, register_strategy

logger = logging.getLogger(__name__)

STATIC_MODEL_TYPE = "hf_transfer_static"


@dataclass
class StaticConfig(StrategyConfig):
    """Settings of `static`.

    Attributes:
        name: `static`.
        pca_dims: Dimensions the distilled vectors are reduced to (model2vec's `pca_dims`).
        C: Inverse regularisation of the logistic regression; unset: chosen as in `feature_extraction`.
        max_iter: Iterations of the logistic regression.
        batch_size: Texts per embedding batch.
        cache_dir: Where distilled models are kept (default: the feature cache's `static/`).
    """

    name: str = "static"
    pca_dims: int = 256
    C: float | None = None
    max_iter: int = 1000
    batch_size: int = 256
    cache_dir: str | None = None
    classifier: Literal["logistic_regression"] = "logistic_regression"
    standardize: bool = False

    def __post_init__(self) -> None:
        if self.pca_dims < 2:
            raise ConfigError(f"strategy.pca_dims must be at least 2, got {self.pca_dims!r}.")
        if self.C is not None and self.C <= 0:
            raise ConfigError(f"strategy.C must be positive, got {self.C!r}.")
        if self.batch_size < 1 or self.max_iter < 1:
            raise ConfigError("strategy.batch_size and strategy.max_iter must be at least 1.")


def _require_model2vec():
    try:
        from model2vec.distill import distill  # noqa: F401
    except ImportError as e:
        raise ConfigError(
            f"strategy.name=static needs the model2vec package ({e}). Install it with "
            "`pip install --no-deps model2vec skeletoken` (its own dependencies are hf_transfer's)."
        ) from None


def distilled_folder(checkpoint: str, pca_dims: int, cache_dir: str | None = None) -> Path:
    """The model2vec folder distilled from local `checkpoint`, made once and cached."""
    from hf_transfer.models.feature_cache import cache_root

    src = Path(checkpoint)
    if not src.is_dir():
        raise ConfigError(
            f"strategy.name=static distils a local checkpoint folder; '{checkpoint}' is not one "
            "(download the model first and give its folder as model.name_or_path)."
        )
    weights = sorted(p for p in src.iterdir() if p.suffix in (".safetensors", ".bin"))
    stamp = "|".join(f"{p.name}:{p.stat().st_size}:{int(p.stat().st_mtime)}" for p in weights)
    key = hashlib.sha256(f"{src.resolve()}|{stamp}|{pca_dims}".encode()).hexdigest()[:20]
    root = (Path(cache_dir).expanduser() if cache_dir else cache_root().parent / "static") / key
    if (root / "model.safetensors").is_file():
        logger.info("static: distilled model read from the cache: %s", root)
        return root
    from model2vec.distill import distill

    t0 = time.time()
    model = distill(model_name=str(src), pca_dims=pca_dims, device="cpu")
    import shutil
    import tempfile

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=root.name + ".", dir=root.parent))
    model.save_pretrained(str(tmp))
    try:
        tmp.rename(root)
    except OSError:  # another run distilled the same checkpoint meanwhile: keep its folder
        shutil.rmtree(tmp, ignore_errors=True)
        if not (root / "model.safetensors").is_file():
            raise
    logger.info(
        "static: distilled %s into %d-dimensional static vectors in %.0f s (cached: %s).",
        src,
        pca_dims,
        time.time() - t0,
        root,
    )
    return root


def table_for_tokenizer(folder: Path, tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """The distilled vectors re-indexed to `tokenizer`'s ids, and which ids have one.

    Special tokens and tokens the static model does not have get a zero row and `known=False`.
    """
    from safetensors.torch import load_file
    from tokenizers import Tokenizer

    vectors = load_file(str(folder / "model.safetensors"))["embeddings"].float()
    static_vocab = Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab()
    vocab = tokenizer.get_vocab()
    size = max(len(tokenizer), max(vocab.values()) + 1)
    table = torch.zeros(size, vectors.shape[1])
    known = torch.zeros(size, dtype=torch.bool)
    special = set(tokenizer.all_special_ids)
    for token, i in vocab.items():
        j = static_vocab.get(token)
        if j is not None and i not in special and j < len(vectors):
            table[i], known[i] = vectors[j], True
    return table, known


class StaticClassifier(nn.Module):
    """Mean of the tokens' static vectors, L2-normalised, then a linear classifier.

    `model(input_ids=..., attention_mask=...).logits`, as a transformers classifier answers.
    """

    def __init__(
        self,
        embeddings: torch.Tensor,
        known: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        id2label: dict[int, str],
    ):
        super().__init__()
        from transformers import PretrainedConfig

        self.register_buffer("embeddings", embeddings.float())
        self.register_buffer("known", known.bool())
        self.head = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.head.weight.copy_(weight)
            self.head.bias.copy_(bias)
        self.config = PretrainedConfig(
            id2label={int(k): v for k, v in id2label.items()}, label2id={v: int(k) for k, v in id2label.items()}
        )

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        ids = input_ids.clamp(0, len(self.embeddings) - 1)
        mask = self.known[ids]
        if attention_mask is not None:
            mask = mask & attention_mask.bool()
        m = mask.unsqueeze(-1).float()
        pooled = (self.embeddings[ids] * m).sum(1) / m.sum(1).clamp(min=1.0)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def forward(self, input_ids=None, attention_mask=None, **_):
        from transformers.modeling_outputs import SequenceClassifierOutput

        return SequenceClassifierOutput(logits=self.head(self.embed(input_ids, attention_mask)))

    @classmethod
    def from_run(cls, run_dir) -> StaticClassifier:
        """Load a `static` run folder (safetensors + json only)."""
        from safetensors.torch import load_file

        run_dir = Path(run_dir)
        t = load_file(str(run_dir / "model.safetensors"))
        cfg = json.loads((run_dir / "config.json").read_text())
        return cls(
            t["embeddings"],
            t["known"],
            t["head.weight"],
            t["head.bias"],
            {int(k): v for k, v in cfg["id2label"].items()},
        ).eval()


def is_static_run(run_dir) -> bool:
    return (Path(run_dir) / STATIC_INFO).is_file()


def load_static_classifier(run_dir) -> StaticClassifier:
    """For `hf-transfer evaluate` / `predict`."""
    try:
        return StaticClassifier.from_run(run_dir)
    except (OSError, KeyError, ValueError) as e:
        raise HFTransferError(f"The static model in '{run_dir}' does not load: {type(e).__name__}: {e}") from None


def _embed_split(model: StaticClassifier, task, ds, batch_size: int) -> np.ndarray:
    from torch.utils.data import DataLoader

    data = task.preprocess(ds, train=False)
    out = []
    with torch.no_grad():
        for batch in DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=task.collate):
            out.append(model.embed(batch["input_ids"], batch.get("attention_mask")))
    return torch.cat(out).numpy().astype(np.float64)


@register_strategy("static", StaticConfig)
class Static(Strategy):
    """A static embedding model distilled from the checkpoint (model2vec) and a classifier on it."""

    trains_with_engine = False

    def prepare(self, ctx) -> None:
        recipe = getattr(getattr(ctx, "cfg", None), "recipe", "text_classification")
        if recipe != "text_classification":
            raise ConfigError(f"strategy.name=static is for text classification; this run is {recipe}.")
        _require_model2vec()

    def apply(self, model: nn.Module, groups: list) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    def fit(self, ctx, model: nn.Module, groups: list) -> dict[str, Any]:
        from hf_transfer.models.probe import classifier_metrics, fit_classifier
        from hf_transfer.paths import resolve

        c, task, splits = self.config, ctx.task, ctx.splits
        t0 = time.time()
        folder = distilled_folder(resolve(ctx.cfg.model.name_or_path), c.pca_dims, c.cache_dir)
        distill_s = time.time() - t0
        table, known = table_for_tokenizer(folder, task.processor)
        id2label = {int(k): str(v) for k, v in model.config.id2label.items()}
        num_labels = len(id2label)
        zero = torch.zeros(num_labels, table.shape[1])
        static = StaticClassifier(table, known, zero, torch.zeros(num_labels), id2label)
        t1 = time.time()
        X = _embed_split(static, task, splits.train, c.batch_size)
        y = np.asarray(splits.train["labels"])
        clf = fit_classifier(c, X, y, num_labels, seed=ctx.cfg.training.seed)
        with torch.no_grad():
            static.head.weight.copy_(torch.as_tensor(clf.weight, dtype=torch.float32))
            static.head.bias.copy_(torch.as_tensor(clf.bias, dtype=torch.float32))
        metrics: dict[str, Any] = {
            "train_runtime": round(time.time() - t1, 3),
            "static_distill_seconds": round(distill_s, 2),
            **clf.selection,
        }
        metrics.update(classifier_metrics(clf, X, y, task, "train"))
        for role in ("eval", "test"):
            ds = getattr(splits, role)
            if ds is not None:
                t2 = time.time()
                Xe = _embed_split(static, task, ds, c.batch_size)
                metrics[f"{role}_texts_per_second"] = round(len(ds) / max(time.time() - t2, 1e-9), 1)
                metrics.update(classifier_metrics(clf, Xe, np.asarray(ds["labels"]), task, role))
        self._save(ctx, static, folder, id2label)
        metrics["_model"] = static
        return metrics

    def _save(self, ctx, static: StaticClassifier, folder: Path, id2label: dict[int, str]) -> None:
        from safetensors.torch import save_file

        out = Path(ctx.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_file(
            {
                "embeddings": static.embeddings.half().contiguous(),
                "known": static.known.contiguous(),
                "head.weight": static.head.weight.detach().contiguous(),
                "head.bias": static.head.bias.detach().contiguous(),
            },
            str(out / "model.safetensors"),
        )
        (out / "config.json").write_text(
            json.dumps(
                {
                    "model_type": STATIC_MODEL_TYPE,
                    "architectures": ["StaticClassifier"],
                    "id2label": {str(k): v for k, v in id2label.items()},
                    "label2id": {v: k for k, v in id2label.items()},
                    "num_labels": len(id2label),
                    "hidden_dim": int(static.embeddings.shape[1]),
                    "vocab_size": int(static.embeddings.shape[0]),
                },
                indent=1,
            )
        )
        (out / STATIC_INFO).write_text(
            json.dumps(
                {
                    "source": str(ctx.cfg.model.name_or_path),
                    "pca_dims": self.config.pca_dims,
                    "distilled_with": "model2vec.distill",
                    "pooling": "mean of known tokens, L2-normalised",
                    "classifier": self.config.classifier,
                },
                indent=1,
            )
        )
        ctx.task.save_processor(out)

    def describe(self, model: nn.Module) -> dict[str, Any]:
        n = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
        return {
            "strategy": self.name,
            "trainable_parameters": sum(p.numel() for p in model.parameters()),
            "frozen_parameters": n - sum(p.numel() for p in model.parameters()),
        }
