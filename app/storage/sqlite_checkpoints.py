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
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Final

WRITES_PER_CHECKPOINT: Final = 100  # a create adds ~10 pages: about SQLite's own 1,000-page default
# 16,384 pages (64 MiB): a committing writer checkpoints only beyond this
WAL_BACKSTOP_PRAGMA: Final = "PRAGMA wal_autocheckpoint=16384"

logger = logging.getLogger(__name__)


class WalCheckpoints:
    """Background checkpoints of one SQLite database file (one at a time)."""

    def __init__(self, database: Path, every: int = WRITES_PER_CHECKPOINT) -> None:
        self.database = database
        self.every = every
        self.writes = 0  # committed since the last checkpoint began
        self.running: asyncio.Future[tuple[int, int, int]] | None = None
        self.last: tuple[int, int, int] | None = None  # (busy, log frames, checkpointed frames)

    def after_write(self) -> None:
        """Called on the event loop after a write committed: start a checkpoint every ``every`` writes."""
        self.writes += 1
        if self.running is not None or self.writes < self.every:
            return
        self.writes = 0
        self.running = asyncio.get_running_loop().run_in_executor(None, self._checkpoint)
        self.running.add_done_callback(self._finished)

    def _checkpoint(self) -> tuple[int, int, int]:
        with closing(sqlite3.connect(self.database, timeout=30, isolation_level=None)) as connection:
            row = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        busy, log, checkpointed = row
        return int(busy), int(log), int(checkpointed)

    def _finished(self, future: asyncio.Future[tuple[int, int, int]]) -> None:
        self.running = None
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            logger.warning("SQLite WAL checkpoint failed: %s", error)
            return
        self.last = future.result()

    async def wait(self) -> None:
        """Until the checkpoint under way (if any) has finished."""
        if self.running is not None:
            await asyncio.shield(self.running)
