"""delete (hl7.org/fhir/R4/http.html#delete): a versioned tombstone."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from app.errors import VersionConflict
from app.interactions.context import FhirContext, WriteResult, is_valid_id, utc_now
from app.interactions.request_context import RequestContext
from app.storage.repository import StoredVersion, read_current, replace_version

MAX_ATTEMPTS = 20


async def delete(
    ctx: FhirContext, rc: RequestContext, resource_type: str, resource_id: str, if_match: int | None = None
) -> WriteResult | None:
    """Add a tombstone version; None when there was nothing live to delete.

    Deleting an unknown or already deleted resource succeeds without writing,
    as the spec allows ("if the resource does not exist at all, 200/204").
    """
    ctx.require_type(resource_type)
    if not is_valid_id(resource_id):
        return None  # such an id can never have been stored

    async def attempt(conn: AsyncConnection) -> WriteResult | object | None:
        return await write_tombstone(ctx, conn, resource_type, resource_id, if_match)

    for _ in range(MAX_ATTEMPTS):
        outcome = await ctx.db.run_write(attempt)
        if outcome is not RETRY:
            return outcome  # type: ignore[return-value]
    raise VersionConflict(f"{resource_type}/{resource_id} is being changed too often; try again")


RETRY = object()


async def write_tombstone(
    ctx: FhirContext, conn: AsyncConnection, resource_type: str, resource_id: str, if_match: int | None
) -> WriteResult | object | None:
    """One attempt inside the caller's transaction: the result, None (nothing live) or RETRY."""
    current = await read_current(conn, resource_type, resource_id)
    if if_match is not None and (current is None or current.version_id != if_match):
        raise VersionConflict(f"If-Match expects version {if_match} of {resource_type}/{resource_id}")
    if current is None or current.deleted:
        return None
    next_id = current.version_id + 1
    now = max(utc_now(), current.last_updated)
    tombstone = StoredVersion(resource_type, resource_id, next_id, now, True, None, "DELETE")
    if not await replace_version(conn, current.version_id, tombstone):
        if if_match is not None:
            raise VersionConflict(f"{resource_type}/{resource_id} was changed by another request")
        return RETRY
    await ctx.write_index(conn, resource_type, resource_id, {}, is_new=False)
    return WriteResult(status=200, stored=tombstone)
