"""A load phase cut into windows: the slow windows found, and the longest latency inside and outside them."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.windows import cut_into_windows, read_samples


def requests(window: int, count: int, latency: float) -> list[tuple[float, float]]:
    """``count`` requests ending spread over 200 ms window number ``window``."""
    return [(window * 200 + 1 + index * (198 / count), latency) for index in range(count)]


def test_the_slow_windows_are_told_from_the_usual_ones_by_requests_completed() -> None:
    samples = (
        requests(0, 3, 500.0)  # the first window is partial: not counted, its 500 ms reported apart
        + requests(1, 100, 20.0)
        + requests(2, 100, 22.0)
        + requests(3, 40, 55.0)  # the server ran at 0.4 of its pace
        + requests(4, 100, 21.0)
        + requests(5, 69, 31.0)  # under 0.7 of the median: slow
        + requests(6, 100, 24.0)
        + requests(7, 2, 400.0)  # the last window is partial too
    )
    windows = cut_into_windows(samples)
    assert windows.count == 6
    assert windows.median_requests == 100
    assert windows.slowest == 0.4
    assert windows.slow == 2
    assert windows.max_in_usual == 24.0
    assert windows.max_in_slow == 55.0
    assert windows.max_in_edges == 500.0
    assert windows.line("create") == (
        "create: 6 windows of 200 ms, 100 requests in the median one, 0.40 of that in the slowest; 2 windows "
        "under 0.7 of it. Longest latency in the other windows 24.0 ms, in those 55.0 ms, in the partial first and "
        "last windows 500.0 ms"
    )


def test_a_window_where_no_request_ended_is_the_slowest() -> None:
    samples = requests(0, 10, 1.0) + requests(1, 50, 10.0) + requests(3, 50, 90.0) + requests(4, 50, 9.0)
    samples += requests(5, 1, 1.0)
    windows = cut_into_windows(samples)
    assert (windows.count, windows.slowest, windows.slow, windows.max_in_slow) == (4, 0.0, 1, 0.0)
    assert windows.max_in_usual == 90.0  # window 3 completed its usual count: 90 ms is the server's own


def test_too_short_a_phase_is_refused() -> None:
    with pytest.raises(ValueError):
        cut_into_windows([])
    with pytest.raises(ValueError):
        cut_into_windows(requests(0, 5, 1.0) + requests(1, 5, 1.0))


def test_the_scripts_lines_are_read_as_end_and_latency(tmp_path: Path) -> None:
    written = tmp_path / "windows.txt"
    written.write_text("1000.500 12.250\n1001.000 3.000\n")
    assert read_samples(written) == [(1000.5, 12.25), (1001.0, 3.0)]
