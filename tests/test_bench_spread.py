"""`ghostnest bench` prints the spread it measured, the ratio's round by round too, and warns when it is too wide
to trust (suggesting --threads 1 for a multi-threaded CPU run)."""
from __future__ import annotations

import pytest

from ghostnest.bench import format_table, spread_warning
from ghostnest.bench.loop import Case, case_rows


def rows_of(times: list[list[float]], threads: int = 2, device: str = "cpu") -> list[dict]:
    cases = []
    for i, t in enumerate(times):
        case = Case(f"m{i}", lambda: None)
        case.times_ms = list(t)
        cases.append(case)
    common = {"mode": "infer", "device": device, "dtype": "fp32", "input_size": 32, "num_classes": 10,
              "compiled": False, "fused": False, "params": 1, "gflops": 0.1}
    rows = case_rows(cases, 8, len(times[0]), 1, common)
    for r in rows:
        r["threads"] = threads
    return rows


def test_the_ratio_is_given_round_by_round():
    rows = rows_of([[10, 10, 10, 10, 10], [5, 10, 20, 10, 10]])
    assert rows[1]["ratio_to_first"] == 1.0  # the medians agree...
    assert (rows[1]["ratio_p25"], rows[1]["ratio_p75"]) == (1.0, 1.0)
    rows = rows_of([[10, 10, 10, 10], [5, 10, 20, 40]])
    assert (rows[1]["ratio_p25"], rows[1]["ratio_p75"]) == pytest.approx((0.875, 2.5))  # ... these do not
    assert rows[0]["ratio_p25"] == rows[0]["ratio_p75"] == 1.0
    assert "0.875-2.5" in format_table(rows) and "(per round)" in format_table(rows)


def test_steady_timings_give_no_warning():
    assert spread_warning(rows_of([[10, 10.2, 9.9, 10.1], [20, 20.5, 19.8, 20.2]])) is None


def test_wide_timings_warn_and_suggest_one_thread():
    warning = spread_warning(rows_of([[10, 10, 10, 10], [10, 20, 30, 40]]))
    assert "timings spread widely (m1: interquartile range" in warning and "unreliable" in warning
    assert "2 threads compete" in warning and "--threads 1" in warning
    one = spread_warning(rows_of([[10, 10, 10, 10], [10, 20, 30, 40]], threads=1))
    assert "--threads 1" not in one and "idle machine" in one


def test_a_ratio_that_swings_round_by_round_warns_even_when_each_median_is_steady():
    # each model's own times spread within 20%, but in opposite rounds: the ratio moves 0.8x-1.25x
    rows = rows_of([[10, 10, 12, 12], [12, 12, 10, 10]])
    assert rows[1]["iqr_ms"] / rows[1]["median_ms"] <= 0.2
    warning = spread_warning(rows)
    assert warning is not None and "ratio to the first" in warning and "round by round" in warning
