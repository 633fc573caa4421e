"""update, including update-as-create (hl7.org/fhir/R4/http.html#update)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from app.errors import IdMismatch, VersionConflict
from app.interactions.context import FhirContext, WriteResult, require_valid_id, utc_now
from app.interactions.create import check_body_type
from app.interactions.references import conditional_references, refuse_bundle_local, resolve_in_body
from app.interactions.request_context import RequestContext
from app.interactions.stamping import stamp
from app.storage.index_tables import IndexRows
from app.storage.repository import (
    AlreadyExists,
    StoredVersion,
    insert_first,
    read_current,
    replace_version,
)
from app.storage.single_statement import create_in_one_statement, read_version_state, replace_in_one_statement
from app.validation.json_rules import ShapeReport

MAX_ATTEMPTS = 20


def check_id(resource_id: str, body: dict[str, Any]) -> None:
    body_id = body.get("id")
    if body_id is None:
        raise IdMismatch(f"the resource has no id; an update to '{resource_id}' needs id '{resource_id}'", ["id"])
    if body_id != resource_id:
        raise IdMismatch(f"id '{body_id}' in the body does not match '{resource_id}' in the URL", ["id"])


async def update(
    ctx: FhirContext,
    rc: RequestContext,
    resource_type: str,
    resource_id: str,
    body: dict[str, Any],
    if_match: int | None = None,
) -> WriteResult:
    """Write a new version; create it (201) when the id is unused or deleted.

    With ``If-Match`` the expected version is compared in the UPDATE itself, so
    a concurrent writer makes this one fail with 412 instead of being lost.
    Without it, a lost race simply re-reads and writes the next version.
    """
    ctx.require_type(resource_type)
    check_body_type(resource_type, body)
    check_id(resource_id, body)
    require_valid_id(resource_id)
    report = await ctx.check(resource_type, body)
    refuse_bundle_local(report.references)
    pending = conditional_references(report.references)
    if pending:
        return await _update_resolving(ctx, rc, resource_type, resource_id, body, pending, if_match, report)
    rows = await ctx.index_rows_checked(resource_type, resource_id, body, report)
    for _ in range(MAX_ATTEMPTS):
        if ctx.db.dialect == "postgresql":  # one statement per attempt, no transaction round trips
            async with ctx.db.single_statement() as conn:
                result = await write_version_single(ctx, conn, resource_type, resource_id, body, rows, if_match)
        else:
            async with ctx.db.write() as conn:
                result = await write_version(ctx, conn, resource_type, resource_id, body, rows, if_match)
        if result is not None:
            return result
    raise VersionConflict(f"{resource_type}/{resource_id} is being changed too often; try again")


async def _update_resolving(
    ctx: FhirContext,
    rc: RequestContext,
    resource_type: str,
    resource_id: str,
    body: dict[str, Any],
    pending: list[str],
    if_match: int | None,
    report: ShapeReport,
) -> WriteResult:
    """An update whose body has conditional references: resolved and written in one transaction."""

    async def attempt(conn: AsyncConnection) -> WriteResult:
        await resolve_in_body(ctx, conn, body, pending, ctx.read_gate(rc.caller))
        rows = await ctx.index_rows_checked(resource_type, resource_id, body, report)
        return await write_version_until_written(ctx, conn, resource_type, resource_id, body, rows, if_match)

    return await ctx.db.run_write(attempt)


async def write_version_until_written(
    ctx: FhirContext,
    conn: AsyncConnection,
    resource_type: str,
    resource_id: str,
    body: dict[str, Any],
    rows: IndexRows,
    if_match: int | None,
) -> WriteResult:
    """``write_version`` in the caller's transaction until it lands: a concurrent writer that won is
    seen by the next read (READ COMMITTED), and the version after its is written."""
    for _ in range(MAX_ATTEMPTS):
        result = await write_version(ctx, conn, resource_type, resource_id, body, rows, if_match)
        if result is not None:
            return result
    raise VersionConflict(f"{resource_type}/{resource_id} is being changed too often; try again")


class _Transactional:
    """Version writes through SQLAlchemy inside the caller's transaction (both backends)."""

    def __init__(self, ctx: FhirContext, conn: AsyncConnection) -> None:
        self.ctx, self.conn = ctx, conn

    async def current(self, resource_type: str, resource_id: str) -> tuple[int, datetime, bool] | None:
        current = await read_current(self.conn, resource_type, resource_id)
        return None if current is None else (current.version_id, current.last_updated, current.deleted)

    async def insert_first(self, version: StoredVersion, rows: IndexRows) -> None:
        await insert_first(self.conn, version)
        await self.ctx.write_index(self.conn, version.resource_type, version.id, rows, is_new=True)

    async def replace(self, expected: int, version: StoredVersion, rows: IndexRows) -> bool:
        if not await replace_version(self.conn, expected, version):
            return False
        await self.ctx.write_index(self.conn, version.resource_type, version.id, rows, is_new=False)
        return True


