"""read and vread (hl7.org/fhir/R4/http.html#read, #vread): stored bytes, no re-serialising.

``read_in``/``vread_in`` are the reads themselves, on a connection the
caller holds and through the caller's read gate; the HTTP routes and the
GET entries of a transaction or batch both use them.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from app.errors import Gone, NotFound
from app.interactions.context import FhirContext
from app.interactions.request_context import RequestContext
from app.storage.gate import ReadGate
from app.storage.repository import StoredVersion, read_current, read_version


async def read(ctx: FhirContext, rc: RequestContext, resource_type: str, resource_id: str) -> StoredVersion:
    ctx.require_known(resource_type, resource_id)
    async with ctx.db.read() as conn:
        return await read_in(conn, ctx.read_gate(rc.caller), resource_type, resource_id)


async def vread(
    ctx: FhirContext, rc: RequestContext, resource_type: str, resource_id: str, version: str
) -> StoredVersion:
    ctx.require_known(resource_type, resource_id)
    async with ctx.db.read() as conn:
        return await vread_in(conn, ctx.read_gate(rc.caller), resource_type, resource_id, version)


async def read_in(conn: AsyncConnection, gate: ReadGate, resource_type: str, resource_id: str) -> StoredVersion:
    """The current version: 404 when unknown (or outside the gate), 410 when deleted; 403 when the
    caller's scopes do not grant reading the type."""
    gate.require(resource_type, "r")
    current = await read_current(conn, resource_type, resource_id, gate)
    if current is None:
        raise NotFound(f"{resource_type}/{resource_id} is not known")
    if current.deleted:
        raise Gone(f"{resource_type}/{resource_id} was deleted", current.version_id)
    return current


async def vread_in(
    conn: AsyncConnection, gate: ReadGate, resource_type: str, resource_id: str, version: str
) -> StoredVersion:
    """One version: 404 when it does not exist (or is outside the gate), 410 when it is a deletion."""
    gate.require(resource_type, "r")
    if not (version.isascii() and version.isdigit()) or len(version) > 9:  # versions are 32-bit integers in storage
        raise NotFound(f"{resource_type}/{resource_id} has no version '{version[:20]}'")
    stored = await read_version(conn, resource_type, resource_id, int(version), gate)
    if stored is None:
        raise NotFound(f"{resource_type}/{resource_id} has no version {version}")
    if stored.deleted:
        raise Gone(f"version {version} of {resource_type}/{resource_id} is a deletion", stored.version_id)
    return stored
