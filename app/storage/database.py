"""Engine creation and transaction scopes, with the backend differences kept here.

Each FHIR interaction is one database transaction. On SQLite every write
transaction starts with ``BEGIN IMMEDIATE`` (so two writers never both read and
then fail to upgrade their lock) and, within one process, writes also queue on
an asyncio lock instead of spinning on ``SQLITE_BUSY``. On PostgreSQL the
default READ COMMITTED isolation is enough: optimistic locking compares the
version inside the UPDATE, and conditional creates take a transaction-scoped
advisory lock on their criteria.

Writers that lock several rows can still meet in opposite order, and
PostgreSQL then aborts one of them (deadlock, SQLSTATE 40P01; a serialization
failure, 40001, is the same kind of loss). Such a transaction did nothing, so
``Database.run_write`` runs it again, a bounded number of times
(www.postgresql.org/docs/current/mvcc-serialization-failure-handling.html).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from sqlalchemy import BigInteger, event, func, literal, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from app.errors import FhirError, StatementTimeout, VersionConflict
from app.storage.connection_scope import pooled_connection
from app.storage.sqlite_checkpoints import WAL_BACKSTOP_PRAGMA, WalCheckpoints
from app.storage.sqlite_closing import RollbackOnClose
from app.storage.sqlite_direct import inline_driver
from app.storage.sqlite_inline import InlineConnection, connect_inline
from app.storage.sqlite_writer import SqliteWriter
from app.storage.writer_queue import WriterQueue

WRITE_OPTION = "fhir_write"
AUTOCOMMIT_OPTION = "fhir_autocommit"
AFTER_COMMIT = "fhir_after_commit"  # conn.info key: callbacks of the open write transaction
WRITE_ATTEMPTS = 5
BACKOFF_SECONDS = 0.01  # first pause at most; doubles per attempt
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected

T = TypeVar("T")


def is_retryable(error: BaseException) -> bool:
    """True for a transaction the database aborted only to break a conflict with a concurrent one.

    Errors of the SQLAlchemy asyncpg dialect are ``DBAPIError`` whose ``orig``
    carries the SQLSTATE as ``sqlstate`` (and ``pgcode``); statements run on
    the asyncpg connection itself (COPY, single statements) raise asyncpg's
    own errors, such as ``DeadlockDetectedError``, with ``sqlstate`` on them.
    """
    return sqlstate(error) in RETRYABLE_SQLSTATES


def sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE of a database error, raised through SQLAlchemy or by asyncpg directly."""
    for candidate in (error, getattr(error, "orig", None)):
        state = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(state, str):
            return state
    return None


# what a statement may raise: through SQLAlchemy, or from asyncpg on the single-statement paths
DATABASE_ERRORS: tuple[type[Exception], ...] = (DBAPIError, asyncpg.PostgresError)
QUERY_CANCELED = "57014"  # statement_timeout (a client's disconnect cancels the task instead)


def storage_error(error: BaseException) -> FhirError | None:
    """The FHIR error a database error stands for, or None when it is a server fault (500)."""
    if sqlstate(error) == QUERY_CANCELED:
        return StatementTimeout("the database took too long and cancelled the request's statement; narrow it")
    return None


def backoff(attempt: int) -> float:
    """Seconds to wait after failed ``attempt`` (1-based): full jitter, so the losers do not meet again."""
    return random.uniform(0, BACKOFF_SECONDS * 2 ** (attempt - 1))


