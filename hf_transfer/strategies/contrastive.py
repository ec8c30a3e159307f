"""`contrastive`: SetFit-style few-shot training: contrastive pairs on the body, then a classifier.

SetFit (Tunstall et al. 2022) first fine-tunes a sentence encoder so that examples of the same
class embed close together and examples of different classes far apart, then fits a logistic
regression on the embeddings. This strategy does the same on hf_transfer's engine, with three
changes that make it cost a fraction of SetFit's time:

1. **A pair budget.** `num_pairs` pairs are sampled, half positive (two examples of one class,
   the class drawn uniformly), half negative (two classes drawn uniformly, one example of each);
   within a class every distinct pair is used once before any repeats. Unset, the budget is
   `pairs_per_example x N` (SetFit's 20 iterations give 40 x N), at least `min_pairs` and at most
   `max_pairs`, so many classes or many examples never blow up the number of pairs. The cap is
   1600 (it was 2000): measured at 64 examples a class (MiniLM, 3 seeds) 0.850 against 0.852 on
   tweets, 0.856 against 0.858 on fortunes, 0.605 against 0.605 on fortunes24, and 0.515 against
   0.506 on fortunes24 at 8 a class (192 examples), at 0.8x the time where the cap binds. Ten
   pairs per example beyond the cap (15,360 on fortunes24's 1,536 examples) scored 0.606 against
   0.598 there, at 6x the time: not kept.
2. **The top two thirds of the blocks train**, the lower third and the embeddings do not
   (ceil(2/3 x blocks): 4 of MiniLM's 6, 8 of BERT-base's 12; `trainable_layers` or
   `trainable_fraction` choose others, as in `partial`), and the frozen prefix runs **once per
   example** (`cache_prefix`, on by default; the frozen-prefix cache of
   `training.cache_frozen_prefix`). Measured (MiniLM, 3 seeds, docs/benchmarks/fewshot.md, fifth
   round), top 4 of 6 blocks against every block: at 8 examples a class tweets 0.783 against 0.787,
   fortunes 0.832 against 0.815, fortunes24 0.509 against 0.515; at 64 a class tweets 0.853 against
   0.850, fortunes 0.876 against 0.855, fortunes24 0.598 against 0.605; at 0.72x the time
   (tweets at 64 a class, each run twice in the same conditions). Top 5 and top 3
   were each worse on one set (fortunes 0.822; tweets 0.767).
3. **Each distinct example in a batch of pairs is encoded once**: a batch of 16 pairs needs at
   most 32 encodings, often far fewer when the data is small. On a CPU those examples run in two
   groups of similar length, each padded to its own longest (`length_buckets`, `PairEncoder`):
   the same embeddings and gradients for less padding. Measured (MiniLM, 64 examples a class,
   one thread): 54 s a run against 65 s in one group on tweets, 61 s against 81 s on fortunes;
   four groups were slower than two (smaller matrix products).
4. **bf16 where the hardware has it.** With `training.mixed_precision` unset, the pair training
   runs under bf16 autocast on a device that computes bf16 natively (a GPU with bf16, a CPU with
   AMX or AVX512-BF16; `engine.distributed.resolve_mixed_precision`), in fp32 elsewhere; the
   features the classifier is fitted on are computed in fp32 afterwards. Measured (MiniLM, 8
   examples a class, 3 seeds, a 2-core Xeon with AMX, one thread): tweets 0.783 against 0.787 in
   fp32, fortunes 0.817 against 0.817, at 7 s against 11 s and 21 s against 36 s a run.
5. **An end-to-end pass when the pair budget is capped** (`strategies.end_to_end`, SetFit's
   differentiable head): with more than `max_pairs / pairs_per_example` training examples (80 by
   default) the capped pairs see each example only a few times, so after them the same blocks and
   a linear head started as a probe train together with cross-entropy for `end_to_end_epochs` (2)
   passes at `end_to_end_learning_rate` (2e-5); the classifier is then fitted on the final
   features as before. Measured (MiniLM, 3 seeds, docs/benchmarks/fewshot.md, sixth round):
   fortunes24 at 64 a class 0.628 against 0.598 without it (seeds 0-1: 0.631 against SetFit's
   0.612), at 8 a class 0.516 against 0.509; over the seven cells above the cap +0.010 on average
   (-0.001 to +0.030, more with more examples), at 1.2-1.7x the time of the pairs alone. Below the
   cap it is off: a handful of steps there, measured as noise (five cells, -0.008 to +0.010, mean
   +0.001).

The loss is SetFit's `CosineSimilarityLoss`: the squared difference between the cosine of the two
pooled embeddings and the target (1 for a positive pair, 0 for a negative one). Embeddings follow
the checkpoint's convention (`models.features.FeatureExtractor`: a sentence-transformers folder's
pooling, the masked mean otherwise). Training runs on the shared engine (Accelerate: mixed
precision, several processes, checkpoints and exact resume), one pass over the pairs by default
(`training.epochs` / `max_steps` change it), learning rate 1e-4 unless `training.learning_rate`
is set. Then the classifier is fitted on the trained body's features exactly as in
`feature_extraction` (`models.probe`: logistic regression, C = 1 unless cross-validation finds a clearly better
one), and the run folder is written as a feature-extraction run: a SetFit model folder for
sentence-transformers-compatible features (`setfit.SetFitModel.from_pretrained(run_dir)` loads
it), which `hf-transfer evaluate` / `predict` read too.

**Label sets** (`text_multilabel`, `image_multilabel`): pairs come from label overlap, as in
SetFit's multi-label mode: positive when the two rows' label sets are the same or overlap by
Jaccard >= `min_jaccard` (0.5), negative when they share no label (`sample_label_set_pairs`); the
classifier afterwards is `feature_extraction`'s for label sets (`strategies.feature_targets`:
one-vs-rest logistic regression, per-label thresholds), written as a `beside` run folder. Numeric
targets (regression) are refused: there is no pair rule for them.

**Bad input, before anything trains.** Fewer than two classes is an error. A class with a single
training example has no positive pair: an error by default; with
`single_example_classes: negatives_only` it takes part in negative pairs only (logged).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from hf_transfer.errors import ConfigError, DataError
from hf_transfer.strategies._groups import (
    check_fraction,
    check_non_negative,
    check_positive,
    groups_at_depth,
    num_blocks,
    set_trainable,
    top_blocks,
    trainable_group_names,
)
from hf_transfer.strategies.base import Strategy, register_strategy
from hf_transfer.strategies.feature_extraction import (
    FeatureExtractionConfig,
    fit_feature_classifier,
    held_out_metrics,
    split_features,
    write_feature_run,
)

logger = logging.getLogger(__name__)

#: Above this many distinct pairs in a class, positives are drawn at random instead of from the
#: enumerated list (enumerating every pair of a large class costs memory for nothing).
_ENUMERATE_LIMIT = 200_000


@dataclass
class ContrastiveConfig(FeatureExtractionConfig):
    """Settings of `contrastive` (SetFit-style pairs, then a classifier on the trained features).

    The classifier and feature settings are those of `feature_extraction` (`classifier`, `C`,
    `standardize`, `layers`, `combine`, `pooling`, `normalize`, ...).

    Attributes:
        name: `contrastive`.
        trainable_layers: Blocks, counted from the top, that the pairs train (as in `partial`);
            unset (and no `trainable_fraction`): the top two thirds, ceil(2/3 x blocks).
        trainable_fraction: When set (0 < f <= 1), the top `ceil(f * blocks)` blocks train instead.
        num_pairs: Pairs to sample. Unset: `pairs_per_example` x training examples, clipped to
            [`min_pairs`, `max_pairs`].
        pairs_per_example: Pairs per training example when `num_pairs` is unset.
        min_pairs: Fewest pairs when `num_pairs` is unset.
        max_pairs: Most pairs when `num_pairs` is unset.
        single_example_classes: A class with one training example: `error` (default), or
            `negatives_only` (it appears in negative pairs only; logged).
        cache_prefix: Run the frozen blocks once per example and train on their cached outputs
            (BERT family; off or impossible: the whole model runs every step).
        min_jaccard: Multi-label recipes: two rows make a positive pair when their label sets are
            the same or overlap by at least this Jaccard index (shared labels / labels of either);
            a negative pair when they share no label.
        pair_batches: `spread` (default): the sampled pairs are shuffled into batches. `grouped`
            (single-label): each batch's pairs come from a few examples of a few classes
            (`sample_grouped_pairs`), so a batch encodes fewer distinct examples: faster with
            many classes, a little less accurate (measured in `sample_grouped_pairs`).
        length_buckets: Text: the distinct examples of a batch run through the model in this many
            groups of similar length, each padded to its own longest (`PairEncoder`): the same
            embeddings, less padding. Unset: 2 on a CPU, where the cost follows the padded length,
            1 (one padded batch) on a GPU.
        end_to_end_epochs: Passes over the training examples of the end-to-end pass after the
            pairs (`strategies.end_to_end`: the same blocks and a probe-initialised linear head
            trained with cross-entropy); 0: none. Unset: `DEFAULT_END_TO_END_EPOCHS` (2) for single
            labels when the pair budget is capped (more than `max_pairs / pairs_per_example`
            training examples: 80 by default), else none (and none for label sets).
        end_to_end_learning_rate: The body's learning rate in the end-to-end pass (the head's is
            `end_to_end.HEAD_LR_MULTIPLIER` times it).
    """

    name: str = "contrastive"
    trainable_layers: int | None = None
    trainable_fraction: float | None = None
    num_pairs: int | None = None
    pairs_per_example: int = 20
    min_pairs: int = 256
    max_pairs: int = 1600
    single_example_classes: Literal["error", "negatives_only"] = "error"
    cache_prefix: bool = True
    min_jaccard: float = 0.5
    pair_batches: Literal["spread", "grouped"] = "spread"
    length_buckets: int | None = None
    end_to_end_epochs: float | None = None
    end_to_end_learning_rate: float = 2e-5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.min_jaccard <= 1.0:
            raise ConfigError(f"strategy.min_jaccard must be in (0, 1], got {self.min_jaccard!r}.")
        if self.trainable_layers is not None:
            check_non_negative(self.trainable_layers, "trainable_layers")
        check_fraction(self.trainable_fraction, "trainable_fraction")
        if self.length_buckets is not None:
            check_positive(self.length_buckets, "length_buckets")
        for key in ("pairs_per_example", "min_pairs", "max_pairs"):
            check_positive(getattr(self, key), key)
        if self.num_pairs is not None:
            check_positive(self.num_pairs, "num_pairs")
        e2e = self.end_to_end_epochs
        if e2e is not None and (isinstance(e2e, bool) or not isinstance(e2e, (int, float)) or not 0 <= e2e < 1000):
            raise ConfigError(
                f"strategy.end_to_end_epochs must be a number of passes >= 0 (0: no end-to-end pass), got {e2e!r}."
            )
        lr = self.end_to_end_learning_rate
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < 1:
            raise ConfigError(f"strategy.end_to_end_learning_rate must be in (0, 1) (2e-5 is usual), got {lr!r}.")
        if self.min_pairs > self.max_pairs:
            raise ConfigError(f"strategy.min_pairs={self.min_pairs} is above strategy.max_pairs={self.max_pairs}.")


#: Unset `trainable_layers` / `trainable_fraction`: the top two thirds of the blocks train, as
#: `trainable_fraction` would (module docstring, point 2).
DEFAULT_TRAINABLE_FRACTION = 2 / 3

#: Unset `end_to_end_epochs`, single labels, pair budget capped: passes of the end-to-end pass
#: (module docstring, point 5).
DEFAULT_END_TO_END_EPOCHS = 2.0


# ----------------------------------------------------------------------------------- pairs


def pair_budget(c: ContrastiveConfig, num_examples: int) -> int:
    """How many pairs to sample for `num_examples` training examples."""
    if c.num_pairs is not None:
        return int(c.num_pairs)
    return int(min(c.max_pairs, max(c.min_pairs, c.pairs_per_example * num_examples)))


def check_labels(labels: np.ndarray, names: list[str] | None = None, mode: str = "error") -> list[int]:
    """Raise a clear `DataError` when pairs cannot be formed. Returns the single-example classes."""
    names = names or []
    values, counts = np.unique(labels, return_counts=True)
    if len(values) < 2:
        which = names[int(values[0])] if len(values) and int(values[0]) < len(names) else (values.tolist() or "none")
        raise DataError(
            f"strategy contrastive needs at least two classes in the training split; it has "
            f"{len(values)} ({which}). Check data.train, data.label_column and data.filter."
        )
    singles = [int(v) for v, n in zip(values, counts) if n < 2]
    if singles and mode == "error":
        shown = ", ".join(repr(names[v]) if v < len(names) else str(v) for v in singles)
        raise DataError(
            f"strategy contrastive: class(es) {shown} have a single training example, so no positive "
            "pair can be formed for them. Add examples, drop the class (data.filter), or set "
            "strategy.single_example_classes=negatives_only to use them in negative pairs only."
        )
    if len(values) - len(singles) < 1:
        raise DataError("strategy contrastive: no class has two training examples, so there is no positive pair.")
    return singles


def sample_pairs(labels: np.ndarray, num_pairs: int, seed: int = 0) -> np.ndarray:
    """`num_pairs` pairs `(i, j, target)` over example indices (module docstring, point 1).

    Positives: the class uniformly among those with two or more examples, then the class's next
    distinct pair (each class's pairs shuffled and used in turn, so all are used before any
    repeats). Negatives: two distinct classes uniformly, then one example of each. Half the pairs
    are positive (the odd one out negative), in random order.

    Returns:
        A float64 array (num_pairs, 3): left index, right index, target (1.0 or 0.0).
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    members = {int(c): np.flatnonzero(labels == c) for c in classes}
    pos_classes = [c for c, m in members.items() if len(m) >= 2]
    n_pos = num_pairs // 2
    out = np.empty((num_pairs, 3), dtype=np.float64)
    # Positives, class-balanced.
    picks = rng.choice(len(pos_classes), size=n_pos) if pos_classes else np.empty(0, dtype=int)
    cursor: dict[int, int] = {}
    cycles: dict[int, np.ndarray] = {}
    for k, ci in enumerate(picks):
        c = pos_classes[int(ci)]
        m = members[c]
        if len(m) * (len(m) - 1) // 2 > _ENUMERATE_LIMIT:
            a, b = rng.choice(m, size=2, replace=False)
        else:
            if c not in cycles or cursor[c] >= len(cycles[c]):
                iu = np.triu_indices(len(m), k=1)
                cycles[c] = rng.permutation(np.stack([m[iu[0]], m[iu[1]]], 1))
                cursor[c] = 0
            a, b = cycles[c][cursor[c]]
            cursor[c] += 1
        out[k] = (a, b, 1.0)
    # Negatives, balanced over class pairs.
    all_classes = list(members)
    for k in range(n_pos, num_pairs):
        c1, c2 = rng.choice(len(all_classes), size=2, replace=False)
        out[k] = (rng.choice(members[all_classes[c1]]), rng.choice(members[all_classes[c2]]), 0.0)
    return out[rng.permutation(num_pairs)]


