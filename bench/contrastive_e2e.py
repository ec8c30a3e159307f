"""Does an end-to-end pass after `contrastive` help? (SetFit's "differentiable head"; not CI.)

    python bench/contrastive_e2e.py --datasets tweets fortunes --json e2e.json

For each data set and seed (8 examples per class, `bench/fewshot.py`'s splits and settings), one
`contrastive` run with the tool's defaults; after its classifier is fitted, the same trained body
and a linear head initialised from that classifier train together with cross-entropy on the
training examples (`--steps` batches of 16, AdamW, body learning rate `--body-lr`, head
`--head-lr`, bf16 autocast). Printed per run, on the held-out set: `contrastive` (the tool's
result), `e2e_head` (the end-to-end head's argmax) and `e2e_refit` (the classifier refitted on the
end-to-end body's features), with the seconds the extra pass took. The pass hooks into
`Contrastive._fit_classifier`; the run folder is the tool's, unchanged.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fewshot  # noqa: E402

from hf_transfer.strategies.contrastive import Contrastive  # noqa: E402
from hf_transfer.strategies.feature_extraction import fit_feature_classifier  # noqa: E402


def features(fx, task, ds) -> tuple[np.ndarray, np.ndarray]:
    examples = task.preprocess(ds, train=False)
    out = []
    with torch.no_grad():
        for i in range(0, len(examples), 64):
            out.append(fx(task.collate([examples[j] for j in range(i, min(i + 64, len(examples)))])).float())
    return torch.cat(out).numpy(), np.asarray(ds["labels"])


def end_to_end(args, records: list):
    original = Contrastive._fit_classifier

    def fit_then_end_to_end(self, ctx, model, extractor, device):
        fx, clf, feats = original(self, ctx, model, extractor, device)
        X_eval, y_eval = feats["eval"]
        record = {"contrastive": float((clf.predict(X_eval) == y_eval).mean())}
        start = time.time()
        task = ctx.task
        weight = torch.tensor(clf.weight, dtype=torch.float32, requires_grad=True)
        bias = torch.tensor(clf.bias, dtype=torch.float32, requires_grad=True)
        examples = task.preprocess(ctx.splits.train, train=True)
        body = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(
            [{"params": body, "lr": args.body_lr}, {"params": [weight, bias], "lr": args.head_lr, "weight_decay": 0.0}]
        )
        rng = np.random.default_rng(ctx.cfg.training.seed)
        model.train()
        order: list[int] = []
        for _ in range(args.steps):
            if len(order) < 16:
                order += rng.permutation(len(examples)).tolist()
            chunk, order = order[:16], order[16:]
            batch = task.collate([examples[i] for i in chunk])
            with torch.autocast("cpu", dtype=torch.bfloat16):
                emb = fx(batch)
            loss = torch.nn.functional.cross_entropy(emb.float() @ weight.T + bias, batch["labels"])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        X2, y2 = features(fx, task, ctx.splits.eval)
        logits = X2 @ weight.detach().numpy().T + bias.detach().numpy()
        record["e2e_head"] = float((logits.argmax(1) == y2).mean())
        Xt, yt = features(fx, task, ctx.splits.train)
        refit = fit_feature_classifier(self.config, ctx.cfg.training, task, Xt, yt)
        record["e2e_refit"] = float((refit.predict(X2) == y2).mean())
        record["e2e_seconds"] = round(time.time() - start, 1)
        records.append(record)
        return fx, clf, feats

    Contrastive._fit_classifier = fit_then_end_to_end


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["tweets", "fortunes"], choices=list(fewshot.DATASETS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--body-lr", type=float, default=2e-5)
    p.add_argument("--head-lr", type=float, default=1e-2)
    p.add_argument("--json")
    args = p.parse_args()
    torch.set_num_threads(1)
    records: list = []
    end_to_end(args, records)
    results: dict = {}
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for d in args.datasets:
            paths = fewshot.make_splits(d, [8], args.seeds, work)
            for seed in args.seeds:
                r = fewshot.run_strategy("contrastive", paths[(8, seed)], paths["eval"], seed, work / f"{d}-{seed}")
                records[-1].update({"seed": seed, "time": round(r["time"], 1)})
                print(d, seed, records[-1], file=sys.stderr, flush=True)
                results.setdefault(d, []).append(records[-1])
                if args.json:
                    Path(args.json).write_text(json.dumps(results, indent=1))
    for d, rs in results.items():
        means = {k: round(float(np.mean([r[k] for r in rs])), 3) for k in ("contrastive", "e2e_head", "e2e_refit")}
        print(f"{d} 8/class, {len(rs)} seeds: {means}, end-to-end pass {np.mean([r['e2e_seconds'] for r in rs]):.0f} s")


if __name__ == "__main__":
    main()
