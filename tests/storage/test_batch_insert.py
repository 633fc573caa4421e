"""Batched inserts (``app.storage.batch_insert``): COPY on PostgreSQL from ``COPY_MIN_ROWS`` rows,
always inside the transaction of the SQLAlchemy connection it is given."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select

from app.storage.batch_insert import COPY_MIN_ROWS, insert_rows
from app.storage.database import Database
from app.storage.index_tables import INDEX_TABLES

STRINGS = INDEX_TABLES["string"]


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database.from_url(database_url)
    yield database
    await database.dispose()


def rows(count: int) -> list[dict[str, object]]:
    return [
        {
            "resource_type": "Patient",
            "resource_id": f"p{n}",
            "param_hash": 7,
            "value_norm": "doe",
            "value_exact": "Doe",
            "combo": None,
        }
        for n in range(count)
    ]


async def stored(db: Database) -> int:
    async with db.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(STRINGS))).scalar_one())


async def test_rows_copied_as_a_connections_first_statement_are_rolled_back_with_it(db: Database) -> None:
    """A connection that has run nothing yet has no transaction on PostgreSQL: the COPY must not commit
    on its own before SQLAlchemy begins one."""
    async with db.engine.connect() as conn:
        await insert_rows(conn, STRINGS, rows(COPY_MIN_ROWS + 6))
        assert int((await conn.execute(select(func.count()).select_from(STRINGS))).scalar_one()) == COPY_MIN_ROWS + 6
        await conn.rollback()
    assert await stored(db) == 0


async def test_rows_copied_in_a_transaction_are_committed_with_it(db: Database) -> None:
    async with db.engine.connect() as conn:
        await insert_rows(conn, STRINGS, rows(COPY_MIN_ROWS + 6))
        await conn.commit()
    assert await stored(db) == COPY_MIN_ROWS + 6
