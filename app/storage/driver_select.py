"""A small SELECT run on the driver connection under SQLAlchemy's, compiled once per backend.

SQLAlchemy's execution of a cached statement (its cache key, parameter
processing, result metadata and row objects) costs about 50 us per
statement, ten times SQLite's own work for an indexed read of a few rows.
Reads made inside every watched write (the targets' rows of chained
Subscriptions, ``app.subscriptions.chains``) pay that on each write, so they
run the statement's SQL, compiled from the Core construct once per backend,
directly on the driver (aiosqlite or asyncpg) in the caller's transaction.

Only for statements whose bound values and result columns need no
conversion by SQLAlchemy's types (text and integers): values go to the
driver as given and rows come back as the driver returns them. A statement
holding a list spread at execution (``IN`` with an expanding parameter)
has no fixed SQL; it is run through SQLAlchemy instead.

These are reads for the server's own decisions (index rows), never
resources for a caller: what leaves the server is selected through the read
gate (``app.storage.gate``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.storage.asyncpg_sql import compile_for_asyncpg
from app.storage.driver import SPREAD_AT_EXECUTION, driver_under


class DriverSelect:
    """One SELECT and its SQL per backend; build one per statement shape and keep it."""

    __slots__ = ("_compiled", "columns", "statement")

    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement
        self.columns: tuple[str, ...] = tuple(str(column.key) for column in statement.selected_columns)
        # dialect name -> (SQL, bind names in order), or None when the SQL is only known at execution
        self._compiled: dict[str, tuple[str, tuple[str, ...]] | None] = {}

    async def fetch(self, conn: AsyncConnection, values: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        """The rows, as tuples in the order of ``columns``."""
        dialect = conn.dialect.name
        if dialect not in self._compiled:
            self._compiled[dialect] = self._compile(conn)
        compiled = self._compiled[dialect]
        if compiled is None:
            return [tuple(row) for row in await conn.execute(self.statement, dict(values))]
        sql, names = compiled
        arguments = [values[name] for name in names]
        driver = await driver_under(conn)
        if dialect == "postgresql":
            records: Sequence[Sequence[Any]] = await driver.fetch(sql, *arguments)
            return records
        cursor = await driver.execute(sql, arguments)
        try:
            rows: Sequence[Sequence[Any]] = await cursor.fetchall()
        finally:
            await cursor.close()
        return rows

    def _compile(self, conn: AsyncConnection) -> tuple[str, tuple[str, ...]] | None:
        if conn.dialect.name == "postgresql":
            for_asyncpg = compile_for_asyncpg(self.statement)
            sql, names = for_asyncpg.sql, for_asyncpg.names
        else:
            compiled = self.statement.compile(dialect=conn.dialect)
            sql, names = compiled.string, tuple(compiled.positiontup or ())
        return None if SPREAD_AT_EXECUTION in sql else (sql, names)
