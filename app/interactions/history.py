"""history for an instance, a type or the whole system (hl7.org/fhir/R4/http.html#history).

Newest first. Paging is a keyset cursor on (lastUpdated, type, id, version),
so a client following ``next`` never sees a version twice or skips one, even
while others write.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from app.errors import InvalidRequest, NotFound
from app.interactions.context import FhirContext, is_valid_id
from app.interactions.cursors import decode_cursor, encode_cursor
from app.interactions.instants import parse_fhir_instant
from app.interactions.request_context import RequestContext
from app.search.params import parse_count
from app.storage.repository import HistoryCursor, StoredVersion, read_current, read_history


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    count: int
    since: datetime | None
    after: HistoryCursor | None
    page_token: str | None = None


@dataclass(frozen=True, slots=True)
class HistoryPage:
    versions: list[StoredVersion]
    next_cursor: str | None
    query: HistoryQuery


def history_cursor(token: str) -> HistoryCursor:
    instant, resource_type, resource_id, version_id = decode_cursor(token, 4)
    well_formed = (
        isinstance(instant, datetime)
        and isinstance(resource_type, str)
        and resource_type.isascii()
        and resource_type.isalpha()
        and len(resource_type) <= 64
        and isinstance(resource_id, str)
        and is_valid_id(resource_id)
        and type(version_id) is int
        and 0 < version_id < 2**31
    )
    if not well_formed:
        raise InvalidRequest(f"_page '{token[:80]}' is not a valid paging cursor", ["_page"])
    return HistoryCursor(instant, str(resource_type), str(resource_id), version_id)


def parse_history_query(params: Mapping[str, str], default_count: int, max_count: int) -> HistoryQuery:
    count = default_count
    if "_count" in params:
        count = min(parse_count(params["_count"]), max_count)
    since = parse_fhir_instant(params["_since"], "_since") if "_since" in params else None
    token = params.get("_page")
    after = history_cursor(token) if token is not None else None
    return HistoryQuery(count, since, after, token)


async def history(
    ctx: FhirContext,
    rc: RequestContext,
    query: HistoryQuery,
    resource_type: str | None = None,
    resource_id: str | None = None,
) -> HistoryPage:
    if resource_id is not None:
        assert resource_type is not None
        ctx.require_known(resource_type, resource_id)
    elif resource_type is not None:
        ctx.require_type(resource_type)
    async with ctx.db.read() as conn:
        gate = ctx.read_gate(rc.caller)
        # SMART v2: instance history is "r", type and system history "s" (scopes-and-launch-context.html)
        if resource_id is not None:
            gate.require(str(resource_type), "r")
        elif resource_type is not None:
            gate.require(resource_type, "s")
        else:
            gate.require_any("s")
        rows = await read_history(conn, resource_type, resource_id, query.since, query.after, query.count + 1, gate)
        if resource_id is not None and not rows and query.after is None:
            assert resource_type is not None
            if await read_current(conn, resource_type, resource_id, gate) is None:
                raise NotFound(f"{resource_type}/{resource_id} is not known")
    versions = rows[: query.count]
    last = versions[-1] if versions else None
    next_cursor = None
    if len(rows) > query.count and last is not None:
        next_cursor = encode_cursor([last.last_updated, last.resource_type, last.id, last.version_id])
    return HistoryPage(versions, next_cursor, query)
