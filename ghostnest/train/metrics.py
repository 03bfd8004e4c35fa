"""metrics.csv, the one per-epoch record of a run: its header, writer, reader and plot.

Training writes it (rank 0, atomically, the whole file after every epoch); ``ghostnest report`` and resume read
it. One row per finished epoch::

    epoch,lr,train_loss,val_loss,val_top1,val_top5,seconds

A run with a weight EMA (``ema_decay``) has three more columns, the EMA weights' validation:
``ema_val_loss,ema_val_top1,ema_val_top5``. An empty field (e.g. a run that skipped validation in an epoch) reads as ``None``.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from ..fileio import atomic_write_bytes, atomic_write_text

METRICS_HEADER = ["epoch", "lr", "train_loss", "val_loss", "val_top1", "val_top5", "seconds"]
EMA_COLUMNS = ["ema_val_loss", "ema_val_top1", "ema_val_top5"]
PERCENT_KEYS = ("val_top1", "val_top5", "ema_val_top1", "ema_val_top5")


def metrics_header(rows: list[dict]) -> list[str]:
    """The columns of ``rows``: :data:`METRICS_HEADER`, and :data:`EMA_COLUMNS` when the rows have them."""
    return METRICS_HEADER + (EMA_COLUMNS if rows and "ema_val_top1" in rows[0] else [])


class MetricsError(ValueError):
    """metrics.csv exists but is not a ghostnest metrics file (wrong header, a field that is not a number)."""


def write_metrics(path: Path, rows: list[dict]) -> None:
    """Write all ``rows`` (dicts with :func:`metrics_header` keys) to ``path`` atomically."""
    header = metrics_header(rows)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row[k] for k in header})
    atomic_write_text(path, buf.getvalue())


def read_metrics(path: Path) -> list[dict]:
    """The rows of ``path`` (``[]`` if it does not exist); :class:`MetricsError` saying which line is wrong."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        with open(path, newline="") as f:
            lines = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise MetricsError(f"{path.name} unreadable ({exc})") from None
    header = [h.strip() for h in lines[0]] if lines else []
    if header not in (METRICS_HEADER, METRICS_HEADER + EMA_COLUMNS):
        got = ",".join(lines[0]) if lines else "an empty file"
        raise MetricsError(f"{path.name} header is {got!r}, expected {','.join(METRICS_HEADER)!r} (a weight-EMA "
                           f"run adds {','.join(EMA_COLUMNS)})")
    return [row for lineno, fields in enumerate(lines[1:], start=2) if fields
            for row in [_parse_row(path.name, lineno, header, fields)]]


def _parse_row(name: str, lineno: int, header: list[str], fields: list[str]) -> dict:
    if len(fields) != len(header):
        raise MetricsError(f"{name} line {lineno} has {len(fields)} fields, expected {len(header)}")
    row: dict = {}
    for key, text in zip(header, fields, strict=True):
        text = text.strip()
        if text == "" and key != "epoch":
            row[key] = None
            continue
        try:
            value = float(text)
            if not math.isfinite(value) and key in ("epoch", *PERCENT_KEYS):
                raise ValueError(text)
        except ValueError:
            raise MetricsError(f"{name} line {lineno}: {key}={text!r} is not a number") from None
        row[key] = value
    row["epoch"] = int(row["epoch"])
    for key in PERCENT_KEYS:
        if row.get(key) is not None and not 0 <= row[key] <= 100:
            raise MetricsError(f"{name} line {lineno}: {key}={row[key]} is not a percentage")
    return row


def plot_curves(path: Path, rows: list[dict], title: str, test_top1: float | None = None) -> None:
    """Loss and accuracy per epoch (matplotlib, Agg backend), PNG or SVG by ``path``'s suffix, written atomically.

    ``None`` values are left out of their series; ``test_top1`` draws the final test accuracy as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    marker = "." if len(rows) <= 30 else None
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [r["epoch"] for r in rows]
    labels = {"train_loss": "train loss", "val_loss": "val loss", "ema_val_loss": "EMA val loss",
              "val_top1": "val top-1", "val_top5": "val top-5", "ema_val_top1": "EMA val top-1"}
    panels = ((loss_ax, ("train_loss", "val_loss", "ema_val_loss"), "cross-entropy loss (nats per image)"),
              (acc_ax, ("val_top1", "val_top5", "ema_val_top1"), "accuracy (%)"))
    for ax, keys, ylabel in panels:
        for key in keys:
            points = [(r["epoch"], r[key]) for r in rows if r.get(key) is not None]
            if points:
                ax.plot(*zip(*points, strict=True), marker=marker, label=labels[key])
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        if epochs:  # whole epochs only, with half an epoch of margin (a one-epoch run gets the tick "1")
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.grid(alpha=0.3)
    if test_top1 is not None:
        acc_ax.axhline(test_top1, color="k", lw=0.8, ls=":", label=f"test top-1, best checkpoint ({test_top1:.2f}%)")
    for ax in (loss_ax, acc_ax):
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
