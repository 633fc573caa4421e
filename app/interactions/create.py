"""create and conditional create (hl7.org/fhir/R4/http.html#create, #ccreate)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from app.errors import MultipleMatches, ResourceTypeMismatch
from app.interactions.context import FhirContext, WriteResult
from app.interactions.criteria import conditional_criteria
from app.interactions.references import conditional_references, refuse_bundle_local, resolve_in_body
from app.interactions.request_context import RequestContext
from app.interactions.search import find_ids
from app.interactions.storing import ABSENT, store_body
from app.storage.repository import read_current

__all__ = ["check_body_type", "conditional_criteria", "create"]


def check_body_type(resource_type: str, body: dict[str, Any]) -> None:
    if body.get("resourceType") != resource_type:
        raise ResourceTypeMismatch(
            f"resourceType '{body.get('resourceType')}' does not match the URL type '{resource_type}'",
            ["resourceType"],
        )


async def create(
    ctx: FhirContext, rc: RequestContext, resource_type: str, body: dict[str, Any], if_none_exist: str | None = None
) -> WriteResult:
    """Store a new resource under a server-assigned id (a client id in the body is ignored).

    With ``If-None-Exist``: no match creates (201), one match returns it without
    writing (200), several matches fail (412). The criteria are locked for the
    transaction so concurrent conditional creates cannot both create.
    Conditional references in the body are resolved in the same transaction.
    """
    ctx.require_type(resource_type)
    gate = ctx.read_gate(rc.caller)
    gate.require(resource_type, "c")  # before any work; the write gate checks the body's compartment
    check_body_type(resource_type, body)
    criteria = conditional_criteria(ctx, resource_type, if_none_exist, "If-None-Exist") if if_none_exist else None
    report = await ctx.check(resource_type, body)
    refuse_bundle_local(report.references)
    pending = conditional_references(report.references)
    resource_id = str(uuid.uuid4())
    if criteria is None and not pending:  # a write of its own: one statement on PostgreSQL
        rows = await ctx.index_rows_checked(resource_type, resource_id, body, report)
        return await store_body(ctx, None, resource_type, resource_id, body, rows, ABSENT, "POST", gate)

    async def attempt(conn: AsyncConnection) -> WriteResult:
        if criteria is not None:
            await ctx.db.lock_key(conn, f"{resource_type}?{sorted(criteria.applied())}")
            matches = await find_ids(conn, criteria, 2, gate)
            if len(matches) > 1:
                raise MultipleMatches(f"If-None-Exist criteria '{if_none_exist}' match more than one resource")
            if matches:
                existing = await read_current(conn, resource_type, matches[0], gate)
                assert existing is not None
                return WriteResult(status=200, stored=existing, changed=False)
        if pending:
            await resolve_in_body(ctx, conn, body, pending, gate)
        rows = await ctx.index_rows_checked(resource_type, resource_id, body, report)
        return await store_body(ctx, conn, resource_type, resource_id, body, rows, ABSENT, "POST", gate)

    return await ctx.db.run_write(attempt)
