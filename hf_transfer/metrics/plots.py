"""Figures for the run folder: training curves and confusion matrices.

Figures are built with `matplotlib.figure.Figure` on an Agg canvas rather than through `pyplot`:
pyplot keeps global state and picks a GUI backend, which fails on headless training machines and
would change the backend of a notebook that imports this package. The Agg canvas needs no display
and leaves the caller's matplotlib settings alone.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["DEFAULT_CURVE_METRICS", "plot_confusion_matrix", "plot_training_curves"]

#: Eval metrics drawn by `plot_training_curves` when present (as `eval_<name>` in the history).
DEFAULT_CURVE_METRICS: tuple[str, ...] = ("accuracy", "f1", "precision", "recall", "wer", "cer")

# Above this many classes cell counts no longer fit in a cell at a legible size.
_MAX_ANNOTATED_CLASSES = 50
# Above this many classes zero cells are left blank.
_MAX_ZERO_ANNOTATED_CLASSES = 20
# Long label names would push the matrix itself off the canvas.
_MAX_TICK_LABEL_CHARS = 24


def _save(fig: Figure, out_path: str | Path) -> Path:
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    # Margins come from the figure's constrained layout; savefig's bbox_inches="tight" would
    # render the whole figure twice, which costs seconds for a 50-class matrix.
    fig.savefig(path, format="png")
    return path


def _number(value: Any) -> float | None:
    """Return `value` as a float when it is a real number (bools and strings excluded)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def _series(history: Sequence[Any], key: str) -> tuple[list[float], list[float]]:
    """Collect (step, value) points for `key`, sorted by step.

    Records without a numeric `step` or `key` are skipped, so partial or foreign log records
    (a final summary with `train_runtime`, say) never break the plot. Sorting matters after a
    resume, where the log may replay a few steps out of order.
    """
    points = []
    for record in history:
        if not isinstance(record, Mapping):
            continue
        step, value = _number(record.get("step")), _number(record.get(key))
        if step is not None and value is not None:
            points.append((step, value))
    points.sort(key=lambda point: point[0])
    return [p[0] for p in points], [p[1] for p in points]


def plot_training_curves(
    history: Sequence[Mapping[str, Any]],
    out_path: str | Path,
    metrics: Sequence[str] | None = None,
) -> Path:
    """Draw loss and eval-metric curves against the global step into a PNG.

    The left panel holds the losses: train `loss` as a line and `eval_loss` as markers. They share
    one axis because they are in the same units, which makes overfitting (eval loss turning up
    while train loss keeps falling) visible at a glance. The right panel holds the eval metrics,
    which live on a different scale (0..1). A panel with nothing to draw is left out; with no
    usable records at all the PNG says so, so the run folder always has the file.

    Args:
        history: Log records such as `{"step": 10, "epoch": 0.5, "loss": 0.7}` and
            `{"step": 20, "epoch": 1.0, "eval_loss": 0.6, "eval_accuracy": 0.8}`. Keys that are
            missing or not numbers are skipped.
        out_path: PNG path to write; parent folders are created.
        metrics: Metric names to draw from `eval_<name>` keys; defaults to
            `DEFAULT_CURVE_METRICS` (those not in the history are skipped).

    Returns:
        The path written.
    """
    history = list(history or [])
    names = DEFAULT_CURVE_METRICS if metrics is None else tuple(metrics)

    losses = [
        (label, style, *_series(history, key))
        for key, label, style in (("loss", "train loss", "-"), ("eval_loss", "eval loss", "o-"))
    ]
    losses = [entry for entry in losses if entry[2]]
    metric_series = [(name, *_series(history, f"eval_{name}")) for name in names]
    metric_series = [entry for entry in metric_series if entry[1]]

    panels = int(bool(losses)) + int(bool(metric_series))
    fig = Figure(figsize=(6.0 * max(panels, 1), 4.2), dpi=120, layout="constrained")
    if panels == 0:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "No training history was logged", ha="center", va="center")
        ax.set_axis_off()
        return _save(fig, out_path)

    axes = [fig.add_subplot(1, panels, 1)]
    if panels == 2:
        # A shared step axis lines each evaluation up with the training loss at that step.
        axes.append(fig.add_subplot(1, panels, 2, sharex=axes[0]))
    position = 0
    if losses:
        ax = axes[position]
        position += 1
        for label, style, steps, values in losses:
            ax.plot(steps, values, style, label=label, markersize=4, linewidth=1.2)
        ax.set_title("Loss")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(True, alpha=0.3)
        ax.legend()
    if metric_series:
        ax = axes[position]
        for name, steps, values in metric_series:
            ax.plot(steps, values, "o-", label=f"eval_{name}", markersize=4, linewidth=1.2)
        ax.set_title("Evaluation metrics")
        ax.set_xlabel("step")
        ax.set_ylabel("value")
        ax.grid(True, alpha=0.3)
        ax.legend()
    return _save(fig, out_path)


