"""Write transactions on both backends: retried when the database aborted them to break a conflict.

PostgreSQL aborts one of two transactions waiting on each other's locks
(deadlock_detected, SQLSTATE 40P01) and, at stricter isolation, one of two
that cannot be serialised (serialization_failure, 40001); both did nothing and
can simply run again (www.postgresql.org/docs/current/mvcc-serialization-failure-handling.html).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import asyncpg
import pytest
from sqlalchemy import column, event, func, select, table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.errors import VersionConflict
from app.storage.database import WRITE_ATTEMPTS, Database, is_retryable
from app.storage.repository import insert_first
from app.storage.row_keys import NO_KEYS
from tests.conftest import _admin
from tests.storage.conftest import cancel_until_done, stored_task_ids, task_version


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database.from_url(database_url)
    yield database
    await database.dispose()


def driver_error(error: Exception) -> DBAPIError:
    """An error as SQLAlchemy raises it: a DBAPIError whose ``orig`` carries the SQLSTATE."""
    return DBAPIError("UPDATE resources SET ...", None, error)


async def test_a_deadlocked_attempt_is_rolled_back_and_run_again(db: Database) -> None:
    attempts = 0

    async def work(conn: AsyncConnection) -> int:
        nonlocal attempts
        attempts += 1
        await insert_first(conn, task_version(f"attempt-{attempts}"), NO_KEYS)
        if attempts < 3:
            raise driver_error(asyncpg.exceptions.DeadlockDetectedError("deadlock detected"))
        return attempts

    assert await db.run_write(work) == 3
    assert await stored_task_ids(db, ["attempt-1", "attempt-2", "attempt-3"]) == {"attempt-3"}


async def test_a_serialization_failure_is_run_again(db: Database) -> None:
    attempts = 0

    async def work(conn: AsyncConnection) -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise driver_error(asyncpg.exceptions.SerializationError("could not serialize access"))
        return "done"

    assert await db.run_write(work) == "done" and attempts == 2


async def test_gives_up_after_the_bound_with_a_version_conflict(db: Database) -> None:
    attempts = 0
    deadlock = driver_error(asyncpg.exceptions.DeadlockDetectedError("deadlock detected"))

    async def work(conn: AsyncConnection) -> None:
        nonlocal attempts
        attempts += 1
        raise deadlock

    with pytest.raises(VersionConflict) as raised:
        await db.run_write(work)
    assert attempts == WRITE_ATTEMPTS == 5
    assert raised.value.__cause__ is deadlock


@pytest.mark.parametrize(
    "make_error",
    [
        lambda: driver_error(asyncpg.exceptions.UniqueViolationError("duplicate key")),
        lambda: driver_error(ValueError("no SQLSTATE at all")),
        lambda: VersionConflict("If-Match expects version 1"),
        lambda: RuntimeError("a bug"),
    ],
    ids=["unique-violation", "driver-error-without-sqlstate", "fhir-error", "bug"],
)
async def test_other_errors_are_raised_at_once(db: Database, make_error: Callable[[], Exception]) -> None:
    attempts = 0
    error = make_error()

    async def work(conn: AsyncConnection) -> None:
        nonlocal attempts
        attempts += 1
        await insert_first(conn, task_version("written"), NO_KEYS)
        raise error

    with pytest.raises(type(error)) as raised:
        await db.run_write(work)
    assert raised.value is error and attempts == 1
    assert await stored_task_ids(db, ["written"]) == set()


def test_asyncpg_errors_raised_outside_sqlalchemy_are_recognised() -> None:
    """COPY and single statements run on the asyncpg connection itself, whose errors are not wrapped."""
    assert is_retryable(asyncpg.exceptions.DeadlockDetectedError("deadlock detected"))
    assert is_retryable(asyncpg.exceptions.SerializationError("could not serialize access"))
    assert not is_retryable(asyncpg.exceptions.UniqueViolationError("duplicate key"))
    assert not is_retryable(asyncpg.exceptions.LockNotAvailableError("lock timeout"))


async def test_a_real_deadlock_loses_one_attempt_and_both_writes_commit(db: Database) -> None:
    """Two transactions lock two keys in opposite order; PostgreSQL aborts one, which then runs again."""
    if db.dialect != "postgresql":
        pytest.skip("SQLite runs one writer at a time, so its writers never wait on each other's locks")
    holding = {"a": asyncio.Event(), "b": asyncio.Event()}
    attempts: Counter[str] = Counter()

    async def write(first: str, second: str) -> int:
        async def work(conn: AsyncConnection) -> int:
            attempts[first] += 1
            await insert_first(conn, task_version(f"{first}-{attempts[first]}"), NO_KEYS)
            await db.lock_key(conn, first)
            if attempts[first] == 1:
                holding[first].set()
                await holding[second].wait()
            await db.lock_key(conn, second)
            return attempts[first]

        return await db.run_write(work)

    results = await asyncio.wait_for(asyncio.gather(write("a", "b"), write("b", "a")), timeout=30)
    assert sorted(results) == [1, 2]
    loser = "a" if results[0] == 2 else "b"
    winner = "b" if loser == "a" else "a"
    assert await stored_task_ids(db, ["a-1", "a-2", "b-1", "b-2"]) == {f"{winner}-1", f"{loser}-2"}


async def test_locking_many_keys_in_any_order_never_deadlocks(db: Database) -> None:
    """``lock_keys`` takes the locks in one global order, whatever order the caller names them in."""
    keys = [f"Task/{n}" for n in range(8)]

    async def hold(offset: int) -> None:
        rotated = keys[offset:] + keys[:offset]
        async with db.write() as conn:
            await db.lock_keys(conn, rotated if offset % 2 else rotated[::-1])
            await asyncio.sleep(0.01)

    await asyncio.wait_for(asyncio.gather(*(hold(n) for n in range(16))), timeout=30)


async def test_opening_the_pool_opens_every_postgresql_connection_at_once(database_url: str, backend: str) -> None:
    database = Database.from_url(database_url, pool_size=5)
    try:
        await database.open_pool()
        pool: Any = database.engine.pool
        if backend == "sqlite":
            assert pool.checkedin() == 0  # opened when a checkout needs one
            return
        assert pool.overflow() == 0 and pool.checkedin() == 5  # all five opened, and idle in the pool
        backends = (
            select(func.count())
            .select_from(table("pg_stat_activity", column("datname")))
            .where(column("datname") == func.current_database())
        )
        async with database.read() as conn:
            assert (await conn.execute(backends)).scalar_one() >= 5  # live sessions, not just pool entries
        assert pool.overflow() == 0  # that read took one of them
    finally:
        await database.dispose()


@asynccontextmanager
async def database_of_a_limited_role(database_url: str, limit: int, pool_size: int) -> AsyncIterator[Database]:
    """A database reached as a new role that PostgreSQL lets open at most ``limit`` connections."""
    role = f"fhir_limited_{uuid.uuid4().hex[:8]}"
    await _admin(database_url, f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT {limit}')
    url = make_url(database_url).set(username=role).render_as_string(hide_password=False)
    database = Database.from_url(url, pool_size=pool_size)
    try:
        yield database
    finally:
        await database.dispose()
        await _admin(database_url, f'DROP ROLE "{role}"')


async def test_a_pool_postgresql_takes_only_in_part_is_opened_as_far_as_it_goes(
    database_url: str, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A role limited to two connections: the start-up opens two of five, says so, and serves; the others
    would open when needed (and be refused, as before)."""
    if backend != "postgresql":
        pytest.skip("SQLite's pool is not opened at start-up")
    async with database_of_a_limited_role(database_url, limit=2, pool_size=5) as database:
        with caplog.at_level(logging.WARNING, logger="app.storage.database"):
            await database.open_pool()
        pool: Any = database.engine.pool
        assert pool.size() + pool.overflow() == 2 and pool.checkedin() == 2
        assert "opened 2 of the pool's 5 PostgreSQL connections" in caplog.text
        async with database.read() as conn:
            assert (await conn.execute(select(1))).scalar_one() == 1


