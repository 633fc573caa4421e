"""The host-steadiness summary: windows measured against the median window."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.host import Flushes, count_per_window, flush_durations, steadiness


def test_windows_are_measured_against_the_median_and_slow_runs_counted() -> None:
    summary = steadiness([100, 100, 60, 50, 100, 120, 69, 100, 100])
    assert summary.windows == 9
    assert summary.median == 100
    assert summary.slowest == 0.5
    assert summary.fastest == 1.2
    assert summary.slow_share == pytest.approx(3 / 9)  # 60, 50, 69 are under 0.7 x 100
    assert summary.longest_slow_run == 2  # 60 then 50
    assert summary.row("work", 0.2) == "| work | 9 | 0.50 | 1.20 | 33% | 400 |"


def test_a_steady_host_has_no_slow_window() -> None:
    summary = steadiness([10, 10, 11, 9, 10])
    assert (summary.slowest, summary.fastest, summary.slow_share, summary.longest_slow_run) == (0.9, 1.1, 0.0, 0)


def test_no_window_is_an_error() -> None:
    with pytest.raises(ValueError):
        steadiness([])


def test_steps_are_counted_per_window() -> None:
    calls: list[int] = []
    counts = count_per_window(lambda: calls.append(1), seconds=0.05, window=0.01)
    assert 4 <= len(counts) <= 6
    assert sum(counts) == len(calls)
    assert all(count > 0 for count in counts)


def test_flushes_are_timed_one_by_one_and_summarised(tmp_path: Path) -> None:
    flushes = flush_durations(tmp_path, seconds=0.05)
    assert flushes.durations and all(duration >= 0 for duration in flushes.durations)
    assert list(tmp_path.iterdir()) == []  # the file written is removed
    summary = Flushes([1.0] * 997 + [5.0, 30.0, 40.0])
    assert (summary.at(0.5), summary.at(0.99), summary.at(0.999)) == (1.0, 1.0, 30.0)
    assert summary.row() == "| 1,000 | 1.00 | 1.00 | 30.00 | 40.0 | 2 |"