def sample_grouped_pairs(labels: np.ndarray, num_pairs: int, batch_size: int, seed: int = 0) -> np.ndarray:
    """`num_pairs` pairs in runs of `batch_size`, each run drawn from one small group of examples.

    A group: up to 4 classes with two or more examples (drawn uniformly), and from each about
    12 / classes examples (at least 2); half the run's pairs are positive (two examples of one
    group class, the class drawn uniformly, distinct pairs first), half negative (two group classes,
    one example of each). A batch then encodes about 12 distinct examples instead of up to
    2 x `batch_size`. Classes with a single example (`single_example_classes: negatives_only`)
    take no part.

    Measured (MiniLM, 8 a class, 3 seeds; docs/benchmarks/fewshot.md): with 24 classes 11.5
    distinct examples a batch against 30 (75-87 s a run against 204-290 s, at different machine
    loads) at 0.005 lower accuracy; with 4 classes 11.5 against 20 at 0.009 lower; with 2 classes
    (16 examples in all) no fewer and 0.05 lower: an option, not the default.

    Returns:
        A float64 array (num_pairs, 3): left index, right index, target; rows in batch order.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    members = {int(c): np.flatnonzero(labels == c) for c in np.unique(labels)}
    pos_classes = [c for c, m in members.items() if len(m) >= 2]
    if len(pos_classes) < 2:
        raise DataError(
            "strategy.pair_batches=grouped draws each batch from classes with at least two training "
            f"examples, and only {len(pos_classes)} class has two. Use strategy.pair_batches=spread."
        )
    out = np.empty((num_pairs, 3), dtype=np.float64)
    row = 0
    while row < num_pairs:
        k = min(batch_size, num_pairs - row)
        q = min(len(pos_classes), 4)
        classes = [pos_classes[i] for i in rng.choice(len(pos_classes), size=q, replace=False)]
        per = max(2, -(-12 // q))
        group = {c: rng.choice(members[c], size=min(per, len(members[c])), replace=False) for c in classes}
        n_pos = k // 2
        for j in range(k):
            if j < n_pos:
                c = classes[int(rng.integers(q))]
                a, b = rng.choice(group[c], size=2, replace=False)
                out[row + j] = (a, b, 1.0)
            else:
                c1, c2 = rng.choice(q, size=2, replace=False)
                out[row + j] = (rng.choice(group[classes[c1]]), rng.choice(group[classes[c2]]), 0.0)
        out[row : row + k] = out[row : row + k][rng.permutation(k)]
        row += k
    return out


def _label_set_overlap(Y: np.ndarray, i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Jaccard overlap of the label sets of rows `i` and `j` (two empty sets: 1, the same set) and
    whether the two sets are disjoint (an empty set and a non-empty one are)."""
    inter = (Y[i] & Y[j]).sum(1)
    union = (Y[i] | Y[j]).sum(1)
    jaccard = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return jaccard, (inter == 0) & (union > 0)


