"""A load phase cut into short windows by when its requests ended: where its maximum latency came from.

Under ``bench.wrk``'s closed loop (sixteen connections, each sending its
next request when the last is answered) a request's latency is about sixteen
requests' worth of the server's CPU. When the host runs the server slower for
a moment (``bench.host`` measures that with nothing running), fewer requests
end in that window, and every one of them takes longer. Cutting the phase
into windows (200 ms by default) and comparing each window's completed
requests with the median window's tells a maximum reached while the whole
server went slower from one reached by a few requests at the server's usual
pace.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

SLOW = 0.7  # a window completing fewer than this fraction of the median window's requests is slow


@dataclass(frozen=True, slots=True)
class Windows:
    """Requests per window against the median window, and the longest latency in each kind of window."""

    window_ms: float
    count: int  # whole windows (the partial first and last are left out)
    median_requests: float
    slowest: float  # the fewest requests in a window, as a fraction of the median
    slow: int  # windows under SLOW of the median
    max_in_usual: float  # ms: the longest latency ending in a window at SLOW of the median or more
    max_in_slow: float  # ms: ... in a slow window (0 when there is none)
    max_in_edges: float  # ms: ... in the partial first and last windows, which are not counted

    def line(self, phase: str) -> str:
        return (
            f"{phase}: {self.count} windows of {self.window_ms:.0f} ms, {self.median_requests:.0f} requests in the "
            f"median one, {self.slowest:.2f} of that in the slowest; {self.slow} windows under {SLOW:g} of it. "
            f"Longest latency in the other windows {self.max_in_usual:.1f} ms, in those {self.max_in_slow:.1f} ms, "
            f"in the partial first and last windows {self.max_in_edges:.1f} ms"
        )


def cut_into_windows(samples: list[tuple[float, float]], window_ms: float = 200.0) -> Windows:
    """``samples``: (end, latency) per request, both in ms. The first and last windows are partial
    (the phase starts and stops within them): they are not counted, and their longest latency is
    reported apart."""
    if not samples:
        raise ValueError("no requests")
    start = min(end for end, _ in samples)
    buckets: dict[int, list[float]] = {}
    for end, latency in samples:
        buckets.setdefault(int((end - start) // window_ms), []).append(latency)
    last = max(buckets)
    whole = {index: buckets.get(index, []) for index in range(1, last)}
    if not whole:
        raise ValueError("the phase is shorter than three windows")
    median = statistics.median(len(latencies) for latencies in whole.values())
    if median == 0:
        raise ValueError("most windows saw no request end")
    slow = {index for index, latencies in whole.items() if len(latencies) < SLOW * median}
    return Windows(
        window_ms=window_ms,
        count=len(whole),
        median_requests=median,
        slowest=min(len(latencies) for latencies in whole.values()) / median,
        slow=len(slow),
        max_in_usual=max((max(v) for i, v in whole.items() if i not in slow and v), default=0.0),
        max_in_slow=max((max(v) for i, v in whole.items() if i in slow and v), default=0.0),
        max_in_edges=max(max(buckets.get(0, [0.0])), max(buckets[last])),
    )


def read_samples(path: Path) -> list[tuple[float, float]]:
    """The (end, latency) lines the wrk script wrote."""
    samples = []
    for line in path.read_text().splitlines():
        end, latency = line.split()
        samples.append((float(end), float(latency)))
    return samples
