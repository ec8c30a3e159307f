"""Does weight interpolation after `contrastive` help? (WiSE-FT, Wortsman et al. 2022; not CI.)

    python bench/contrastive_wise.py --datasets tweets fortunes --alphas 0.5 0.75 --json wise.json

For each data set and seed (8 examples per class, `bench/fewshot.py`'s splits and settings), one
`contrastive` run with the tool's defaults. After the pairs have trained the body, and for each
`alpha`, the trained blocks are moved back to `pretrained + alpha x (trained - pretrained)` and the
classifier is fitted on that body's features as the tool fits it (`Contrastive._fit_classifier`).
Printed per data set, on the held-out set: the accuracy for every alpha (1.0 is the tool's own
result, which is what the run folder keeps). One pair training serves every alpha.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fewshot  # noqa: E402

from hf_transfer.strategies.contrastive import Contrastive  # noqa: E402


def interpolate(alphas: list[float], records: list) -> None:
    original_trainer, original_fit = Contrastive._trainer, Contrastive._fit_classifier
    pretrained: dict = {}

    def snapshot_then_trainer(self, ctx, encoder, *args, **kwargs):
        pretrained.clear()
        pretrained.update({n: p.detach().clone() for n, p in encoder.model.named_parameters() if p.requires_grad})
        return original_trainer(self, ctx, encoder, *args, **kwargs)

    def fit_each_alpha(self, ctx, model, extractor, device):
        trained = {n: p.detach().clone() for n, p in model.named_parameters() if n in pretrained}
        record = {}
        for alpha in alphas:
            with torch.no_grad():
                for n, p in model.named_parameters():
                    if n in trained:
                        p.copy_(pretrained[n] + alpha * (trained[n] - pretrained[n]))
            _, clf, feats = original_fit(self, ctx, model, extractor, device)
            X_eval, y_eval = feats["eval"]
            record[f"alpha_{alpha:g}"] = float((clf.predict(X_eval) == y_eval).mean())
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in trained:
                    p.copy_(trained[n])
        fx, clf, feats = original_fit(self, ctx, model, extractor, device)
        X_eval, y_eval = feats["eval"]
        record["alpha_1"] = float((clf.predict(X_eval) == y_eval).mean())
        records.append(record)
        return fx, clf, feats

    Contrastive._trainer = snapshot_then_trainer
    Contrastive._fit_classifier = fit_each_alpha


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["tweets", "fortunes"], choices=list(fewshot.DATASETS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--alphas", type=float, nargs="+", default=[0.5, 0.75])
    p.add_argument("--json")
    args = p.parse_args()
    torch.set_num_threads(1)
    records: list = []
    interpolate([a for a in args.alphas if a != 1.0], records)
    results: dict = {}
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for d in args.datasets:
            paths = fewshot.make_splits(d, [8], args.seeds, work)
            for seed in args.seeds:
                r = fewshot.run_strategy("contrastive", paths[(8, seed)], paths["eval"], seed, work / f"{d}-{seed}")
                records[-1].update({"seed": seed, "tool_accuracy": r["accuracy"]})
                print(d, seed, records[-1], file=sys.stderr, flush=True)
                results.setdefault(d, []).append(records[-1])
                if args.json:
                    Path(args.json).write_text(json.dumps(results, indent=1))
    for d, rs in results.items():
        keys = sorted(k for k in rs[0] if k.startswith("alpha_"))
        means = {k: round(float(np.mean([r[k] for r in rs])), 3) for k in keys}
        print(f"{d} 8/class, {len(rs)} seeds: {means}")


if __name__ == "__main__":
    main()
