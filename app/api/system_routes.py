"""Interactions on the whole server: transaction and batch, system search, system history
(hl7.org/fhir/R4/http.html)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from app.api.body import parse_resource, read_limited
from app.api.bundles import search_bundle, system_search_bundle, transaction_response_bundle
from app.api.deps import Ctx
from app.api.negotiation import negotiate, require_json_body
from app.api.searching import history_response
from app.interactions.bundle_entries import Entry, parse_bundle
from app.interactions.search_parameters import reload_search_parameters
from app.interactions.system_search import plan_system_search, system_search
from app.interactions.transaction import ResponseBudget, SearchLimits, run_batch, run_transaction


async def transaction_or_batch(request: Request, ctx: Ctx) -> Response:
    """``POST [base]`` with a transaction or batch Bundle (http.html#transaction)."""
    fmt = negotiate(request.headers, request.query_params)
    limits = ctx.rc.limits
    require_json_body(request.headers)
    raw = await read_limited(request, limits.max_body_bytes)
    body = await parse_resource(raw, check_strings=False)  # per entry: a batch refuses only the entry
    kind, entries = parse_bundle(
        body,
        ("transaction", "batch"),
        limits.max_bundle_entries,
        ctx.rc.base_url,
        ctx.fhir.resource_types,
        ctx.fhir.validator.json_rules,
        check_strings=b"\\u" in raw,  # only a JSON escape can bring a control character in
    )
    budget = ResponseBudget(limits.max_bundle_response_resources)
    search_limits = SearchLimits(limits.default_page_size, limits.max_page_size, budget)
    if kind == "transaction":
        results = await run_transaction(ctx.fhir, ctx.rc, [e for e in entries if isinstance(e, Entry)], search_limits)
    else:
        results = await run_batch(ctx.fhir, ctx.rc, entries, search_limits)
    if any(isinstance(e, Entry) and e.resource_type == "SearchParameter" for e in entries):
        await reload_search_parameters(ctx.holder)
    rendered = transaction_response_bundle(
        kind,
        results,
        ctx.rc.base_url,
        ctx.rc.prefer_return,
        fmt.pretty,
        lambda page: search_bundle(page, ctx.rc.base_url, False),
    )
    return Response(rendered, 200, media_type=fmt.content_type)


async def search_system(request: Request, ctx: Ctx) -> Response:
    """``GET [base]?_type=...`` across resource types."""
    fmt = negotiate(request.headers, request.query_params)
    pairs = list(request.query_params.multi_items())
    requests, page_token = plan_system_search(
        ctx.fhir, ctx.rc, pairs, ctx.rc.limits.default_page_size, ctx.rc.limits.max_page_size
    )
    page = await system_search(ctx.fhir, ctx.rc, requests, page_token)
    explicit = any(k == "_type" for k, _ in pairs)
    body = system_search_bundle(page, ctx.rc.base_url, fmt.pretty, explicit)
    return Response(body, media_type=fmt.content_type)


async def system_history(request: Request, ctx: Ctx) -> Response:
    """``GET [base]/_history``."""
    return await history_response(request, ctx.fhir, ctx.rc, "_history")
