"""The driver connection (aiosqlite or asyncpg) under a SQLAlchemy one, for the few statements that run
on it directly: COPY, the single-statement writes, small reads inside every watched write."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

# in SQL compiled from a construct: a list SQLAlchemy spreads into parameters only as it executes, so the
# SQL cannot be run as it is
SPREAD_AT_EXECUTION = "__[POSTCOMPILE_"


async def driver_under(conn: AsyncConnection) -> Any:
    """The driver connection under ``conn``, inside ``conn``'s transaction unless ``conn`` is in
    autocommit mode (``Database.read``, ``statement_write``): on PostgreSQL SQLAlchemy begins a
    transaction (explicitly or not) only with its first statement, so one is run first when the driver
    is not in a transaction yet. Otherwise a COPY would commit on its own and ``conn``'s rollback would
    not remove its rows."""
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None and conn.sync_connection is not None
    if (
        conn.dialect.name == "postgresql"
        and not driver.is_in_transaction()
        and conn.sync_connection.get_execution_options().get("isolation_level") != "AUTOCOMMIT"
    ):
        await conn.execute(select(1))
    return driver


def in_autocommit(conn: AsyncConnection) -> bool:
    """Whether ``conn`` runs each statement on its own (``Database.read``, ``statement_write``): then a
    statement on the driver connection is where SQLAlchemy's would have run, in no transaction."""
    sync = conn.sync_connection
    return sync is not None and sync.get_execution_options().get("isolation_level") == "AUTOCOMMIT"