def check_label_sets(Y: np.ndarray, min_jaccard: float = 0.5) -> None:
    """Raise a clear `DataError` when no positive or no negative pair of label sets exists."""
    Y = np.asarray(Y) > 0.5
    n = len(Y)
    if n < 2:
        raise DataError("strategy contrastive needs at least two training rows.")
    keys, counts = np.unique(Y, axis=0, return_counts=True)
    if len(keys) < 2:
        raise DataError(
            "strategy contrastive: every training row has the same label set, so there is no negative "
            "pair (two rows whose label sets are disjoint). Check data.train and the label columns."
        )
    inter = (keys[:, None, :] & keys[None, :, :]).sum(-1)
    union = (keys[:, None, :] | keys[None, :, :]).sum(-1)
    if not ((inter == 0) & (union > 0)).any():
        raise DataError(
            "strategy contrastive: no two training rows have disjoint label sets, so there is no "
            "negative pair. Use feature_extraction for this data."
        )
    same = (counts >= 2).any()
    jacc = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    np.fill_diagonal(jacc, 0.0)
    if not same and not (jacc >= min_jaccard).any():
        raise DataError(
            f"strategy contrastive: no two training rows share a label set or overlap by Jaccard >= "
            f"{min_jaccard:g}, so there is no positive pair. Use feature_extraction for this data."
        )


