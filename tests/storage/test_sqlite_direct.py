"""A new version's inserts, and reads of the current row, on the sqlite3 connection itself store and
return what SQLAlchemy would.

Inline SQLite (one server process) runs ``insert_first`` and the index inserts
on the ``sqlite3`` connection (``app.storage.sqlite_direct``); aiosqlite's
threaded mode, and a transaction sent to a worker thread, go through
SQLAlchemy. The same writes in both modes must leave the same rows, byte for
byte, and behave the same on a taken id and a rollback.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, insert

from app.errors import FhirError
from app.storage.database import Database
from app.storage.index_tables import INDEX_TABLES
from app.storage.index_writer import replace_index_rows
from app.storage.repository import _READ_CURRENT as READ_CURRENT
from app.storage.repository import AlreadyExists, StoredVersion, insert_first, read_current, replace_version
from app.storage.row_keys import RowKeys
from app.storage.sqlite_direct import direct_insert, direct_statement, inline_sqlite, inline_sqlite_any
from app.storage.tables import resources

# a time given in another zone: stored as naive UTC text either way
WRITTEN_AT = datetime(2026, 12, 3, 15, 4, 5, 123456, tzinfo=timezone(timedelta(hours=2)))
TOKEN_ROW = {
    "resource_type": "Task",
    "resource_id": "t",
    "param_hash": -42,
    "system": "http://hl7.org/fhir/task-status",
    "code": "requested",
    "display_norm": None,
    "combo": None,
}


@pytest.fixture
def database_url(sqlite_template: Path, tmp_path: Path) -> str:
    """A migrated, empty SQLite database (this module is about SQLite only)."""
    target = tmp_path / "fhir.sqlite"
    shutil.copyfile(sqlite_template, target)
    return f"sqlite+aiosqlite:///{target}"


@pytest.fixture(params=["threaded", "inline"])
async def sqlite_db(database_url: str, request: pytest.FixtureRequest) -> AsyncIterator[Database]:
    database = Database.from_url(database_url, sqlite_inline=request.param == "inline")
    yield database
    await database.dispose()


def version(resource_id: str, number: int = 1) -> StoredVersion:
    return StoredVersion("Task", resource_id, number, WRITTEN_AT, False, b'{"resourceType":"Task"}', "POST")


def token_rows(resource_id: str) -> dict[str, list[dict[str, Any]]]:
    assert set(TOKEN_ROW) == {column.name for column in INDEX_TABLES["token"].columns}
    return {"token": [{**TOKEN_ROW, "resource_id": resource_id}]}


RAW_SELECTS = {
    "resources": "SELECT * FROM resources",
    "resource_history": "SELECT * FROM resource_history",
    "idx_token": "SELECT * FROM idx_token",
}


def raw_rows(database_url: str, table: str) -> list[tuple[Any, ...]]:
    """The rows as SQLite holds them, read without SQLAlchemy's result processing."""
    with sqlite3.connect(database_url.removeprefix("sqlite+aiosqlite:///")) as connection:
        return sorted(connection.execute(RAW_SELECTS[table]).fetchall(), key=repr)


async def test_both_modes_store_the_same_bytes(database_url: str, sqlite_db: Database) -> None:
    async with sqlite_db.write() as conn:
        direct = await inline_sqlite(conn)
        assert (direct is not None) == sqlite_db.pauses  # the sqlite3 connection is used only inline
        await insert_first(conn, version("t"), RowKeys("Patient/p", "requested"))
        await replace_index_rows(conn, "Task", "t", token_rows("t"), is_new=True)
    assert raw_rows(database_url, "resources") == [
        ("Task", "t", 1, "2026-12-03 13:04:05.123456", 0, b'{"resourceType":"Task"}', "Patient/p", "requested")
    ]
    assert raw_rows(database_url, "resource_history") == [
        ("Task", "t", 1, "2026-12-03 13:04:05.123456", 0, "POST", b'{"resourceType":"Task"}')
    ]
    assert len(raw_rows(database_url, "idx_token")) == 1


