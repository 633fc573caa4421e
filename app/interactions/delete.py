"""delete (hl7.org/fhir/R4/http.html#delete): a versioned tombstone."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from app.interactions.context import FhirContext, WriteResult, is_valid_id
from app.interactions.request_context import RequestContext
from app.interactions.storing import ANY, store
from app.storage.gate import ReadGate


async def delete(
    ctx: FhirContext, rc: RequestContext, resource_type: str, resource_id: str, if_match: int | None = None
) -> WriteResult | None:
    """Add a tombstone version; None when there was nothing live to delete.

    Deleting an unknown or already deleted resource succeeds without writing,
    as the spec allows ("if the resource does not exist at all, 200/204").
    """
    ctx.require_type(resource_type)
    gate = ctx.read_gate(rc.caller)
    gate.require(resource_type, "d")
    if not is_valid_id(resource_id):
        return None  # such an id can never have been stored
    return await delete_in(ctx, None, resource_type, resource_id, if_match, gate)


async def delete_in(
    ctx: FhirContext,
    conn: AsyncConnection | None,
    resource_type: str,
    resource_id: str,
    if_match: int | None,
    gate: ReadGate,
) -> WriteResult | None:
    """The tombstone, in ``conn``'s transaction (conditional deletes, transaction entries) or as a
    write of its own (None); None when nothing live was there, not found outside ``gate``."""
    expect = ANY if if_match is None else if_match
    return await store(ctx, conn, resource_type, resource_id, None, {}, expect, "DELETE", gate)
