"""SQLite's write transactions take turns on one kept connection, apart from the readers' pool."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import event, select, update

from app.storage.database import Database
from app.storage.repository import insert_first, read_current
from app.storage.row_keys import NO_KEYS
from app.storage.sqlite_direct import inline_sqlite
from app.storage.tables import resources
from tests.storage.conftest import stored_task_ids, task_version


@pytest.fixture(params=["threaded", "inline"])
async def sqlite_db(database_url: str, backend: str, request: pytest.FixtureRequest) -> AsyncIterator[Database]:
    """SQLite in both connection modes, with a readers' pool of one connection."""
    if backend != "sqlite":
        pytest.skip("the kept writer connection is SQLite's")
    database = Database.from_url(database_url, pool_size=1, sqlite_inline=request.param == "inline")
    yield database
    await database.dispose()


async def test_writes_take_turns_on_one_kept_connection(sqlite_db: Database) -> None:
    db = sqlite_db
    pool = db.write_engine.sync_engine.pool
    checkouts: list[object] = []
    event.listen(pool, "checkout", lambda *args: checkouts.append(args))
    drivers = []
    for name in ("first", "second", "third"):
        async with db.write() as conn:
            drivers.append((await conn.get_raw_connection()).driver_connection)
            await insert_first(conn, task_version(name), NO_KEYS)
    assert drivers[0] is drivers[1] is drivers[2]
    assert len(checkouts) == 1 and pool.checkedout() == 1  # taken once, kept since
    assert db.engine.pool.checkedout() == 0 and db.write_engine is not db.engine
    assert await stored_task_ids(db, ["first", "second", "third"]) == {"first", "second", "third"}


async def test_a_read_never_waits_for_the_connection_the_writer_keeps(sqlite_db: Database) -> None:
    """The readers' pool here holds one connection: a read during a write, and after it, gets it."""
    db = sqlite_db
    async with asyncio.timeout(10):
        async with db.write() as conn:
            await insert_first(conn, task_version("written"), NO_KEYS)
            async with db.read() as reader:  # the write has not committed: the read does not see it
                assert (await reader.execute(select(1))).scalar() == 1
                assert await read_current(reader, "Task", "written") is None
        assert await stored_task_ids(db, ["written"]) == {"written"}


async def test_a_failed_write_gives_its_connection_back_and_the_next_write_takes_it_again(
    sqlite_db: Database,
) -> None:
    db = sqlite_db
    pool = db.write_engine.sync_engine.pool
    discarded: list[object] = []
    event.listen(pool, "invalidate", lambda *args: discarded.append(args))
    async with db.write() as conn:
        await insert_first(conn, task_version("before"), NO_KEYS)
    with pytest.raises(RuntimeError, match="a bug"):
        async with db.write() as conn:
            await insert_first(conn, task_version("failed"), NO_KEYS)
            raise RuntimeError("a bug")
    assert pool.checkedout() == 0 and discarded == []  # rolled back by its close, not thrown away
    async with db.write() as conn:
        assert (await conn.get_raw_connection()).driver_connection.in_transaction  # begun afresh
        await insert_first(conn, task_version("after"), NO_KEYS)
    assert await stored_task_ids(db, ["before", "failed", "after"]) == {"before", "after"}
    assert pool.checkedout() == 1


async def test_an_urgent_write_goes_before_the_waiting_ones_on_the_same_connection(sqlite_db: Database) -> None:
    db = sqlite_db
    order: list[str] = []
    holding = asyncio.Event()
    release = asyncio.Event()

    async def write(name: str, urgent: bool = False) -> None:
        async with db.write(urgent) as conn:
            if name == "holder":
                holding.set()
                await release.wait()
            await insert_first(conn, task_version(name), NO_KEYS)
            order.append(name)

    async with asyncio.timeout(10):
        holder = asyncio.create_task(write("holder"))
        await holding.wait()
        waiting = [asyncio.create_task(write("ordinary-1")), asyncio.create_task(write("ordinary-2"))]
        await asyncio.sleep(0)
        waiting.append(asyncio.create_task(write("urgent", urgent=True)))
        await asyncio.sleep(0)
        release.set()
        await asyncio.gather(holder, *waiting)
    assert order == ["holder", "urgent", "ordinary-1", "ordinary-2"]
    assert db.write_engine.sync_engine.pool.checkedout() == 1


async def test_inline_a_write_on_sqlite3_alone_is_begun_and_committed_there(inline: Database) -> None:
    """No statement went through SQLAlchemy: it records no transaction, and sends no BEGIN or COMMIT."""
    db = inline
    sent: list[str] = []
    event.listen(db.write_engine.sync_engine, "begin", lambda *_: sent.append("begin"))
    event.listen(db.write_engine.sync_engine, "commit", lambda *_: sent.append("commit"))
    async with db.write() as conn:
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver.in_transaction and not conn.in_transaction()
        await insert_first(conn, task_version("direct"), NO_KEYS)
        assert not conn.in_transaction()
    assert not driver.in_transaction and sent == []
    assert await stored_task_ids(db, ["direct"]) == {"direct"}


@pytest.mark.parametrize("ending", ["commit", "raise"])
async def test_inline_a_statement_through_sqlalchemy_joins_the_transaction_begun_on_sqlite3(
    inline: Database, ending: str
) -> None:
    """SQLAlchemy records a transaction of its own as its statement runs (without a second BEGIN), the
    commit goes through it, and a failure rolls back both kinds of statement."""
    db = inline
    changed = update(resources).where(resources.c.id == "written").values(status_code="changed")
    with contextlib.suppress(RuntimeError):
        async with db.write() as conn:
            await insert_first(conn, task_version("written"), NO_KEYS)  # on sqlite3
            await conn.execute(changed)  # through SQLAlchemy
            assert conn.in_transaction()
            if ending == "raise":
                raise RuntimeError("a bug")
    async with db.read() as conn:
        rows = (await conn.execute(select(resources.c.status_code).where(resources.c.id == "written"))).all()
    assert rows == ([("changed",)] if ending == "commit" else [])
    async with db.write() as conn:  # the next write begins afresh on the same kept connection
        assert not conn.in_transaction()
        await insert_first(conn, task_version("next"), NO_KEYS)
    assert await stored_task_ids(db, ["next"]) == {"next"}


async def test_inline_a_write_sent_off_the_loop_commits_there_and_the_next_runs_inline(inline: Database) -> None:
    db = inline
    async with db.write() as conn:
        await insert_first(conn, task_version("large"), NO_KEYS)
        await db.run_off_loop(conn)
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver.off_loop and await inline_sqlite(conn) is None
    assert not driver.off_loop and not driver.in_transaction
    async with db.write() as conn:
        assert await inline_sqlite(conn) is not None
        await insert_first(conn, task_version("small"), NO_KEYS)
    assert await stored_task_ids(db, ["large", "small"]) == {"large", "small"}


async def test_closing_the_database_gives_the_kept_connection_back(database_url: str, backend: str) -> None:
    if backend != "sqlite":
        pytest.skip("the kept writer connection is SQLite's")
    db = Database.from_url(database_url, sqlite_inline=True)
    async with db.write() as conn:
        await insert_first(conn, task_version("kept"), NO_KEYS)
    pool = db.write_engine.sync_engine.pool
    closed: list[object] = []
    event.listen(pool, "close", lambda *args: closed.append(args))
    await db.dispose()
    assert pool.checkedout() == 0 and len(closed) == 1
