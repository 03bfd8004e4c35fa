"""Stop signals: SIGTERM (a preempted cluster job) and SIGINT (Ctrl-C) become a flag the training loop reads at
step boundaries; it then saves a checkpoint and returns. Under torchrun all ranks agree on the flag before acting.
"""
from __future__ import annotations

import signal
import threading

from .distributed import Dist


class StopRequest:
    """SIGTERM / SIGINT -> ``self.signum``; the loop saves at the next step boundary and returns.

    A second SIGINT (Ctrl-C twice) stops at once with ``KeyboardInterrupt``, keeping the last checkpoint.
    Handlers are installed only in the main thread and restored on exit.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum: int | None = None
        self._old: dict = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def requested(self, dist: Dist) -> bool:
        """Has any rank been signalled? (a collective when distributed: every rank calls it at the same steps, so
        the training loop asks only every few steps, not after each one)"""
        if dist.enabled:
            agreed = int(dist.max(float(self.signum or 0)))
            if agreed:
                self.signum = agreed
            return agreed > 0
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "SIGTERM"