def sample_label_set_pairs(Y: np.ndarray, num_pairs: int, seed: int = 0, min_jaccard: float = 0.5) -> np.ndarray:
    """`num_pairs` pairs `(i, j, target)` for label sets (multi-label recipes).

    Positive (target 1): the two rows' label sets are the same (two rows without a label included)
    or overlap by Jaccard >= `min_jaccard`. Negative (target 0): the sets are disjoint (no label
    shared; a row without labels against one with labels is disjoint). Pairs in between (some
    overlap, below `min_jaccard`) are not used. Half the pairs are positive, each drawn from the
    distinct qualifying pairs, all of which are used before any repeats (with more than
    `_ENUMERATE_LIMIT` candidate pairs, random pairs are drawn and kept when they qualify).

    Returns:
        A float64 array (num_pairs, 3): left index, right index, target (1.0 or 0.0).
    """
    Y = np.asarray(Y) > 0.5
    n = len(Y)
    rng = np.random.default_rng(seed)
    n_pos = num_pairs // 2
    n_neg = num_pairs - n_pos

    def take(candidates: np.ndarray, k: int) -> np.ndarray:
        if k == 0:
            return np.empty((0, 2), dtype=np.int64)
        if len(candidates) == 0:
            raise DataError(
                "strategy contrastive: the training label sets give no "
                f"{'positive' if candidates is pos else 'negative'} pair."
            )
        rounds = [rng.permutation(candidates) for _ in range(math.ceil(k / len(candidates)))]
        return np.concatenate(rounds)[:k]

    if n * (n - 1) // 2 <= _ENUMERATE_LIMIT:
        i, j = np.triu_indices(n, k=1)
        jaccard, disjoint = _label_set_overlap(Y, i, j)
        both = np.stack([i, j], 1)
        pos, neg = both[jaccard >= min_jaccard], both[disjoint]
        chosen_pos, chosen_neg = take(pos, n_pos), take(neg, n_neg)
    else:
        found_pos: list[np.ndarray] = []
        found_neg: list[np.ndarray] = []
        have_pos = have_neg = 0
        for _ in range(1000):
            if have_pos >= n_pos and have_neg >= n_neg:
                break
            i = rng.integers(0, n, size=4 * num_pairs + 1024)
            j = rng.integers(0, n, size=len(i))
            keep = i != j
            i, j = i[keep], j[keep]
            jaccard, disjoint = _label_set_overlap(Y, i, j)
            both = np.stack([i, j], 1)
            found_pos.append(both[jaccard >= min_jaccard])
            found_neg.append(both[disjoint])
            have_pos += len(found_pos[-1])
            have_neg += len(found_neg[-1])
        pos, neg = np.concatenate(found_pos), np.concatenate(found_neg)
        chosen_pos, chosen_neg = take(pos, n_pos), take(neg, n_neg)
    out = np.empty((num_pairs, 3), dtype=np.float64)
    out[:n_pos, :2], out[:n_pos, 2] = chosen_pos, 1.0
    out[n_pos:, :2], out[n_pos:, 2] = chosen_neg, 0.0
    return out[rng.permutation(num_pairs)]


