"""Predictions per second on CPU: `static` (model2vec table) against the MiniLM body (not CI).

    python bench/static_speed.py            # the 960 held-out texts of bench/fewshot.py's fortunes24

`feature_extraction` and `contrastive` predict with the same computation (the MiniLM-L6 forward
pass, mean pooling, a linear classifier), so one timing stands for both. `static` is the run
folder's own model (`hf_transfer.strategies.static.StaticClassifier`): the checkpoint's
tokenizer, a table look-up and a mean, the linear head. Both: one torch thread, tokenisation
included, batches of 64, best of 3 passes; the classifier heads are random (the speed does not
depend on their values). The distilled table comes from the cache `static` runs fill (the first
call distils: minutes).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402


def timed(fn, texts, batch=64, passes=3) -> float:
    best = float("inf")
    for _ in range(passes):
        t0 = time.perf_counter()
        for i in range(0, len(texts), batch):
            fn(texts[i : i + batch])
        best = min(best, time.perf_counter() - t0)
    return len(texts) / best


def main() -> None:
    import fewshot
    from transformers import AutoModel, AutoTokenizer

    from hf_transfer.strategies.static import StaticClassifier, distilled_folder, table_for_tokenizer

    torch.set_num_threads(1)
    data = fewshot.load_fortunes24()
    texts = list(data.groupby("label").head(40).text)
    path = fewshot.model_path()
    tok = AutoTokenizer.from_pretrained(path)
    body = AutoModel.from_pretrained(path).eval()
    head = torch.nn.Linear(body.config.hidden_size, 24)

    @torch.no_grad()
    def minilm(batch):
        enc = tok(batch, truncation=True, max_length=fewshot.MAX_LENGTH, padding=True, return_tensors="pt")
        h = body(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).float()
        return head(torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)).argmax(-1)

    table, known = table_for_tokenizer(distilled_folder(path, 256), tok)
    static = StaticClassifier(
        table, known, torch.zeros(24, table.shape[1]), torch.zeros(24), {i: str(i) for i in range(24)}
    ).eval()

    @torch.no_grad()
    def static_predict(batch):
        enc = tok(batch, truncation=True, max_length=fewshot.MAX_LENGTH, padding=True, return_tensors="pt")
        return static(**enc).logits.argmax(-1)

    rows = [
        ("MiniLM-L6 forward + mean pooling + linear (feature_extraction, contrastive)", timed(minilm, texts)),
        ("static table + mean + linear (static)", timed(static_predict, texts)),
    ]
    print(f"{len(texts)} texts, 1 torch thread, batches of 64\n\n| model | predictions / s |\n|---|---|")
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
