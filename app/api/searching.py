"""The searchset and history answers that several routes give."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from app.api.bundles import history_bundle, search_bundle
from app.api.negotiation import negotiate
from app.interactions.context import FhirContext
from app.interactions.history import history, parse_history_query
from app.interactions.request_context import RequestContext
from app.interactions.search import search
from app.search.request import parse_search


async def search_response(
    request: Request,
    fhir: FhirContext,
    rc: RequestContext,
    resource_type: str,
    pairs: list[tuple[str, str]],
    compartment: tuple[str, str] | None = None,
) -> Response:
    fmt = negotiate(request.headers, request.query_params)
    fhir.require_type(resource_type)
    limits = rc.limits
    parsed = parse_search(
        resource_type, pairs, fhir.registry, limits.default_page_size, limits.max_page_size, rc.strict, compartment
    )
    page = await search(fhir, rc, parsed)
    return Response(search_bundle(page, rc.base_url, fmt.pretty), media_type=fmt.content_type)


async def history_response(
    request: Request,
    fhir: FhirContext,
    rc: RequestContext,
    path: str,
    resource_type: str | None = None,
    resource_id: str | None = None,
) -> Response:
    fmt = negotiate(request.headers, request.query_params)
    query = parse_history_query(request.query_params, rc.limits.default_page_size, rc.limits.max_page_size)
    page = await history(fhir, rc, query, resource_type, resource_id)
    return Response(history_bundle(page, rc.base_url, path, fmt.pretty), media_type=fmt.content_type)
