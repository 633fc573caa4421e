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
A transaction that raises or is cancelled is rolled back and the connection
given back, through ``to_the_end`` so that no further cancellation cuts the
rollback short; the next write checks it out again. An error therefore never
leaves a half-ended transaction to the next writer.

On inline SQLite (``app.storage.sqlite_inline``) the transaction begins and
commits on the ``sqlite3`` connection itself, as its statements mostly run
there (``app.storage.sqlite_direct``): through SQLAlchemy's asyncio adapter a
begin and a commit are each a greenlet switch plus its transaction events. A
write scope with one small INSERT took 246 to 293 us of CPU that way, and takes
112 to 137 us now, against 41 to 54 us for the same three statements on a bare
``sqlite3`` connection (BENCHMARKS.md, "SQLite's write transactions begun and
committed on sqlite3"). A statement that still goes through SQLAlchemy inside
the transaction makes it record a transaction of its own (autobegin, whose
BEGIN ``Database`` skips: one is open); the commit then goes through
SQLAlchemy, so that its record ends with the transaction. Closing a
connection does not roll back what SQLAlchemy did not record (the pool does
not reset on return), so a failed transaction is rolled back on the driver
first (``_abandon``).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.storage.connection_scope import to_the_end
from app.storage.sqlite_direct import inline_driver
from app.storage.sqlite_inline import InlineConnection
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
            driver: InlineConnection | None = None
            try:
                driver = await inline_driver(conn)
                if driver is None:
                    begun = await conn.begin()
                    yield conn
                    await begun.commit()
                else:
                    _run(driver.sqlite_connection, "BEGIN IMMEDIATE")
                    yield conn
                    await _commit(conn, driver)
            except BaseException:
                await to_the_end(_abandon(conn, driver))
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


def _run(connection: sqlite3.Connection | None, sql: str) -> None:
    """``sql`` on the ``sqlite3`` connection, its error wrapped as SQLAlchemy wraps the driver's."""
    if connection is None:
        raise DBAPIError(sql, None, sqlite3.ProgrammingError("the connection is closed"))
    try:
        connection.execute(sql)
    except sqlite3.Error as error:
        raise DBAPIError(sql, None, error) from error


async def _abandon(conn: AsyncConnection, driver: InlineConnection | None) -> None:
    """Roll back what a failed or cancelled transaction left open, and give the connection back.

    SQLAlchemy's close rolls back the transaction it recorded; the pool does not roll back on return
    (``pool_reset_on_return=None``, ``Database``), so one begun on the ``sqlite3`` connection is rolled
    back here first. Should that fail, the connection is discarded, and closing it rolls back
    (``app.storage.sqlite_closing``)."""
    connection = driver.sqlite_connection if driver is not None else None  # None: SQLAlchemy discarded it
    if driver is not None and connection is not None and connection.in_transaction:
        try:
            await driver.rollback()
        except sqlite3.Error:
            await conn.invalidate()
            return
    await conn.close()


async def _commit(conn: AsyncConnection, driver: InlineConnection) -> None:
    """Commit a transaction begun on the ``sqlite3`` connection: through SQLAlchemy when a statement made it
    record a transaction (its commit ends both), else on the driver (in the worker thread if the
    transaction was sent off the loop, ``Database.run_off_loop``)."""
    if conn.in_transaction():
        await conn.commit()
        return
    try:
        await driver.commit()
    except sqlite3.Error as error:
        raise DBAPIError("COMMIT", None, error) from error


__all__ = ["SqliteWriter"]