async def test_a_pool_that_cannot_open_at_all_fails_the_start_up(database_url: str, backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite's pool is not opened at start-up")
    async with database_of_a_limited_role(database_url, limit=0, pool_size=3) as database:
        with pytest.raises(DBAPIError):
            await database.open_pool()


async def test_statements_past_the_timeout_are_cancelled_and_reported(database_url: str, backend: str) -> None:
    """statement_timeout bounds every statement; the error becomes a 503 ``timeout`` outcome."""
    if backend != "postgresql":
        pytest.skip("statement_timeout is a PostgreSQL setting")
    from sqlalchemy import func, select

    from app.errors import StatementTimeout
    from app.storage.database import storage_error

    database = Database.from_url(database_url, statement_timeout=0.2)
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(DBAPIError) as caught:
            async with database.read() as conn:
                await conn.execute(select(func.pg_sleep(5)))
        assert asyncio.get_running_loop().time() - started < 2
        assert isinstance(storage_error(caught.value), StatementTimeout)
        async with database.read() as conn:  # the pool still serves
            assert (await conn.execute(select(1))).scalar() == 1
    finally:
        await database.dispose()


async def test_a_cancelled_request_cancels_its_statement_in_postgresql(database_url: str, backend: str) -> None:
    """When a client disconnects the request task is cancelled: its running query must stop on the server."""
    if backend != "postgresql":
        pytest.skip("SQLite runs in the process; there is no server-side statement to cancel")
    from sqlalchemy import func, select, text

    database = Database.from_url(database_url)
    try:

        async def slow() -> None:
            async with database.read() as conn:
                await conn.execute(select(func.pg_sleep(30)))

        task = asyncio.create_task(slow())
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.5)
        async with database.read() as conn:
            running = await conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep%' AND state = 'active' "
                    "AND pid <> pg_backend_pid()"
                )
            )
            assert running.scalar() == 0
            assert (await conn.execute(select(1))).scalar() == 1
    finally:
        await database.dispose()


