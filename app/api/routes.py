"""FHIR REST routes: parse the request, call an interaction, render the result.

Which route serves which interaction at which path is the table in
``app.interactions.catalog``; ``ENDPOINTS`` gives its route functions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response

from app.api.async_requests import accepted
from app.api.body import parse_json, parse_resource, read_limited
from app.api.bundles import history_bundle, search_bundle, system_search_bundle, transaction_response_bundle
from app.api.negotiation import ResponseFormat, negotiate, require_json_body
from app.api.outcomes import dumps, informational
from app.api.responses import (
    parse_etag,
    prefer_return,
    resource_response,
    version_headers,
    write_response,
)
from app.config import Settings
from app.errors import InvalidRequest, MethodNotAllowed, NotFound, OperationNotSupported, UnsupportedMediaType
from app.interactions import conditional, reindex
from app.interactions import create as create_mod
from app.interactions import delete as delete_mod
from app.interactions import patch as patch_mod
from app.interactions import read as read_mod
from app.interactions import update as update_mod
from app.interactions import validate as validate_mod
from app.interactions.bundle_entries import Entry, parse_bundle
from app.interactions.catalog import INTERACTIONS
from app.interactions.context import FhirContext, WriteResult
from app.interactions.history import history, parse_history_query
from app.interactions.instants import parse_http_date
from app.interactions.reindex_job import REINDEX, reindex_parameters
from app.interactions.search import search
from app.interactions.search_parameters import reload_search_parameters
from app.interactions.system_search import plan_system_search, system_search
from app.interactions.transaction import ResponseBudget, SearchLimits, run_batch, run_transaction
from app.search.request import parse_search
from app.search.subsetting import parse_subsetting, subset
from app.storage.repository import StoredVersion

Endpoint = Callable[..., Awaitable[Response]]


def _ctx(request: Request) -> FhirContext:
    ctx: FhirContext = request.app.state.ctx
    return ctx


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _body(request: Request, check_strings: bool = True) -> dict[str, object]:
    require_json_body(request.headers)
    return await parse_resource(await read_limited(request, _settings(request).max_body_bytes), check_strings)


async def _after_write(request: Request, resource_type: str) -> None:
    """A stored SearchParameter changes what can be searched: reload this process's registry now."""
    if resource_type == "SearchParameter":
        await reload_search_parameters(_ctx(request))


def _written(request: Request, result: WriteResult, fmt: ResponseFormat, message: str) -> Response:
    """Response to a create or update, with ``Location`` of the version written or matched."""
    stored = result.stored
    base = _settings(request).public_base_url
    location = f"{base}/{stored.resource_type}/{stored.id}/_history/{stored.version_id}"
    return write_response(stored, result.status, fmt, prefer_return(request.headers), message, location)


async def create_resource(request: Request, resource_type: str) -> Response:
    fmt = negotiate(request.headers, request.query_params)
    _ctx(request).require_type(resource_type)
    body = await _body(request)
    result = await create_mod.create(_ctx(request), resource_type, body, request.headers.get("if-none-exist"))
    await _after_write(request, resource_type)
    message = "Created" if result.created else "An existing resource matched If-None-Exist; nothing was created"
    return _written(request, result, fmt, message)


def _subsetted(request: Request, stored: StoredVersion) -> StoredVersion:
    """Apply ``_summary``/``_elements`` to a read (search.html#summary); the stored bytes otherwise."""
    subsetting = parse_subsetting(request.query_params)
    if not subsetting.changes_bodies or stored.body is None:
        return stored
    return dataclasses.replace(stored, body=subset(stored.body, subsetting))


async def read_resource(request: Request, resource_type: str, resource_id: str) -> Response:
    fmt = negotiate(request.headers, request.query_params)
    stored = await read_mod.read(_ctx(request), resource_type, resource_id)
    if_none_match = parse_etag(request.headers.get("if-none-match"), "If-None-Match")
    if if_none_match is not None and if_none_match == stored.version_id:
        return Response(status_code=304, headers=version_headers(stored))
    modified_since = parse_http_date(request.headers.get("if-modified-since"))
    unchanged_since = modified_since is not None and stored.last_updated.replace(microsecond=0) <= modified_since
    if if_none_match is None and unchanged_since:
        return Response(status_code=304, headers=version_headers(stored))
    return resource_response(_subsetted(request, stored), 200, fmt)


async def vread_resource(request: Request, resource_type: str, resource_id: str, version_id: str) -> Response:
    fmt = negotiate(request.headers, request.query_params)
    stored = await read_mod.vread(_ctx(request), resource_type, resource_id, version_id)
    return resource_response(_subsetted(request, stored), 200, fmt)


