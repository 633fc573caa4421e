"""read and vread (hl7.org/fhir/R4/http.html#read, #vread): stored bytes, no re-serialising."""

from __future__ import annotations

from app.errors import Gone, NotFound
from app.interactions.context import FhirContext
from app.interactions.request_context import RequestContext
from app.storage.repository import StoredVersion, read_current, read_version


async def read(ctx: FhirContext, rc: RequestContext, resource_type: str, resource_id: str) -> StoredVersion:
    ctx.require_known(resource_type, resource_id)
    async with ctx.db.read() as conn:
        current = await read_current(conn, resource_type, resource_id, ctx.read_gate(rc.caller))
    if current is None:
        raise NotFound(f"{resource_type}/{resource_id} is not known")
    if current.deleted:
        raise Gone(f"{resource_type}/{resource_id} was deleted", current.version_id)
    return current


async def vread(
    ctx: FhirContext, rc: RequestContext, resource_type: str, resource_id: str, version: str
) -> StoredVersion:
    ctx.require_known(resource_type, resource_id)
    if not (version.isascii() and version.isdigit()) or len(version) > 9:  # versions are 32-bit integers in storage
        raise NotFound(f"{resource_type}/{resource_id} has no version '{version[:20]}'")
    async with ctx.db.read() as conn:
        stored = await read_version(conn, resource_type, resource_id, int(version), ctx.read_gate(rc.caller))
    if stored is None:
        raise NotFound(f"{resource_type}/{resource_id} has no version {version}")
    if stored.deleted:
        raise Gone(f"version {version} of {resource_type}/{resource_id} is a deletion", stored.version_id)
    return stored
