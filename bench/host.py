"""How steady the machine itself is: the speed of one thread per short window, and the disk's flushes.

    python -m bench.host --seconds 30 [--disk DIRECTORY]

A latency bound in milliseconds (``bench.wrk``'s maximum) holds only on a
host that runs the server at about the same speed from one moment to the
next. This measures that with nothing of the server running:

* **the interpreter**: a loop of Python bytecode (no allocation, so no
  collection) counted per ``--window`` (200 ms), as the server's event loop
  runs Python;
* **native code**: SHA-256 over 64 KB per call, counted the same way; it runs
  out of the core's own caches, so a change of clock speed shows in it too,
  while contention for the core's shared front end and caches (another
  virtual machine's thread on the same physical core) shows mostly in the
  interpreter;
* **the disk** (``--disk``, a directory on it): 8 KB written and
  ``fdatasync``-ed in a loop, as a commit's log flush is, timed one by one.

Each speed is reported against its median window: the slowest and fastest
window, the share of windows under 0.7 of the median, and the longest run of
such windows. Under ``bench.wrk``'s sixteen connections a request's latency
is about sixteen requests' worth of the server's CPU, so a window at half
speed doubles every latency in it (``bench.wrk --windows`` shows it).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SLOW = 0.7  # a window under this fraction of the median window's speed is counted as slow
BLOCK = os.urandom(1 << 16)
PAGE = b"\xa5" * 8192


@dataclass(frozen=True, slots=True)
class Steadiness:
    """Work done per window, summarised against the median window."""

    windows: int
    median: float
    slowest: float  # fraction of the median
    fastest: float
    slow_share: float  # share of windows under SLOW of the median
    longest_slow_run: int  # consecutive slow windows

    def row(self, name: str, window: float) -> str:
        return (
            f"| {name} | {self.windows} | {self.slowest:.2f} | {self.fastest:.2f} | {self.slow_share:.0%} | "
            f"{self.longest_slow_run * window * 1000:,.0f} |"
        )


def steadiness(counts: list[int]) -> Steadiness:
    """Summarise per-window counts: how far the slowest and fastest windows are from the median one."""
    if not counts:
        raise ValueError("no windows measured")
    median = statistics.median(counts)
    slow = [count < SLOW * median for count in counts]
    longest = run = 0
    for is_slow in slow:
        run = run + 1 if is_slow else 0
        longest = max(longest, run)
    return Steadiness(
        windows=len(counts),
        median=median,
        slowest=min(counts) / median,
        fastest=max(counts) / median,
        slow_share=sum(slow) / len(counts),
        longest_slow_run=longest,
    )


def interpreter_step() -> None:
    for _ in range(2000):
        pass


def native_step() -> None:
    hashlib.sha256(BLOCK).digest()


def count_per_window(step: Callable[[], None], seconds: float, window: float) -> list[int]:
    """How many times ``step`` ran in each window of ``window`` seconds, for ``seconds`` in all."""
    counts = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        started = time.perf_counter()
        count = 0
        while time.perf_counter() - started < window:
            step()
            count += 1
        counts.append(count)
    return counts


@dataclass(frozen=True, slots=True)
class Flushes:
    """Durations of 8 KB writes each followed by ``fdatasync``, in ms."""

    durations: list[float]

    def at(self, fraction: float) -> float:
        """The nearest-rank percentile (as ``bench.wrk``'s script takes it)."""
        ordered = sorted(self.durations)
        return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]

    def row(self) -> str:
        over = sum(1 for duration in self.durations if duration > 20)
        return (
            f"| {len(self.durations):,} | {self.at(0.5):.2f} | {self.at(0.99):.2f} | {self.at(0.999):.2f} | "
            f"{max(self.durations):.1f} | {over} |"
        )


def flush_durations(directory: Path, seconds: float) -> Flushes:
    """8 KB written at the end of a file and flushed with ``fdatasync``, over and over, each timed."""
    durations = []
    with tempfile.NamedTemporaryFile(dir=directory, prefix="bench-host-") as file:
        descriptor = file.fileno()
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            started = time.perf_counter()
            os.write(descriptor, PAGE)
            os.fdatasync(descriptor)
            durations.append((time.perf_counter() - started) * 1000)
    return Flushes(durations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30, help="per measurement")
    parser.add_argument("--window", type=float, default=0.2, help="seconds per window")
    parser.add_argument("--disk", type=Path, help="a directory on the disk to time flushes on (none: no disk)")
    args = parser.parse_args()
    print(
        f"# host steadiness {time.strftime('%Y-%m-%d %H:%M')} on {platform.node()}: {os.cpu_count()} cores, "
        f"{args.seconds:g} s per measurement, {args.window * 1000:.0f} ms windows"
    )
    print(
        "\n| work | windows | slowest / median | fastest / median | windows under "
        f"{SLOW:g} x median | longest run of them, ms |"
    )
    print("|---|---|---|---|---|---|")
    for name, step in (("Python interpreter", interpreter_step), ("native (SHA-256)", native_step)):
        print(steadiness(count_per_window(step, args.seconds, args.window)).row(name, args.window), flush=True)
    if args.disk is not None:
        print(f"\n8 KB write + fdatasync in {args.disk}, ms:\n")
        print("| flushes | p50 | p99 | p99.9 | max | over 20 ms |")
        print("|---|---|---|---|---|---|")
        print(flush_durations(args.disk, args.seconds).row())


if __name__ == "__main__":
    main()
