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
        "routed_learned_frame": [_row(2, 0.43, 1.0), _row(1, 0.43, 2.1)],
        "routed_rotate": [_row(2, 0.63, 1.0), _row(1, 0.63, 1.9)],
    }
    got = thread_speedup(res)
    assert got["threads"] == [1, 2]
    assert got["full"] == pytest.approx(4.0 / 2.2)
    # a budget timed at one thread count only has no ratio
    assert got["routed_learned"] == {"0.8": pytest.approx(1.5)}
    assert got["routed_learned_frame"] == {"0.43": pytest.approx(2.1)}
    assert got["routed_rotate"] == {"0.63": pytest.approx(1.9)}


def test_paired_times_divides_within_each_round(monkeypatch):
    """A machine slowing down round after round moves both medians, not the paired ratio."""
    from benchmarks import bench

    clock = [0.0]
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])
    calls = {"base": 0, "other": 0}

    def work(name: str, cost: float):
        def run():
            calls[name] += 1
            clock[0] += cost * (1 + calls[name])  # round r runs (1 + r) times slower

        return run

    ratio, base, other = bench.paired_times(work("base", 2.0), work("other", 1.0), 5)
    assert calls == {"base": 5, "other": 5}
    assert ratio == pytest.approx(0.5)
    assert base == pytest.approx(2.0 * 4) and other == pytest.approx(1.0 * 4)