async def test_both_modes_update_to_the_same_bytes(database_url: str, sqlite_db: Database) -> None:
    """An update: the current row moved to version 2 (its keys too), a history row added, the old index
    rows deleted and the new inserted; and an update from a version that is not current changes nothing."""
    async with sqlite_db.write() as conn:
        await insert_first(conn, version("t"), RowKeys("Patient/p", "requested"))
        await replace_index_rows(conn, "Task", "t", token_rows("t"), is_new=True)
    later = StoredVersion("Task", "t", 2, WRITTEN_AT + timedelta(seconds=1), True, None, "DELETE")
    async with sqlite_db.write() as conn:
        assert (await inline_sqlite(conn) is not None) == sqlite_db.pauses
        assert not await replace_version(conn, 2, later, RowKeys())  # version 2 is not the current one
        assert await replace_version(conn, 1, later, RowKeys())
        await replace_index_rows(conn, "Task", "t", {"token": []}, is_new=False)
    assert raw_rows(database_url, "resources") == [("Task", "t", 2, "2026-12-03 13:04:06.123456", 1, None, None, None)]
    assert raw_rows(database_url, "resource_history") == [
        ("Task", "t", 1, "2026-12-03 13:04:05.123456", 0, "POST", b'{"resourceType":"Task"}'),
        ("Task", "t", 2, "2026-12-03 13:04:06.123456", 1, "DELETE", None),
    ]
    assert raw_rows(database_url, "idx_token") == []


async def test_the_direct_insert_matches_sqlalchemys_own(database_url: str, sqlite_db: Database) -> None:
    """The reference: the same row inserted by SQLAlchemy's execution path, read back raw."""
    row = {
        "resource_type": "Task",
        "id": "ref",
        "version_id": 1,
        "last_updated": WRITTEN_AT,
        "deleted": False,
        "body": b"{}",
        "subject_ref": None,
        "status_code": None,
    }
    async with sqlite_db.write() as conn:
        await conn.execute(insert(resources), row)
        await insert_first(conn, StoredVersion("Task", "new", 1, WRITTEN_AT, False, b"{}"), RowKeys())
    by_id = {stored[1]: stored[2:] for stored in raw_rows(database_url, "resources")}
    assert by_id["new"] == by_id["ref"]


async def test_a_taken_id_is_already_exists_and_the_transaction_stays_usable(sqlite_db: Database) -> None:
    async with sqlite_db.write() as conn:
        await insert_first(conn, version("t"), RowKeys())
        with pytest.raises(AlreadyExists):
            await insert_first(conn, version("t"), RowKeys())
        assert await replace_version(conn, 1, version("t", 2), RowKeys())


async def test_a_rollback_removes_the_direct_inserts(database_url: str, sqlite_db: Database) -> None:
    class Refused(FhirError):
        pass

    with pytest.raises(Refused):
        async with sqlite_db.write() as conn:
            await insert_first(conn, version("t"), RowKeys())
            await replace_index_rows(conn, "Task", "t", token_rows("t"), is_new=True)
            raise Refused("a hook refuses the write")
    for table in ("resources", "resource_history", "idx_token"):
        assert raw_rows(database_url, table) == []


async def test_a_transaction_sent_off_the_loop_and_a_read_are_not_direct(sqlite_db: Database) -> None:
    async with sqlite_db.read() as conn:
        assert await inline_sqlite(conn) is None  # outside a write transaction
    async with sqlite_db.write() as conn:
        await Database.run_off_loop(conn)
        assert await inline_sqlite(conn) is None  # its statements go to the worker thread through aiosqlite
        await insert_first(conn, version("t"), RowKeys())


def test_an_insert_is_compiled_once_per_table_and_columns() -> None:
    columns = ("resource_type", "id", "version_id", "last_updated", "deleted", "body", "subject_ref", "status_code")
    first = direct_insert(resources, columns, ("resource_type", "id"))
    assert direct_insert(resources, columns, ("resource_type", "id")) is first
    assert first.sql.startswith("INSERT INTO resources (resource_type, id, version_id, last_updated, deleted, body")
    assert first.sql.endswith("ON CONFLICT (resource_type, id) DO NOTHING")
    assert first.columns == columns
    assert first.parameters(
        dict(zip(columns, ("Task", "t", 1, datetime(2026, 1, 1, tzinfo=UTC), True, b"{}", None, None), strict=True))
    ) == ("Task", "t", 1, "2026-01-01 00:00:00.000000", 1, b"{}", None, None)


