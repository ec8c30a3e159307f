"""Seconds per pair-training step with a batch's texts in 1, 2, 3 or 4 length groups (not CI).

    python bench/length_groups_step.py --dataset tweets
    python bench/length_groups_step.py --dataset fortunes --steps 40

What `contrastive` runs each step, stripped to the model: 31 distinct texts of the data set
(`bench/fewshot.py`'s loaders; about what a batch of 16 random pairs touches at 64 examples a
class), MiniLM forward and backward under bf16 autocast (when the CPU computes bf16 natively),
mean pooling, the cosine loss, one fused AdamW step. The texts are split into groups by
`hf_transfer.strategies.contrastive.length_groups` (as `PairEncoder` does), each cut to its own
longest text. Prints the mean seconds per step after 5 warm-up steps, for each group count and
for SDPA and eager attention, with the ratio against one group. One torch thread.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fewshot  # noqa: E402

from hf_transfer.engine.distributed import native_bf16  # noqa: E402
from hf_transfer.strategies.contrastive import length_groups  # noqa: E402


def seconds_per_step(batches: list, attention: str, buckets: int, bf16: bool) -> float:
    from transformers import AutoModel

    model = AutoModel.from_pretrained(fewshot.model_path(), attn_implementation=attention).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)

    def encode(batch: dict) -> torch.Tensor:
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1)

    times = []
    for step, batch in enumerate(batches):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            groups = length_groups(batch["attention_mask"], buckets)
            if groups is None:
                emb = encode(batch)
            else:
                parts = []
                for idx in groups:
                    longest = int(batch["attention_mask"][idx].sum(1).max())
                    parts.append(encode({k: v[idx][:, :longest] for k, v in batch.items()}))
                emb = torch.cat(parts)[torch.argsort(torch.cat(groups))]
        half = emb.shape[0] // 2
        loss = (torch.nn.functional.cosine_similarity(emb[:half].float(), emb[half : 2 * half].float()) ** 2).sum()
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step >= 5:
            times.append(time.perf_counter() - start)
    return float(np.mean(times))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="tweets", choices=list(fewshot.DATASETS))
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--texts", type=int, default=31)
    args = p.parse_args()
    from transformers import AutoTokenizer

    torch.set_num_threads(1)
    bf16 = native_bf16("cpu")
    tok = AutoTokenizer.from_pretrained(fewshot.model_path())
    texts = list(fewshot.DATASETS[args.dataset][0]().text.sample(256, random_state=0))
    rng = np.random.default_rng(0)
    batches = [
        dict(
            tok(
                [texts[i] for i in rng.choice(len(texts), args.texts, replace=False)],
                padding=True,
                truncation=True,
                max_length=fewshot.MAX_LENGTH,
                return_tensors="pt",
            )
        )
        for _ in range(args.steps)
    ]
    print(f"{args.dataset}: {args.texts} texts a step, {'bf16' if bf16 else 'fp32'}, one thread")
    for attention in ("sdpa", "eager"):
        base = None
        for buckets in (1, 2, 3, 4):
            s = seconds_per_step(batches, attention, buckets, bf16)
            base = base or s
            print(f"  {attention:5s} {buckets} group(s): {s:.3f} s/step ({s / base:.2f}x one group)", flush=True)


if __name__ == "__main__":
    main()
