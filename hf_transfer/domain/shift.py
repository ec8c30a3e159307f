"""`hf-transfer shift`: is there a shift between the training data and a target set, and where?

Everything is measured on the frozen pretrained features of both sets (the shared features code,
`hf_transfer.models.features`), the representation a fine-tuned model starts from:

- **Domain-classifier two-sample test**: a logistic regression tries to tell training from
  target examples; its cross-validated (out-of-fold) ROC AUC is 0.5 when the two sets cannot be
  told apart. The interval is a stratified bootstrap over the out-of-fold scores.
- **MMD** (maximum mean discrepancy, Gretton et al. 2012), RBF kernel with the median-distance
  bandwidth, unbiased estimate, permutation p-value.
- **Per-class shift** when the target has labels: the same two tests within each class, and the
  accuracy of a source classifier on each class of the target.
- **Label (prior) shift** by black-box shift estimation (Lipton et al. 2018): a classifier fit on
  half the training features, its confusion matrix on the other half, solved against its
  prediction rates on the target for the target's class priors.
- The target examples that look least like training (highest out-of-fold target probability).
- A 2-D PCA projection of both sets (`shift.png`).

Writes `shift.json` and `shift.md`; the one-line verdict is printed. A shift is a finding, not an
error: the command exits 0 either way.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

ALPHA = 0.05
#: Examples each side needs at the least: the domain classifier is cross-validated with stratified
#: folds (each fold holds out training and target examples) and MMD's unbiased estimate needs pairs.
MIN_EXAMPLES = 5
#: Domain-classifier AUC above which the label-shift assumption (p(x | y) unchanged) is implausible.
STRONG_SHIFT_AUC = 0.8


# ----------------------------------------------------------------------------- statistics


def _classifier(n: int, dim: int, seed: int):
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # A few components keep a linear probe from memorising small samples (which would push the
    # out-of-fold AUC of two identical sets below 0.5).
    k = max(1, min(dim, 32, n // 10))
    return make_pipeline(
        StandardScaler(), PCA(n_components=k, random_state=seed), LogisticRegression(C=1.0, max_iter=2000)
    )


def _bootstrap_auc(negative: np.ndarray, positive: np.ndarray, n_boot: int, rng) -> np.ndarray:
    """ROC AUCs of `n_boot` stratified resamples, by ranks (Mann-Whitney U), all at once.

    Only ties between a negative and a positive score would need mid-ranks; out-of-fold
    probabilities of different examples practically never tie exactly.
    """
    n0, n1 = len(negative), len(positive)
    both = np.concatenate([rng.choice(negative, (n_boot, n0)), rng.choice(positive, (n_boot, n1))], axis=1)
    ranks = both.argsort(axis=1, kind="stable").argsort(axis=1) + 1
    return (ranks[:, n0:].sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def domain_classifier_test(
    Xs: np.ndarray, Xt: np.ndarray, *, folds: int = 5, seed: int = 0, n_boot: int = 1000
) -> dict[str, Any]:
    """Cross-validated AUC of source-vs-target, with a 95% bootstrap interval.

    Returns:
        `auc`, `ci_low`, `ci_high`, `folds`, and `target_scores` (out-of-fold probability that each
        target example is a target example).
    """
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    X = np.vstack([Xs, Xt]).astype(np.float64)
    d = np.r_[np.zeros(len(Xs), int), np.ones(len(Xt), int)]
    folds = max(2, min(folds, len(Xs), len(Xt)))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    scores = cross_val_predict(
        _classifier(len(X) * (folds - 1) // folds, X.shape[1], seed), X, d, cv=cv, method="predict_proba"
    )[:, 1]
    auc = float(roc_auc_score(d, scores))
    rng = np.random.default_rng(seed)
    s_scores, t_scores = scores[d == 0], scores[d == 1]
    boots = _bootstrap_auc(s_scores, t_scores, n_boot, rng)
    low, high = np.percentile(boots, [2.5, 97.5])
    return {
        "auc": round(auc, 4),
        "ci_low": round(float(low), 4),
        "ci_high": round(float(high), 4),
        "folds": folds,
        "target_scores": scores[len(Xs) :],
    }


def _sq_distances(Z: np.ndarray) -> np.ndarray:
    sq = (Z**2).sum(1)
    return np.maximum(sq[:, None] + sq[None, :] - 2.0 * Z @ Z.T, 0.0)


def _mmd2_from_kernel(K: np.ndarray, a: np.ndarray) -> float:
    """Unbiased MMD^2 for the split `a` (True = first sample) of kernel matrix `K`."""
    a = a.astype(np.float64)
    b = 1.0 - a
    m, n = a.sum(), b.sum()
    diag = np.diag(K)
    ka, kb = K @ a, K @ b
    xx = (a @ ka - diag @ a) / (m * (m - 1))
    yy = (b @ kb - diag @ b) / (n * (n - 1))
    xy = (a @ kb) / (m * n)
    return float(xx + yy - 2 * xy)


def mmd_test(
    Xs: np.ndarray, Xt: np.ndarray, *, permutations: int = 500, seed: int = 0, max_per_side: int = 750
) -> dict[str, Any]:
    """RBF-kernel MMD^2 (median heuristic bandwidth) with a permutation p-value."""
    rng = np.random.default_rng(seed)
    if len(Xs) > max_per_side:
        Xs = Xs[rng.choice(len(Xs), max_per_side, replace=False)]
    if len(Xt) > max_per_side:
        Xt = Xt[rng.choice(len(Xt), max_per_side, replace=False)]
    Z = np.vstack([Xs, Xt]).astype(np.float64)
    D2 = _sq_distances(Z)
    off = D2[np.triu_indices(len(Z), 1)]
    bandwidth2 = float(np.median(off[off > 0])) if np.any(off > 0) else 1.0
    K = np.exp(-D2 / bandwidth2)
    a = np.r_[np.ones(len(Xs), bool), np.zeros(len(Xt), bool)]
    observed = _mmd2_from_kernel(K, a)
    null = np.array([_mmd2_from_kernel(K, rng.permutation(a)) for _ in range(permutations)])
    p = (1 + int(np.sum(null >= observed))) / (1 + permutations)
    return {
        "mmd2": round(observed, 6),
        "p_value": round(p, 4),
        "permutations": permutations,
        "bandwidth": round(float(np.sqrt(bandwidth2)), 4),
        "n_source": len(Xs),
        "n_target": len(Xt),
    }


def black_box_shift_estimation(
    Xs: np.ndarray, ys: np.ndarray, Xt: np.ndarray, n_classes: int, seed: int = 0
) -> dict[str, Any]:
    """Target class priors from a source classifier's predictions (Lipton et al. 2018, BBSE).

    With C[i, j] = P_source(prediction i, label j) on held-out source data and mu[i] =
    P_target(prediction i), label shift (p(x|y) unchanged) gives C w = mu with w_j = q(y=j) / p(y=j).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    counts = np.bincount(ys, minlength=n_classes)
    strat = ys if counts[counts > 0].min() >= 2 else None
    A, B, ya, yb = train_test_split(Xs, ys, test_size=0.5, random_state=seed, stratify=strat)
    clf = LogisticRegression(max_iter=2000, C=1.0).fit(A, ya)
    classes = list(clf.classes_)

    def predict(X):
        return np.array(classes)[clf.predict_proba(X).argmax(1)]

    pb = predict(B)
    C = np.zeros((n_classes, n_classes))
    for p_, y_ in zip(pb, yb):
        C[p_, y_] += 1
    C /= len(yb)
    mu = np.bincount(predict(Xt), minlength=n_classes) / len(Xt)
    w, *_ = np.linalg.lstsq(C, mu, rcond=None)
    w = np.clip(w, 0.0, None)
    source_priors = C.sum(0)
    q = w * source_priors
    q = q / q.sum() if q.sum() > 0 else source_priors
    return {
        "source_priors": [round(float(v), 4) for v in source_priors],
        "target_priors_estimated": [round(float(v), 4) for v in q],
        "importance_weights": [round(float(v), 4) for v in w],
        "target_prediction_rates": [round(float(v), 4) for v in mu],
        "heldout_source_accuracy": round(float(np.mean(pb == yb)), 4),
        "confusion_condition_number": round(float(np.linalg.cond(C)), 2) if np.all(np.isfinite(C)) else None,
        "_classifier": clf,
        "_predict": predict,
    }


