"""What a run prints while it trains, beyond the per-epoch line: where a resumed run starts, the time left, and in a
log file (stderr not a terminal, where tqdm's bar is off) a progress line at a steady interval.

    resuming runs/q from epoch 1, step 11/40 (0 epochs finished; continuing with the same batches and random draws)
    epoch 1/2  step 12/40  31.5 images/s  loss 1.2031  ETA 1.9 min
"""
from __future__ import annotations

import time
from collections.abc import Callable

LOG_EVERY_S = 30.0  # seconds between progress lines in a log file


def plural(n: int, word: str) -> str:
    """``1 epoch``, ``2 epochs``, ``2 processes``."""
    return f"{n} {word}{'' if n == 1 else 'es' if word.endswith('s') else 's'}"


def resume_line(run, epoch: int, step: int, steps: int, best_top1: float, best_epoch: int) -> str:
    """The log line of a resumed run: from which epoch and step, and what it had achieved."""
    where = f"epoch {epoch + 1}, step {step}/{steps}" if step else f"epoch {epoch + 1}"
    best = f"; best val top-1 so far {best_top1:.2f}% (epoch {best_epoch})" if best_epoch else ""
    return f"resuming {run} from {where} ({plural(epoch, 'epoch')} finished{best})"


def eta_seconds(epoch_seconds: list[float], epochs_left: int) -> float:
    """Time left after a finished epoch: the mean duration of the epochs this process finished (each row's
    ``seconds`` covers its whole epoch, a resumed one's included) times the epochs left."""
    return sum(epoch_seconds) / max(len(epoch_seconds), 1) * epochs_left


class StepLog:
    """A progress line every :data:`LOG_EVERY_S` seconds inside an epoch: step, images/s, running loss, ETA.

    For log files only (``enabled``: progress on and stderr not a terminal); a terminal has tqdm's bar. ``update``
    is called after every step (it only reads the clock unless a line is due); ``loss`` is the last running loss
    computed (every few steps)."""

    def __init__(self, enabled: bool, log: Callable[[str], None], epoch: int, epochs: int, steps: int, start: int,
                 batch: int, every: float | None = None):
        self.enabled, self.log = enabled, log
        self.epoch, self.epochs, self.steps, self.start, self.batch = epoch, epochs, steps, start, batch
        self.every = LOG_EVERY_S if every is None else every
        self.t0 = self.last = time.monotonic()
        self.loss: float | None = None

    def update(self, step: int, loss: float | None = None) -> None:
        if loss is not None:
            self.loss = loss
        now = time.monotonic()
        if not self.enabled or now - self.last < self.every or step <= self.start:
            return
        self.last = now
        per_step = (now - self.t0) / (step - self.start)
        left = (self.steps - step + (self.epochs - self.epoch - 1) * self.steps) * per_step
        loss = f"  loss {self.loss:.4f}" if self.loss is not None else ""
        self.log(f"epoch {self.epoch + 1}/{self.epochs}  step {step}/{self.steps}  {self.batch / per_step:.1f} "
                 f"images/s{loss}  ETA {left / 60:.1f} min")