async def update_resource(request: Request, resource_type: str, resource_id: str) -> Response:
    fmt = negotiate(request.headers, request.query_params)
    _ctx(request).require_type(resource_type)
    if_match = parse_etag(request.headers.get("if-match"), "If-Match")
    body = await _body(request)
    result = await update_mod.update(_ctx(request), resource_type, resource_id, body, if_match)
    await _after_write(request, resource_type)
    return _written(request, result, fmt, "Created" if result.created else "Updated")


def _criteria(request: Request) -> str:
    query = request.url.query
    if not query:
        raise InvalidRequest("a conditional update or delete needs search criteria in the URL")
    return query


async def conditional_update_resource(request: Request, resource_type: str) -> Response:
    """``PUT [type]?criteria`` (http.html#cond-update)."""
    fmt = negotiate(request.headers, request.query_params)
    _ctx(request).require_type(resource_type)
    if_match = parse_etag(request.headers.get("if-match"), "If-Match")
    body = await _body(request)
    result = await conditional.conditional_update(_ctx(request), resource_type, _criteria(request), body, if_match)
    await _after_write(request, resource_type)
    return _written(request, result, fmt, "Created" if result.created else "Updated")


async def _patch_document(request: Request) -> tuple[str, object]:
    """(media type, patch document): a JSON Patch array or a FHIRPath Patch Parameters resource."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    raw = await read_limited(request, _settings(request).max_body_bytes)
    if media_type == patch_mod.JSON_PATCH:
        return media_type, await parse_json(raw)
    if media_type in (patch_mod.FHIRPATH_PATCH, "application/json"):
        return patch_mod.FHIRPATH_PATCH, await parse_resource(raw)
    raise UnsupportedMediaType(f"PATCH takes {patch_mod.JSON_PATCH} or a FHIRPath Patch as {patch_mod.FHIRPATH_PATCH}")


async def patch_resource(request: Request, resource_type: str, resource_id: str) -> Response:
    """``PATCH [type]/[id]`` (http.html#patch)."""
    fmt = negotiate(request.headers, request.query_params)
    _ctx(request).require_type(resource_type)
    if_match = parse_etag(request.headers.get("if-match"), "If-Match")
    media_type, document = await _patch_document(request)
    result = await patch_mod.patch(_ctx(request), resource_type, resource_id, media_type, document, if_match)
    await _after_write(request, resource_type)
    return _written(request, result, fmt, "Patched")


async def conditional_patch_resource(request: Request, resource_type: str) -> Response:
    """``PATCH [type]?criteria``: the one match is patched."""
    fmt = negotiate(request.headers, request.query_params)
    _ctx(request).require_type(resource_type)
    if_match = parse_etag(request.headers.get("if-match"), "If-Match")
    media_type, document = await _patch_document(request)
    result = await patch_mod.conditional_patch(
        _ctx(request), resource_type, _criteria(request), media_type, document, if_match
    )
    await _after_write(request, resource_type)
    return _written(request, result, fmt, "Patched")


async def conditional_delete_resource(request: Request, resource_type: str) -> Response:
    """``DELETE [type]?criteria``: every match is deleted (conditionalDelete = multiple)."""
    fmt = negotiate(request.headers, request.query_params)
    deleted = await conditional.conditional_delete(_ctx(request), resource_type, _criteria(request))
    await _after_write(request, resource_type)
    if prefer_return(request.headers) == "minimal":
        return Response(status_code=204)
    names = ", ".join(f"{r.stored.resource_type}/{r.stored.id}" for r in deleted) or "nothing matched"
    text = f"Deleted {len(deleted)} resource(s): {names}"
    return Response(dumps(informational(text), fmt.pretty), 200, media_type=fmt.content_type)


async def delete_resource(request: Request, resource_type: str, resource_id: str) -> Response:
    fmt = negotiate(request.headers, request.query_params)
    if_match = parse_etag(request.headers.get("if-match"), "If-Match")
    result = await delete_mod.delete(_ctx(request), resource_type, resource_id, if_match)
    await _after_write(request, resource_type)
    headers = {} if result is None else {"ETag": f'W/"{result.stored.version_id}"'}
    if prefer_return(request.headers) == "minimal":
        return Response(status_code=204, headers=headers)
    text = (
        f"{resource_type}/{resource_id} was not live; nothing was deleted"
        if result is None
        else f"Deleted {resource_type}/{resource_id} (version {result.stored.version_id})"
    )
    return Response(dumps(informational(text), fmt.pretty), 200, headers, media_type=fmt.content_type)


async def _history_response(
    request: Request, path: str, resource_type: str | None = None, resource_id: str | None = None
) -> Response:
    fmt = negotiate(request.headers, request.query_params)
    settings = _settings(request)
    query = parse_history_query(request.query_params, settings.default_page_size, settings.max_page_size)
    page = await history(_ctx(request), query, resource_type, resource_id)
    return Response(history_bundle(page, settings.public_base_url, path, fmt.pretty), media_type=fmt.content_type)


async def instance_history(request: Request, resource_type: str, resource_id: str) -> Response:
    return await _history_response(request, f"{resource_type}/{resource_id}/_history", resource_type, resource_id)


async def type_history(request: Request, resource_type: str) -> Response:
    return await _history_response(request, f"{resource_type}/_history", resource_type)


async def system_history(request: Request) -> Response:
    return await _history_response(request, "_history")


def _strict(request: Request) -> bool:
    """``Prefer: handling=strict`` (search.html#errors); lenient is the default."""
    return "handling=strict" in request.headers.get("prefer", "").replace(" ", "")


async def _search_response(
    request: Request, resource_type: str, pairs: list[tuple[str, str]], compartment: tuple[str, str] | None = None
) -> Response:
    fmt = negotiate(request.headers, request.query_params)
    ctx, settings = _ctx(request), _settings(request)
    ctx.require_type(resource_type)
    parsed = parse_search(
        resource_type,
        pairs,
        ctx.registry,
        settings.default_page_size,
        settings.max_page_size,
        _strict(request),
        compartment,
    )
    page = await search(ctx, parsed)
    return Response(search_bundle(page, settings.public_base_url, fmt.pretty), media_type=fmt.content_type)


async def search_type(request: Request, resource_type: str) -> Response:
    return await _search_response(request, resource_type, list(request.query_params.multi_items()))


async def search_system(request: Request) -> Response:
    """``GET [base]?_type=...`` across resource types."""
    fmt = negotiate(request.headers, request.query_params)
    ctx, settings = _ctx(request), _settings(request)
    pairs = list(request.query_params.multi_items())
    requests, page_token = plan_system_search(
        ctx, pairs, settings.default_page_size, settings.max_page_size, _strict(request)
    )
    page = await system_search(ctx, requests, page_token)
    explicit = any(k == "_type" for k, _ in pairs)
    body = system_search_bundle(page, settings.public_base_url, fmt.pretty, explicit)
    return Response(body, media_type=fmt.content_type)


async def search_compartment(
    request: Request, compartment_type: str, compartment_id: str, resource_type: str
) -> Response:
    """``GET [base]/Patient/123/CarePlan?...`` (http.html#search, compartmentdefinition.html)."""
    if compartment_type not in _ctx(request).registry.compartments:
        raise NotFound(f"'{compartment_type[:80]}' is not a compartment")
    pairs = list(request.query_params.multi_items())
    return await _search_response(request, resource_type, pairs, (compartment_type, compartment_id))


async def search_type_post(request: Request, resource_type: str) -> Response:
    """``POST [type]/_search`` with a form body: same results as GET (http.html#search)."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType("POST _search takes application/x-www-form-urlencoded parameters")
    raw = await read_limited(request, _settings(request).max_body_bytes)
    pairs = list(request.query_params.multi_items()) + parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
    return await _search_response(request, resource_type, pairs)


def _reindexed(request: Request, counts: dict[str, int]) -> Response:
    """A Parameters resource: the total and, per type, how many resources were reindexed."""
    fmt = negotiate(request.headers, request.query_params)
    return Response(dumps(reindex.counts_parameters(counts), fmt.pretty), 200, media_type=fmt.content_type)


async def reindex_system(request: Request) -> Response:
    """``POST [base]/$reindex``: every stored resource of every type, as a job (async.html)."""
    return await accepted(request, REINDEX, reindex_parameters(None), "$reindex of every resource type")


async def reindex_type(request: Request, resource_type: str) -> Response:
    """``POST [base]/[type]/$reindex``, as a job (async.html)."""
    _ctx(request).require_type(resource_type)
    return await accepted(request, REINDEX, reindex_parameters(resource_type), f"$reindex of {resource_type}")


async def reindex_instance(request: Request, resource_type: str, resource_id: str) -> Response:
    """``POST [base]/[type]/[id]/$reindex``."""
    count = await reindex.reindex_instance(_ctx(request), resource_type, resource_id)
    return _reindexed(request, {resource_type: count})


async def transaction_or_batch(request: Request) -> Response:
    """``POST [base]`` with a transaction or batch Bundle (http.html#transaction)."""
    fmt = negotiate(request.headers, request.query_params)
    ctx, settings = _ctx(request), _settings(request)
    require_json_body(request.headers)
    raw = await read_limited(request, settings.max_body_bytes)
    body = await parse_resource(raw, check_strings=False)  # per entry: a batch refuses only the entry
    kind, entries = parse_bundle(
        body,
        ("transaction", "batch"),
        settings.max_bundle_entries,
        settings.public_base_url,
        ctx.resource_types,
        ctx.validator.json_rules,
        check_strings=b"\\u" in raw,  # only a JSON escape can bring a control character in
    )
    budget = ResponseBudget(settings.max_bundle_response_resources)
    limits = SearchLimits(settings.default_page_size, settings.max_page_size, budget)
    if kind == "transaction":
        results = await run_transaction(ctx, [e for e in entries if isinstance(e, Entry)], limits)
    else:
        results = await run_batch(ctx, entries, limits)
    if any(isinstance(e, Entry) and e.resource_type == "SearchParameter" for e in entries):
        await reload_search_parameters(ctx)
    base = settings.public_base_url
    rendered = transaction_response_bundle(
        kind,
        results,
        base,
        prefer_return(request.headers),
        fmt.pretty,
        lambda page: search_bundle(page, base, False),
    )
    return Response(rendered, 200, media_type=fmt.content_type)


async def _validate_response(request: Request, resource_type: str, resource_id: str | None) -> Response:
    fmt = negotiate(request.headers, request.query_params)
    body = await _body(request)
    await validate_mod.validate(_ctx(request), resource_type, validate_mod.parse_validate_request(body), resource_id)
    outcome = informational("Validation successful: no errors", "informational")
    return Response(dumps(outcome, fmt.pretty), 200, media_type=fmt.content_type)


async def validate_type(request: Request, resource_type: str) -> Response:
    """``POST [base]/[type]/$validate``: 200 when a create would accept the resource, else 400 with the
    issues a create would report; nothing is stored (resource-operation-validate.html)."""
    return await _validate_response(request, resource_type, None)


async def validate_instance(request: Request, resource_type: str, resource_id: str) -> Response:
    """``POST [base]/[type]/[id]/$validate``: as for the type, with the id checked (mode update/delete)."""
    return await _validate_response(request, resource_type, resource_id)


async def unsupported_operation(request: Request, operation: str) -> Response:
    """Any other ``$operation``: a clear refusal instead of the path being read as a type or an id."""
    known = sorted({r.interaction for r in INTERACTIONS if r.level == "operation"})
    if operation in known:
        allowed = sorted({r.method for r in INTERACTIONS if r.interaction == operation})
        raise MethodNotAllowed(f"${operation} is invoked with {', '.join(allowed)} here", allow=allowed)
    raise OperationNotSupported(
        f"the operation ${operation[:80]} is not supported on this server; supported: "
        + ", ".join(f"${name}" for name in known)
    )


async def unsupported_type_operation(request: Request, resource_type: str, operation: str) -> Response:
    return await unsupported_operation(request, operation)


async def unsupported_instance_operation(
    request: Request, resource_type: str, resource_id: str, operation: str
) -> Response:
    return await unsupported_operation(request, operation)


class ResourceTypeConvertor(Convertor[str]):
    """A path segment that can be a resource type (``CarePlan``): never ``_history``, ``$op`` or ``metadata``,
    so routes of the same shape do not compete and the hot ones can come first."""

    regex = "[A-Z][A-Za-z]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


class ResourceIdConvertor(ResourceTypeConvertor):
    """A path segment in the place of an id: anything but an ``$operation`` (an invalid id is refused by
    the interaction, with a message, rather than by the router)."""

    regex = "[^/$][^/]*"


register_url_convertor("rtype", ResourceTypeConvertor())
register_url_convertor("rid", ResourceIdConvertor())


# Route functions by the names app.interactions.catalog gives them.
ENDPOINTS: dict[str, Endpoint] = {
    "search_compartment": search_compartment,
    "type_history": type_history,
    "read_resource": read_resource,
    "search_type_post": search_type_post,
    "create_resource": create_resource,
    "search_type": search_type,
    "update_resource": update_resource,
    "delete_resource": delete_resource,
    "patch_resource": patch_resource,
    "instance_history": instance_history,
    "vread_resource": vread_resource,
    "conditional_update_resource": conditional_update_resource,
    "conditional_delete_resource": conditional_delete_resource,
    "conditional_patch_resource": conditional_patch_resource,
    "transaction_or_batch": transaction_or_batch,
    "system_history": system_history,
    "search_system": search_system,
    "reindex_system": reindex_system,
    "reindex_type": reindex_type,
    "reindex_instance": reindex_instance,
    "validate_type": validate_type,
    "validate_instance": validate_instance,
    "unsupported_operation": unsupported_operation,
    "unsupported_type_operation": unsupported_type_operation,
    "unsupported_instance_operation": unsupported_instance_operation,
}
