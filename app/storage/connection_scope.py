"""Connections taken from the pool for one scope, and clean-up that a cancellation cannot cut short.

``Database`` builds its read and write scopes from ``pooled_connection``; a
kept writer connection (``app.storage.sqlite_writer``) uses ``to_the_end``
for its own clean-up.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


async def to_the_end(cleanup: Coroutine[Any, Any, None]) -> None:
    """Run ``cleanup`` to its end even when the caller is cancelled meanwhile, then raise that
    cancellation (SQLAlchemy's ``async with`` exit does the same for every close).

    A rollback cut short by a cancellation would make SQLAlchemy throw the connection away (it takes
    the interruption for a lost connection), and the pool, which resets nothing on return
    (``pool_reset_on_return=None``), relies on every transaction having been ended. A caller may be
    cancelled more than once: anyio, under Starlette, cancels a task again at every await until it
    leaves the cancelled scope.
    """
    task = asyncio.ensure_future(cleanup)
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as error:
            if task.done() and task.cancelled():
                raise
            cancelled = error
    if cancelled is not None:
        raise cancelled
    task.result()


@asynccontextmanager
async def pooled_connection(
    engine: AsyncEngine, transaction: bool, pause: bool = False
) -> AsyncIterator[AsyncConnection]:
    """A pooled connection (in a transaction: committed when the block ends, else rolled back), given
    back to the pool when the block ends; with ``pause``, then one pass of the event loop.

    Not ``async with engine.connect()`` / ``engine.begin()``: their exit closes the connection in a
    task of its own (``_run_to_completion``), two more event-loop passes for every request. Here a
    block that ended normally commits and closes in the caller's task, with no pass but the
    driver's; a block that raised or was cancelled rolls back and closes through ``to_the_end``,
    which no further cancellation interrupts. The normal close sends nothing on PostgreSQL or after a
    write (the transaction has ended); where it does call the driver (a SQLite read's rollback) and
    is cancelled there, SQLAlchemy discards that connection and frees its place in the pool.

    ``pause`` is for inline SQLite (``app.storage.sqlite_inline``), where no driver call gives the
    loop a pass: without it a request runs from its body to its response in one piece and a write
    never holds the writer's lock across a pass, so the Subscriptions dispatcher, inline in that
    process, gets one step per round of every client's whole request, and its urgent writes never
    find a queue to go to the front of (``app.storage.writer_queue``). A delivery takes some twenty
    steps: under sixteen writing clients a notification took 1.2 to 1.5 s from commit to arrival
    instead of 50 to 80 ms (BENCHMARKS.md, "Subscriptions: the poll, the outbox, the dispatcher,
    inline SQLite's passes"). SQLite's writes get the same pass from ``app.storage.sqlite_writer``, after
    the commit, inside the writers' turn.
    """
    conn = await engine.connect()
    try:
        if transaction:
            begun = await conn.begin()
            yield conn
            await begun.commit()
        else:
            yield conn
    except BaseException:
        await to_the_end(conn.close())  # closing rolls back the transaction still open
        raise
    await conn.close()
    if pause:
        await asyncio.sleep(0)


__all__ = ["pooled_connection", "to_the_end"]
