"""patch (hl7.org/fhir/R4/http.html#patch): JSON Patch and FHIRPath Patch, on an instance or conditionally.

The patch is applied to the current version inside the write transaction and
the result is written with a compare on that version, so a concurrent
writer never loses an update: without ``If-Match`` the patch is simply
applied again to the newer version; with it, the request fails with 412.
A patch that cannot be applied, or whose result is not a valid resource, is
422; a malformed patch document is 400; in every failing case nothing is
stored.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import jsonpatch
import jsonpointer
from sqlalchemy.ext.asyncio import AsyncConnection

from app import fhirjson
from app.errors import Gone, InvalidRequest, InvalidResource, MultipleMatches, NotFound, Unprocessable, VersionConflict
from app.interactions.context import FhirContext, WriteResult
from app.interactions.create import conditional_criteria
from app.interactions.fhirpath_patch import apply_fhirpath_patch
from app.interactions.request_context import RequestContext
from app.interactions.search import find_ids
from app.interactions.update import update_in
from app.storage.gate import ReadGate
from app.storage.index_tables import IndexRows
from app.storage.repository import read_current

JSON_PATCH = "application/json-patch+json"
FHIRPATH_PATCH = "application/fhir+json"
MAX_ATTEMPTS = 20


def apply_json_patch(resource: dict[str, Any], document: Any, max_bytes: int) -> dict[str, Any]:
    """RFC 6902 on a copy of ``resource``: 400 for a malformed document, 422 when it does not apply.

    Operations are applied one at a time, and the size the document would reach is counted before each
    one that adds content: a few ``copy`` operations of a member into itself double the document each
    time, so a patch of a few hundred bytes could otherwise build gigabytes.
    """
    if not isinstance(document, list) or not all(isinstance(op, dict) for op in document):
        raise InvalidRequest("a JSON Patch document is an array of operation objects")
    operations = []
    for number, op in enumerate(document):
        try:
            operations.append(jsonpatch.JsonPatch([op]))  # checks the operation's op and path
        except (jsonpatch.InvalidJsonPatch, jsonpointer.JsonPointerException, TypeError):
            raise InvalidRequest(f"JSON Patch operation {number} is not a valid RFC 6902 operation") from None
    result: Any = copy.deepcopy(resource)
    size = len(fhirjson.dumps(result))
    for number, (op, single) in enumerate(zip(document, operations, strict=True)):
        size += _added_bytes(result, op)
        if size > max_bytes:
            raise Unprocessable(f"the patched resource would pass the limit of {max_bytes} bytes")
        try:
            result = single.apply(result, in_place=True)
        except jsonpatch.InvalidJsonPatch:  # e.g. an "add" without "value"
            raise InvalidRequest(f"JSON Patch operation {number} is not a valid RFC 6902 operation") from None
        except jsonpatch.JsonPatchTestFailed:
            tested = _shown(op.get("path"))
            raise Unprocessable(f"JSON Patch operation {number}: the test of '{tested}' failed") from None
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, TypeError, KeyError, IndexError):
            where = _shown(op.get("from") if op.get("op") in ("copy", "move") else op.get("path"))
            raise Unprocessable(
                f"JSON Patch operation {number} ({_shown(op.get('op'))}) does not apply: '{where}' is not a place "
                "in this resource"
            ) from None
    if not isinstance(result, dict):
        raise Unprocessable("the JSON Patch replaced the whole resource with something that is not one")
    return result


def _shown(value: Any) -> str:
    return value[:120] if isinstance(value, str) else "?"


def _added_bytes(document: Any, op: dict[str, Any]) -> int:
    """How much an operation can add: the size of its value, or of what it copies."""
    kind = op.get("op")
    if kind in ("add", "replace") and "value" in op:
        return len(fhirjson.dumps(op["value"]))
    if kind == "copy" and isinstance(op.get("from"), str):
        try:
            return len(fhirjson.dumps(jsonpointer.resolve_pointer(document, op["from"])))
        except (jsonpointer.JsonPointerException, TypeError):
            return 0  # the operation itself will fail with 422
    return 0


def patched(
    ctx: FhirContext, resource_type: str, body: dict[str, Any], media_type: str, document: Any
) -> dict[str, Any]:
    """The patched, validated body (type and id unchanged) or the error saying why not."""
    max_bytes = ctx.validator.limits.max_bytes
    if media_type == JSON_PATCH:
        result = apply_json_patch(body, document, max_bytes)
    elif media_type == FHIRPATH_PATCH:
        if isinstance(document, dict):  # the Parameters resource follows the FHIR JSON rules like any other
            shape = ctx.validator.json_rules.check_resource(document)
            if shape.issues:
                raise InvalidResource(shape.issues)
        result = apply_fhirpath_patch(body, document)
    else:
        raise InvalidRequest(f"a patch is {JSON_PATCH} or a FHIRPath Patch Parameters resource ({FHIRPATH_PATCH})")
    if result.get("resourceType") != body.get("resourceType") or result.get("id") != body.get("id"):
        raise Unprocessable("a patch may not change the resource's type or id")
    if len(fhirjson.dumps(result)) > max_bytes:
        raise Unprocessable(f"the patched resource would pass the limit of {max_bytes} bytes")
    # a patch that writes null, [], {}, a wrong JSON type or a control character sent JSON that is not
    # FHIR JSON: 400 naming the element, as for a create; other invalid results are 422 (http.html#patch)
    shape = ctx.validator.json_rules.check_resource(result)
    if shape.issues:
        raise InvalidResource(shape.issues)
    try:
        ctx.validator.validate(resource_type, result)
    except InvalidResource as exc:
        raise Unprocessable(f"the patched resource is not valid: {exc.message}", issues=exc.issues) from None
    return result


async def patch_in(
    ctx: FhirContext,
    conn: AsyncConnection,
    resource_type: str,
    resource_id: str,
    media_type: str,
    document: Any,
    if_match: int | None,
    gate: ReadGate,
) -> WriteResult:
    """The patch in ``conn``'s transaction (single requests and transaction entries alike); a resource
    outside ``gate`` (what the caller may read) is not found.

    Without ``If-Match``, a version written by someone else between our read
    and our write makes the patch apply again to that newer version (each
    statement sees what is committed, at READ COMMITTED); with it, 412.
    """

    async def once() -> WriteResult:
        """Apply to the current version and write with a compare on it (``VersionConflict`` when it moved)."""
        current = await read_current(conn, resource_type, resource_id, gate)
        if current is None:
            raise NotFound(f"{resource_type}/{resource_id} is not known")
        if if_match is not None and current.version_id != if_match:
            raise VersionConflict(
                f"If-Match expects version {if_match} but {resource_type}/{resource_id} has {current.version_id}"
            )
        if current.deleted or current.body is None:
            raise Gone(f"{resource_type}/{resource_id} was deleted")

        # CPU work proportional to the resource and the patch: off the event loop
        def patch_and_index() -> tuple[dict[str, Any], IndexRows]:
            body = patched(ctx, resource_type, fhirjson.loads(current.body or b"{}"), media_type, document)
            return body, ctx.index_rows(resource_type, resource_id, body)

        body, rows = await asyncio.to_thread(patch_and_index)
        return await update_in(
            ctx, conn, resource_type, resource_id, body, rows, current.version_id, gate=gate, method="PATCH"
        )

    for _ in range(MAX_ATTEMPTS):
        try:
            return await once()
        except VersionConflict:
            if if_match is not None:
                raise
    raise VersionConflict(f"{resource_type}/{resource_id} is being changed too often; try again")


async def patch(
    ctx: FhirContext,
    rc: RequestContext,
    resource_type: str,
    resource_id: str,
    media_type: str,
    document: Any,
    if_match: int | None = None,
) -> WriteResult:
    ctx.require_known(resource_type, resource_id)
    gate = ctx.read_gate(rc.caller)
    gate.require(resource_type, "u")

    async def attempt(conn: AsyncConnection) -> WriteResult:
        return await patch_in(ctx, conn, resource_type, resource_id, media_type, document, if_match, gate)

    return await ctx.db.run_write(attempt)


async def conditional_patch(
    ctx: FhirContext,
    rc: RequestContext,
    resource_type: str,
    query: str,
    media_type: str,
    document: Any,
    if_match: int | None = None,
) -> WriteResult:
    """``PATCH [type]?query``: exactly one match is patched; none is 404, several 412."""
    ctx.require_type(resource_type)
    gate = ctx.read_gate(rc.caller)
    gate.require(resource_type, "u")
    criteria = conditional_criteria(ctx, resource_type, query, "criteria")
    async with ctx.db.read() as conn:
        matches = await find_ids(conn, criteria, 2, gate)
    if not matches:
        raise NotFound(f"no {resource_type} matches '{query}'")
    if len(matches) > 1:
        raise MultipleMatches(f"the criteria '{query}' match more than one {resource_type}")
    return await patch(ctx, rc, resource_type, matches[0], media_type, document, if_match)
