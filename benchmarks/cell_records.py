"""What the measurement scripts share: a run of named **cells** recorded in one JSON file as they finish.

``benchmarks/gpu_check.py`` (one file per step) and ``benchmarks/run_benchmarks.py`` (one file per device and
dtype) both measure a list of cells under a time budget, and both must survive being stopped at any moment:

- :class:`Record`: one results file. :meth:`Record.cell` runs a cell unless it is done already or the budget is
  spent (then it is recorded as ``not_run``, and the next run of the script measures it); an exception becomes the
  cell's one-line ``error`` and the other cells go on; the file is rewritten atomically after every cell
  (:func:`write_json`, through :mod:`ghostnest.fileio`), so a killed run keeps everything it measured.
- :class:`Ctx`: where the cells run (device, a CPU dry run with small sizes or the real one), where the files go,
  and the deadline of ``--within``; :class:`Deadline` (with :func:`deadline_alarm`) stops a cell that runs past it.
- :func:`pack`: every results file in one ``.tar.gz``.
"""
from __future__ import annotations

import contextlib
import json
import signal
import sys
import tarfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # ghostnest from this checkout when run as a script
    sys.path.insert(0, str(ROOT))


class Deadline(BaseException):
    """``--within``'s time plus :data:`GRACE_S` is spent: raised (by SIGALRM) inside whatever cell is running. A
    BaseException, so that a cell's error handling does not record it as the cell's error and go on."""


GRACE_S = 45  # --within: how long a cell that started before the deadline may run past it


class Ctx:
    """Where cells run and how big they may be: ``dry_run`` (on the CPU, ``--dry-run``) shrinks every size to
    seconds; ``deadline`` (``time.monotonic()``, from ``--within``) is when no step or cell may start any more.
    Results go to ``results/<prefix>-<step>.json`` (``prefix``: ``dryrun`` or ``cuda`` unless given)."""

    def __init__(self, device: str, dry_run: bool, results: Path, doc: Path, force: bool,
                 deadline: float | None = None, prefix: str | None = None):
        self.device, self.dry_run, self.results, self.doc, self.force = device, dry_run, results, doc, force
        self.prefix = prefix or ("dryrun" if dry_run else "cuda")
        self.deadline = deadline

    def left(self) -> float:
        """Seconds until the deadline (infinite without ``--within``)."""
        return float("inf") if self.deadline is None else self.deadline - time.monotonic()

    def path(self, step: str) -> Path:
        return self.results / f"{self.prefix}-{step}.json"

    def choose(self, gpu, dry_run):
        """``gpu`` (the real size of a GPU run), or ``dry_run`` (the CPU dry run's small one)."""
        return dry_run if self.dry_run else gpu


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def say(msg: str) -> None:
    print(msg, flush=True)


def write_json(path: Path, data: dict) -> None:
    """Atomically (:func:`ghostnest.fileio.atomic_write_text`): a killed run leaves the old file or the new one."""
    from ghostnest.fileio import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=1, default=str) + "\n")


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def error_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (at most 300 characters): what a failed cell records."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300] if text else ''}"


def free_device_memory() -> None:
    """Release what a failed cell left on the GPU (an out-of-memory cell must not starve the next one)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Record:
    """One results file: cells keyed by name, saved after each; ``over_budget`` says when to stop.

    ``path`` defaults to ``ctx.path(step)``; an incomplete file there is continued (its finished cells are kept)
    unless ``ctx.force`` or ``fresh``."""

    def __init__(self, ctx: Ctx, step: str, budget_s: float, nominal_s: float | None = None,
                 path: Path | None = None, fresh: bool = False):
        self.ctx, self.step, self.path, self.budget_s = ctx, step, path or ctx.path(step), budget_s
        self.nominal_s = budget_s if nominal_s is None else nominal_s  # the step's own budget (before --within)
        old = None if ctx.force or fresh else read_json(self.path)
        self.data = old if old and not old.get("complete") else {"step": step, "cells": {}}
        self.data.update(device=ctx.device, dry_run=ctx.dry_run, complete=False, started=now(), budget_s=budget_s)
        self.data.setdefault("cells", {})
        self.t0 = time.monotonic()
        self.left: list[str] = []

    def done(self, key: str) -> bool:
        return key in self.data["cells"] and "not_run" not in self.data["cells"][key]

    def over_budget(self, key: str) -> bool:
        why = ("the --within time is spent" if self.ctx.left() <= 0 else
               "step time budget reached" if time.monotonic() - self.t0 > self.budget_s else None)
        if why:
            self.not_run(key, f"{why}; run the step again to continue")
            return True
        return False

    def not_run(self, key: str, why: str) -> None:
        """Cell ``key`` left for the step's next run (the step stays incomplete)."""
        self.left.append(key)
        self.data["cells"][key] = {"not_run": why}
        self.save()

    def kill_after(self, extra_s: float = 60) -> float:
        """A timeout for a step's one indivisible job (a subprocess): its own budget plus ``extra_s``, cut to what
        ``--within`` leaves (a job killed at its timeout gives nothing, so a shortened share does not shorten it)."""
        return max(1.0, min(self.nominal_s + extra_s, self.ctx.left() + GRACE_S))

    def put(self, key: str, value: dict) -> None:
        self.data["cells"][key] = value
        self.save()

    def save(self) -> None:
        write_json(self.path, self.data)

    def finish(self, **extra) -> dict:
        self.data.update(extra)
        self.data["elapsed_s"] = round(time.monotonic() - self.t0, 1)
        self.data["finished"] = now()
        self.data["complete"] = not self.left
        self.save()
        return self.data

    def cell(self, key: str, fn, errors: tuple[type[BaseException], ...] = (Exception,)) -> dict | None:
        """Run ``fn()`` for cell ``key`` unless it is done or the budget is spent; ``errors`` are recorded as the
        cell's ``error``, not raised."""
        if self.done(key):
            return self.data["cells"][key]
        if self.over_budget(key):
            return None
        say(f"  {self.step}: {key}")
        t = time.monotonic()
        try:
            value = fn()
        except Deadline:
            self.not_run(key, "the --within time ran out during this cell; run the step again")
            raise
        except errors as exc:  # one failed cell must not lose the others
            value = {"error": error_line(exc)}
            free_device_memory()
        value = {**value, "cell_s": round(time.monotonic() - t, 1)}
        self.put(key, value)
        return value


def _on_alarm(_signum, _frame):
    raise Deadline()


@contextlib.contextmanager
def deadline_alarm(seconds: float | None):
    """Within the block, :class:`Deadline` is raised after ``seconds`` (SIGALRM; ``None``: never)."""
    if seconds is None:
        yield
        return
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def pack(ctx: Ctx, dest: Path) -> int:
    """Every ``<prefix>-*.json`` results file into one gzipped tar at ``dest``, flat (untar into
    benchmarks/results/), written atomically; the number of files packed."""
    from ghostnest.fileio import atomic_path

    files = sorted(ctx.results.glob(f"{ctx.prefix}-*.json"))
    with atomic_path(dest) as tmp, tarfile.open(tmp, "w:gz") as tar:
        for f in files:
            tar.add(f, arcname=f.name)
    return len(files)
