"""Inline SQLite connections, and the large writes they hand to a worker thread.

A single server process runs SQLite's calls on the event loop thread
(``app.storage.sqlite_inline``); a write that ``Database.run_off_loop`` marks
runs the rest of its transaction, its commit included, in a worker thread, so
a megabyte write does not hold every other request up. The statements' thread
is observed with SQLite's own trace callback, which runs in the thread that
executes the statement.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from sqlalchemy import event, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.interactions.context import utc_now
from app.storage.database import Database
from app.storage.repository import insert_first
from app.storage.row_keys import NO_KEYS
from app.storage.sqlite_inline import InlineConnection
from app.storage.tables import resources
from tests.storage.conftest import cancel_until_done, stored_task_ids, task_version


async def sqlite_driver(conn: AsyncConnection) -> InlineConnection:
    driver = (await conn.get_raw_connection()).driver_connection
    assert isinstance(driver, InlineConnection)
    return driver


class StatementThreads:
    """Which thread ran each SQL statement (``BEGIN``, ``INSERT``, ``COMMIT``...) on a connection."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bool]] = []  # (first word, ran on the event loop's thread)
        self.loop_thread = threading.get_ident()

    def trace(self, sql: str) -> None:
        self.seen.append((sql.split()[0].upper(), threading.get_ident() == self.loop_thread))

    async def watch(self, conn: AsyncConnection) -> None:
        driver = await sqlite_driver(conn)
        assert driver._connection is not None
        driver._connection.set_trace_callback(self.trace)


async def test_run_off_loop_moves_the_rest_of_the_transaction_and_its_commit_to_a_worker_thread(
    inline: Database,
) -> None:
    """Statements (their first step) and the commit; an ``executemany`` stays on the loop, as fetches do:
    each of its rows is a step of its own that gives up the GIL, which a worker thread would then wait
    for while the loop is busy, row after row (``OFF_LOOP_CALLS``)."""
    threads = StatementThreads()
    async with inline.write() as conn:
        await threads.watch(conn)
        await insert_first(conn, task_version("before"), NO_KEYS)
        await inline.run_off_loop(conn)
        await insert_first(conn, task_version("after"), NO_KEYS)
        await conn.execute(insert(resources), [row("many-1"), row("many-2")])
    async with inline.write() as conn:  # the same pooled connection: back on the loop
        await insert_first(conn, task_version("next"), NO_KEYS)
    on_loop = [(word, loop) for word, loop in threads.seen if word in {"INSERT", "COMMIT"}]
    assert on_loop == [
        *[("INSERT", True)] * 2,  # before run_off_loop: inline (the current row, the history row)
        *[("INSERT", False)] * 2,
        *[("INSERT", True)] * 2,  # the executemany, a row at a time
        ("COMMIT", False),
        *[("INSERT", True)] * 2,  # the next transaction is inline again
        ("COMMIT", True),
    ]
    stored = ["before", "after", "many-1", "many-2", "next"]
    assert await stored_task_ids(inline, stored) == set(stored)


def row(resource_id: str) -> dict[str, object]:
    """A current row of ``resources`` for an ``executemany``."""
    return {
        "resource_type": "Task",
        "id": resource_id,
        "version_id": 1,
        "last_updated": utc_now(),
        "deleted": False,
        "body": b"{}",
    }


async def test_a_rolled_back_transaction_off_the_loop_leaves_its_connection_inline(inline: Database) -> None:
    threads = StatementThreads()
    with pytest.raises(RuntimeError, match="refused"):
        async with inline.write() as conn:
            await threads.watch(conn)
            await inline.run_off_loop(conn)
            await insert_first(conn, task_version("rolled-back"), NO_KEYS)
            raise RuntimeError("refused")
    async with inline.write() as conn:  # the writer's connection, given back at the failure and taken again
        assert (await conn.execute(select(1))).scalar() == 1
    assert [pair for pair in threads.seen if pair[0] in {"INSERT", "ROLLBACK", "SELECT"}] == [
        *[("INSERT", False)] * 2,
        ("ROLLBACK", False),
        ("SELECT", True),
    ]
    assert await stored_task_ids(inline, ["rolled-back"]) == set()


async def test_run_off_loop_outside_a_transaction_leaves_the_connection_inline(inline: Database) -> None:
    """A read scope (autocommit) never commits: marked, its pooled connection would stay off the loop."""
    threads = StatementThreads()
    async with inline.read() as conn:
        await threads.watch(conn)
        await inline.run_off_loop(conn)
        assert (await conn.execute(select(1))).scalar() == 1
    async with inline.read() as conn:
        assert (await conn.execute(select(2))).scalar() == 2
    assert [pair for pair in threads.seen if pair[0] == "SELECT"] == [("SELECT", True), ("SELECT", True)]


async def test_run_off_loop_changes_nothing_but_the_thread(db: Database) -> None:
    """With aiosqlite's own thread and on PostgreSQL the driver already waits off the loop: the write
    commits as any other (``db``: SQLite in both modes, PostgreSQL)."""
    async with db.write() as conn:
        await db.run_off_loop(conn)
        await insert_first(conn, task_version("marked"), NO_KEYS)
    assert await stored_task_ids(db, ["marked"]) == {"marked"}


@pytest.fixture
def sqlite_mode(db: Database, backend: str) -> Database:
    """SQLite in each connection mode (the ``db`` fixture's)."""
    if backend != "sqlite":
        pytest.skip("SQLite's connection modes")
    return db


async def test_a_write_cancelled_during_a_statement_leaves_nothing_and_holds_no_lock(sqlite_mode: Database) -> None:
    """Cancelled again and again while a statement runs (off the loop when inline, in aiosqlite's
    thread otherwise): SQLAlchemy discards the connection, as it does whenever a cancellation
    interrupts a statement it awaited, and nothing of the write stays. The discarded connection's
    write lock is released at once (``app.storage.sqlite_closing``), so the next write does not wait
    out the 30 s busy timeout. Inline, the connection is not touched again until the worker thread's
    statement has ended."""
    db = sqlite_mode
    pool = db.write_engine.sync_engine.pool
    order: list[str] = []
    event.listen(pool, "invalidate", lambda *_: order.append("connection let go"))
    started = threading.Event()

    def slow() -> int:
        started.set()
        time.sleep(0.3)
        order.append("statement ended")
        return 1

    async def slow_write() -> None:
        async with db.write() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            await driver.create_function("slow", 0, slow)
            await insert_first(conn, task_version("cancelled"), NO_KEYS)
            await db.run_off_loop(conn)
            await conn.exec_driver_sql("SELECT slow()")

    writer = asyncio.create_task(slow_write())
    async with asyncio.timeout(10):
        while not started.is_set():
            await asyncio.sleep(0.005)
        assert await cancel_until_done(writer, 0.01) > 1 and writer.cancelled()
        while "statement ended" not in order:  # aiosqlite's thread may still be running it
            await asyncio.sleep(0.01)
    assert sorted(order) == ["connection let go", "statement ended"]
    if isinstance((await _pooled_driver(db)), InlineConnection):
        assert order == ["statement ended", "connection let go"]
    assert pool.checkedout() == 0
    async with asyncio.timeout(10):
        async with db.write() as conn:
            await insert_first(conn, task_version("next"), NO_KEYS)
    assert await stored_task_ids(db, ["cancelled", "next"]) == {"next"}


async def _pooled_driver(db: Database) -> object:
    async with db.read() as conn:
        return (await conn.get_raw_connection()).driver_connection
