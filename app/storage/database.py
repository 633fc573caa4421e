"""Engine creation and transaction scopes, with the backend differences kept here.

Each FHIR interaction is one database transaction. On SQLite every write
transaction starts with ``BEGIN IMMEDIATE`` (so two writers never both read and
then fail to upgrade their lock) and, within one process, writes also queue on
an asyncio lock instead of spinning on ``SQLITE_BUSY``. On PostgreSQL the
default READ COMMITTED isolation is enough: optimistic locking compares the
version inside the UPDATE, and conditional creates take a transaction-scoped
advisory lock on their criteria.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from app.storage.sqlite_inline import connect_inline

WRITE_OPTION = "fhir_write"
AUTOCOMMIT_OPTION = "fhir_autocommit"


def _ensure_sqlite_directory(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def create_engine(url: str, pool_size: int = 20, sqlite_inline: bool = False) -> AsyncEngine:
    """Create the async engine for ``url`` with the per-backend settings.

    ``sqlite_inline`` runs SQLite calls on the event loop thread (see
    ``app.storage.sqlite_inline``); only for a single server process.
    """
    if url.startswith("sqlite"):
        _ensure_sqlite_directory(url)
        connect_args: dict[str, Any] = {"timeout": 30}
        if sqlite_inline:
            connect_args["async_creator_fn"] = connect_inline
        engine = create_async_engine(
            url, connect_args=connect_args, pool_size=pool_size, max_overflow=0, pool_reset_on_return=None
        )
        _configure_sqlite(engine)
        return engine
    # Every transaction is closed explicitly by Database.write/read, so the pool
    # need not send a ROLLBACK each time a connection comes back. No overflow:
    # connections opened and closed under load cost far more than a short wait
    # for a pooled one.
    #
    # asyncpg prepares every statement, and after five runs PostgreSQL may switch
    # a prepared search to a generic plan that ignores the values: with skewed
    # data (one practitioner owning thousands of tasks, another none) such a
    # plan can be a hundred times slower. Searches are planned per execution.
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_pre_ping=False,
        pool_reset_on_return=None,
        connect_args={"server_settings": {"plan_cache_mode": "force_custom_plan"}},
    )


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        options = conn.get_execution_options()
        if options.get(AUTOCOMMIT_OPTION):
            return
        if options.get(WRITE_OPTION):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


class Database:
    """The engine plus read and write transaction scopes."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._sqlite_writer = asyncio.Lock() if self.dialect == "sqlite" else None

    @classmethod
    def from_url(cls, url: str, pool_size: int = 20, sqlite_inline: bool = False) -> Database:
        return cls(create_engine(url, pool_size, sqlite_inline))

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction: committed on success, rolled back on any error."""
        if self._sqlite_writer is None:
            async with self.engine.begin() as conn:
                yield conn
            return
        async with self._sqlite_writer, self.engine.connect() as conn:
            await conn.execution_options(**{WRITE_OPTION: True})
            async with conn.begin():
                yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads in autocommit mode: no BEGIN/COMMIT round trips.

        Reads are single statements, or tolerate a commit landing between two
        of their statements, so they need no transaction of their own.
        """
        async with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                await conn.execution_options(isolation_level="AUTOCOMMIT")
            else:
                await conn.execution_options(**{AUTOCOMMIT_OPTION: True})
            yield conn

    @asynccontextmanager
    async def single_statement(self) -> AsyncIterator[AsyncConnection]:
        """A pooled connection outside any transaction, for one self-contained statement (PostgreSQL)."""
        async with self.engine.connect() as conn:
            yield conn

    async def ping(self) -> bool:
        async with self.engine.connect() as conn:
            return (await conn.execute(select(1))).scalar() == 1

    async def lock_key(self, conn: AsyncConnection, key: str) -> None:
        """Serialise transactions that share ``key`` (no-op on SQLite, which serialises writers)."""
        if self.dialect == "postgresql":
            digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
            await conn.execute(select(func.pg_advisory_xact_lock(int.from_bytes(digest, "big", signed=True))))

    async def dispose(self) -> None:
        await self.engine.dispose()


__all__ = ["Database", "create_engine"]