class _SingleStatement(_Transactional):
    """The same writes as self-contained PostgreSQL statements, outside any transaction
    (app/storage/single_statement.py)."""

    async def current(self, resource_type: str, resource_id: str) -> tuple[int, datetime, bool] | None:
        return await read_version_state(self.conn, resource_type, resource_id)

    async def insert_first(self, version: StoredVersion, rows: IndexRows) -> None:
        await create_in_one_statement(self.conn, version, rows)

    async def replace(self, expected: int, version: StoredVersion, rows: IndexRows) -> bool:
        tables = self.ctx.extractor.tables_for(version.resource_type)
        return await replace_in_one_statement(self.conn, expected, version, rows, tables)


async def write_version_single(
    ctx: FhirContext,
    conn: AsyncConnection,
    resource_type: str,
    resource_id: str,
    body: dict[str, Any],
    rows: IndexRows,
    if_match: int | None,
) -> WriteResult | None:
    """``write_version`` on a connection outside any transaction (PostgreSQL only)."""
    return await _write(_SingleStatement(ctx, conn), resource_type, resource_id, body, rows, if_match, "PUT")


async def write_version(
    ctx: FhirContext,
    conn: AsyncConnection,
    resource_type: str,
    resource_id: str,
    body: dict[str, Any],
    rows: IndexRows,
    if_match: int | None,
    method: str = "PUT",
) -> WriteResult | None:
    """One attempt inside the caller's transaction; None when a concurrent writer won (retry)."""
    return await _write(_Transactional(ctx, conn), resource_type, resource_id, body, rows, if_match, method)


async def _write(
    store: _Transactional,
    resource_type: str,
    resource_id: str,
    body: dict[str, Any],
    rows: IndexRows,
    if_match: int | None,
    method: str,
) -> WriteResult | None:
    current = await store.current(resource_type, resource_id)
    if if_match is not None and (current is None or current[0] != if_match):
        have = "no version" if current is None else f"version {current[0]}"
        raise VersionConflict(f"If-Match expects version {if_match} but {resource_type}/{resource_id} has {have}")
    now = utc_now()
    if current is None:
        version = StoredVersion(resource_type, resource_id, 1, now, False, stamp(body, resource_id, 1, now), method)
        try:
            await store.insert_first(version, rows)
        except AlreadyExists:
            return None
        return WriteResult(status=201, stored=version, created=True)
    current_version, last_updated, deleted = current
    next_id = current_version + 1
    now = max(now, last_updated)
    version = StoredVersion(
        resource_type, resource_id, next_id, now, False, stamp(body, resource_id, next_id, now), method
    )
    if not await store.replace(current_version, version, rows):
        if if_match is not None:
            raise VersionConflict(f"{resource_type}/{resource_id} was changed by another request")
        return None
    return WriteResult(status=201 if deleted else 200, stored=version, created=deleted)