def lock_id(key: str) -> int:
    """The signed 64-bit advisory lock number of ``key`` (one key space for every caller)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)


def _ensure_sqlite_directory(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


logger = logging.getLogger(__name__)


def create_engine(
    url: str, pool_size: int = 20, sqlite_inline: bool = False, statement_timeout: float | None = None
) -> AsyncEngine:
    """Create the async engine for ``url`` with the per-backend settings.

    ``sqlite_inline`` runs SQLite calls on the event loop thread (see
    ``app.storage.sqlite_inline``); only for a single server process.
    ``statement_timeout`` (seconds) bounds every PostgreSQL statement: the
    server cancels it and the request gets a 503 ``timeout``.
    """
    if url.startswith("sqlite"):
        _ensure_sqlite_directory(url)
        connect_args: dict[str, Any] = {"timeout": 30, "factory": RollbackOnClose}
        if sqlite_inline:
            connect_args["async_creator_fn"] = connect_inline
        # LIFO: the connection used last is used next. SQLite keeps a page cache per connection and
        # drops it when another connection has written since, so cycling through the whole pool (FIFO)
        # rereads pages on almost every request: bench.crud, 16 clients, LIFO against FIFO in two
        # interleaved pairs: creates 472/504 against 434/446 per second, reads 2,098/2,159 against
        # 1,799/1,973, updates 358/394 against 342/337 (BENCHMARKS.md, 2026-12-01).
        engine = create_async_engine(
            url,
            connect_args=connect_args,
            pool_size=pool_size,
            max_overflow=0,
            pool_reset_on_return=None,
            pool_use_lifo=True,
        )
        _configure_sqlite(engine)
        return engine
    # Every transaction is closed explicitly by Database.write/read, so the pool
    # need not send a ROLLBACK each time a connection comes back. No overflow:
    # connections opened and closed under load cost far more than a short wait
    # for a pooled one.
    #
    # asyncpg prepares every statement, and after five runs PostgreSQL may
    # switch a prepared search to a generic plan that ignores the values.
    # PostgreSQL's default (plan_cache_mode=auto) is kept: it takes the generic
    # plan only when its estimated cost is no worse than the custom plans'.
    # Measured at a million resources with skewed owners and names (BENCHMARKS.md,
    # "Search plans"), no measured search shape was more than 1.2 times slower
    # at p95 than with a plan per execution, while planning every execution
    # cost twice the database CPU of a five-match search (0.51 against 0.23 ms).
    server_settings = {"plan_cache_mode": "auto"}
    if statement_timeout is not None:
        server_settings["statement_timeout"] = str(max(1, round(statement_timeout * 1000)))
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_pre_ping=False,
        pool_reset_on_return=None,
        connect_args={"server_settings": server_settings},
    )


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        # checkpoints run in a worker thread (app.storage.sqlite_checkpoints); a commit checkpoints only
        # if that falls far behind
        cursor.execute(WAL_BACKSTOP_PRAGMA)
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        options = conn.get_execution_options()
        if options.get(AUTOCOMMIT_OPTION):
            return
        if options.get(WRITE_OPTION):
            if isinstance(conn.connection.driver_connection, InlineConnection):
                # the kept writer began the transaction on sqlite3 itself (app.storage.sqlite_writer):
                # SQLAlchemy records one as a statement goes through it, inside the one already open
                return
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


class Database:
    """The engine plus read and write transaction scopes."""

    def __init__(self, engine: AsyncEngine, inline: bool = False) -> None:
        self.engine = engine
        # read and write scopes end with one pass of the event loop (inline SQLite; app.storage.connection_scope)
        self.pauses = inline and engine.dialect.name == "sqlite"
        self.dialect = engine.dialect.name
        self._sqlite_writer = WriterQueue() if self.dialect == "sqlite" else None
        # SQLite's writes take turns on one kept connection, of an engine of its own (app.storage.sqlite_writer);
        # WRITE_OPTION makes each of its transactions begin with BEGIN IMMEDIATE
        self._writer = (
            SqliteWriter(
                create_engine(engine.url.render_as_string(hide_password=False), pool_size=1, sqlite_inline=inline),
                self._sqlite_writer,
                pause=self.pauses,
                options={WRITE_OPTION: True},
            )
            if self._sqlite_writer is not None
            else None
        )
        # reads run in autocommit: the engine's connections get the option as they are checked out, which
        # costs less than setting it on each read's connection afterwards (an await through the adapter)
        self._readers = engine.execution_options(
            **({"isolation_level": "AUTOCOMMIT"} if self.dialect == "postgresql" else {AUTOCOMMIT_OPTION: True})
        )
        database = engine.url.database if self.dialect == "sqlite" else None
        self.checkpoints = (
            WalCheckpoints(Path(database), self._sqlite_writer) if database and database != ":memory:" else None
        )

    @property
    def write_engine(self) -> AsyncEngine:
        """The engine write transactions take their connection from: on SQLite the writer's own
        (``app.storage.sqlite_writer``), elsewhere the one pool."""
        return self._writer.engine if self._writer is not None else self.engine

    @classmethod
    def from_url(
        cls, url: str, pool_size: int = 20, sqlite_inline: bool = False, statement_timeout: float | None = None
    ) -> Database:
        return cls(create_engine(url, pool_size, sqlite_inline, statement_timeout), sqlite_inline)

    @asynccontextmanager
    async def write(self, urgent: bool = False) -> AsyncIterator[AsyncConnection]:
        """One write transaction: committed on success, rolled back on any error. Callbacks given to
        ``after_commit`` during it run once it has committed (never after a rollback). ``urgent``: on
        SQLite, go before the writers already waiting (``app.storage.writer_queue``)."""
        committed: list[Callable[[], None]] = []
        if self._writer is None:
            async with pooled_connection(self.engine, transaction=True) as conn:
                conn.info[AFTER_COMMIT] = committed
                yield conn
        else:
            async with self._writer.transaction(urgent) as conn:
                conn.info[AFTER_COMMIT] = committed
                yield conn
            if self.checkpoints is not None:
                self.checkpoints.after_write()
        for callback in committed:
            callback()

    @staticmethod
    async def run_off_loop(conn: AsyncConnection) -> None:
        """Run the rest of ``conn``'s write transaction, its commit included, in a worker thread, when
        its SQLite calls would otherwise run on the event loop (``app.storage.sqlite_inline``): for a
        write too large to hold every other request up for (megabytes of body, thousands of index
        rows). Elsewhere the driver already waits off the loop, and this does nothing; so it does outside
        a transaction, whose commit or rollback would never bring the connection back onto the loop."""
        driver = await inline_driver(conn)
        if driver is not None and driver.in_transaction:  # the driver's: the writer may have begun it there
            driver.run_off_loop()

    @staticmethod
    def after_commit(conn: AsyncConnection, callback: Callable[[], None]) -> None:
        """Run ``callback`` when the write transaction on ``conn`` commits (to wake a worker that should
        see what it wrote: before the commit the worker would find nothing)."""
        conn.info.setdefault(AFTER_COMMIT, []).append(callback)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads in autocommit mode: no BEGIN/COMMIT round trips.

        Reads are single statements, or tolerate a commit landing between two
        of their statements, so they need no transaction of their own.
        """
        async with pooled_connection(self._readers, transaction=False, pause=self.pauses) as conn:
            yield conn

    @property
    def modifying_ctes(self) -> bool:
        """Whether one statement may hold several data-modifying CTEs (PostgreSQL; not SQLite)."""
        return self._sqlite_writer is None

    @asynccontextmanager
    async def statement_write(self, urgent: bool = False) -> AsyncIterator[AsyncConnection]:
        """A connection for writes that are each atomic alone (one statement, or statements that may
        commit one by one): autocommit on PostgreSQL, so no BEGIN/COMMIT round trips; on SQLite a write
        transaction, as ``write`` (the one writer is taken either way)."""
        if self._sqlite_writer is not None:
            async with self.write(urgent) as conn:
                yield conn
            return
        async with self.read() as conn:
            yield conn

    @asynccontextmanager
    async def single_statement(self) -> AsyncIterator[AsyncConnection]:
        """A pooled connection outside any transaction, for one self-contained statement (PostgreSQL)."""
        async with pooled_connection(self.engine, transaction=False) as conn:
            yield conn

    async def ping(self) -> bool:
        async with pooled_connection(self.engine, transaction=False) as conn:
            return (await conn.execute(select(1))).scalar() == 1

    async def lock_key(self, conn: AsyncConnection, key: str) -> None:
        """Serialise transactions that share ``key`` (no-op on SQLite, which serialises writers)."""
        if self.dialect == "postgresql":
            await conn.execute(select(func.pg_advisory_xact_lock(lock_id(key))))

    async def lock_keys(self, conn: AsyncConnection, keys: Iterable[str]) -> None:
        """``lock_key`` for every key, in ascending lock number, in one statement.

        Every caller taking several locks in the same global order means two
        transactions never each hold a lock the other waits for. The numbers
        are passed sorted and ``unnest`` yields them in array order, so the
        locks are taken in that order.
        """
        if self.dialect != "postgresql":
            return
        ids = sorted({lock_id(key) for key in keys})
        if len(ids) == 1:
            await conn.execute(select(func.pg_advisory_xact_lock(ids[0])))
        elif ids:
            number = func.unnest(literal(ids, ARRAY(BigInteger))).column_valued("n")
            await conn.execute(select(func.pg_advisory_xact_lock(number)))

    async def run_write(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """``work`` in a write transaction, run again from the start when the database aborted it
        for a deadlock or serialization failure.

        Each attempt is a fresh transaction and the failed one was rolled back,
        so ``work`` must keep no state between calls. After ``WRITE_ATTEMPTS``
        the client gets a 412 it can retry (hl7.org/fhir/R4/http.html#concurrency),
        not a 500. Other errors propagate at once.
        """
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                async with self.write() as conn:
                    return await work(conn)
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                if attempt == WRITE_ATTEMPTS:
                    raise VersionConflict(
                        f"the write conflicted with concurrent writes {WRITE_ATTEMPTS} times; try again"
                    ) from exc
            await asyncio.sleep(backoff(attempt))
        raise AssertionError("unreachable")

    async def open_pool(self) -> None:
        """Opens every connection of a PostgreSQL pool now, at start-up, instead of at the checkout that
        first finds them all busy.

        The pool has a fixed size and no overflow, and SQLAlchemy opens a connection only when a checkout
        finds none idle: a new backend then costs that request, or the background poll, 25 to 60 ms.
        Under 16 clients reading, a poll that came while all 16 connections were out opened a seventeenth
        inside the measured phase, and one read took 42 to 52 ms against 14 at most for the others
        (BENCHMARKS.md, "The PostgreSQL pool opened at start-up"). HikariCP, the pool HAPI FHIR runs on,
        keeps its pool full from the start in the same way (``minimumIdle`` defaults to the pool's
        size). SQLite's connections open in well under a millisecond, and are left to open when needed.

        Like HikariCP, it does not refuse to start when PostgreSQL takes only some of them (a role's or
        the server's connection limit): it logs how many opened and leaves the rest to open when needed,
        as before. Only when none opens is the error raised, since nothing could be served.
        """
        if self.dialect != "postgresql":
            return
        opening = [self.engine.connect() for _ in range(self.engine.pool.size())]  # type: ignore[attr-defined]
        outcomes = await asyncio.gather(*(connection.start() for connection in opening), return_exceptions=True)
        opened = [outcome for outcome in outcomes if isinstance(outcome, AsyncConnection)]
        for connection in opened:
            await connection.close()  # back to the pool, open
        failed = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if not failed:
            return
        interrupted = [error for error in failed if not isinstance(error, Exception)]  # a cancellation
        if interrupted or not opened:
            raise (interrupted or failed)[0]
        logger.warning(
            "opened %d of the pool's %d PostgreSQL connections at start-up (%s); the others open when needed",
            len(opened),
            len(outcomes),
            type(failed[0]).__name__,
        )

    async def dispose(self) -> None:
        if self.checkpoints is not None:
            await self.checkpoints.wait()
        if self._writer is not None:
            await self._writer.close()
        await self.engine.dispose()


__all__ = ["Database", "create_engine"]