# The scopes: a block that ends normally gives its connection back in the caller's own task, with no
# event-loop pass of its own (SQLAlchemy's ``async with`` exit closes in a new task: two passes more
# per request); a block cancelled, even again and again while it cleans up, is rolled back and its
# connection goes back to the pool, unharmed.


@pytest.fixture(params=["threaded", "inline"])
async def each_mode(database_url: str, request: pytest.FixtureRequest) -> AsyncIterator[Database]:
    """On SQLite both connection modes (aiosqlite's worker thread, inline calls); PostgreSQL once."""
    if request.param == "inline" and not database_url.startswith("sqlite"):
        pytest.skip("inline mode exists only for SQLite")
    database = Database.from_url(database_url, sqlite_inline=request.param == "inline")
    yield database
    await database.dispose()


class LoopPasses:
    """Counts the event loop's passes: a callback that schedules itself again runs once per pass."""

    def __init__(self) -> None:
        self.count = 0
        self._handle: asyncio.Handle | None = None

    def _tick(self) -> None:
        self.count += 1
        self._handle = asyncio.get_running_loop().call_soon(self._tick)

    def __enter__(self) -> LoopPasses:
        self._handle = asyncio.get_running_loop().call_soon(self._tick)
        return self

    def __exit__(self, *_: object) -> None:
        if self._handle is not None:
            self._handle.cancel()


SCOPES: dict[str, Callable[[Database], AbstractAsyncContextManager[AsyncConnection]]] = {
    "read": lambda db: db.read(),
    "write": lambda db: db.write(),
    "statement_write": lambda db: db.statement_write(),
    "single_statement": lambda db: db.single_statement(),
}


