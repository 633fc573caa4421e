"""Interactions on one resource: read, vread, update, patch, delete, history (hl7.org/fhir/R4/http.html)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from app.api.deps import Ctx
from app.api.negotiation import negotiate
from app.api.outcomes import dumps, informational
from app.api.request_parts import patch_document, resource_body, subsetted, written
from app.api.responses import parse_etag, resource_response, version_headers
from app.api.searching import history_response
from app.interactions import delete as delete_mod
from app.interactions import patch as patch_mod
from app.interactions import read as read_mod
from app.interactions import update as update_mod
from app.interactions.instants import parse_http_date
from app.interactions.search_parameters import reload_after_write


async def read_resource(request: Request, resource_type: str, resource_id: str, ctx: Ctx) -> Response:
    """``GET [type]/[id]``: the stored bytes; 304 for a matching ``If-None-Match``/``If-Modified-Since``."""
    fmt = negotiate(request.headers, request.query_params)
    stored = await read_mod.read(ctx.fhir, ctx.rc, resource_type, resource_id)
    if_none_match = parse_etag(request.headers.get("if-none-match"), "If-None-Match")
    if if_none_match is not None and if_none_match == stored.version_id:
        return Response(status_code=304, headers=version_headers(stored))
    modified_since = parse_http_date(request.headers.get("if-modified-since"))
    unchanged_since = modified_since is not None and stored.last_updated.replace(microsecond=0) <= modified_since
    if if_none_match is None and unchanged_since:
        return Response(status_code=304, headers=version_headers(stored))
    return resource_response(subsetted(request, stored), 200, fmt)


async def vread_resource(request: Request, resource_type: str, resource_id: str, version_id: str, ctx: Ctx) -> Response:
    """``GET [type]/[id]/_history/[vid]``."""
    fmt = negotiate(request.headers, request.query_params)
    stored = await read_mod.vread(ctx.fhir, ctx.rc, resource_type, resource_id, version_id)
    return resource_response(subsetted(request, stored), 200, fmt)


async def update_resource(request: Request, resource_type: str, resource_id: str, ctx: Ctx) -> Response:
    """``PUT [type]/[id]``, creating the resource when the id is new (updateCreate)."""
    fmt = negotiate(request.headers, request.query_params)
    ctx.fhir.require_type(resource_type)
    if_match = parse_etag(request.headers.get("if-match"), "If-Match")
    body = await resource_body(request, ctx.rc)
    result = await update_mod.update(ctx.fhir, ctx.rc, resource_type, resource_id, body, if_match)
    await reload_after_write(ctx.holder, resource_type)
    return written(ctx.rc, result, fmt, "Created" if result.created else "Updated")


async def patch_resource(request: Request, resource_type: str, resource_id: str, ctx: Ctx) -> Response:
    """``PATCH [type]/[id]`` (http.html#patch)."""
    fmt = negotiate(request.headers, request.query_params)
    ctx.fhir.require_type(resource_type)
    if_match = parse_etag(request.headers.get("if-match"), "If-Match")
    media_type, document = await patch_document(request, ctx.rc)
    result = await patch_mod.patch(ctx.fhir, ctx.rc, resource_type, resource_id, media_type, document, if_match)
    await reload_after_write(ctx.holder, resource_type)
    return written(ctx.rc, result, fmt, "Patched")


async def delete_resource(request: Request, resource_type: str, resource_id: str, ctx: Ctx) -> Response:
    """``DELETE [type]/[id]``: a tombstone version; 200 with an outcome (204 with ``return=minimal``)."""
    fmt = negotiate(request.headers, request.query_params)
    if_match = parse_etag(request.headers.get("if-match"), "If-Match")
    result = await delete_mod.delete(ctx.fhir, ctx.rc, resource_type, resource_id, if_match)
    await reload_after_write(ctx.holder, resource_type)
    headers = {} if result is None else {"ETag": f'W/"{result.stored.version_id}"'}
    if ctx.rc.prefer_return == "minimal":
        return Response(status_code=204, headers=headers)
    text = (
        f"{resource_type}/{resource_id} was not live; nothing was deleted"
        if result is None
        else f"Deleted {resource_type}/{resource_id} (version {result.stored.version_id})"
    )
    return Response(dumps(informational(text), fmt.pretty), 200, headers, media_type=fmt.content_type)


async def instance_history(request: Request, resource_type: str, resource_id: str, ctx: Ctx) -> Response:
    """``GET [type]/[id]/_history``."""
    path = f"{resource_type}/{resource_id}/_history"
    return await history_response(request, ctx.fhir, ctx.rc, path, resource_type, resource_id)
