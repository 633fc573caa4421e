"""update, including update-as-create (hl7.org/fhir/R4/http.html#update)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from app.errors import IdMismatch
from app.interactions.context import FhirContext, WriteResult, require_valid_id
from app.interactions.create import check_body_type
from app.interactions.references import conditional_references, refuse_bundle_local, resolve_in_body
from app.interactions.request_context import RequestContext
from app.interactions.storing import ANY, store_body
from app.storage.gate import ReadGate
from app.storage.index_tables import IndexRows


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

    With ``If-Match`` the expected version is compared in the write itself, so
    a concurrent writer makes this one fail with 412 instead of being lost.
    Without it, a lost race simply re-reads and writes the next version
    (``app.storage.writes``).
    """
    ctx.require_type(resource_type)
    gate = ctx.read_gate(rc.caller)
    gate.require(resource_type, "u")  # before any work; the write gate checks the body's compartment
    check_body_type(resource_type, body)
    check_id(resource_id, body)
    require_valid_id(resource_id)
    report = await ctx.check(resource_type, body)
    refuse_bundle_local(report.references)
    pending = conditional_references(report.references)
    if not pending:  # a write of its own: one statement per attempt on PostgreSQL
        rows = await ctx.index_rows_checked(resource_type, resource_id, body, report)
        return await update_in(ctx, None, resource_type, resource_id, body, rows, if_match, gate=gate)

    async def attempt(conn: AsyncConnection) -> WriteResult:
        await resolve_in_body(ctx, conn, body, pending, gate)
        rows = await ctx.index_rows_checked(resource_type, resource_id, body, report)
        return await update_in(ctx, conn, resource_type, resource_id, body, rows, if_match, gate=gate)

    return await ctx.db.run_write(attempt)


async def update_in(
    ctx: FhirContext,
    conn: AsyncConnection | None,
    resource_type: str,
    resource_id: str,
    body: dict[str, Any],
    rows: IndexRows,
    if_match: int | None,
    *,
    gate: ReadGate,
    method: str = "PUT",
) -> WriteResult:
    """The update of a checked and indexed body, in ``conn``'s transaction (conditional updates,
    transaction entries) or as a write of its own (None); a resource outside ``gate`` is not found."""
    expect = ANY if if_match is None else if_match
    return await store_body(ctx, conn, resource_type, resource_id, body, rows, expect, method, gate)
