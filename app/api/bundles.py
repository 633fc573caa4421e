"""Bundles of stored resources, embedding the stored bytes without re-parsing them."""

from __future__ import annotations

import uuid
from http import HTTPStatus
from typing import Any
from urllib.parse import urlencode

import orjson

from app import fhirjson
from app.api.outcomes import informational, outcome_for_error
from app.api.responses import STATUS_TEXT, etag
from app.interactions.context import format_instant, utc_now
from app.interactions.history import HistoryPage
from app.interactions.search import SearchPage
from app.interactions.system_search import SystemSearchPage
from app.interactions.transaction import EntryResult
from app.search.subsetting import Subsetting, subset
from app.storage.repository import StoredVersion


def _embedded(body: bytes, pretty: bool) -> Any:
    """Stored bytes inside a Bundle: embedded as they are, or parsed (decimals kept) to be indented."""
    return fhirjson.loads(body) if pretty else orjson.Fragment(body)


def _history_entry(version: StoredVersion, base_url: str, pretty: bool) -> dict[str, Any]:
    ref = f"{version.resource_type}/{version.id}"
    entry: dict[str, Any] = {"fullUrl": f"{base_url}/{ref}"}
    if version.body is not None:
        entry["resource"] = _embedded(version.body, pretty)
    if version.method == "DELETE":
        status = 204
    elif version.version_id == 1 or version.method == "POST":
        status = 201
    else:
        status = 200
    entry["request"] = {"method": version.method, "url": version.resource_type if version.method == "POST" else ref}
    entry["response"] = {
        "status": STATUS_TEXT[status],
        "etag": etag(version.version_id),
        "lastModified": format_instant(version.last_updated),
    }
    return entry


def history_bundle(page: HistoryPage, base_url: str, path: str, pretty: bool) -> bytes:
    """A ``history`` Bundle with self/next links; ``path`` is relative to the base."""
    params: dict[str, str] = {"_count": str(page.query.count)}
    if page.query.since is not None:
        params["_since"] = format_instant(page.query.since)
    self_params = dict(params)
    links = []
    if page.query.page_token is not None:
        self_params["_page"] = page.query.page_token
    links.append({"relation": "self", "url": f"{base_url}/{path}?{urlencode(self_params)}"})
    if page.next_cursor is not None:
        links.append(
            {"relation": "next", "url": f"{base_url}/{path}?{urlencode({**params, '_page': page.next_cursor})}"}
        )
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": format_instant(utc_now())},
        "type": "history",
        "link": links,
    }
    if page.versions:  # json.html: no empty arrays, so an empty Bundle has no "entry" at all
        bundle["entry"] = [_history_entry(v, base_url, pretty) for v in page.versions]
    return fhirjson.dumps(bundle, pretty)


def _searchset(
    base_url: str,
    path: str,
    params: list[tuple[str, str]],
    page_token: str | None,
    next_token: str | None,
    total: int | None,
    entries: list[tuple[str, str, bytes, str]],
    pretty: bool,
    subsetting: Subsetting | None = None,
) -> bytes:
    """A ``searchset`` Bundle; ``self`` shows the parameters actually applied (search.html#conformance).

    ``entries`` are (type, id, stored bytes, search mode); ``path`` is the search path below the base.
    """
    url = f"{base_url}/{path}" if path else base_url
    self_params = [*params, ("_page", page_token)] if page_token else params
    links = [{"relation": "self", "url": f"{url}?{urlencode(self_params)}"}]
    if next_token is not None:
        links.append({"relation": "next", "url": f"{url}?{urlencode([*params, ('_page', next_token)])}"})
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": format_instant(utc_now())},
        "type": "searchset",
    }
    if total is not None:
        bundle["total"] = total
    bundle["link"] = links

    def shown(body: bytes) -> Any:
        if subsetting is not None and subsetting.changes_bodies:
            body = subset(body, subsetting)
        return _embedded(body, pretty)

    if entries:
        bundle["entry"] = [
            {"fullUrl": f"{base_url}/{resource_type}/{resource_id}", "resource": shown(body), "search": {"mode": mode}}
            for resource_type, resource_id, body, mode in entries
        ]
    return fhirjson.dumps(bundle, pretty)


def search_bundle(page: SearchPage, base_url: str, pretty: bool) -> bytes:
    request = page.request
    params = [*request.applied(), ("_count", str(request.count))]
    if request.total != "none":
        params.append(("_total", request.total))
    entries = [(request.resource_type, rid, body, "match") for rid, body in page.matches]
    entries += [(rtype, rid, body, "include") for rtype, rid, body in page.included]
    return _searchset(
        base_url,
        request.path,
        params,
        request.page_token,
        page.next_token,
        page.total,
        entries,
        pretty,
        request.subsetting,
    )


def system_search_bundle(page: SystemSearchPage, base_url: str, pretty: bool, explicit_types: bool) -> bytes:
    params = list(page.applied)
    if explicit_types:
        params.insert(0, ("_type", ",".join(page.types)))
    params.append(("_count", str(page.count)))
    entries = [(rtype, rid, body, "match") for rtype, rid, body in page.matches]
    return _searchset(base_url, "", params, page.page_token, page.next_token, page.total, entries, pretty)


def _status(code: int) -> str:
    return f"{code} {HTTPStatus(code).phrase}"


def transaction_response_bundle(
    kind: str, results: list[EntryResult], base_url: str, prefer: str, pretty: bool, searchset: Any
) -> bytes:
    """``transaction-response`` / ``batch-response``: per entry status, location, etag, lastModified and,
    per ``Prefer``, the resource or an OperationOutcome; a failed batch entry carries its outcome."""
    entries = []
    for result in results:
        if result.error is not None:
            status, outcome = outcome_for_error(result.error)
            entries.append({"response": {"status": _status(status), "outcome": outcome}})
            continue
        response: dict[str, Any] = {"status": _status(result.status)}
        entry: dict[str, Any] = {}
        stored = result.stored
        if result.search is not None:
            if result.method != "HEAD":
                entry["resource"] = orjson.Fragment(searchset(result.search))
        elif stored is not None:
            ref = f"{stored.resource_type}/{stored.id}"
            entry["fullUrl"] = f"{base_url}/{ref}"
            if result.method in ("POST", "PUT", "PATCH"):
                response["location"] = f"{ref}/_history/{stored.version_id}"
            response["etag"] = etag(stored.version_id)
            response["lastModified"] = format_instant(stored.last_updated)
            wants_body = result.method in ("GET",) and result.status == 200
            wants_body = wants_body or (result.method in ("POST", "PUT", "PATCH") and prefer == "representation")
            if wants_body and stored.body is not None:
                entry["resource"] = _embedded(stored.body, pretty)
            if result.method in ("POST", "PUT", "PATCH") and prefer == "OperationOutcome":
                response["outcome"] = informational(f"{result.method} {ref}: {_status(result.status)}")
        entry["response"] = response
        entries.append(entry)
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": format_instant(utc_now())},
        "type": f"{kind}-response",
    }
    if entries:
        bundle["entry"] = entries
    return fhirjson.dumps(bundle, pretty)
