"""The interleaved timing protocol shared by every benchmark of a model or runtime.

Each case's first warm-up step runs alone (its first-call time and, where asked, its peak memory); the remaining
warm-up steps and the ``repeats`` timed rounds then run *interleaved* (round robin, the starting case rotating each
round: A B C, B C A, C A B, ...), so that a slow-down from other work on the machine (a shared CPU, a GPU's clock)
falls on all cases alike instead of on whichever ran last. Rows report the median and the spread (quartiles, min,
max) of the time per batch, not the mean: on a shared machine single batches can be several times slower than
usual, and the median ignores them.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .memory import PeakMemory
from .summary import percentile, spread


@dataclass
class Case:
    """One thing under test: its step function, its timings and fixed fields of its result row.

    ``model`` (optional) is the torch model the step runs, whose weights count towards its CUDA peak memory.
    """

    name: str
    step: Callable[[], None]
    channels_last: bool = False
    extra: dict = field(default_factory=dict)
    model: nn.Module | None = None
    times_ms: list = field(default_factory=list)
    first_call_ms: float = 0.0
    peak_mem_mb: float | None = None
    mem_kind: str = "not measured"


def first_call(case: Case, device: torch.device | None = None) -> Case:
    """Run ``case``'s first step alone and record its time; with a ``device``, its peak memory there too."""
    if device is None:
        t0 = time.perf_counter()
        case.step()
        case.first_call_ms = (time.perf_counter() - t0) * 1e3
        return case
    with PeakMemory(device, case.model) as mem:
        t0 = time.perf_counter()
        case.step()
        case.first_call_ms = (time.perf_counter() - t0) * 1e3
    case.peak_mem_mb, case.mem_kind = mem.mb, mem.kind
    return case


def interleave(cases: Sequence[Case], warmup: int, repeats: int) -> None:
    """After each case's first call: ``warmup - 1`` more warm-up rounds, then ``repeats`` timed rounds, all
    round robin with the starting case rotating each round; the times go to ``case.times_ms``."""
    for _ in range(warmup - 1):
        for case in cases:
            case.step()
    n = len(cases)
    for r in range(repeats):
        for k in range(n):
            case = cases[(r + k) % n]
            t0 = time.perf_counter()
            case.step()
            case.times_ms.append((time.perf_counter() - t0) * 1e3)


def case_rows(cases: Sequence[Case], batch: int, repeats: int, warmup: int, common: dict | None = None) -> list[dict]:
    """One row per timed case: the spread of its times, images/s, ratios to the first case, memory, first call;
    ``common`` holds fields every row shares (mode, device, ...)."""
    rows = []
    for case in cases:
        stats = spread(case.times_ms)
        rows.append({
            "name": case.name,
            **(common or {}),
            "batch": batch,
            "channels_last": case.channels_last,
            **stats,
            "images_per_s": batch * 1e3 / stats["median_ms"],
            "ratio_to_first": 0.0,
            "min_ratio_to_first": 0.0,
            "peak_mem_mb": case.peak_mem_mb,
            "mem_kind": case.mem_kind,
            "first_call_ms": case.first_call_ms,
            "repeats": repeats,
            "warmup": warmup,
            "threads": torch.get_num_threads(),
            "times_ms": case.times_ms,
            **case.extra,
        })
    first, first_min = rows[0]["median_ms"], rows[0]["min_ms"]
    for row in rows:
        row["ratio_to_first"] = row["median_ms"] / first
        row["min_ratio_to_first"] = row["min_ms"] / first_min
        # the ratio round by round (each round times every case once): how far one run's ratio can be trusted
        ratios = sorted(t / t0 for t, t0 in zip(row["times_ms"], rows[0]["times_ms"], strict=True))
        row["ratio_p25"], row["ratio_p75"] = percentile(ratios, 0.25), percentile(ratios, 0.75)
    return rows
