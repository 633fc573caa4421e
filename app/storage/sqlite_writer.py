"""The one connection a process's SQLite write transactions take turns on, kept from one write to the next.

SQLite takes one writer at a time, and a process queues its write
transactions (``app.storage.writer_queue``), so one connection serves them
all. Taking a pooled connection for each write and giving it back costs more
than the transaction's own BEGIN IMMEDIATE and COMMIT: through SQLAlchemy's
asyncio adapter the checkout, the execution options and the close are each a
greenlet switch plus pool events. Measured on inline SQLite, an empty write
scope took about 300 us of CPU with a connection per write, and the BEGIN and
COMMIT on a kept connection about 85 us (BENCHMARKS.md, "SQLite writes on a
kept connection"). A kept connection also keeps its page cache: no other
connection writes, so nothing invalidates it.

The connection comes from an engine of its own with a pool of one, apart from
the readers' pool, so a read never waits for the connection the writer keeps.
A transaction that raises or is cancelled closes the connection (which rolls
back what it left open), through ``to_the_end`` so that no further
cancellation cuts the rollback short; the next write checks it out again.
An error therefore never leaves a half-ended transaction to the next writer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.storage.connection_scope import to_the_end
from app.storage.writer_queue import WriterQueue


class SqliteWriter:
    """Write transactions, one at a time, on one kept connection of ``engine`` (a pool of one).

    ``options``: execution options the connection is given once (the write option that makes its BEGIN
    ``BEGIN IMMEDIATE``). ``pause``: one pass of the event loop after each commit, inside the turn, as
    ``pooled_connection`` gives on inline SQLite (``app.storage.connection_scope``).
    """

    def __init__(self, engine: AsyncEngine, queue: WriterQueue, pause: bool, options: dict[str, Any]) -> None:
        self.engine = engine
        self.queue = queue
        self._pause = pause
        self._options = options
        self._kept: AsyncConnection | None = None

    @asynccontextmanager
    async def transaction(self, urgent: bool = False) -> AsyncIterator[AsyncConnection]:
        """A write transaction in this process's turn (``urgent``: before the waiting writers); committed
        when the block ends, rolled back (and the connection closed) when it raises or is cancelled."""
        async with self.queue.hold(urgent):
            conn = self._kept or await self._check_out()
            self._kept = None  # until the transaction has ended well
            try:
                begun = await conn.begin()
                yield conn
                await begun.commit()
            except BaseException:
                await to_the_end(conn.close())  # closing rolls back the transaction still open
                raise
            self._kept = conn
            if self._pause:
                await asyncio.sleep(0)

    async def _check_out(self) -> AsyncConnection:
        conn = await self.engine.connect()
        if self._options:
            await conn.execution_options(**self._options)
        return conn

    async def close(self) -> None:
        """Give the kept connection back and close the engine (at shutdown; no write may be running)."""
        kept, self._kept = self._kept, None
        if kept is not None:
            await kept.close()
        await self.engine.dispose()


__all__ = ["SqliteWriter"]
