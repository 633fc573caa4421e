"""SQLite WAL checkpoints in a worker thread instead of inside a committing write.

In WAL mode SQLite copies the log back into the database file
(a checkpoint) when a commit finds the log past ``wal_autocheckpoint``
pages, and it does so inside that commit: the writer, which every other
writer queues behind, copies ~4 MB first (and with SQLite calls on the event
loop thread, ``app.storage.sqlite_inline``, every request waits). Here the
server counts committed writes and every ``WRITES_PER_CHECKPOINT`` runs a
``PASSIVE`` checkpoint on a connection of its own in a worker thread
(the log file keeps its size once grown, so its size cannot tell how much
is new) (sqlite.org/wal.html#checkpointing,
sqlite.org/c3ref/wal_checkpoint_v2.html): it never blocks readers or
writers, and ``sqlite3`` releases the GIL while it runs (nor does the
writer wait for the database file's fsync that ends a checkpoint).
Sequential creates through the interaction, 6,000 CarePlans, three
alternating pairs: 1,960, 1,706 and 1,721 us each against 2,193, 2,182
and 1,754 with checkpoints inside commits (BENCHMARKS.md, "SQLite
checkpoints"). Each connection keeps an automatic
checkpoint at 64 MiB (``WAL_BACKSTOP_PRAGMA``) should the thread fall far behind.

A checkpoint copies the log only up to where it stood when the checkpoint
began, and SQLite starts the log over from its beginning only when a writer
finds every frame copied (sqlite.org/wal.html#avoiding_excessively_large_wal_files).
Under steady writes some commit always lands during the background
checkpoint, so the log never started over: it grew to the backstop, and the
commit that crossed it copied the frames left, with every other writer
waiting and, inline, every request: 40 to 137 ms about every 1.3 s under 16
writing clients (a create adds about 37 frames; BENCHMARKS.md, "SQLite
creates: the log started over"). So once a background checkpoint finds the
log past ``RESTART_FRAMES``, the next one takes the writers' turn
(``WriterQueue``, ahead of waiting writers): no commit lands while it copies
the few frames written since the last, the log is then all copied, and the
next writer starts it over. Reads go on meanwhile; writers wait for one short
copy instead of one long one.

On a disk that copy is not what the writers wait for: the held checkpoint
flushes the log and then the database file (``fsync``, as
``synchronous=NORMAL`` does), and held the writers 20 to 92 ms (median 49)
about twice a second under sixteen writing clients, which put a create's p99
at 3.7 times its p50 (BENCHMARKS.md, "SQLite's held checkpoint after catching
up"). The log it flushes and copies is what was written while the background
checkpoint before it ran, megabytes of it. So when more than
``CATCH_UP_WRITES`` writes committed meanwhile, another background checkpoint
catches up first (at most ``MOST_CATCH_UPS`` in a row, so that the log still
starts over under steady writes); each is shorter than the one before, and
the held one then copies only a few pages.

What the held checkpoint flushed was still most of its time: SQLite flushes
the database file only at a checkpoint that copies the whole log
(sqlite.org/src/file/src/wal.c, ``walCheckpoint``), so the held one flushed
every page the background checkpoints before it had copied, 2 MB and more
under steady writes: 32 to 42 ms of its 40 on this VM's disk, under
``strace``. So each background checkpoint flushes what it copied into the
database file itself, in its worker thread, with the writers going on (they
write to the log, never to the database file), and the held checkpoint
flushes only the pages it copies. Flushed once just before the held
checkpoint instead, everything since the last held one took 7 to 64 ms, and
the log grew meanwhile by as much as the catch-ups had copied.

With the flushes each background checkpoint takes longer, and more is
written meanwhile: the log is found past ``RESTART_FRAMES`` up to 100 writes
after it passed it, grows through the catch-ups, and at 32 MiB (8,192
frames) reached 15,024 frames before it started over, near the backstop's
16,384. At 16 MiB it peaks at about 10,700, and the held checkpoint copies
less (4.4 to 15.6 ms, median 6.8, against 10 to 12 at 32 MiB).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from contextlib import closing
from functools import partial
from pathlib import Path
from typing import Final

from app.storage.writer_queue import WriterQueue

WRITES_PER_CHECKPOINT: Final = 100  # a 1.4 KB CarePlan's create adds ~37 frames (pages) to the log
RESTART_FRAMES: Final = 4096  # 16 MiB of log: the next checkpoint holds the writers so the log can start over
CATCH_UP_WRITES: Final = 8  # more commits than this during a checkpoint: another catches up before the held one
MOST_CATCH_UPS: Final = 3
# 16,384 pages (64 MiB): a committing writer checkpoints only beyond this
WAL_BACKSTOP_PRAGMA: Final = "PRAGMA wal_autocheckpoint=16384"

logger = logging.getLogger(__name__)


class WalCheckpoints:
    """Background checkpoints of one SQLite database file (one at a time)."""

    def __init__(
        self,
        database: Path,
        writer: WriterQueue | None = None,
        every: int = WRITES_PER_CHECKPOINT,
        restart_frames: int = RESTART_FRAMES,
    ) -> None:
        self.database = database
        self.writer = writer  # this process's writers (None: the log is not closed with them held)
        self.every = every
        self.restart_frames = restart_frames
        self.writes = 0  # committed since the last checkpoint began
        self.running: asyncio.Future[tuple[int, int, int]] | None = None
        self.last: tuple[int, int, int] | None = None  # (busy, log frames, checkpointed frames)
        self.held = 0  # checkpoints run with the writers held
        self.catch_ups = 0  # background checkpoints in a row since the log passed restart_frames

    def after_write(self) -> None:
        """Called on the event loop after a write committed: start a checkpoint every ``every`` writes."""
        self.writes += 1
        if self.running is not None or self.writes < self.every:
            return
        self._in_background()

    def _in_background(self) -> None:
        self.writes = 0
        self.running = asyncio.get_running_loop().run_in_executor(None, self._checkpoint_then_flush)
        self.running.add_done_callback(self._finished)

    def _checkpoint_then_flush(self) -> tuple[int, int, int]:
        """A background checkpoint, then a flush of what it copied into the database file (which SQLite
        leaves to the checkpoint that copies the whole log, the held one)."""
        result = self._checkpoint()
        self._flush_database_file()
        return result

    def _checkpoint(self) -> tuple[int, int, int]:
        with closing(sqlite3.connect(self.database, timeout=30, isolation_level=None)) as connection:
            row = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        busy, log, checkpointed = row
        return int(busy), int(log), int(checkpointed)

    def _finished(self, future: asyncio.Future[tuple[int, int, int]], holding: bool = False) -> None:
        self.running = None
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            logger.warning("SQLite WAL checkpoint failed: %s", error)
            return
        self.last = future.result()
        # after a background checkpoint only: the held one reports the log as it was before starting over
        if self.writer is None or holding or self.last[1] < self.restart_frames:
            self.catch_ups = 0
            return
        if self.writes > CATCH_UP_WRITES and self.catch_ups < MOST_CATCH_UPS:
            self.catch_ups += 1  # many writes came in while it ran: catch up on them before holding the writers
            self._in_background()
            return
        self.catch_ups = 0
        self.running = asyncio.ensure_future(self._checkpoint_holding_writers(self.writer))
        self.running.add_done_callback(partial(self._finished, holding=True))

    async def _checkpoint_holding_writers(self, writer: WriterQueue) -> tuple[int, int, int]:
        """A checkpoint with no commit landing meanwhile, so that it copies the whole log."""
        async with writer.hold(urgent=True):
            self.held += 1
            return await asyncio.get_running_loop().run_in_executor(None, self._checkpoint)

    def _flush_database_file(self) -> None:
        """Flushes to the disk what a background checkpoint copied into the database file.

        ``fdatasync`` flushes the file's pages whichever descriptor asks, so this one need not be
        SQLite's."""
        descriptor = os.open(self.database, os.O_RDONLY)
        try:
            os.fdatasync(descriptor)
        finally:
            os.close(descriptor)

    async def wait(self) -> None:
        """Until the checkpoints under way (if any: a background one, then one holding the writers) have
        finished."""
        while self.running is not None:
            running = self.running
            await asyncio.shield(running)
            await asyncio.sleep(0)  # a future already done may still have its done callback to run: it runs first
            if self.running is running:  # its done callback will never run: its event loop has ended
                return
