"""A new version's inserts run on the sqlite3 connection itself, when SQLite runs inline.

A create on SQLite inserts the current row, the history row and one batch
per index table. Through SQLAlchemy each of those statements costs about
200 us of Python (execution context, parameter processing, result object,
the async adapter's greenlet switches) against some 30 us in SQLite:
measured, 2.4 ms of a 2.7 ms create was SQLAlchemy, the driver and
transaction handling (bench/profile_create.py). Here the same statements,
SQLAlchemy Core constructs compiled once per (table, columns) for the SQLite
dialect, run straight on the ``sqlite3`` connection under SQLAlchemy's, in
its open transaction: a rollback of that transaction removes their rows
like any other. Values pass through each column type's own bind processor
(``UTCDateTime``'s naive UTC text, booleans as integers), so the stored rows
are those SQLAlchemy would write.

Only where SQLite's calls run on the event loop thread
(``app.storage.sqlite_inline``, one server process) and the transaction has
not been sent to a worker thread (a large write): elsewhere the ``sqlite3``
connection belongs to aiosqlite's thread, and the statements go through
SQLAlchemy as before. This is the SQLite counterpart of
``app.storage.single_statement``, which runs a create as one statement on
the asyncpg connection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from operator import itemgetter
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.storage.sqlite_inline import InlineConnection

_DIALECT = sqlite.dialect()
_DRIVER = "fhir_inline_sqlite"  # conn.info key: the InlineConnection under a pooled connection, once looked up


@dataclass(frozen=True, slots=True)
class DirectInsert:
    """An INSERT compiled for SQLite: its SQL, the column of each ``?`` in order, and the bind processor
    of each column that has one (by position), so that ``parameters`` calls only those."""

    sql: str
    columns: tuple[str, ...]
    processors: tuple[tuple[int, Callable[[Any], Any]], ...]
    values: Callable[[Mapping[str, Any]], tuple[Any, ...]]  # a row's values in ``?`` order, in one C call

    def parameters(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        values = self.values(row)
        if not self.processors:
            return values
        converted = list(values)
        for position, process in self.processors:
            converted[position] = process(converted[position])
        return tuple(converted)


@cache
def direct_insert(table: Table, columns: tuple[str, ...], keys: tuple[str, ...] = ()) -> DirectInsert:
    """``INSERT INTO table (columns) VALUES (?, ...)``, with ``ON CONFLICT (keys) DO NOTHING`` when
    ``keys`` are given, compiled once."""
    statement = sqlite_insert(table)
    if keys:
        statement = statement.on_conflict_do_nothing(index_elements=list(keys))
    compiled = statement.compile(dialect=_DIALECT, column_keys=list(columns))
    order = tuple(compiled.positiontup or ())
    processors = []
    for position, name in enumerate(order):
        column_type = compiled.binds[name].type
        process = column_type.dialect_impl(_DIALECT).bind_processor(_DIALECT)
        if process is not None:
            processors.append((position, process))
    getter = itemgetter(*order)  # of one key, it gives the value itself, not a tuple
    values = getter if len(order) > 1 else (lambda row: (getter(row),))
    return DirectInsert(compiled.string, order, tuple(processors), values)


async def inline_sqlite(conn: AsyncConnection) -> sqlite3.Connection | None:
    """The ``sqlite3`` connection under ``conn`` when its calls may be made here and now (inline SQLite,
    inside a write transaction that runs on the loop); None otherwise."""
    if conn.dialect.name != "sqlite" or not conn.in_transaction():
        return None
    info = conn.info
    driver = info.get(_DRIVER)
    if driver is None:
        driver = info[_DRIVER] = (await conn.get_raw_connection()).driver_connection
    if not isinstance(driver, InlineConnection) or driver.off_loop:
        return None
    return driver.sqlite_connection


def insert_one(connection: sqlite3.Connection, statement: DirectInsert, row: Mapping[str, Any]) -> int:
    """Run ``statement`` for one row; the number of rows inserted (0 when ON CONFLICT skipped it)."""
    try:
        return connection.execute(statement.sql, statement.parameters(row)).rowcount
    except sqlite3.Error as error:
        raise DBAPIError(statement.sql, None, error) from error


def insert_many(connection: sqlite3.Connection, statement: DirectInsert, rows: Sequence[Mapping[str, Any]]) -> None:
    """Run ``statement`` for each of ``rows`` (one ``executemany``)."""
    try:
        connection.executemany(statement.sql, [statement.parameters(row) for row in rows])
    except sqlite3.Error as error:
        raise DBAPIError(statement.sql, None, error) from error


__all__ = ["DirectInsert", "direct_insert", "inline_sqlite", "insert_many", "insert_one"]
