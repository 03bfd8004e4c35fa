"""The spread of a list of timings: median, quartiles, min and max (the median ignores the odd slow batch), and
the warning ``ghostnest bench`` prints when a run's spread is too wide to trust its figures."""
from __future__ import annotations

import statistics
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 1]) of already sorted values."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def spread(times_ms: Sequence[float]) -> dict:
    """``median_ms``, ``p25_ms``, ``p75_ms``, ``iqr_ms``, ``min_ms`` and ``max_ms`` of one or more timings."""
    ts = sorted(times_ms)
    p25, p75 = percentile(ts, 0.25), percentile(ts, 0.75)
    return {"median_ms": statistics.median(ts), "p25_ms": p25, "p75_ms": p75, "iqr_ms": p75 - p25,
            "min_ms": ts[0], "max_ms": ts[-1]}


WIDE_SPREAD = 0.2  # an interquartile range above this fraction of the median makes a figure unreliable


def spread_warning(rows: list[dict]) -> str | None:
    """One line when a benchmark's timings (or its ratios, round by round) spread over more than
    :data:`WIDE_SPREAD` of their median, naming the widest and what to do; ``None`` when they are steady.

    On a shared CPU the spread comes from other work and from PyTorch's threads spin-waiting on each other: measured
    on the 2-core machine, ME-NeSt-Ghost-S against EfficientNet-V2-S moved by a third between loaded and idle runs
    with 2 threads, and far less with 1 (docs/benchmarks.md)."""
    worst, what = 0.0, ""
    for r in rows:
        rel = r["iqr_ms"] / r["median_ms"] if r["median_ms"] else 0.0
        if rel > worst:
            worst, what = rel, f"{r['name']}: interquartile range {rel:.0%} of its median"
        if "ratio_p25" in r and r["ratio_to_first"]:
            rel = (r["ratio_p75"] - r["ratio_p25"]) / r["ratio_to_first"]
            if rel > worst:
                worst, what = rel, (f"{r['name']}: ratio to the first {r['ratio_p25']:.3g}-{r['ratio_p75']:.3g}x "
                                    "round by round")
    if worst <= WIDE_SPREAD:
        return None
    threads, device = rows[0].get("threads"), str(rows[0].get("device", "cpu"))
    if device.startswith("cpu") and threads and threads > 1:
        advice = (f"{threads} threads compete with the machine's other work: rerun with --threads 1 (steadier, "
                  "and the ratios hold), or on an idle machine")
    else:
        advice = "the machine is busy: rerun on an idle machine, or with more --repeats"
    return f"timings spread widely ({what}), so these figures are unreliable; {advice}"
