"""Figures of a model's results: confusion matrix, per-class bars, reliability diagram, sample
galleries, regression scatter and residuals, training curves (`nntrain report`), and the confusion
matrix TensorBoard shows each validation (`confusion_heatmap`, `confusion_table`).

A leaf module: it takes plain arrays and lists, and draws with matplotlib's object API
(`Figure` + the Agg canvas: no pyplot state, no display), imported when a figure is drawn.
`png(fig)` gives the PNG bytes, `rgb(fig)` an (H, W, 3) uint8 array. The per-validation heatmap
is painted with numpy instead: importing matplotlib and drawing a labelled figure cost 0.7 s the
first time and 0.2 s each validation after, a third of an MLP epoch on MNIST.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Cells are annotated with their counts up to this many classes; tick labels name classes up to LABELLED.
ANNOTATED, LABELLED = 20, 60


def _figure(width: float, height: float, dpi: int = 100) -> Figure:
    """A figure on the Agg canvas. Each function sets its margins (`_margins`, subplots_adjust):
    matplotlib's layout engines cost extra drawing passes, and `fit` draws a report every run."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _margins(fig: Figure, left: float, bottom: float, right: float, top: float) -> None:
    """Margins around the axes in inches."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=left / width, bottom=bottom / height, right=1 - right / width, top=1 - top / height)


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def rgb(fig: Figure) -> np.ndarray:
    """The figure as an (H, W, 3) uint8 array (TensorBoard's add_image with dataformats='HWC')."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def _short(label: str, limit: int = 14) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"


def confusion_matrix(
    counts: Sequence[Sequence[int]], labels: Sequence[str], title: str = "confusion matrix"
) -> Figure:
    """Heatmap of the row-normalized matrix (the share of each true class predicted as each class),
    annotated with the counts for up to ANNOTATED classes; rows true, columns predicted."""
    matrix = np.asarray(counts, dtype=np.float64)
    k = len(matrix)
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    names = [_short(str(label)) for label in labels] if k <= LABELLED else []
    longest = max(map(len, names), default=1)
    rotate = k > 10 or longest > 3
    label_in = 0.55 + 0.075 * longest  # tick labels and the axis label, in inches
    side = min(2.5 + 0.4 * k, 12.0)
    fig = _figure(side + label_in + 1.3, side + (label_in if rotate else 0.6) + 0.45)
    _margins(fig, label_in, label_in if rotate else 0.6, 1.3, 0.45)
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.05, pad=0.03, label="share of the true class")
    if k <= ANNOTATED:
        for i, j in zip(*np.nonzero(matrix)):
            ax.text(j, i, f"{int(matrix[i, j])}", ha="center", va="center", fontsize=8 if k > 10 else 9,
                    color="white" if share[i, j] > 0.5 else "black")
    if names:
        ax.set_xticks(range(k), names, rotation=90 if rotate else 0)
        ax.set_yticks(range(k), names)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    return fig


# The "Blues" ramp of the report's heatmap, from a share of 0 (white) to 1 (dark blue), as RGB.
_LIGHT, _DARK = np.array([247, 251, 255], dtype=np.float64), np.array([8, 48, 107], dtype=np.float64)