# ----------------------------------------------------------------------------- the report


def _preview(ds, column: str, index: int, width: int = 100) -> str:
    value = ds[int(index)][column]
    if isinstance(value, dict):
        value = value.get("path") or "<image bytes>"
    text = " ".join(str(value).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _plot(Xs: np.ndarray, Xt: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    Z = PCA(n_components=2, random_state=0).fit_transform(np.vstack([Xs, Xt]))
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.scatter(Z[: len(Xs), 0], Z[: len(Xs), 1], s=6, alpha=0.5, label=f"train ({len(Xs)})")
    ax.scatter(Z[len(Xs) :, 0], Z[len(Xs) :, 1], s=6, alpha=0.5, label=f"target ({len(Xt)})")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def verdict(domain: dict, mmd: dict, label_shift: dict | None, names: list[str] | None) -> str:
    """One line: shift or not, with the numbers behind it."""
    auc_shift = domain["ci_low"] > 0.5
    mmd_shift = mmd["p_value"] < ALPHA
    if auc_shift and mmd_shift:
        head = "SHIFT"
    elif auc_shift or mmd_shift:
        head = "POSSIBLE SHIFT"
    else:
        head = "NO DETECTABLE SHIFT"
    line = (
        f"{head}: domain-classifier AUC {domain['auc']:.3f} [95% CI {domain['ci_low']:.3f}, {domain['ci_high']:.3f}] "
        f"(0.5 = indistinguishable), MMD p = {mmd['p_value']:.3g}"
    )
    # BBSE is only as good as the source classifier (near chance its priors are noise), and it
    # assumes p(x | y) unchanged: with features this far apart its estimate is not to be quoted.
    if label_shift and names and label_shift["heldout_source_accuracy"] >= 0.7 and domain["auc"] < STRONG_SHIFT_AUC:
        est = label_shift["target_priors_estimated"]
        src = label_shift["source_priors"]
        moved = max(range(len(names)), key=lambda i: abs(est[i] - src[i]))
        line += f"; label priors: {names[moved]} {src[moved]:.2f} in train -> {est[moved]:.2f} estimated in target"
    return line + "."


def shift_report(
    cfg,
    output_dir: str | Path | None = None,
    *,
    max_examples: int = 2000,
    permutations: int = 500,
    seed: int = 0,
    top_k: int = 10,
) -> dict[str, Any]:
    """Measure the shift between `cfg.data.train` and `cfg.data.target`; write the report files.

    Returns:
        The report (also in `shift.json`), with `verdict` and `files`.
    """
    from hf_transfer.domain.target import load_target
    from hf_transfer.models.features import FeatureExtractor, extract, spec_from_settings
    from hf_transfer.models.heads import check_checkpoint_fits_recipe, load_config_checked
    from hf_transfer.registry import recipe_modality
    from hf_transfer.tasks import get_task

    m = cfg.model
    # An image checkpoint in a text config: said before a tokenizer asks for sentencepiece.
    check_checkpoint_fits_recipe(
        load_config_checked(m.name_or_path, m.revision, m.trust_remote_code), cfg.recipe, m.name_or_path
    )
    out = Path(output_dir) if output_dir else Path(cfg.output_dir) / "shift"
    out.mkdir(parents=True, exist_ok=True)
    task = get_task(cfg)
    task.load_processor()
    splits = task.load_splits()
    source = splits.train
    if len(source) > max_examples:
        source = source.shuffle(seed=seed).select(range(max_examples))
    target, target_labelled = load_target(cfg, task, keep_labels=True, max_samples=max_examples)
    for side, rows, key in (("training", len(source), "data.train"), ("target", len(target), "data.target")):
        if rows < MIN_EXAMPLES:
            from hf_transfer.errors import DataError

            raise DataError(
                f"{key} has {rows} row{'s' if rows != 1 else ''}: the shift tests need at least {MIN_EXAMPLES} "
                f"{side} rows (the domain classifier is cross-validated on both sets, and its interval "
                f"narrows only with more rows). Give more {side} data in {key}."
            )
    model = task.build_model()
    extractor = FeatureExtractor(
        model,
        modality=recipe_modality(cfg.recipe, "text"),
        spec=spec_from_settings(cfg.strategy),
        name_or_path=cfg.model.name_or_path,
    )
    bs = cfg.training.eval_batch_size or cfg.training.batch_size
    fs = extract(extractor, task, source, batch_size=bs)
    ft = extract(extractor, task, target, batch_size=bs)
    Xs, Xt = fs.X, ft.X
    ys = np.asarray(source["labels"], dtype=int)
    yt = np.asarray(target["labels"], dtype=int) if target_labelled else None
    names = list(task.labels.names) if getattr(task, "labels", None) is not None else None

    logger.info(
        "Shift: %d training and %d target examples, %d-d features (%s).",
        len(Xs),
        len(Xt),
        Xs.shape[1],
        fs.info.get("pooling"),
    )
    domain = domain_classifier_test(Xs, Xt, seed=seed)
    mmd = mmd_test(Xs, Xt, permutations=permutations, seed=seed)
    report: dict[str, Any] = {
        "model": cfg.model.name_or_path,
        "train": cfg.data.train.name,
        "target": cfg.data.target.name,
        "n_train": len(Xs),
        "n_target": len(Xt),
        "features": {k: v for k, v in fs.info.items() if k != "cache_path"},
        "domain_classifier": {k: v for k, v in domain.items() if k != "target_scores"},
        "mmd": mmd,
    }

    label_shift = None
    if names and len(names) > 1 and len(np.unique(ys)) > 1:
        label_shift = black_box_shift_estimation(Xs, ys, Xt, len(names), seed=seed)
        predict = label_shift.pop("_predict")
        label_shift.pop("_classifier")
        label_shift["labels"] = names
        if yt is not None:
            label_shift["target_priors_true"] = [
                round(float(v), 4) for v in np.bincount(yt, minlength=len(names)) / len(yt)
            ]
            pt = predict(Xt)
            label_shift["target_accuracy_of_source_classifier"] = round(float(np.mean(pt == yt)), 4)
        report["label_shift"] = label_shift
        if yt is not None:
            per_class = []
            for c, name in enumerate(names):
                s_c, t_c = Xs[ys == c], Xt[yt == c]
                row: dict[str, Any] = {"label": name, "n_train": int(len(s_c)), "n_target": int(len(t_c))}
                if len(t_c):
                    row["source_classifier_accuracy"] = round(float(np.mean(pt[yt == c] == c)), 4)
                if len(s_c) >= 5 and len(t_c) >= 5:
                    d_c = domain_classifier_test(s_c, t_c, folds=3, seed=seed, n_boot=300)
                    row.update(
                        {
                            "auc": d_c["auc"],
                            "ci_low": d_c["ci_low"],
                            "ci_high": d_c["ci_high"],
                            "mmd_p_value": mmd_test(s_c, t_c, permutations=min(permutations, 200), seed=seed)[
                                "p_value"
                            ],
                        }
                    )
                per_class.append(row)
            report["per_class"] = per_class

    col = task.input_col
    order = np.argsort(-domain["target_scores"])[:top_k]
    report["least_like_training"] = [
        {
            "index": int(i),
            "target_probability": round(float(domain["target_scores"][i]), 4),
            "example": _preview(target, col, i),
            **({"label": names[int(yt[i])]} if yt is not None else {}),
        }
        for i in order
    ]
    report["verdict"] = verdict(domain, mmd, label_shift, names)

    png = out / "shift.png"
    _plot(Xs, Xt, png, f"PCA of frozen features: train vs target (AUC {domain['auc']:.2f})")
    report["files"] = {"json": str(out / "shift.json"), "markdown": str(out / "shift.md"), "plot": str(png)}
    (out / "shift.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "shift.md").write_text(_markdown(report))
    logger.info("%s", report["verdict"])
    return report


def _markdown(r: dict) -> str:
    d, m = r["domain_classifier"], r["mmd"]
    lines = [
        "# Domain shift report",
        "",
        f"**{r['verdict']}**",
        "",
        f"Train: `{r['train']}` ({r['n_train']} examples); target: `{r['target']}` ({r['n_target']} examples); "
        f"frozen features of `{r['model']}` ({r['features'].get('pooling')} pooling, {r['features'].get('dim')}-d).",
        "",
        "| test | result | reading |",
        "|---|---|---|",
        f"| domain classifier, {d['folds']}-fold out-of-fold AUC "
        f"| {d['auc']:.3f} [{d['ci_low']:.3f}, {d['ci_high']:.3f}] | "
        "0.5: the sets cannot be told apart; 1.0: fully separable |",
        f"| MMD^2 (RBF, bandwidth {m['bandwidth']}) "
        f"| {m['mmd2']:.5f}, p = {m['p_value']:.3g} ({m['permutations']} permutations) | "
        f"p < {ALPHA}: the feature distributions differ |",
    ]
    ls = r.get("label_shift")
    if ls:
        lines += [
            "",
            "## Label (prior) shift, black-box shift estimation",
            "",
            "| label | train prior | target prior (estimated) |"
            + (" target prior (true) |" if "target_priors_true" in ls else ""),
            "|---|---|---|" + ("---|" if "target_priors_true" in ls else ""),
        ]
        for i, name in enumerate(ls["labels"]):
            row = f"| {name} | {ls['source_priors'][i]:.3f} | {ls['target_priors_estimated'][i]:.3f} |"
            if "target_priors_true" in ls:
                row += f" {ls['target_priors_true'][i]:.3f} |"
            lines.append(row)
        lines += [
            "",
            f"Source classifier on held-out training data: accuracy {ls['heldout_source_accuracy']:.3f}"
            + (
                f"; on the labelled target: {ls['target_accuracy_of_source_classifier']:.3f}."
                if "target_accuracy_of_source_classifier" in ls
                else "."
            )
            + f" Confusion-matrix condition number {ls['confusion_condition_number']} "
            "(large: the estimate is unstable).",
        ]
        if d["auc"] >= STRONG_SHIFT_AUC:
            lines += [
                "",
                f"**Caution:** the estimate assumes label shift only (p(x | y) the same in both sets); with a "
                f"domain-classifier AUC of {d['auc']:.2f} the inputs themselves differ, "
                "so these priors are not reliable.",
            ]
    if r.get("per_class"):
        lines += [
            "",
            "## Per class",
            "",
            "| label | n train | n target | AUC [95% CI] | MMD p | source-classifier accuracy on target |",
            "|---|---|---|---|---|---|",
        ]
        for c in r["per_class"]:
            auc = f"{c['auc']:.3f} [{c['ci_low']:.3f}, {c['ci_high']:.3f}]" if "auc" in c else "n/a (< 5 examples)"
            p = f"{c['mmd_p_value']:.3g}" if "mmd_p_value" in c else "n/a"
            acc = f"{c['source_classifier_accuracy']:.3f}" if "source_classifier_accuracy" in c else "n/a"
            lines.append(f"| {c['label']} | {c['n_train']} | {c['n_target']} | {auc} | {p} | {acc} |")
    lines += ["", "## Target examples least like training", "", "| # | target probability | example |", "|---|---|---|"]
    for e in r["least_like_training"]:
        ex = e["example"].replace("|", "\\|")
        lines.append(
            f"| {e['index']} | {e['target_probability']:.3f} | {ex}{' (' + e['label'] + ')' if 'label' in e else ''} |"
        )
    lines += ["", f"![PCA projection]({Path(r['files']['plot']).name})", ""]
    return "\n".join(lines)