@pytest.fixture
async def inline_db(database_url: str) -> AsyncIterator[Database]:
    database = Database.from_url(database_url, sqlite_inline=True)
    yield database
    await database.dispose()


class Executed:
    """Statements SQLAlchemy executed, and statements the sqlite3 connections ran (trace callbacks)."""

    def __init__(self) -> None:
        self.through_sqlalchemy: list[str] = []
        self.on_sqlite: list[str] = []

    def record(self, _conn: object, _cursor: object, statement: str, *_: object) -> None:
        self.through_sqlalchemy.append(statement)


async def test_a_read_of_the_current_row_on_sqlite3_returns_what_sqlalchemy_returns(inline_db: Database) -> None:
    async with inline_db.write() as conn:
        await insert_first(conn, version("t"), RowKeys())
        await insert_first(conn, StoredVersion("Task", "gone", 2, WRITTEN_AT, True, None, "DELETE"), RowKeys())
    for resource_id in ("t", "gone", "unknown"):
        async with inline_db.read() as conn:
            direct = await inline_sqlite_any(conn)
            assert direct is not None
            rows = direct_statement(READ_CURRENT).rows(direct, {"rt": "Task", "rid": resource_id})
            through_sqlalchemy = [
                tuple(row) for row in await conn.execute(READ_CURRENT, {"rt": "Task", "rid": resource_id})
            ]
        assert rows == through_sqlalchemy
    assert rows == []
    assert await read_stored(inline_db, "t") == StoredVersion(
        "Task", "t", 1, WRITTEN_AT.astimezone(UTC), False, b'{"resourceType":"Task"}'
    )
    assert await read_stored(inline_db, "gone") == StoredVersion(
        "Task", "gone", 2, WRITTEN_AT.astimezone(UTC), True, None
    )


async def read_stored(db: Database, resource_id: str) -> StoredVersion | None:
    async with db.read() as conn:
        return await read_current(conn, "Task", resource_id)


async def test_a_read_scope_reads_the_current_row_on_sqlite3_and_leaves_no_transaction(inline_db: Database) -> None:
    async with inline_db.write() as conn:
        await insert_first(conn, version("t"), RowKeys())
    executed = Executed()
    event.listen(inline_db.engine.sync_engine, "before_cursor_execute", executed.record)
    try:
        async with inline_db.read() as conn:
            direct = await inline_sqlite_any(conn)
            assert direct is not None
            direct.set_trace_callback(executed.on_sqlite.append)
            found = await read_current(conn, "Task", "t")
            assert found is not None and found.version_id == 1
            assert not direct.in_transaction  # the statement ran to its end: no read snapshot kept
            direct.set_trace_callback(None)
    finally:
        event.remove(inline_db.engine.sync_engine, "before_cursor_execute", executed.record)
    assert executed.through_sqlalchemy == []
    assert [statement.split()[0] for statement in executed.on_sqlite] == ["SELECT"]


async def test_a_write_transaction_reads_its_own_row_on_sqlite3(inline_db: Database) -> None:
    async with inline_db.write() as conn:
        await insert_first(conn, version("t"), RowKeys())
        assert await inline_sqlite_any(conn) is not None
        found = await read_current(conn, "Task", "t")  # not committed yet: only this transaction sees it
        assert found is not None and found.id == "t"
        assert await read_stored(inline_db, "t") is None


async def test_a_read_in_a_transaction_sent_off_the_loop_goes_through_sqlalchemy(inline_db: Database) -> None:
    async with inline_db.write() as conn:
        await insert_first(conn, version("t"), RowKeys())
        await Database.run_off_loop(conn)
        assert await inline_sqlite_any(conn) is None
        found = await read_current(conn, "Task", "t")
        assert found is not None and found.id == "t"
