"""Text preprocessing: tokenisation without padding, and samplers for dynamic padding."""

from __future__ import annotations

import datasets
import torch
from torch.utils.data import Sampler
from transformers.trainer_pt_utils import get_length_grouped_indices

from hf_transfer.data.fingerprints import tokenizer_identity, transform_fingerprint


def tokenize_split(
    ds: datasets.Dataset,
    tokenizer,
    text_column: str,
    max_length: int,
    text_pair_column: str | None = None,
) -> datasets.Dataset:
    """Tokenise `text_column` (and an optional pair column), truncating, never padding.

    Padding happens per batch in the collator (dynamic padding), so short batches stay short.
    """

    def tok(batch):
        texts = [t if t is not None else "" for t in batch[text_column]]
        pairs = None
        if text_pair_column:
            pairs = [t if t is not None else "" for t in batch[text_pair_column]]
        return tokenizer(texts, pairs, truncation=True, max_length=max_length)

    keep = {"labels"}
    drop = [c for c in ds.column_names if c not in keep]
    # Our own fingerprint: datasets would otherwise hash the closure (and the tokenizer in it) under a
    # bare `except:` that swallows Ctrl-C (hf_transfer.data.fingerprints).
    fingerprint = transform_fingerprint(
        ds, "tokenize_split", tokenizer_identity(tokenizer), text_column, text_pair_column, max_length, drop
    )
    return ds.map(
        tok,
        batched=True,
        remove_columns=drop,
        desc="Tokenizing",
        new_fingerprint=fingerprint,
        load_from_cache_file=False,
    )


class EpochSampler(Sampler[int]):
    """Shuffles with a seed that depends only on (seed, epoch), optionally grouping by length.

    A resumed run sets the same epoch and gets the same order, so skipping the batches it already
    saw continues exactly where it stopped. Every process draws the same order; Accelerate shards
    the batches between processes.
    """

    def __init__(
        self,
        num_samples: int,
        seed: int,
        lengths: list[int] | None = None,
        batch_size: int = 1,
        keep_batches: bool = False,
    ):
        self.num_samples = num_samples
        self.seed = seed
        self.lengths = lengths
        self.batch_size = batch_size
        self.keep_batches = keep_batches  # shuffle whole runs of `batch_size` items, not items
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        if self.lengths is not None:
            # transformers' megabatch grouping: sort within chunks of 50 batches, longest first.
            return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=g))
        if self.keep_batches:  # whole batches shuffled; a short last one stays last, so batches stay aligned
            full = self.num_samples // self.batch_size
            starts = (torch.randperm(full, generator=g) * self.batch_size).tolist()
            order = [i for b in starts for i in range(b, b + self.batch_size)]
            return iter(order + list(range(full * self.batch_size, self.num_samples)))
        return iter(torch.randperm(self.num_samples, generator=g).tolist())
