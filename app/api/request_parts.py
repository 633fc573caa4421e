"""Pieces of a request the routes share: the resource body, a patch document, conditional criteria,
and the answer to a write."""

from __future__ import annotations

import dataclasses

from starlette.requests import Request
from starlette.responses import Response

from app.api.body import parse_json, parse_resource, read_limited
from app.api.negotiation import ResponseFormat, require_json_body
from app.api.responses import write_response
from app.errors import InvalidRequest, UnsupportedMediaType
from app.interactions.context import WriteResult
from app.interactions.patch import FHIRPATH_PATCH, JSON_PATCH
from app.interactions.request_context import RequestContext
from app.search.subsetting import parse_subsetting, subset
from app.storage.repository import StoredVersion


async def resource_body(request: Request, rc: RequestContext, check_strings: bool = True) -> dict[str, object]:
    """The FHIR resource in the body (415 for another media type, 413 past the limit, 400 if not JSON)."""
    require_json_body(request.headers)
    return await parse_resource(await read_limited(request, rc.limits.max_body_bytes), check_strings)


async def patch_document(request: Request, rc: RequestContext) -> tuple[str, object]:
    """(media type, patch document): a JSON Patch array or a FHIRPath Patch Parameters resource."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    raw = await read_limited(request, rc.limits.max_body_bytes)
    if media_type == JSON_PATCH:
        return media_type, await parse_json(raw)
    if media_type in (FHIRPATH_PATCH, "application/json"):
        return FHIRPATH_PATCH, await parse_resource(raw)
    raise UnsupportedMediaType(f"PATCH takes {JSON_PATCH} or a FHIRPath Patch as {FHIRPATH_PATCH}")


def criteria(request: Request) -> str:
    """The search criteria of a conditional update, patch or delete (http.html#cond-update)."""
    query = request.url.query
    if not query:
        raise InvalidRequest("a conditional update or delete needs search criteria in the URL")
    return query


def subsetted(request: Request, stored: StoredVersion) -> StoredVersion:
    """Apply ``_summary``/``_elements`` to a read (search.html#summary); the stored bytes otherwise."""
    subsetting = parse_subsetting(request.query_params)
    if not subsetting.changes_bodies or stored.body is None:
        return stored
    return dataclasses.replace(stored, body=subset(stored.body, subsetting))


def written(rc: RequestContext, result: WriteResult, fmt: ResponseFormat, message: str) -> Response:
    """Response to a create or update, with ``Location`` of the version written or matched."""
    stored = result.stored
    location = f"{rc.base_url}/{stored.resource_type}/{stored.id}/_history/{stored.version_id}"
    return write_response(stored, result.status, fmt, rc.prefer_return, message, location)