def _short(name: str) -> str:
    return name if len(name) <= _MAX_TICK_LABEL_CHARS else name[: _MAX_TICK_LABEL_CHARS - 1] + "…"


def plot_confusion_matrix(cm: Any, label_names: Sequence[str], out_path: str | Path) -> Path:
    """Draw a confusion matrix (rows = true label, columns = predicted) into a PNG.

    Cell colour is the fraction of the true class (row-normalised), so that errors on rare classes
    stand out as much as errors on frequent ones; the number printed in each cell is the raw count.
    The figure grows with the number of classes and fonts shrink, which keeps up to about 50
    classes readable; beyond that cells are left unannotated. Predicted-label names are rotated so
    that long names do not overlap.

    Args:
        cm: `K x K` counts, nested list or array.
        label_names: The K label names, indexed by id; names longer than 24 characters are
            shortened on the axes.
        out_path: PNG path to write; parent folders are created.

    Returns:
        The path written.

    Raises:
        ValueError: If `cm` is empty, not square, or does not match `label_names`.
    """
    matrix = np.asarray(cm, dtype=float)
    num = len(label_names)
    if num == 0 or matrix.shape != (num, num):
        raise ValueError(f"confusion matrix of shape {matrix.shape} does not match {num} label names")

    row_sums = matrix.sum(axis=1, keepdims=True)
    fractions = np.divide(matrix, row_sums, out=np.zeros_like(matrix), where=row_sums > 0)

    side = min(max(5.0, 0.45 * num + 2.5), 26.0)
    font = max(6.0, 10.0 - 0.1 * max(num - 10, 0))
    fig = Figure(figsize=(side + 1.0, side), dpi=120, layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    colorbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    colorbar.set_label("fraction of true class")

    names = [_short(str(name)) for name in label_names]
    ticks = np.arange(num)
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    if num > 20:
        # Many narrow columns: only vertical names avoid overlapping their neighbours.
        ax.set_xticklabels(names, rotation=90, ha="center", fontsize=font)
    else:
        # Anchoring the name's end at its tick keeps a slanted name under its own column.
        ax.set_xticklabels(names, rotation=45, ha="right", rotation_mode="anchor", fontsize=font)
    ax.set_yticklabels(names, fontsize=font)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.set_title("Confusion matrix")

    if num <= _MAX_ANNOTATED_CLASSES:
        for row in range(num):
            for col in range(num):
                count = matrix[row, col]
                if count == 0 and num > _MAX_ZERO_ANNOTATED_CLASSES:
                    # Large matrices are mostly zeros; printing them hides the counts that matter.
                    continue
                text = str(int(count)) if math.isfinite(count) and count == int(count) else f"{count:.2g}"
                label = ax.text(
                    col,
                    row,
                    text,
                    ha="center",
                    va="center",
                    fontsize=font,
                    color="white" if fractions[row, col] > 0.5 else "black",
                )
                # Cell texts sit inside the axes; measuring each for the layout costs seconds
                # at 50 classes.
                label.set_in_layout(False)
    return _save(fig, out_path)
