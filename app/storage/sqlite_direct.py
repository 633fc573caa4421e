"""A new version's statements, and reads of the current row, run on the sqlite3 connection itself,
when SQLite runs inline.

A create on SQLite inserts the current row, the history row and one batch
per index table. Through SQLAlchemy each of those statements costs about
200 us of Python (execution context, parameter processing, result object,
the async adapter's greenlet switches) against some 30 us in SQLite:
measured, 2.4 ms of a 2.7 ms create was SQLAlchemy, the driver and
transaction handling (bench/profile_create.py). Here the same statements,
SQLAlchemy Core constructs compiled once per (table, columns) for the SQLite
dialect, run straight on the ``sqlite3`` connection under SQLAlchemy's, in
the write transaction the kept writer began there (``app.storage.sqlite_writer``):
a rollback of that transaction removes their rows like any other. Values
pass through each column type's own bind processor (``UTCDateTime``'s naive
UTC text, booleans as integers), so the stored rows are those SQLAlchemy
would write.

Only where SQLite's calls run on the event loop thread
(``app.storage.sqlite_inline``, one server process) and the transaction has
not been sent to a worker thread (a large write): elsewhere the ``sqlite3``
connection belongs to aiosqlite's thread, and the statements go through
SQLAlchemy as before. This is the SQLite counterpart of
``app.storage.single_statement``, which runs a create as one statement on
the asyncpg connection.

An update's UPDATE of the current row (``repository.replace_version``) and
the DELETEs of its old index rows (``index_writer.replace_index_rows``) run
there the same way (``DirectStatement``), their values through the bind
processors and their row counts read from the cursor.

The read of a current row (``repository.read_current`` with the read gate
open: every FHIR read, and the row an update replaces) runs here too
(``DirectStatement``): in a write transaction as its other statements do, and
in a read scope as a statement of its own, fetched to its end so that it
keeps no read snapshot, as SQLAlchemy's autocommit read would. Each result
column passes through its type's result processor (``UTCDateTime`` back to
an aware time, integers back to booleans). Through SQLAlchemy a FHIR read
on inline SQLite took 230 to 300 us more of the server's CPU
(BENCHMARKS.md, "Reads of the current row on sqlite3").
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from operator import itemgetter
from typing import Any

from sqlalchemy import Delete, Select, Table, Update
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.compiler import SQLCompiler

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
    getter = itemgetter(*order)  # of one key, it gives the value itself, not a tuple
    values = getter if len(order) > 1 else (lambda row: (getter(row),))
    return DirectInsert(compiled.string, order, _bind_processors(compiled, order), values)


@dataclass(frozen=True, slots=True)
class DirectStatement:
    """A SELECT, UPDATE or DELETE compiled for SQLite: its SQL, the bound value of each ``?`` in order
    (with its bind processor, if any), and for a SELECT the result processor of each selected column
    that has one (by position): its rows are those SQLAlchemy would return, as tuples."""

    sql: str
    names: tuple[str, ...]
    binds: tuple[tuple[int, Callable[[Any], Any]], ...]
    results: tuple[tuple[int, Callable[[Any], Any]], ...]

    def rows(self, connection: sqlite3.Connection, values: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """A SELECT's rows."""
        try:
            cursor = connection.execute(self.sql, self._arguments(values))
            try:
                fetched = cursor.fetchall()  # to its end: an unfinished statement would keep its read snapshot
            finally:
                cursor.close()
        except sqlite3.Error as error:
            raise DBAPIError(self.sql, None, error) from error
        if not self.results:
            return fetched
        rows = []
        for row in fetched:
            converted = list(row)
            for position, process in self.results:
                converted[position] = process(converted[position])
            rows.append(tuple(converted))
        return rows

    def run(self, connection: sqlite3.Connection, values: Mapping[str, Any]) -> int:
        """An UPDATE's or DELETE's number of rows changed."""
        try:
            return connection.execute(self.sql, self._arguments(values)).rowcount
        except sqlite3.Error as error:
            raise DBAPIError(self.sql, None, error) from error

    def _arguments(self, values: Mapping[str, Any]) -> list[Any]:
        arguments = [values[name] for name in self.names]
        for position, process in self.binds:
            arguments[position] = process(arguments[position])
        return arguments


@cache
def direct_statement(statement: Select[Any] | Update | Delete) -> DirectStatement:
    """``statement`` (built once, with bind parameters) compiled once for SQLite."""
    compiled = statement.compile(dialect=_DIALECT)
    names = tuple(compiled.positiontup or ())
    results = []
    if isinstance(statement, Select):
        for position, column in enumerate(statement.selected_columns):
            process = column.type.dialect_impl(_DIALECT).result_processor(_DIALECT, None)
            if process is not None:
                results.append((position, process))
    return DirectStatement(compiled.string, names, _bind_processors(compiled, names), tuple(results))


def _bind_processors(compiled: SQLCompiler, names: tuple[str, ...]) -> tuple[tuple[int, Callable[[Any], Any]], ...]:
    """(position, bind processor) of each ``?`` whose type converts its value for SQLite (``UTCDateTime``'s
    naive UTC text, booleans as integers); the others go as they are."""
    processors = []
    for position, name in enumerate(names):
        process = compiled.binds[name].type.dialect_impl(_DIALECT).bind_processor(_DIALECT)
        if process is not None:
            processors.append((position, process))
    return tuple(processors)


async def inline_sqlite(conn: AsyncConnection) -> sqlite3.Connection | None:
    """The ``sqlite3`` connection under ``conn`` when its calls may be made here and now (inline SQLite,
    inside a write transaction that runs on the loop); None otherwise. The transaction is the driver's:
    on the kept writer it is begun on ``sqlite3`` (``app.storage.sqlite_writer``), and SQLAlchemy records
    one only once a statement has gone through it."""
    connection = await inline_sqlite_any(conn)
    return connection if connection is not None and connection.in_transaction else None


async def inline_sqlite_any(conn: AsyncConnection) -> sqlite3.Connection | None:
    """The ``sqlite3`` connection under ``conn`` when its calls run on the loop (inline SQLite, and not
    sent off the loop), in a write transaction or in a read scope's autocommit; None otherwise. A read
    made on it in a read scope is a statement of its own, as through SQLAlchemy there."""
    driver = await inline_driver(conn)
    if driver is None or driver.off_loop:
        return None
    return driver.sqlite_connection


async def inline_driver(conn: AsyncConnection) -> InlineConnection | None:
    """The ``InlineConnection`` under ``conn`` (inline SQLite; its calls may have been sent off the loop),
    looked up once per pooled connection; None on PostgreSQL or aiosqlite with its thread."""
    if conn.dialect.name != "sqlite":
        return None
    info = conn.info
    driver = info.get(_DRIVER)
    if driver is None:
        driver = info[_DRIVER] = (await conn.get_raw_connection()).driver_connection
    return driver if isinstance(driver, InlineConnection) else None


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


__all__ = [
    "DirectInsert",
    "DirectStatement",
    "direct_insert",
    "direct_statement",
    "inline_driver",
    "inline_sqlite",
    "inline_sqlite_any",
    "insert_many",
    "insert_one",
]