class PairDataset(Dataset):
    """Pairs over an example dataset; collated by `PairCollator`."""

    def __init__(self, pairs: np.ndarray):
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, k: int) -> tuple[int, int, float]:
        i, j, t = self.pairs[k]
        return int(i), int(j), float(t)


class PairCollator:
    """A batch of pairs -> the distinct examples it touches (collated by the task's collator,
    labels dropped) plus `pair_left`, `pair_right` (positions among them) and `pair_target`."""

    def __init__(self, examples, collate):
        self.examples = examples
        self.collate = collate

    def __call__(self, items: list[tuple[int, int, float]]) -> dict[str, torch.Tensor]:
        uniq = sorted({i for a, b, _ in items for i in (a, b)})
        where = {i: n for n, i in enumerate(uniq)}
        batch = dict(self.collate([self.examples[i] for i in uniq]))
        batch.pop("labels", None)
        batch["pair_left"] = torch.tensor([where[a] for a, _, _ in items], dtype=torch.long)
        batch["pair_right"] = torch.tensor([where[b] for _, b, _ in items], dtype=torch.long)
        batch["pair_target"] = torch.tensor([t for _, _, t in items], dtype=torch.float32)
        return batch


#: `length_buckets` unset: groups per batch on a CPU (on a GPU, one).
CPU_LENGTH_BUCKETS = 2


def length_groups(mask: torch.Tensor, buckets: int) -> list[torch.Tensor] | None:
    """Rows of a right-padded batch split into `buckets` groups of similar length (row indices,
    shortest first), or None when grouping cannot help or is unsafe: one group, too few rows, a
    mask that is not right-padded (a left-padding tokenizer), or no padding to save."""
    if buckets < 2 or mask.dim() != 2 or mask.shape[0] < 2 * buckets:
        return None
    lengths = mask.sum(1)
    positions = torch.arange(mask.shape[1], device=mask.device)
    if not torch.equal(mask.bool(), positions[None, :] < lengths[:, None]):
        return None
    if int(lengths.min()) == mask.shape[1]:
        return None
    return list(torch.tensor_split(torch.argsort(lengths, stable=True), buckets))


class PairEncoder(nn.Module):
    """The model as the engine trains it: inputs -> pooled embeddings (B, d).

    With a prefix plan, `prefix_hidden_states` (cached outputs of the frozen blocks) enter above
    the cut (`prefix_cache.cached_prefix`); otherwise the whole model runs. With `length_buckets`
    above 1 (`ContrastiveConfig`), a text batch's rows run in groups of similar length, each cut to
    its own longest row (`length_groups`), and the embeddings come back in the batch's order:
    attention masks the padding, so the embeddings are those of the whole batch, at the cost of the
    real tokens instead of the padded ones.
    """

    def __init__(self, model: nn.Module, extractor, plan=None, length_buckets: int | None = None):
        super().__init__()
        self.model = model
        self.extractor = extractor
        self.plan = plan
        self.length_buckets = length_buckets

    def get_base_model(self) -> nn.Module:
        return self.model

    @property
    def config(self):
        return self.model.config

    def forward(self, **inputs) -> torch.Tensor:
        from hf_transfer.strategies.prefix_cache import HIDDEN_KEY

        mask = inputs.get("attention_mask")
        text = "input_ids" in inputs or (self.plan is not None and self.plan.text and HIDDEN_KEY in inputs)
        groups = None
        if mask is not None and text:  # token sequences only (audio frames keep their fixed length)
            buckets = self.length_buckets
            if buckets is None:
                buckets = CPU_LENGTH_BUCKETS if mask.device.type == "cpu" else 1
            groups = length_groups(mask, buckets)
        if groups is None:
            return self._encode(inputs)
        rows, width = mask.shape
        parts = []
        for idx in groups:
            longest = int(mask[idx].sum(1).max())
            part = {}
            for key, value in inputs.items():
                if torch.is_tensor(value) and value.dim() >= 1 and value.shape[0] == rows:
                    value = value[idx]
                    if value.dim() >= 2 and value.shape[1] == width:
                        value = value[:, :longest]
                part[key] = value
            parts.append(self._encode(part))
        order = torch.cat(groups)
        return torch.cat(parts)[torch.argsort(order)]

    def _encode(self, inputs: dict) -> torch.Tensor:
        from hf_transfer.strategies.prefix_cache import HIDDEN_KEY, cached_prefix

        inputs = dict(inputs)
        hidden = inputs.pop(HIDDEN_KEY, None)
        if hidden is None:
            return self.extractor(inputs)
        if not self.plan.text:
            inputs.pop("attention_mask", None)
        inputs[self.plan.input_kwarg] = hidden
        with cached_prefix(self.plan, hidden):
            return self.extractor(inputs)


