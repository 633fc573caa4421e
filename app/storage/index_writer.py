"""Replace a resource's search-index rows inside the write's transaction."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import bindparam, delete, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from app.storage.batch_insert import CHUNK_ROWS, insert_in_chunks, insert_rows
from app.storage.index_tables import INDEX_TABLES
from app.storage.sqlite_direct import direct_insert, direct_statement, inline_sqlite, insert_many

_DELETES = {
    name: delete(table).where(table.c.resource_type == bindparam("rt"), table.c.resource_id == bindparam("rid"))
    for name, table in INDEX_TABLES.items()
}
_INSERTS = {name: insert(table) for name, table in INDEX_TABLES.items()}


async def replace_index_rows(
    conn: AsyncConnection,
    resource_type: str,
    resource_id: str,
    rows: dict[str, list[dict[str, Any]]],
    tables: Iterable[str] = INDEX_TABLES,
    is_new: bool = False,
) -> None:
    """Delete the old rows from ``tables`` (the tables the type can use) and insert ``rows``.

    ``is_new`` skips the deletes for a resource that cannot have rows yet. On inline SQLite the
    deletes and inserts run on the sqlite3 connection (``app.storage.sqlite_direct``).
    """
    inline = await inline_sqlite(conn)
    if not is_new:
        owner = {"rt": resource_type, "rid": resource_id}
        for name in tables:
            if inline is not None:
                direct_statement(_DELETES[name]).run(inline, owner)
            else:
                await conn.execute(_DELETES[name], owner)
    direct = inline if _fits_one_call(rows) else None
    for name, table_rows in rows.items():
        if direct is not None:
            if table_rows:
                insert_many(direct, direct_insert(INDEX_TABLES[name], tuple(table_rows[0])), table_rows)
        else:
            await insert_in_chunks(conn, _INSERTS[name], table_rows)


def _fits_one_call(rows: dict[str, list[dict[str, Any]]]) -> bool:
    """Whether a resource's rows are few enough to insert without giving the event loop a pass
    (``insert_in_chunks`` gives one every ``CHUNK_ROWS``)."""
    return sum(len(table_rows) for table_rows in rows.values()) <= CHUNK_ROWS


async def insert_index_rows(conn: AsyncConnection, rows: dict[str, list[dict[str, Any]]]) -> None:
    """Insert rows of any number of new resources: one batch per table."""
    for name, table_rows in rows.items():
        await insert_rows(conn, INDEX_TABLES[name], table_rows)


async def delete_index_rows_many(
    conn: AsyncConnection, resource_type: str, resource_ids: list[str], tables: Iterable[str] = INDEX_TABLES
) -> None:
    """Remove every index row of these resources (one statement per table)."""
    for name in tables:
        table = INDEX_TABLES[name]
        await conn.execute(
            delete(table).where(table.c.resource_type == resource_type, table.c.resource_id.in_(resource_ids))
        )
