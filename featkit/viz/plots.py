"""Plots on explicit matplotlib Figures (the Agg canvas, never pyplot's global state or backend).

A notebook user's matplotlib settings and open figures are left alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from featkit.cam.boxes import BoxAccuracy
from featkit.errors import FeatkitError
from featkit.linear.protocol import Metrics
from featkit.outputs import atomic_output, check_output_file, check_output_folder


def _new_figure(width: float, height: float, dpi: int = 100) -> Figure:
    figure = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: str | Path) -> Path:
    """PNG at ``path``, its folder created if needed (an existing picture is replaced)."""
    target = Path(path)
    if not target.parent.is_dir():
        check_output_folder(target.parent).mkdir(parents=True, exist_ok=True)
    check_output_file(target, overwrite=True, suffixes=(".png",), example="plot.png")
    with atomic_output(target) as tmp:
        figure.savefig(tmp, format="png")
    return target


def threshold_curve_plot(
    curves: BoxAccuracy | Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    title: str = "Box accuracy vs CAM threshold",
) -> Path:
    """Save a PNG of localization accuracy against the CAM threshold; returns its path.

    A :class:`~featkit.cam.boxes.BoxAccuracy` gives one solid line per IoU
    threshold (any component, MaxBoxAccV2) and a dashed one (largest
    component, MaxBoxAcc) each; a mapping ``label -> (thresholds, accuracies)``
    plots those lines as given. Uses the Agg canvas directly (no pyplot state).
    """
    figure = _new_figure(6.4, 4.4)
    axes = figure.add_subplot()
    if isinstance(curves, BoxAccuracy):
        colours = colormaps["viridis"](np.linspace(0.0, 0.85, len(curves.iou_thresholds)))
        for row, (level, colour) in enumerate(zip(curves.iou_thresholds, colours)):
            axes.plot(curves.thresholds, 100 * curves.curves_any[row], color=colour, label=f"IoU≥{level:g}, any component")
            axes.plot(curves.thresholds, 100 * curves.curves_largest[row], color=colour, linestyle="--", label=f"IoU≥{level:g}, largest")
        axes.axvline(curves.best_threshold, color="grey", linewidth=0.8, linestyle=":")
        title = f"{title}\nMaxBoxAcc {100 * curves.max_box_acc:.1f} @ {curves.best_threshold:.2f}, MaxBoxAccV2 {100 * curves.max_box_acc_v2:.1f}"
    else:
        if not curves:
            raise FeatkitError("no curves to plot; pass a BoxAccuracy or {label: (thresholds, accuracies)}")
        for label, (xs, ys) in curves.items():
            axes.plot(np.asarray(xs), 100 * np.asarray(ys), label=str(label))
    axes.set_xlabel("CAM threshold")
    axes.set_ylabel("localization accuracy (%)")
    axes.set_ylim(0, 100)
    axes.set_xlim(0, 1)
    axes.grid(alpha=0.3)
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=7, loc="best")
    figure.tight_layout()
    return _save(figure, path)


def confusion_plot(metrics: Metrics, classes: list[str], path: str | Path, title: str = "") -> Path:
    """Row-normalized confusion matrix as a PNG, with the image counts in the cells (up to 30 classes)."""
    if metrics.confusion is None:
        raise FeatkitError("a confusion matrix needs single-label data; this dataset is multi-label")
    cm = metrics.confusion.astype(np.float64)
    cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    n = len(classes)
    side = min(4 + 0.3 * n, 24)
    figure = _new_figure(side, side)
    ax = figure.add_subplot()
    im = ax.imshow(cm, cmap="viridis", vmin=0, vmax=1)
    if n <= 60:
        ax.set_xticks(range(n), classes, rotation=90, fontsize=7)
        ax.set_yticks(range(n), classes, fontsize=7)
    if n <= 30:  # the image counts in the cells, where they stay legible
        counts = metrics.confusion
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=7,
                            color="black" if cm[i, j] > 0.5 else "white")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"accuracy {100 * metrics.accuracy:.2f} % ({int(metrics.confusion.sum())} images)")
    figure.colorbar(im, ax=ax, fraction=0.046)
    figure.tight_layout()
    return _save(figure, path)
