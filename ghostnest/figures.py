"""Figures shared by training, evaluation, ``explain``, ``recipes preview`` and the report (matplotlib, Agg backend).

Every figure here has a title, labelled axes (with units where there are any), a colour bar where colour encodes a
number, and text no smaller than 8 points at its saved size. ``save_figure`` writes any figure atomically
(:mod:`ghostnest.fileio`), PNG or SVG by the path's suffix.

- :func:`plot_confusion`: the confusion matrix of an evaluation. Up to :data:`FULL_MATRIX_CLASSES` classes, the
  whole matrix with its counts and class names; above that (CIFAR-100), a small heat map of the whole matrix (row
  shares, log colour scale, ticks every tenth class) beside the most-confused pairs, named and counted.
- :func:`most_confused`: those pairs as data (``eval.json`` and the report list them too).
- :func:`image_panel`: one image (uint8 or float in [0, 1], HWC) drawn into an axis without ticks.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .fileio import atomic_write_bytes

FULL_MATRIX_CLASSES = 20  # up to this many classes the whole confusion matrix is drawn with counts and names
CONFUSED_PAIRS = 20  # the most-confused pairs listed beside the heat map of a larger matrix


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_bytes(fig, fmt: str = "png", dpi: int = 100) -> bytes:
    """The figure encoded as ``fmt`` (closed afterwards)."""
    plt = pyplot()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format=fmt, dpi=dpi)
    finally:
        plt.close(fig)
    return buf.getvalue()


def save_figure(fig, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` atomically (format from the suffix, PNG by default) and close it."""
    path = Path(path)
    atomic_write_bytes(path, figure_bytes(fig, path.suffix.lstrip(".").lower() or "png", dpi))
    return path


def figure_rgb(fig, dpi: int = 100) -> np.ndarray:
    """The figure as an (H, W, 3) uint8 array (e.g. for TensorBoard's ``add_image``), closed afterwards."""
    plt = pyplot()
    try:
        fig.set_dpi(dpi)
        fig.canvas.draw()
        rgba = np.asarray(fig.canvas.buffer_rgba())
        return rgba[..., :3].copy()
    finally:
        plt.close(fig)


def image_panel(ax, image: np.ndarray, title: str | None = None, fontsize: float = 9) -> None:
    """Draw an HWC image (uint8, or float in [0, 1]) into ``ax`` without ticks; small images stay sharp."""
    image = np.asarray(image)
    small = max(image.shape[:2]) < 96
    ax.imshow(image, interpolation="nearest" if small else "antialiased")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=fontsize)


def short_labels(classes: list[str]) -> bool:
    """Whether every class name is short enough to stand upright under a matrix column (digits, 'cat', ...)."""
    return max((len(str(c)) for c in classes), default=0) <= 3


def most_confused(matrix, classes: list[str], k: int = CONFUSED_PAIRS) -> list[dict]:
    """The ``k`` largest off-diagonal cells of a confusion matrix (rows true, columns predicted), largest first:
    ``{"true", "predicted", "count", "share"}`` with ``share`` the percentage of the true class's test images."""
    m = np.asarray(matrix, dtype=np.int64)
    off = m.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:k]
    rows = m.sum(axis=1)
    out = []
    for flat in order:
        i, j = divmod(int(flat), m.shape[1])
        if off[i, j] == 0:
            break
        out.append({"true": str(classes[i]), "predicted": str(classes[j]), "count": int(off[i, j]),
                    "share": round(100.0 * float(off[i, j]) / max(int(rows[i]), 1), 2)})
    return out


def plot_confusion(path: str | Path, matrix, classes: list[str], title: str) -> Path:
    """The confusion matrix ``matrix`` (rows: true class, columns: predicted; counts of test images) as a PNG.

    Up to :data:`FULL_MATRIX_CLASSES` classes: every cell with its count, the class names on both axes (upright
    when they are at most three characters) and a colour bar. Above that, two panels: the matrix as row shares
    (percent of each true class, log colour scale so that rare confusions show) with ticks every tenth class index
    and a colour bar, and the :data:`CONFUSED_PAIRS` most-confused pairs as labelled bars."""
    from matplotlib.colors import LogNorm

    plt = pyplot()
    m = np.asarray(matrix, dtype=np.int64)
    n = len(classes)
    if n <= FULL_MATRIX_CLASSES:
        side = max(4.8, 0.45 * n + 2.5)
        fig, ax = plt.subplots(figsize=(side + 1.2, side))
        im = ax.imshow(m, cmap="Blues", vmin=0)
        upright = short_labels(classes)
        ax.set_xticks(range(n), [str(c) for c in classes], rotation=0 if upright else 45,
                      ha="center" if upright else "right", fontsize=9)
        ax.set_yticks(range(n), [str(c) for c in classes], fontsize=9)
        high = m.max() / 2 if m.size else 0
        for i in range(n):
            for j in range(n):
                if m[i, j]:
                    ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if m[i, j] > high else "black")
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="test images")
        ax.set_title(title, fontsize=10)
        fig.tight_layout()
        return save_figure(fig, path)
    share = 100.0 * m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    pairs = most_confused(m, classes)
    fig, (hm, bars) = plt.subplots(1, 2, figsize=(14, 6.5), gridspec_kw={"width_ratios": [1, 1.05]})
    positive = share[share > 0]
    vmin = min(float(positive.min()) if positive.size else 1.0, 1.0)
    im = hm.imshow(np.where(share > 0, share, np.nan), cmap="viridis", norm=LogNorm(vmin=vmin, vmax=100),
                   interpolation="nearest")
    index_ticks = list(range(0, n, 10))
    hm.set_xticks(index_ticks, [str(t) for t in index_ticks], fontsize=8)
    hm.set_yticks(index_ticks, [str(t) for t in index_ticks], fontsize=8)
    hm.set_xlabel("predicted class (index)")
    hm.set_ylabel("true class (index)")
    hm.set_title(f"all {n} classes: share of each true class (%), log scale; white: none", fontsize=9)
    ticks = [t for t in (0.1, 0.3, 1, 3, 10, 30, 100) if t >= vmin]
    bar = fig.colorbar(im, ax=hm, fraction=0.046, pad=0.04, label="% of the true class's test images")
    bar.set_ticks(ticks, labels=[f"{t:g}" for t in ticks])
    bar.minorticks_off()
    if pairs:
        labels = [f"{p['true']} \u2192 {p['predicted']}" for p in pairs][::-1]
        counts = [p["count"] for p in pairs][::-1]
        shares = [p["share"] for p in pairs][::-1]
        y = np.arange(len(pairs))
        bars.barh(y, counts, color="tab:red", alpha=0.75)
        bars.set_yticks(y, labels, fontsize=8)
        for yi, c, s in zip(y, counts, shares, strict=True):
            bars.text(c, yi, f" {c} ({s:.0f}%)", va="center", fontsize=8)
        bars.set_xlim(0, max(counts) * 1.25)
        bars.set_xlabel("test images of the true class predicted as the other")
        bars.set_title(f"the {len(pairs)} most-confused pairs (true \u2192 predicted)", fontsize=9)
        bars.grid(axis="x", alpha=0.3)
    else:
        bars.axis("off")
        bars.text(0.5, 0.5, "no test image was misclassified", ha="center", va="center", fontsize=11)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)
