"""Versioned storage on both backends: optimistic locking, no reused or skipped versions."""

from __future__ import annotations

import asyncio

import pytest

from app.interactions.context import utc_now
from app.interactions.create import create
from app.interactions.request_context import RequestContext
from app.interactions.update import update
from app.main import build_context
from app.storage.database import Database
from app.storage.gate import ReadGate
from app.storage.repository import (
    _READ_CURRENT,
    AlreadyExists,
    StoredVersion,
    insert_first,
    read_current,
    read_history,
    read_version,
    replace_version,
)
from app.storage.row_keys import NO_KEYS


def version(n: int, body: bytes | None = b"{}", rid: str = "t1") -> StoredVersion:
    return StoredVersion("Task", rid, n, utc_now(), body is None, body, "PUT")


async def test_a_read_of_the_current_row_gives_what_sqlalchemy_gives(db: Database) -> None:
    """On PostgreSQL an open gate's read runs on asyncpg, in no transaction, and on inline SQLite on the
    sqlite3 connection; its version is the one SQLAlchemy's own execution of the statement gives, to the
    types of its fields."""
    on_the_driver = db.dialect == "postgresql" or db.pauses  # (pauses: inline SQLite)
    async with db.write() as conn:
        await insert_first(conn, version(1, b'{"a":1}'), NO_KEYS)
        await insert_first(conn, version(1, None, rid="gone"), NO_KEYS)
    for rid in ("t1", "gone"):
        async with db.read() as conn:
            read = await read_current(conn, "Task", rid)
            # SQLAlchemy's own execution would have begun its (autocommit) transaction
            assert conn.in_transaction() is not on_the_driver
            row = (await conn.execute(_READ_CURRENT, {"rt": "Task", "rid": rid})).one()
        assert read == StoredVersion(*row)
        assert [type(value) for value in vars_of(read)] == [type(value) for value in vars_of(StoredVersion(*row))]
        assert read.last_updated.utcoffset() is not None and read.last_updated.utcoffset().total_seconds() == 0
    async with db.read() as conn:
        assert await read_current(conn, "Task", "missing") is None
        closed = ReadGate(compartment=("Patient", "p1"))  # a Task of no patient is outside it
        assert await read_current(conn, "Task", "t1", closed) is None


def vars_of(stored: StoredVersion) -> list[object]:
    return [getattr(stored, name) for name in stored.__slots__]


async def test_insert_then_read_current_and_version(db: Database) -> None:
    async with db.write() as conn:
        await insert_first(conn, version(1, b'{"a":1}'), NO_KEYS)
    async with db.read() as conn:
        current = await read_current(conn, "Task", "t1")
        first = await read_version(conn, "Task", "t1", 1)
    assert current is not None and current.body == b'{"a":1}' and current.version_id == 1
    assert first is not None and first.body == b'{"a":1}'


async def test_second_insert_of_same_id_raises_and_first_survives(db: Database) -> None:
    async with db.write() as conn:
        await insert_first(conn, version(1, b'{"a":1}'), NO_KEYS)
    with pytest.raises(AlreadyExists):
        async with db.write() as conn:
            await insert_first(conn, version(1, b'{"a":2}'), NO_KEYS)
    async with db.read() as conn:
        current = await read_current(conn, "Task", "t1")
    assert current is not None and current.body == b'{"a":1}'


async def test_replace_version_compares_expected_version(db: Database) -> None:
    async with db.write() as conn:
        await insert_first(conn, version(1), NO_KEYS)
    async with db.write() as conn:
        assert await replace_version(conn, 1, version(2), NO_KEYS) is True
    async with db.write() as conn:
        assert await replace_version(conn, 1, version(2, b'{"late":true}'), NO_KEYS) is False
    async with db.read() as conn:
        rows = await read_history(conn, "Task", "t1", None, None, 10)
    assert [r.version_id for r in rows] == [2, 1]


async def test_failed_transaction_leaves_nothing(db: Database) -> None:
    with pytest.raises(RuntimeError):
        async with db.write() as conn:
            await insert_first(conn, version(1, rid="doomed"), NO_KEYS)
            raise RuntimeError("fail after the insert")
    async with db.read() as conn:
        assert await read_current(conn, "Task", "doomed") is None
        assert await read_history(conn, "Task", "doomed", None, None, 10) == []


async def test_concurrent_updates_without_if_match_all_land_in_sequence(db: Database) -> None:
    ctx = build_context(db)
    task = {"resourceType": "Task", "status": "requested", "intent": "order"}
    created = await create(ctx, RequestContext(), "Task", task)
    rid = created.stored.id
    results = await asyncio.gather(
        *(update(ctx, RequestContext(), "Task", rid, {**task, "id": rid, "description": f"w{i}"}) for i in range(12))
    )
    assert sorted(r.stored.version_id for r in results) == list(range(2, 14))
    async with db.read() as conn:
        history = await read_history(conn, "Task", rid, None, None, 100)
    assert [h.version_id for h in history] == list(range(13, 0, -1))