class PairTask:
    """What the engine needs from a task, for batches of pairs: SetFit's cosine-similarity loss."""

    def __init__(self, task):
        self.task = task

    def num_items(self, batch) -> int:
        return int(batch["pair_target"].shape[0])

    num_examples = num_items

    def loss(self, model, batch) -> torch.Tensor:
        """Summed squared error between cos(left, right) and the target (1 same class, 0 not)."""
        inputs = {k: v for k, v in batch.items() if not k.startswith("pair_")}
        emb = model(**inputs).float()
        cos = nn.functional.cosine_similarity(emb[batch["pair_left"]], emb[batch["pair_right"]], dim=-1)
        return ((cos - batch["pair_target"].to(cos.dtype)) ** 2).sum()


# ----------------------------------------------------------------------------------- strategy


@register_strategy("contrastive", ContrastiveConfig)
class Contrastive(Strategy):
    """SetFit-style contrastive pairs on the top blocks, then a classifier on the features."""

    trains_with_engine = False
    #: One pass over the sampled pairs; the pair budget already fits the data (engine.budget).
    default_epochs = 1.0
    default_min_steps = 0
    default_learning_rate = 1e-4
    #: bf16 where the hardware computes it natively (module docstring, point 4).
    default_mixed_precision = "auto"

    def __init__(self, config: ContrastiveConfig):
        super().__init__(config)
        self._groups: list | None = None
        self._info: dict[str, Any] = {}
        self._singles: list[int] = []

    # -- before the model ---------------------------------------------------------------------

    def prepare(self, ctx) -> None:
        task, splits = ctx.task, ctx.splits
        if getattr(task, "target_kind", "") == "multilabel":
            if self.config.end_to_end_epochs:
                raise ConfigError(
                    "strategy.end_to_end_epochs: the end-to-end pass trains a single-label head, and this "
                    "recipe has label sets. Leave it unset (or 0) for label sets."
                )
            check_label_sets(np.asarray(list(splits.train["labels"])), self.config.min_jaccard)
            return
        labels = np.asarray(splits.train["labels"])
        names = list(task.labels.names) if getattr(task, "labels", None) is not None else None
        self._singles = check_labels(labels, names, self.config.single_example_classes)
        if self._singles:
            logger.warning(
                "contrastive: %d class(es) with a single training example take part in negative "
                "pairs only (strategy.single_example_classes=negatives_only).",
                len(self._singles),
            )

    def trainable_blocks(self, groups: list) -> int:
        """`trainable_layers` or `trainable_fraction` when set, else the top two thirds (module
        docstring, point 2)."""
        c = self.config
        if c.trainable_layers is None and c.trainable_fraction is None:
            # A model without blocks gets 0, so `apply` names the real problem.
            return top_blocks(groups, None, DEFAULT_TRAINABLE_FRACTION) if num_blocks(groups) else 0
        return top_blocks(groups, c.trainable_layers, c.trainable_fraction)

    def apply(self, model: nn.Module, groups: list) -> nn.Module:
        """Train the top `trainable_layers` blocks only: the head and the pooler are not in the loss."""
        total = num_blocks(groups)
        k = self.trainable_blocks(groups)
        if k > total:
            raise ConfigError(
                f"strategy.trainable_layers={k}, but this model has only {total} blocks. Use 1 to {total} "
                "(`hf-transfer layers MODEL` lists them)."
            )
        if k == 0 and total == 0:
            raise ConfigError(
                "strategy contrastive trains the model's blocks, and this model has none that hf_transfer "
                "recognises (`hf-transfer layers MODEL` lists its groups). Use strategy.name=feature_extraction."
            )
        if k == 0:
            raise ConfigError(
                "strategy.trainable_layers=0 trains nothing with the pairs: that is strategy.name=feature_extraction."
            )
        keep_frozen = frozenset(id(p) for p in model.parameters() if not p.requires_grad)
        chosen = {id(g) for g in groups_at_depth(groups, k) if g.kind == "block"}
        set_trainable(model, groups, lambda g: id(g) in chosen, keep_frozen)
        self._groups = groups
        logger.info("contrastive: trainable groups: %s", ", ".join(trainable_group_names(groups)))
        return model

    def describe(self, model: nn.Module) -> dict[str, Any]:
        info = super().describe(model)
        if self._groups is not None:
            info["trainable_groups"] = trainable_group_names(self._groups)
        info.update(self._info)
        return info

    # -- training -----------------------------------------------------------------------------

    def fit(self, ctx, model: nn.Module, groups: list) -> dict[str, Any]:
        """Pairs on the engine, then the classifier on the trained features; writes the run folder."""
        from hf_transfer.models.features import FeatureExtractor, spec_from_settings
        from hf_transfer.registry import recipe_modality

        cfg, task = ctx.cfg, ctx.task
        start = time.time()
        multilabel = getattr(task, "target_kind", "") == "multilabel"
        labels = np.asarray(list(ctx.splits.train["labels"]) if multilabel else ctx.splits.train["labels"])
        n_pairs = pair_budget(self.config, len(labels))
        grouped = self.config.pair_batches == "grouped" and not multilabel
        if multilabel:
            pairs = sample_label_set_pairs(labels, n_pairs, seed=cfg.training.seed, min_jaccard=self.config.min_jaccard)
        elif grouped:
            pairs = sample_grouped_pairs(labels, n_pairs, cfg.training.batch_size, seed=cfg.training.seed)
        else:
            pairs = sample_pairs(labels, n_pairs, seed=cfg.training.seed)
        extractor = FeatureExtractor(
            model,
            modality=recipe_modality(cfg.recipe),
            spec=spec_from_settings(self.config),
            name_or_path=cfg.model.name_or_path,
        )
        examples, collate, plan = self._examples(ctx, model, groups)
        trainer = self._trainer(
            ctx,
            PairEncoder(model, extractor, plan, self.config.length_buckets),
            pairs,
            PairCollator(examples, collate),
            keep_batches=grouped,
        )
        logger.info(
            "contrastive: %d pairs (%d positive) over %d examples, %d optimizer steps.",
            n_pairs,
            int(pairs[:, 2].sum()),
            len(labels),
            trainer.total_steps,
        )
        train_metrics = trainer.train()
        body_seconds = time.time() - start

        model = trainer.unwrapped_model().model
        if multilabel:  # one-vs-rest logistic regression, as feature_extraction fits for label sets
            fx, feats = self._body_features(ctx, model, extractor, trainer.accelerator.device)
            return self._fit_label_sets(ctx, model, fx, feats, trainer, train_metrics, pairs, plan, start, body_seconds)
        history, last, e2e = list(trainer.state.history), trainer, {}
        if self.end_to_end_epochs(len(labels), multilabel) > 0:
            last, e2e = self._end_to_end(ctx, model, extractor, examples, collate, plan, trainer.accelerator.device)
            model = last.unwrapped_model().model
            history += [{**r, "phase": "end_to_end"} for r in last.state.history]
        fx, clf, feats = self._fit_classifier(ctx, model, extractor, trainer.accelerator.device)
        metrics = held_out_metrics(clf, feats, task)
        runtime = time.time() - start
        X, y = feats["train"]
        self._info = {**self._record(trainer, fx, clf, X.shape[1], pairs, plan), **e2e}
        self._write_run(ctx, last, model, fx, clf, history)
        metrics.update(
            {
                "train_runtime": round(runtime, 3),
                "contrastive_seconds": round(body_seconds, 3),
                "train_steps": trainer.state.global_step + int(e2e.get("end_to_end_steps", 0)),
                "budget": train_metrics.get("budget"),
                "mixed_precision": train_metrics.get("mixed_precision"),
                "train_samples_per_second": round(len(y) / runtime, 3) if runtime > 0 else 0.0,
            }
        )
        metrics["_model"] = model
        return metrics

    def end_to_end_epochs(self, num_examples: int, multilabel: bool = False) -> float:
        """Passes of the end-to-end pass: `end_to_end_epochs` when set; unset,
        `DEFAULT_END_TO_END_EPOCHS` for single labels when the pair budget is capped (more than
        `max_pairs / pairs_per_example` training examples, 80 by default), else none (module
        docstring, point 5)."""
        e = self.config.end_to_end_epochs
        if e is not None:
            return float(e)
        c = self.config
        capped = c.pairs_per_example * num_examples > c.max_pairs
        return DEFAULT_END_TO_END_EPOCHS if capped and not multilabel else 0.0

    def _end_to_end(self, ctx, model: nn.Module, extractor, examples, collate, plan, device):
        """The end-to-end pass (`strategies.end_to_end`) on the pair-trained body: its head starts
        as a probe on the body's training features. Returns the pass's trainer and its record."""
        from hf_transfer.models.features import FeatureExtractor, extract
        from hf_transfer.strategies.end_to_end import run_end_to_end

        cfg = ctx.cfg
        model.eval()
        fx = FeatureExtractor(
            model, modality=extractor.modality, spec=extractor.spec, name_or_path=cfg.model.name_or_path
        )
        bs = cfg.training.eval_batch_size or cfg.training.batch_size
        f = extract(fx, ctx.task, ctx.splits.train, batch_size=bs, device=device, cache=False)
        encoder = PairEncoder(model, extractor, plan, self.config.length_buckets)
        X, y = f.X.astype(np.float64), np.asarray(f.y)
        return run_end_to_end(self, ctx, encoder, examples, collate, X, y, self.end_to_end_epochs(len(y)))

    def _examples(self, ctx, model: nn.Module, groups: list):
        """The training examples the pairs point into, their collator, and the prefix plan: the
        frozen prefix's cached outputs when it can be cached (`prefix_cache.setup_prefix_cache`),
        else the preprocessed examples and the task's collator (plan None)."""
        from hf_transfer.strategies.prefix_cache import setup_prefix_cache

        cfg, task, train = ctx.cfg, ctx.task, ctx.splits.train
        examples = task.preprocess(train, train=True)
        if not (self.config.cache_prefix or cfg.training.cache_frozen_prefix):
            return examples, task.collate, None
        cache = setup_prefix_cache(
            model,
            groups,
            task,
            lambda: [task.preprocess(train, train=False)],
            batch_size=cfg.training.eval_batch_size or cfg.training.batch_size,
            augmentation=cfg.data.augmentation.enabled,
            log_name="contrastive: ",
        )
        if cache is None:
            return examples, task.collate, None
        return cache.datasets[0], cache.collate, cache.plan

    def _trainer(self, ctx, encoder: PairEncoder, pairs: np.ndarray, collator: PairCollator, keep_batches=False):
        """The engine's trainer over the pairs (no eval split: the classifier is evaluated after)."""
        from hf_transfer.data.text import EpochSampler
        from hf_transfer.engine.trainer import Trainer
        from hf_transfer.models.layer_groups import layer_groups

        tc = ctx.cfg.training
        pair_ds = PairDataset(pairs)
        sampler = EpochSampler(len(pair_ds), tc.seed, None, tc.batch_size, keep_batches=keep_batches)
        return Trainer(
            tc,
            PairTask(ctx.task),
            encoder,
            self,
            layer_groups(encoder),
            pair_ds,
            None,
            collator,
            sampler,
            Path(ctx.output_dir),
        )

    def _body_features(self, ctx, model: nn.Module, extractor, device):
        """The trained body's feature extractor and its features per split (never cached: the
        weights are new)."""
        from hf_transfer.models.features import FeatureExtractor

        cfg = ctx.cfg
        model.eval()
        fx = FeatureExtractor(
            model, modality=extractor.modality, spec=extractor.spec, name_or_path=cfg.model.name_or_path
        )
        feats, _ = split_features(
            fx,
            ctx.task,
            ctx.splits,
            device=device,
            cache=False,
            batch_size=cfg.training.eval_batch_size or cfg.training.batch_size,
        )
        return fx, feats

    def _fit_classifier(self, ctx, model: nn.Module, extractor, device):
        """The classifier on the trained body's features. Returns the body's feature extractor,
        the classifier and the features per split."""
        fx, feats = self._body_features(ctx, model, extractor, device)
        X, y = feats["train"]
        return fx, fit_feature_classifier(self.config, ctx.cfg.training, ctx.task, X, y), feats

    def _record(self, trainer, fx, clf, dim: int, pairs: np.ndarray, plan) -> dict[str, Any]:
        """What `describe` adds to metrics.json: the pairs, the loss, the classifier, the layout."""
        from hf_transfer.models.feature_run import fit_record, setfit_compatible

        losses = [r["loss"] for r in trainer.state.history if "loss" in r]
        return {
            "contrastive_pairs": len(pairs),
            "contrastive_pair_batches": self.config.pair_batches,
            "contrastive_positive_pairs": int(pairs[:, 2].sum()),
            "contrastive_steps": trainer.state.global_step,
            "contrastive_first_loss": round(float(losses[0]), 5) if losses else None,
            "contrastive_last_loss": round(float(losses[-1]), 5) if losses else None,
            "contrastive_prefix_cached": plan is not None,
            "contrastive_single_example_classes": len(self._singles),
            **fit_record(fx, clf, dim),
            "run_layout": "setfit" if setfit_compatible(fx) else "beside",
        }

    def _write_run(self, ctx, trainer, model: nn.Module, fx, clf, history: list) -> None:
        """The run folder (a feature-extraction run, the classifier beside the body) and the
        training `history`, by the main process; then the trainer's processes end."""
        acc = trainer.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process:
            out = Path(ctx.output_dir)
            record = {k: v for k, v in self._info.items() if not k.startswith("contrastive_")}
            write_feature_run(out, model, ctx.task, clf, fx, ctx.cfg.data, head_written=False, record=record)
            (out / "history.json").write_text(json.dumps(history, indent=1))
        acc.wait_for_everyone()
        acc.end_training()

    def _fit_label_sets(
        self, ctx, model, fx, feats, trainer, train_metrics, pairs, plan, start, body_seconds
    ) -> dict[str, Any]:
        """Multi-label: `feature_targets.fit_targets` on the trained body's features (one-vs-rest
        logistic regression, thresholds, the run folder through `models.feature_run`)."""
        import json

        from hf_transfer.strategies.feature_targets import fit_targets

        acc = trainer.accelerator
        history = trainer.state.history
        losses = [r["loss"] for r in history if "loss" in r]
        metrics = fit_targets(self, ctx, model, fx, feats, [False], start, acc.device)
        self._info = {
            "contrastive_pairs": len(pairs),
            "contrastive_positive_pairs": int(pairs[:, 2].sum()),
            "contrastive_pair_rule": f"positive: same label set or Jaccard >= {self.config.min_jaccard:g}; "
            "negative: disjoint label sets",
            "contrastive_steps": trainer.state.global_step,
            "contrastive_first_loss": round(float(losses[0]), 5) if losses else None,
            "contrastive_last_loss": round(float(losses[-1]), 5) if losses else None,
            "contrastive_prefix_cached": plan is not None,
            **self._fitted,
        }
        acc.wait_for_everyone()
        if acc.is_main_process:
            (Path(ctx.output_dir) / "history.json").write_text(json.dumps(history, indent=1))
        acc.end_training()
        metrics.update(
            {
                "contrastive_seconds": round(body_seconds, 3),
                "train_steps": trainer.state.global_step,
                "budget": train_metrics.get("budget"),
                "mixed_precision": train_metrics.get("mixed_precision"),
            }
        )
        metrics["_model"] = model
        return metrics
