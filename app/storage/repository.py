"""Versioned resource storage over one AsyncConnection (SQLAlchemy Core).

Every write adds a row to ``resource_history``; the primary key
(type, id, version) there makes a reused version impossible. Updates move the
current row with ``UPDATE ... WHERE version_id = :expected``, so of two
concurrent writers that read the same version exactly one wins; the loser
sees ``rowcount == 0`` and the interaction decides (412 with If-Match,
re-read and retry without).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, insert, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from app.storage.asyncpg_sql import compile_for_asyncpg
from app.storage.batch_insert import insert_rows
from app.storage.driver import in_autocommit
from app.storage.gate import OPEN, ReadGate
from app.storage.row_keys import RowKeys
from app.storage.sqlite_direct import direct_insert, direct_statement, inline_sqlite, inline_sqlite_any, insert_one
from app.storage.tables import resource_history, resources


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """One version of a resource as stored (``body`` is None for a tombstone)."""

    resource_type: str
    id: str
    version_id: int
    last_updated: datetime
    deleted: bool
    body: bytes | None
    method: str = "PUT"


@dataclass(frozen=True, slots=True)
class HistoryCursor:
    """Keyset position in a newest-first history listing."""

    last_updated: datetime
    resource_type: str
    id: str
    version_id: int


class AlreadyExists(Exception):
    """An insert found a current row with the same type and id."""


_r = resources.c
_h = resource_history.c

# Hot-path statements are built once with bind parameters: SQLAlchemy then
# reuses their cache key and compiled form instead of rebuilding both per call.
_READ_CURRENT = select(_r.resource_type, _r.id, _r.version_id, _r.last_updated, _r.deleted, _r.body).where(
    _r.resource_type == bindparam("rt"), _r.id == bindparam("rid")
)
_READ_CURRENT_ASYNCPG = compile_for_asyncpg(_READ_CURRENT)
_READ_VERSION = select(_h.resource_type, _h.id, _h.version_id, _h.last_updated, _h.deleted, _h.body, _h.method).where(
    _h.resource_type == bindparam("rt"), _h.id == bindparam("rid"), _h.version_id == bindparam("vid")
)
_INSERT_HISTORY = insert(resource_history)
_REPLACE_CURRENT = (
    update(resources)
    .where(_r.resource_type == bindparam("rt"), _r.id == bindparam("rid"), _r.version_id == bindparam("expected"))
    .values(
        version_id=bindparam("vid"),
        last_updated=bindparam("updated"),
        deleted=bindparam("is_deleted"),
        body=bindparam("payload"),
        subject_ref=bindparam("subject_ref"),
        status_code=bindparam("status_code"),
    )
)
_SET_KEYS = (
    update(resources)
    .where(_r.resource_type == bindparam("rt"), _r.id == bindparam("rid"))
    .values(subject_ref=bindparam("subject_ref"), status_code=bindparam("status_code"))
)
_KEY_COLUMNS = ("resource_type", "id")
_INSERT_CURRENT = {
    "postgresql": postgresql_insert(resources).on_conflict_do_nothing(index_elements=_KEY_COLUMNS),
    "sqlite": sqlite_insert(resources).on_conflict_do_nothing(index_elements=_KEY_COLUMNS),
}


async def read_current(
    conn: AsyncConnection, resource_type: str, resource_id: str, gate: ReadGate = OPEN
) -> StoredVersion | None:
    """The current version (or tombstone), if the gate lets the caller see it.

    With the gate open, on a PostgreSQL connection in autocommit mode (``Database.read``), the statement
    runs on asyncpg directly (``read_current_alone``): SQLAlchemy's execution cost a read 100 to 220 us
    of CPU more (BENCHMARKS.md, "Reads of the current row on the driver"). On inline SQLite it runs on
    the ``sqlite3`` connection (``app.storage.sqlite_direct``), in a read scope or a write transaction."""
    if gate.open and conn.dialect.name == "postgresql" and in_autocommit(conn):
        return await read_current_alone(conn, resource_type, resource_id)
    if gate.open and (direct := await inline_sqlite_any(conn)) is not None:
        found = direct_statement(_READ_CURRENT).rows(direct, {"rt": resource_type, "rid": resource_id})
        return StoredVersion(*found[0]) if found else None
    statement = _READ_CURRENT if gate.open else _READ_CURRENT.where(gate.ids(resource_type, _r.id))
    row = (await conn.execute(statement, {"rt": resource_type, "rid": resource_id})).first()
    return StoredVersion(*row) if row else None


async def read_current_alone(conn: AsyncConnection, resource_type: str, resource_id: str) -> StoredVersion | None:
    """The current version on a PostgreSQL connection, read on asyncpg so that no transaction is begun
    (in a transaction SQLAlchemy has not begun yet, the read would run outside it)."""
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None
    arguments = _READ_CURRENT_ASYNCPG.arguments({"rt": resource_type, "rid": resource_id})
    row = await driver.fetchrow(_READ_CURRENT_ASYNCPG.sql, *arguments)
    return None if row is None else StoredVersion(row[0], row[1], row[2], row[3], row[4], row[5])


async def matches(conn: AsyncConnection, resource_type: str, resource_id: str, condition: ColumnElement[bool]) -> bool:
    """Whether the live current version of a resource meets ``condition`` (on ``resources`` columns)."""
    statement = select(_r.id).where(
        _r.resource_type == resource_type, _r.id == resource_id, _r.deleted.is_(False), condition
    )
    return (await conn.execute(statement)).first() is not None


async def read_version(
    conn: AsyncConnection, resource_type: str, resource_id: str, version_id: int, gate: ReadGate = OPEN
) -> StoredVersion | None:
    """One version, if the gate lets the caller see the resource."""
    statement = _READ_VERSION if gate.open else _READ_VERSION.where(gate.ids(resource_type, _h.id))
    row = (await conn.execute(statement, {"rt": resource_type, "rid": resource_id, "vid": version_id})).first()
    return StoredVersion(*row) if row else None


async def insert_first(conn: AsyncConnection, version: StoredVersion, keys: RowKeys) -> None:
    """Insert version 1 of a new resource (with its row ``keys``); AlreadyExists if the id is taken.

    ``ON CONFLICT DO NOTHING`` reports a taken id through the row count, so the
    transaction stays usable on PostgreSQL without a savepoint round trip.
    On inline SQLite both inserts run on the sqlite3 connection (``app.storage.sqlite_direct``).
    """
    row = _current_row(version, keys)
    direct = await inline_sqlite(conn)
    if direct is not None:
        inserted = insert_one(direct, direct_insert(resources, tuple(row), _KEY_COLUMNS), row)
    else:
        inserted = (await conn.execute(_INSERT_CURRENT[conn.dialect.name], row)).rowcount
    if inserted != 1:
        raise AlreadyExists(f"{version.resource_type}/{version.id}")
    await _insert_history(conn, version, direct)


async def insert_new_many(conn: AsyncConnection, versions: Sequence[StoredVersion], keys: Sequence[RowKeys]) -> None:
    """Version 1 of many new resources with fresh server-assigned ids (``keys``: each one's row keys,
    in order): two batched statements.

    For ids that cannot be taken yet (UUIDs made in this process); a clash is
    an integrity error that rolls the whole transaction back.
    """
    await insert_rows(conn, resources, [_current_row(v, k) for v, k in zip(versions, keys, strict=True)])
    await insert_rows(conn, resource_history, [_history_row(v) for v in versions])


async def replace_version(conn: AsyncConnection, expected_version: int, version: StoredVersion, keys: RowKeys) -> bool:
    """Move the current row from ``expected_version`` to ``version`` (with its row ``keys``); False if
    someone else moved it."""
    values = {
        "rt": version.resource_type,
        "rid": version.id,
        "expected": expected_version,
        "vid": version.version_id,
        "updated": version.last_updated,
        "is_deleted": version.deleted,
        "payload": version.body,
        **keys.columns(),
    }
    direct = await inline_sqlite(conn)
    if direct is not None:  # inline SQLite: on the sqlite3 connection (app.storage.sqlite_direct)
        changed = direct_statement(_REPLACE_CURRENT).run(direct, values)
    else:
        changed = (await conn.execute(_REPLACE_CURRENT, values)).rowcount
    if changed != 1:
        return False
    await _insert_history(conn, version, direct)
    return True


async def set_row_keys(conn: AsyncConnection, resource_type: str, keys: Mapping[str, RowKeys]) -> None:
    """Rewrite the row keys of current rows (by id) without a new version: ``$reindex``."""
    if keys:
        await conn.execute(_SET_KEYS, [{"rt": resource_type, "rid": rid, **k.columns()} for rid, k in keys.items()])


def _version_columns(version: StoredVersion) -> dict[str, Any]:
    """The columns ``resources`` and ``resource_history`` share, of a version."""
    return {
        "resource_type": version.resource_type,
        "id": version.id,
        "version_id": version.version_id,
        "last_updated": version.last_updated,
        "deleted": version.deleted,
        "body": version.body,
    }


def _current_row(version: StoredVersion, keys: RowKeys) -> dict[str, Any]:
    """The ``resources`` row of a version, by column."""
    return {**_version_columns(version), **keys.columns()}


def _history_row(version: StoredVersion) -> dict[str, Any]:
    """The ``resource_history`` row of a version, by column."""
    return {**_version_columns(version), "method": version.method}


async def _insert_history(conn: AsyncConnection, version: StoredVersion, direct: sqlite3.Connection | None) -> None:
    row = _history_row(version)
    if direct is not None:
        insert_one(direct, direct_insert(resource_history, tuple(row)), row)
    else:
        await conn.execute(_INSERT_HISTORY, row)


async def read_history(
    conn: AsyncConnection,
    resource_type: str | None,
    resource_id: str | None,
    since: datetime | None,
    after: HistoryCursor | None,
    limit: int,
    gate: ReadGate = OPEN,
) -> list[StoredVersion]:
    """Versions newest first, optionally of one type or one resource, after a keyset cursor; only of
    resources the gate lets the caller see."""
    h = resource_history.c
    query = select(h.resource_type, h.id, h.version_id, h.last_updated, h.deleted, h.body, h.method)
    if resource_type is not None:
        query = query.where(h.resource_type == resource_type)
    if not gate.open:
        visible = gate.ids(resource_type, h.id) if resource_type is not None else gate.rows(h.resource_type, h.id)
        query = query.where(visible)
    if resource_id is not None:
        query = query.where(h.id == resource_id)
    if since is not None:
        query = query.where(h.last_updated >= since)
    if after is not None:
        query = query.where(
            or_(
                h.last_updated < after.last_updated,
                and_(
                    h.last_updated == after.last_updated,
                    tuple_(h.resource_type, h.id, h.version_id)
                    < tuple_(after.resource_type, after.id, after.version_id),
                ),
            )
        )
    query = query.order_by(h.last_updated.desc(), h.resource_type.desc(), h.id.desc(), h.version_id.desc()).limit(limit)
    return [StoredVersion(*row) for row in await conn.execute(query)]
