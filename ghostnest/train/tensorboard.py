"""TensorBoard logging of a run (``log: [csv, tensorboard]`` in a recipe; ``pip install 'ghostnest[tensorboard]'``).

Beside metrics.csv (which stays the record resume and ``report`` read), rank 0 writes event files with PyTorch's
``torch.utils.tensorboard.SummaryWriter`` into ``RUN_DIR/tensorboard/``:

- per epoch (the step is the epoch number, 1-based, as in metrics.csv): ``loss/train``, ``loss/val``,
  ``accuracy/val_top1``, ``accuracy/val_top5`` (%), ``lr``, ``speed/images_per_s`` (training images per second of
  the epoch's training loop) and ``speed/input_wait_pct`` (share of that loop spent waiting for input batches);
- at the start of a new run (step 0): ``augmentation preview``, the figure of ``ghostnest recipes preview``;
- at the end: the run's hyperparameters (the resolved recipe) with its final metrics (``final/test_top1``,
  ``final/test_top5``, ``final/test_loss``, ``final/best_val_top1``), TensorBoard's HParams dashboard.

Resume appends without repeating a step: the epoch's scalars are written *before* its resume point is saved, and a
resumed run opens its writer with ``purge_step`` = the first epoch it will train, so TensorBoard hides whatever an
interrupted attempt wrote for that epoch and later ones (its reader honours the purge marker).
"""
from __future__ import annotations

from pathlib import Path

TB_DIR = "tensorboard"


class TensorBoardLog:
    """The event files of one run; rank 0 only (:func:`open_tensorboard` returns ``None`` elsewhere)."""

    def __init__(self, run: Path, purge_step: int):
        from torch.utils.tensorboard import SummaryWriter

        self.path = Path(run) / TB_DIR
        self.writer = SummaryWriter(str(self.path), purge_step=purge_step)

    def epoch(self, row: dict, images: int, loop_seconds: float, wait_seconds: float) -> None:
        """One metrics.csv row (``epoch``, ``lr``, ``train_loss``, ``val_loss``, ``val_top1``, ``val_top5``, and the
        ``ema_`` columns with ``ema_decay``) with the epoch's training-loop figures, flushed to disk."""
        step, w = row["epoch"], self.writer
        for tag, key in (("loss/train", "train_loss"), ("loss/val", "val_loss"), ("accuracy/val_top1", "val_top1"),
                         ("accuracy/val_top5", "val_top5"), ("lr", "lr"), ("loss/ema_val", "ema_val_loss"),
                         ("accuracy/ema_val_top1", "ema_val_top1"), ("accuracy/ema_val_top5", "ema_val_top5")):
            if row.get(key) is not None:
                w.add_scalar(tag, row[key], step)
        if loop_seconds > 0:
            w.add_scalar("speed/images_per_s", images / loop_seconds, step)
            w.add_scalar("speed/input_wait_pct", 100.0 * wait_seconds / loop_seconds, step)
        w.flush()

    def preview(self, cfg, data) -> None:
        """The augmentation preview figure as an image at step 0."""
        from ..figures import figure_rgb
        from .preview import build_preview, preview_figure

        image = figure_rgb(preview_figure(build_preview(cfg, data, samples=6)))
        self.writer.add_image("augmentation preview", image, 0, dataformats="HWC")
        self.writer.flush()

    def final(self, config: dict, results: dict, step: int) -> None:
        """The run's hyperparameters (scalars, strings and bools of the resolved config; lists as text) with its final
        metrics, for the HParams dashboard."""
        from torch.utils.tensorboard.summary import hparams

        hp = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in config.items()
              if k != "description" and v is not None}
        metrics = {f"final/{k}": float(results[k]) for k in ("test_top1", "test_top5", "test_loss", "best_val_top1")
                   if isinstance(results.get(k), (int, float))}
        exp, ssi, sei = hparams(hp, metrics)
        for summary in (exp, ssi, sei):
            self.writer.file_writer.add_summary(summary, step)
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def open_tensorboard(ctx) -> TensorBoardLog | None:
    """The run's :class:`TensorBoardLog` when its recipe logs to TensorBoard and this is rank 0, else ``None``.
    A new run gets the augmentation preview; a resumed one purges the steps it is about to train again."""
    if "tensorboard" not in ctx.cfg.log or not ctx.dist.main:
        return None
    state = ctx.resume
    resumed = bool(state.epoch or state.mid_epoch)
    log = TensorBoardLog(ctx.run, purge_step=state.epoch + 1 if resumed else 0)
    if not resumed:
        log.preview(ctx.cfg, ctx.data)
    return log
