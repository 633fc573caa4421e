"""A SELECT run on the driver connection: the rows SQLAlchemy would return, inside the caller's
transaction, on SQLite (inline and threaded aiosqlite) and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import bindparam, insert, select

from app.storage.database import Database
from app.storage.driver_select import DriverSelect
from app.storage.index_tables import INDEX_TABLES

STRINGS = INDEX_TABLES["string"]
C = STRINGS.c


def row(resource_id: str, value: str, param_hash: int = 7) -> dict[str, object]:
    return {
        "resource_type": "Patient",
        "resource_id": resource_id,
        "param_hash": param_hash,
        "value_norm": value.lower(),
        "value_exact": value,
        "combo": None,
    }


SHORT = DriverSelect(
    select(STRINGS).where(
        C.resource_type == bindparam("type"),
        C.resource_id.in_([bindparam("id0"), bindparam("id1")]),
        C.param_hash == bindparam("hash"),
    )
)
SPREAD = DriverSelect(
    select(STRINGS).where(C.resource_type == bindparam("type"), C.resource_id.in_(bindparam("ids", expanding=True)))
)


async def test_the_rows_are_those_sqlalchemy_returns_and_include_the_open_transactions_writes(
    db: Database,
) -> None:
    async with db.write() as conn:
        await conn.execute(insert(STRINGS), [row("a", "Doe"), row("b", "Roe"), row("c", "Poe"), row("a", "X", 8)])
        values = {"type": "Patient", "id0": "a", "id1": "b", "hash": 7}
        fetched = sorted(tuple(r) for r in await SHORT.fetch(conn, values))
        expected = sorted(tuple(r) for r in await conn.execute(SHORT.statement, values))
    assert fetched == expected
    assert [dict(zip(SHORT.columns, r, strict=True))["value_exact"] for r in fetched] == ["Doe", "Roe"]


async def test_a_list_spread_at_execution_runs_through_sqlalchemy_with_the_same_rows(db: Database) -> None:
    async with db.write() as conn:
        await conn.execute(insert(STRINGS), [row(name, name.title()) for name in "abcdef"])
        fetched = await SPREAD.fetch(conn, {"type": "Patient", "ids": ["a", "c", "e", "f", "z"]})
    assert sorted(dict(zip(SPREAD.columns, r, strict=True))["resource_id"] for r in fetched) == ["a", "c", "e", "f"]


async def test_a_rolled_back_transaction_leaves_nothing_the_driver_read_could_see(db: Database) -> None:
    with pytest.raises(RuntimeError):
        async with db.write() as conn:
            await conn.execute(insert(STRINGS), [row("a", "Doe")])
            assert len(await SHORT.fetch(conn, {"type": "Patient", "id0": "a", "id1": "a", "hash": 7})) == 1
            raise RuntimeError("roll back")
    async with db.read() as conn:
        assert list(await SHORT.fetch(conn, {"type": "Patient", "id0": "a", "id1": "a", "hash": 7})) == []
