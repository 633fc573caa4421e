"""Conditional update and delete (hl7.org/fhir/R4/http.html#cond-update, #3.1.0.7.1).

The criteria are a search on the type, locked for the transaction (as for
conditional create), searched and acted on in that one transaction. A
transaction the database aborts for a deadlock is run again from the search
(``Database.run_write``); a version written by a concurrent request between
our read and our write is handled as a plain update or delete handles it.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from app.errors import IdMismatch, MultipleMatches
from app.interactions.context import FhirContext, WriteResult, require_valid_id
from app.interactions.create import check_body_type, conditional_criteria
from app.interactions.delete import delete_in
from app.interactions.references import conditional_references, refuse_bundle_local, resolve_in_body
from app.interactions.request_context import RequestContext
from app.interactions.search import find_ids
from app.interactions.update import update_in

MAX_CONDITIONAL_DELETES = 1000


async def conditional_update(
    ctx: FhirContext,
    rc: RequestContext,
    resource_type: str,
    query: str,
    body: dict[str, Any],
    if_match: int | None = None,
) -> WriteResult:
    """``PUT [type]?query``: no match creates (the body's id, or a new one), one match is updated
    (a differing body id is 400), several are 412."""
    ctx.require_type(resource_type)
    gate = ctx.read_gate(rc.caller)
    gate.require(resource_type, "u")  # SMART: update scopes may create through update
    check_body_type(resource_type, body)
    criteria = conditional_criteria(ctx, resource_type, query, "criteria")
    report = await ctx.check(resource_type, body)
    refuse_bundle_local(report.references)
    pending = conditional_references(report.references)

    async def attempt(conn: AsyncConnection) -> WriteResult:
        await ctx.db.lock_key(conn, f"{resource_type}?{sorted(criteria.applied())}")
        matches = await find_ids(conn, criteria, 2, gate)
        if len(matches) > 1:
            raise MultipleMatches(f"the criteria '{query}' match more than one {resource_type}")
        body_id = body.get("id")
        if matches:
            resource_id = matches[0]
            if body_id is not None and body_id != resource_id:
                raise IdMismatch(f"id '{body_id}' differs from the matching resource {resource_type}/{resource_id}")
        else:
            resource_id = body_id if isinstance(body_id, str) else str(uuid.uuid4())
            require_valid_id(resource_id)
        stored_body = {**body, "id": resource_id}
        if pending:
            await resolve_in_body(ctx, conn, stored_body, pending, gate)
        rows = await ctx.index_rows_checked(resource_type, resource_id, stored_body, report)
        return await update_in(ctx, conn, resource_type, resource_id, stored_body, rows, if_match, gate=gate)

    return await ctx.db.run_write(attempt)


async def conditional_delete(ctx: FhirContext, rc: RequestContext, resource_type: str, query: str) -> list[WriteResult]:
    """``DELETE [type]?query``: deletes every match (conditionalDelete ``multiple``), up to a limit."""
    ctx.require_type(resource_type)
    gate = ctx.read_gate(rc.caller)
    gate.require(resource_type, "d")
    criteria = conditional_criteria(ctx, resource_type, query, "criteria")

    async def attempt(conn: AsyncConnection) -> list[WriteResult]:
        await ctx.db.lock_key(conn, f"{resource_type}?{sorted(criteria.applied())}")
        matches = await find_ids(conn, criteria, MAX_CONDITIONAL_DELETES + 1, gate)
        if len(matches) > MAX_CONDITIONAL_DELETES:
            raise MultipleMatches(f"the criteria match more than {MAX_CONDITIONAL_DELETES} resources; narrow them")
        deleted = []
        for resource_id in matches:
            outcome = await delete_in(ctx, conn, resource_type, resource_id, None, gate)
            if outcome is not None:
                deleted.append(outcome)
        return deleted

    return await ctx.db.run_write(attempt)
