"""Versioned resource storage over one AsyncConnection (SQLAlchemy Core).

Every write adds a row to ``resource_history``; the primary key
(type, id, version) there makes a reused version impossible. Updates move the
current row with ``UPDATE ... WHERE version_id = :expected``, so of two
concurrent writers that read the same version exactly one wins; the loser
sees ``rowcount == 0`` and the interaction decides (412 with If-Match,
re-read and retry without).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, delete, insert, or_, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.storage.tables import resource_history, resources, search_token


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
class TokenRow:
    param: str
    system: str | None
    code: str | None


@dataclass(frozen=True, slots=True)
class HistoryCursor:
    """Keyset position in a newest-first history listing."""

    last_updated: datetime
    resource_type: str
    id: str
    version_id: int


class AlreadyExists(Exception):
    """An insert found a current row with the same type and id."""


_CURRENT_COLUMNS = (
    resources.c.resource_type,
    resources.c.id,
    resources.c.version_id,
    resources.c.last_updated,
    resources.c.deleted,
    resources.c.body,
)


async def read_current(conn: AsyncConnection, resource_type: str, resource_id: str) -> StoredVersion | None:
    row = (
        await conn.execute(
            select(*_CURRENT_COLUMNS).where(resources.c.resource_type == resource_type, resources.c.id == resource_id)
        )
    ).first()
    return StoredVersion(*row) if row else None


async def read_version(
    conn: AsyncConnection, resource_type: str, resource_id: str, version_id: int
) -> StoredVersion | None:
    h = resource_history.c
    row = (
        await conn.execute(
            select(h.resource_type, h.id, h.version_id, h.last_updated, h.deleted, h.body, h.method).where(
                h.resource_type == resource_type, h.id == resource_id, h.version_id == version_id
            )
        )
    ).first()
    return StoredVersion(*row) if row else None


async def insert_first(conn: AsyncConnection, version: StoredVersion) -> None:
    """Insert version 1 of a new resource; AlreadyExists if the id is taken."""
    try:
        async with conn.begin_nested() if conn.dialect.name == "postgresql" else nullcontext():
            await conn.execute(
                insert(resources).values(
                    resource_type=version.resource_type,
                    id=version.id,
                    version_id=version.version_id,
                    last_updated=version.last_updated,
                    deleted=version.deleted,
                    body=version.body,
                )
            )
    except IntegrityError as exc:
        raise AlreadyExists(f"{version.resource_type}/{version.id}") from exc
    await _insert_history(conn, version)


async def replace_version(conn: AsyncConnection, expected_version: int, version: StoredVersion) -> bool:
    """Move the current row from ``expected_version`` to ``version``; False if someone else moved it."""
    result = await conn.execute(
        update(resources)
        .where(
            resources.c.resource_type == version.resource_type,
            resources.c.id == version.id,
            resources.c.version_id == expected_version,
        )
        .values(
            version_id=version.version_id,
            last_updated=version.last_updated,
            deleted=version.deleted,
            body=version.body,
        )
    )
    if result.rowcount != 1:
        return False
    await _insert_history(conn, version)
    return True


async def _insert_history(conn: AsyncConnection, version: StoredVersion) -> None:
    await conn.execute(
        insert(resource_history).values(
            resource_type=version.resource_type,
            id=version.id,
            version_id=version.version_id,
            last_updated=version.last_updated,
            deleted=version.deleted,
            method=version.method,
            body=version.body,
        )
    )


async def replace_tokens(conn: AsyncConnection, resource_type: str, resource_id: str, rows: list[TokenRow]) -> None:
    """Make ``rows`` the token index rows of the resource, in the write's transaction."""
    await conn.execute(
        delete(search_token).where(
            search_token.c.resource_type == resource_type, search_token.c.resource_id == resource_id
        )
    )
    if rows:
        await conn.execute(
            insert(search_token),
            [
                {
                    "resource_type": resource_type,
                    "resource_id": resource_id,
                    "param": row.param,
                    "system": row.system,
                    "code": row.code,
                }
                for row in rows
            ],
        )


async def find_by_token(
    conn: AsyncConnection,
    resource_type: str,
    criteria: list[tuple[str, str | None, str | None]],
    ids: list[str],
    limit: int,
) -> list[str]:
    """Ids of live resources matching every (param, system, code) criterion and id.

    ``system`` None means any system, "" means no system; ``code`` None means any code.
    """
    r = resources.c
    query = select(r.id).where(r.resource_type == resource_type, r.deleted.is_(False))
    for id_value in ids:
        query = query.where(r.id == id_value)
    for param, system, code in criteria:
        t = search_token.c
        conditions = [t.resource_type == resource_type, t.resource_id == r.id, t.param == param]
        if code is not None:
            conditions.append(t.code == code)
        if system == "":
            conditions.append(t.system.is_(None))
        elif system is not None:
            conditions.append(t.system == system)
        query = query.where(select(t.resource_id).where(*conditions).exists())
    return list((await conn.execute(query.order_by(r.id).limit(limit))).scalars())


async def read_history(
    conn: AsyncConnection,
    resource_type: str | None,
    resource_id: str | None,
    since: datetime | None,
    after: HistoryCursor | None,
    limit: int,
) -> list[StoredVersion]:
    """Versions newest first, optionally of one type or one resource, after a keyset cursor."""
    h = resource_history.c
    query = select(h.resource_type, h.id, h.version_id, h.last_updated, h.deleted, h.body, h.method)
    if resource_type is not None:
        query = query.where(h.resource_type == resource_type)
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