def confusion_heatmap(counts: Sequence[Sequence[int]] | np.ndarray, size: int = 320) -> np.ndarray:
    """The row-normalized confusion matrix as an (H, W, 3) uint8 image (rows true, columns
    predicted; white 0 to dark blue 1, as the report's figure), one square per cell with a 1-pixel
    grey grid, at most about `size` pixels a side: beyond `size` classes, each pixel is the mean
    share of a square of cells. Painted with numpy: no matplotlib, a few ms (TensorBoard shows one
    after every validation; `confusion_table` gives the counts by class name)."""
    matrix = np.asarray(counts, dtype=np.float64)
    k = len(matrix)
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    if k > size:  # many classes: average squares of f x f cells into one pixel
        f = -(-k // size)
        padded = np.zeros((-(-k // f) * f,) * 2)
        padded[:k, :k] = share
        m = len(padded) // f
        share = padded.reshape(m, f, m, f).mean(axis=(1, 3))
    cell = int(min(max(size // max(len(share), 1), 1), 48))
    colors = (_LIGHT + share[..., None] * (_DARK - _LIGHT)).astype(np.float32)  # (k, k, 3)
    image = np.repeat(np.repeat(colors, cell, axis=0), cell, axis=1)
    if cell >= 6:  # a grid where cells are big enough to tell apart
        image[::cell, :] = image[:, ::cell] = 190
        image = np.pad(image, ((0, 1), (0, 1), (0, 0)), constant_values=190)
    return np.rint(image).astype(np.uint8)


def confusion_table(counts: Sequence[Sequence[int]] | np.ndarray, labels: Sequence[str]) -> str:
    """The confusion matrix's counts as a Markdown table (rows true, columns predicted), for
    TensorBoard's text tab; empty beyond ANNOTATED classes (the heatmap alone then)."""
    if len(counts) > ANNOTATED:
        return ""
    names = [_short(str(label)).replace("|", "\\|") for label in labels]
    lines = ["| true \\ predicted | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(str(int(c)) for c in row) + " |" for name, row in zip(names, counts)]
    return "\n".join(lines)


def class_bars(labels: Sequence[str], values: Sequence[float], what: str = "F1",
               support: Sequence[int] | None = None, mean: float | None = None) -> Figure:
    """One bar per class (per-class F1); a dashed line at `mean` (the macro average; default: the
    mean of the bars); a class with no sample (`support` 0) hatched."""
    k = len(labels)
    names = [_short(str(label)) for label in labels] if k <= LABELLED else []
    rotate = k > 10
    bottom = 0.45 + (0.075 * max(map(len, names), default=1) if rotate else 0.2)
    fig = _figure(min(3.0 + 0.35 * k, 16.0), 3.2 + bottom)
    _margins(fig, 0.65, bottom, 0.2, 0.4)
    ax = fig.add_subplot()
    values = np.asarray(values, dtype=np.float64)
    ax.bar(range(k), values, color="#4c72b0")
    if support is not None:  # a class that never occurs: hatched, its F1 is 0 by definition
        for i, s in enumerate(support):
            if s == 0:
                ax.bar(i, 1, color="none", edgecolor="#999999", hatch="//")
    mean = float(values.mean()) if mean is None and k else (mean or 0.0)
    ax.axhline(mean, color="#dd8452", linestyle="--", label=f"macro {what} {mean:.3f}")
    if names:
        ax.set_xticks(range(k), names, rotation=90 if rotate else 0)
    ax.set(ylim=(0, 1.05), ylabel=what, title=f"{what} per class")
    ax.legend(loc="lower right")
    return fig


def reliability(bins: Sequence[dict[str, Any]], ece: float | None = None) -> Figure:
    """Reliability diagram: accuracy against mean confidence per confidence bin (the diagonal is
    perfect calibration), above the number of samples per bin."""
    fig = _figure(5.5, 5.5)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    _margins(fig, 0.75, 0.55, 0.2, 0.4)
    fig.subplots_adjust(hspace=0.08)
    low = np.array([b["low"] for b in bins])
    width = np.array([b["high"] - b["low"] for b in bins])
    accuracy = np.array([b["accuracy"] if b["accuracy"] is not None else np.nan for b in bins])
    confidence = np.array([b["confidence"] if b["confidence"] is not None else np.nan for b in bins])
    top.bar(low, np.nan_to_num(accuracy), width=width, align="edge", color="#4c72b0", edgecolor="white",
            label="accuracy")
    top.plot(confidence, confidence, "o", color="#dd8452", markersize=4, label="mean confidence")
    top.plot([0, 1], [0, 1], "--", color="gray", linewidth=1)
    title = "reliability diagram" + (f" (ECE {ece:.4f})" if ece is not None else "")
    top.set(ylim=(0, 1), xlim=(0, 1), ylabel="accuracy", title=title)
    top.legend(loc="upper left")
    bottom.bar(low, [b["count"] for b in bins], width=width, align="edge", color="#8c8c8c", edgecolor="white")
    bottom.set(xlabel="confidence (top-1 probability)", ylabel="samples")
    return fig


def _grid(n: int, cols: int) -> tuple[int, int]:
    cols = max(1, min(cols, n))
    return -(-n // cols), cols


def images(tiles: Sequence[np.ndarray], captions: Sequence[str], cols: int = 8, title: str = "") -> Figure:
    """A grid of images ((H, W) gray or (H, W, 3), values in [0, 1], all of one size), each under
    its caption (up to two short lines): one axes holding every tile (cheaper than an axes each)."""
    rows, cols = _grid(len(tiles), cols)
    h, w = tiles[0].shape[:2]
    gap, band = max(1, w // 10), h * 0.3  # between tiles; above each tile for its caption
    cell_w, cell_h = w + gap, h + band
    inch = 1.5 / cell_w  # a cell is 1.5 inches wide
    head = 0.35 if title else 0.0
    fig = _figure(cols * cell_w * inch, rows * cell_h * inch + head)
    ax = fig.add_axes((0, 0, 1, 1 - head / (rows * cell_h * inch + head)))
    ax.set_xlim(-gap / 2, cols * cell_w - gap / 2)
    ax.set_ylim(rows * cell_h, 0)
    ax.axis("off")
    for k, (tile, caption) in enumerate(zip(tiles, captions)):
        x0, y0 = (k % cols) * cell_w, (k // cols) * cell_h + band
        ax.imshow(tile, cmap="gray" if tile.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest",
                  extent=(x0, x0 + w, y0 + h, y0))
        ax.text(x0 + w / 2, y0 - band * 0.08, caption, ha="center", va="bottom", fontsize=7, linespacing=1.1)
    if title:
        fig.suptitle(title)
    return fig


def series(panels: Sequence[Sequence[tuple[str, np.ndarray]]], captions: Sequence[str], cols: int = 4,
           title: str = "") -> Figure:
    """Small line plots: each panel holds one or more labelled series ((T,) or (T, F) arrays)."""
    rows, cols = _grid(len(panels), cols)
    fig = _figure(2.6 * cols, 1.9 * rows + (0.3 if title else 0))
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.08, top=0.88 if title else 0.92, hspace=0.6, wspace=0.3)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax in axes[len(panels):]:
        ax.axis("off")
    for ax, lines, caption in zip(axes, panels, captions):
        for label, values in lines:
            ax.plot(values, linewidth=1, label=label or None)
        ax.set_title(caption, fontsize=7)
        ax.tick_params(labelsize=6)
        if any(label for label, _ in lines):
            ax.legend(fontsize=6)
    if title:
        fig.suptitle(title)
    return fig


def predicted_vs_true(true: np.ndarray, pred: np.ndarray, what: str = "value") -> Figure:
    """Scatter of predictions against targets, with the diagonal of perfect prediction."""
    fig = _figure(5.0, 5.0)
    _margins(fig, 0.75, 0.55, 0.2, 0.4)
    ax = fig.add_subplot()
    ax.scatter(true, pred, s=8, alpha=0.5, color="#4c72b0", edgecolors="none")
    finite = np.concatenate([true[np.isfinite(true)], pred[np.isfinite(pred)]])
    low, high = (finite.min(), finite.max()) if len(finite) else (0.0, 1.0)
    ax.plot([low, high], [low, high], "--", color="gray", linewidth=1)
    ax.set(xlabel=f"true {what}", ylabel=f"predicted {what}", title="predicted against true")
    return fig


def residuals(true: np.ndarray, pred: np.ndarray, what: str = "value") -> Figure:
    """Residuals (predicted - true) against the prediction, and their histogram."""
    fig = _figure(9.0, 3.8)
    left, right = fig.subplots(1, 2)
    _margins(fig, 0.75, 0.55, 0.2, 0.4)
    fig.subplots_adjust(wspace=0.3)
    residual = pred - true
    left.scatter(pred, residual, s=8, alpha=0.5, color="#4c72b0", edgecolors="none")
    left.axhline(0, color="gray", linestyle="--", linewidth=1)
    left.set(xlabel=f"predicted {what}", ylabel="residual (predicted - true)", title="residuals")
    right.hist(residual, bins=int(np.clip(len(residual) // 5, 10, 50)), color="#4c72b0")
    right.set(xlabel="residual", ylabel="samples", title="distribution of residuals")
    return fig


def training_curves(curves: dict[str, dict[str, tuple[list[float], list[float]]]]) -> Figure:
    """One panel per entry of `curves` (title -> {series label -> (x, y)})."""
    fig = _figure(4.2 * len(curves), 3.5)
    axes = np.atleast_1d(fig.subplots(1, len(curves), squeeze=False)).ravel()
    _margins(fig, 0.65, 0.5, 0.15, 0.35)
    fig.subplots_adjust(wspace=0.3)
    for ax, (title, lines) in zip(axes, curves.items()):
        for label, (x, y) in lines.items():
            style = {"marker": "o", "markersize": 3} if len(x) < 30 else {}
            ax.plot(x, y, linewidth=1.2, label=label, **style)
        xlabel = "step"
        ax.set(title=title, xlabel=xlabel)
        if title == "learning rate" and all(v > 0 for _, (_, y) in lines.items() for v in y):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig
