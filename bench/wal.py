"""PostgreSQL's write-ahead log under a benchmark: segments recycled as on a running server, and how
long client backends waited on WAL I/O, sampled from ``pg_stat_activity``.

A durable commit returns only once its WAL is on disk. The backend doing the
flush shows the wait event ``IO:WALSync`` for as long as its ``fdatasync``
takes (``IO:WALInitWrite`` and ``IO:WALInitSync`` while it first creates a
16 MB segment file), and every other committing backend queues behind it on
``LWLock:WALWrite`` (postgresql.org/docs/15/monitoring-stats.html#WAIT-EVENT-TABLE).
One slow flush therefore holds every create in flight at once.
``bench.wrk --wal-waits`` runs this sampler beside each phase so a maximum
can be set against the longest WAL I/O seen in the same seconds.

The sampler polls every ``interval`` seconds from its own connection (and
thread, with its own event loop, because ``bench.wrk`` blocks on wrk). A
flush is measured from the first to the last sample that saw it, so the
figure is a lower bound, short by at most two intervals; a flush shorter
than one interval may go unseen. Sampling costs some CPU: use it to explain
a run's tail, not in the runs whose throughput is reported.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType

import asyncpg

WAITS = """
SELECT pid, wait_event_type, wait_event FROM pg_stat_activity
WHERE backend_type = 'client backend' AND state = 'active' AND pid <> pg_backend_pid()
  AND (wait_event_type, wait_event) IN (('IO', 'WALSync'), ('IO', 'WALWrite'), ('IO', 'WALInitWrite'),
                                        ('IO', 'WALInitSync'), ('LWLock', 'WALWrite'))
"""


@dataclass
class WalWaits:
    """What the samples saw: the longest WAL I/O of one backend (ms), the most backends queued behind
    one, how many samples saw a new segment being created, samples."""

    longest_io_ms: float = 0.0
    most_queued: int = 0
    segment_inits: int = 0
    samples: int = 0
    _open: dict[int, tuple[float, float]] = field(default_factory=dict)  # pid: (first seen, last seen)

    def record(self, now: float, writing: set[int], queued: int, initialising: bool = False) -> None:
        """One sample: the backends in WAL I/O, how many wait for the WAL write lock, and whether a
        segment file was being created."""
        self.samples += 1
        self.segment_inits += initialising
        for pid in list(self._open):
            if pid not in writing:
                first, last = self._open.pop(pid)
                self.longest_io_ms = max(self.longest_io_ms, (last - first) * 1000)
        for pid in writing:
            first, _ = self._open.get(pid, (now, now))
            self._open[pid] = (first, now)
        if writing:
            self.most_queued = max(self.most_queued, queued)

    def close(self) -> None:
        self.record(time.monotonic(), set(), 0)
        self.samples -= 1


class WalWaitSampler:
    """``with WalWaitSampler(dsn) as sampler: ...``; then ``sampler.waits``."""

    def __init__(self, dsn: str, interval: float = 0.004) -> None:
        self.dsn = dsn
        self.interval = interval
        self.waits = WalWaits()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._sample()), daemon=True)

    def __enter__(self) -> WalWaitSampler:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        self.waits.close()

    async def _sample(self) -> None:
        connection = await asyncpg.connect(self.dsn)
        self._ready.set()
        try:
            while not self._stop.is_set():
                rows = await connection.fetch(WAITS)
                writing = {row["pid"] for row in rows if row["wait_event_type"] == "IO"}
                initialising = any(row["wait_event"].startswith("WALInit") for row in rows)
                self.waits.record(time.monotonic(), writing, len(rows) - len(writing), initialising)
                await asyncio.sleep(self.interval)
        finally:
            await connection.close()


async def recycle_wal_segments(admin: asyncpg.Connection, segments: int) -> None:
    """Give a fresh cluster the WAL segment files that a server in steady state reuses.

    A cluster minutes old has no segment to reuse: after every 16 MB of WAL,
    the committing backend creates the next segment file, writing 16 MB of
    zeros and syncing them while it holds the WAL write lock, and every commit
    in flight waits behind it (50 to 75 ms on the benchmark's VM, about once a
    second of creates). A server that has run through checkpoints renames the
    segments a checkpoint freed instead, as many as its recent checkpoint
    cycles used, within max_wal_size
    (postgresql.org/docs/15/wal-configuration.html). So the benchmark writes
    ``segments`` segments (a logical message and a segment switch each) and
    checkpoints: they become the next segments to be written, as on a server
    that has been running."""
    for _ in range(segments):
        await admin.execute("SELECT pg_logical_emit_message(false, 'bench.wrk', '')")
        await admin.execute("SELECT pg_switch_wal()")
    await admin.execute("CHECKPOINT")
