"""The benchmark's derived rows (arithmetic only: timings live in ``benchmarks/``)."""

from __future__ import annotations

import pytest

from benchmarks.bench import thread_speedup


def _row(threads: int, budget: float, s: float) -> dict:
    return {"threads": threads, "budget": budget, "s_per_frame": s}


def test_thread_speedup_divides_the_fewest_threads_time_by_the_most():
    res = {
        "learned_full_s_per_frame": {"1": 4.0, "2": 2.2},
        "routed_learned": [_row(1, 0.8, 3.0), _row(1, 0.63, 2.5), _row(2, 0.8, 2.0)],
        "routed_rotate": [_row(2, 0.63, 1.0), _row(1, 0.63, 1.9)],
    }
    got = thread_speedup(res)
    assert got["threads"] == [1, 2]
    assert got["full"] == pytest.approx(4.0 / 2.2)
    # a budget timed at one thread count only has no ratio
    assert got["routed_learned"] == {"0.8": pytest.approx(1.5)}
    assert got["routed_rotate"] == {"0.63": pytest.approx(1.9)}