@pytest.mark.parametrize("scope", list(SCOPES))
async def test_a_scope_that_ends_normally_returns_its_connection_in_its_own_task_at_once(
    each_mode: Database, scope: str
) -> None:
    """The connection goes back to the pool from the task that used it (no task started to close it),
    and the scope ends in that same loop pass: no pass beyond what the driver's own calls need, but
    the one a read or write scope on inline SQLite gives the other tasks. (SQLite's writes keep their
    connection instead: tests/storage/test_sqlite_writer.py.)"""
    db = each_mode
    if db.dialect == "sqlite" and scope in {"write", "statement_write"}:
        pytest.skip("SQLite's writes keep one connection from one write to the next")
    me = asyncio.current_task()
    checked_in: list[tuple[asyncio.Task[Any] | None, set[asyncio.Task[Any]], int]] = []
    with LoopPasses() as passes:

        def on_checkin(*_: object) -> None:
            checked_in.append((asyncio.current_task(), asyncio.all_tasks(), passes.count))

        event.listen(db.engine.sync_engine.pool, "checkin", on_checkin)
        await stored_task_ids(db, ["warm"])  # a pooled connection exists (a first connect is the driver's time)
        checked_in.clear()
        before = asyncio.all_tasks()
        async with SCOPES[scope](db) as conn:
            assert (await conn.execute(select(1))).scalar() == 1
        ended = passes.count
    assert len(checked_in) == 1 and db.engine.pool.checkedout() == 0
    closer, tasks, checked_in_at = checked_in[0]
    assert closer is me and tasks <= before  # closed by this task; no task was started for it
    paused = db.pauses and scope != "single_statement"
    assert ended == checked_in_at + (1 if paused else 0)  # the scope ended in the pass that gave it back


async def test_a_cancelled_write_is_rolled_back_and_its_connection_pooled_again(each_mode: Database) -> None:
    """Cancelled inside the transaction and then again at every await of its clean-up (as anyio's
    cancel scopes do under Starlette): the rollback still runs to its end, the connection is back in
    the pool, not thrown away, and the next write on it commits only its own row."""
    db = each_mode
    pool = db.write_engine.sync_engine.pool
    kept = 1 if db.dialect == "sqlite" else 0  # SQLite's writer keeps the connection of a write that ended well
    discarded: list[object] = []
    event.listen(pool, "invalidate", lambda *args: discarded.append(args))
    event.listen(pool, "soft_invalidate", lambda *args: discarded.append(args))
    inside = asyncio.Event()

    async def write() -> None:
        async with db.write() as conn:
            await insert_first(conn, task_version("cancelled"), NO_KEYS)
            inside.set()
            await asyncio.sleep(60)

    writer = asyncio.create_task(write())
    async with asyncio.timeout(10):
        await inside.wait()
        cancels = await cancel_until_done(writer)
    assert writer.cancelled() and cancels > 1
    assert pool.checkedout() == 0 and discarded == []
    async with asyncio.timeout(10):  # on SQLite the writer's turn and its lock were given back too
        async with db.write() as conn:
            await insert_first(conn, task_version("next"), NO_KEYS)
    assert await stored_task_ids(db, ["cancelled", "next"]) == {"next"}
    assert pool.checkedout() == kept and discarded == []


async def test_a_failed_write_is_rolled_back_and_its_connection_pooled_again(each_mode: Database) -> None:
    db = each_mode
    with pytest.raises(RuntimeError, match="a bug"):
        async with db.write() as conn:
            await insert_first(conn, task_version("failed"), NO_KEYS)
            raise RuntimeError("a bug")
    assert db.write_engine.pool.checkedout() == 0  # given back (on SQLite the next write takes it again)
    assert await stored_task_ids(db, ["failed"]) == set()
