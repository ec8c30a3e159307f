"""Regression metrics: `rmse`, `mae`, `mse` (lower is better), `r2`, `spearman`, `pearson`."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["compute_regression_metrics", "REGRESSION_LOWER_IS_BETTER"]

#: Metrics where a smaller value is better.
REGRESSION_LOWER_IS_BETTER = ("rmse", "mae", "mse")


def compute_regression_metrics(predictions: np.ndarray, references: np.ndarray) -> dict[str, Any]:
    """RMSE, MAE, MSE, R^2 (scikit-learn's, 1 - SSE/SST), Spearman and Pearson correlations.

    A correlation is NaN when the predictions (or references) are constant, as scipy has it.
    """
    import warnings

    from scipy.stats import pearsonr, spearmanr

    y = np.asarray(references, dtype=np.float64).reshape(-1)
    p = np.asarray(predictions, dtype=np.float64).reshape(-1)
    if len(y) == 0:
        return {k: float("nan") for k in ("rmse", "mae", "mse", "r2", "spearman", "pearson")}
    err = p - y
    mse = float(np.mean(err**2))
    sst = float(np.sum((y - y.mean()) ** 2))
    out = {
        "rmse": float(np.sqrt(mse)),
        "mae": float(np.mean(np.abs(err))),
        "mse": mse,
        "r2": float(1.0 - np.sum(err**2) / sst) if sst > 0 else float("nan"),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: NaN, said in the docstring
        if len(y) > 1 and np.ptp(p) > 0 and np.ptp(y) > 0:
            out["spearman"] = float(spearmanr(p, y).statistic)
            out["pearson"] = float(pearsonr(p, y).statistic)
        else:
            out["spearman"] = out["pearson"] = float("nan")
    return out
