"""The spread of a list of timings: median, quartiles, min and max (the median ignores the odd slow batch)."""
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
