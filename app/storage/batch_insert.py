"""Insert many rows into one table in the caller's transaction, as cheaply as the backend allows.

On PostgreSQL a large batch goes through binary ``COPY`` on the asyncpg
connection under the SQLAlchemy one: about half the cost of a batched
INSERT, most of which is per-row parameter handling in the driver layers.
COPY runs inside the open transaction, so a rollback removes its rows like
any other write. Small batches and SQLite use an ordinary executemany.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import Insert, Table, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from app.storage.driver import driver_under

# Below this many rows COPY's own set-up round trip costs more than it saves.
COPY_MIN_ROWS = 64


# Rows per executemany: preparing and inserting tens of thousands at once (a Patient with 10,000 names, a
# $reindex batch) holds the event loop for a second on SQLite, whose calls run on the loop thread
# (``app.storage.sqlite_inline``); between chunks the loop serves others.
CHUNK_ROWS = 2000


async def insert_rows(conn: AsyncConnection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` (dicts with the same keys) into ``table``."""
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        await insert_in_chunks(conn, insert(table), rows)
        return
    if len(rows) < COPY_MIN_ROWS:
        await conn.execute(insert(table), rows)
        return
    driver = await driver_under(conn)  # in the caller's transaction: a rollback removes the copied rows
    columns = list(rows[0])
    await driver.copy_records_to_table(
        table.name, records=[tuple(row[c] for c in columns) for row in rows], columns=columns
    )


async def insert_in_chunks(conn: AsyncConnection, statement: Insert, rows: list[dict[str, Any]]) -> None:
    """``statement`` executed for ``rows``, ``CHUNK_ROWS`` at a time, the event loop free in between."""
    for start in range(0, len(rows), CHUNK_ROWS):
        if start:
            await asyncio.sleep(0)
        await conn.execute(statement, rows[start : start + CHUNK_ROWS])
