"""Interactions on a type: create, search, conditional update/patch/delete, history, compartment search
(hl7.org/fhir/R4/http.html)."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from app.api.body import read_limited
from app.api.deps import Ctx
from app.api.negotiation import negotiate
from app.api.outcomes import dumps, informational
from app.api.request_parts import criteria, patch_document, resource_body, written
from app.api.responses import parse_etag
from app.api.searching import history_response, search_response
from app.errors import NotFound, UnsupportedMediaType
from app.interactions import conditional
from app.interactions import create as create_mod
from app.interactions import patch as patch_mod
from app.interactions.search_parameters import reload_after_write


async def create_resource(request: Request, resource_type: str, ctx: Ctx) -> Response:
    """``POST [type]``, conditional with ``If-None-Exist`` (http.html#ccreate)."""
    fmt = negotiate(request.headers, request.query_params)
    ctx.fhir.require_type(resource_type)
    body = await resource_body(request, ctx.rc)
    result = await create_mod.create(ctx.fhir, ctx.rc, resource_type, body, request.headers.get("if-none-exist"))
    await reload_after_write(ctx.holder, resource_type)
    message = "Created" if result.created else "An existing resource matched If-None-Exist; nothing was created"
    return written(ctx.rc, result, fmt, message)


async def search_type(request: Request, resource_type: str, ctx: Ctx) -> Response:
    """``GET [type]?...`` (search.html)."""
    return await search_response(request, ctx.fhir, ctx.rc, resource_type, list(request.query_params.multi_items()))


async def search_type_post(request: Request, resource_type: str, ctx: Ctx) -> Response:
    """``POST [type]/_search`` with a form body: same results as GET (http.html#search)."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType("POST _search takes application/x-www-form-urlencoded parameters")
    raw = await read_limited(request, ctx.rc.limits.max_body_bytes)
    pairs = list(request.query_params.multi_items()) + parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
    return await search_response(request, ctx.fhir, ctx.rc, resource_type, pairs)


async def search_compartment(
    request: Request, compartment_type: str, compartment_id: str, resource_type: str, ctx: Ctx
) -> Response:
    """``GET [base]/Patient/123/CarePlan?...`` (http.html#search, compartmentdefinition.html)."""
    if compartment_type not in ctx.fhir.registry.compartments:
        raise NotFound(f"'{compartment_type[:80]}' is not a compartment")
    pairs = list(request.query_params.multi_items())
    return await search_response(request, ctx.fhir, ctx.rc, resource_type, pairs, (compartment_type, compartment_id))


async def type_history(request: Request, resource_type: str, ctx: Ctx) -> Response:
    """``GET [type]/_history``."""
    return await history_response(request, ctx.fhir, ctx.rc, f"{resource_type}/_history", resource_type)


async def conditional_update_resource(request: Request, resource_type: str, ctx: Ctx) -> Response:
    """``PUT [type]?criteria`` (http.html#cond-update)."""
    fmt = negotiate(request.headers, request.query_params)
    ctx.fhir.require_type(resource_type)
    if_match = parse_etag(request.headers.get("if-match"), "If-Match")
    body = await resource_body(request, ctx.rc)
    result = await conditional.conditional_update(ctx.fhir, ctx.rc, resource_type, criteria(request), body, if_match)
    await reload_after_write(ctx.holder, resource_type)
    return written(ctx.rc, result, fmt, "Created" if result.created else "Updated")


async def conditional_patch_resource(request: Request, resource_type: str, ctx: Ctx) -> Response:
    """``PATCH [type]?criteria``: the one match is patched."""
    fmt = negotiate(request.headers, request.query_params)
    ctx.fhir.require_type(resource_type)
    if_match = parse_etag(request.headers.get("if-match"), "If-Match")
    media_type, document = await patch_document(request, ctx.rc)
    result = await patch_mod.conditional_patch(
        ctx.fhir, ctx.rc, resource_type, criteria(request), media_type, document, if_match
    )
    await reload_after_write(ctx.holder, resource_type)
    return written(ctx.rc, result, fmt, "Patched")


async def conditional_delete_resource(request: Request, resource_type: str, ctx: Ctx) -> Response:
    """``DELETE [type]?criteria``: every match is deleted (conditionalDelete = multiple)."""
    fmt = negotiate(request.headers, request.query_params)
    deleted = await conditional.conditional_delete(ctx.fhir, ctx.rc, resource_type, criteria(request))
    await reload_after_write(ctx.holder, resource_type)
    if ctx.rc.prefer_return == "minimal":
        return Response(status_code=204)
    names = ", ".join(f"{r.stored.resource_type}/{r.stored.id}" for r in deleted) or "nothing matched"
    text = f"Deleted {len(deleted)} resource(s): {names}"
    return Response(dumps(informational(text), fmt.pretty), 200, media_type=fmt.content_type)
