"""history for an instance, a type or the whole system (hl7.org/fhir/R4/http.html#history).

Newest first. Paging is a keyset cursor on (lastUpdated, type, id, version),
so a client following ``next`` never sees a version twice or skips one, even
while others write.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from app.errors import InvalidRequest, NotFound
from app.interactions.context import FhirContext
from app.interactions.cursors import decode_cursor, encode_cursor
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


def parse_instant(value: str, name: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"{name} '{value}' is not a valid instant", [name]) from None
    if parsed.tzinfo is None:
        raise InvalidRequest(f"{name} '{value}' must include a time zone", [name])
    return parsed.astimezone(UTC)


def history_cursor(token: str) -> HistoryCursor:
    instant, resource_type, resource_id, version_id = decode_cursor(token, 4)
    if not (isinstance(instant, datetime) and isinstance(version_id, int)):
        raise InvalidRequest(f"_page '{token}' is not a valid paging cursor", ["_page"])
    return HistoryCursor(instant, str(resource_type), str(resource_id), version_id)


def parse_history_query(params: Mapping[str, str], default_count: int, max_count: int) -> HistoryQuery:
    count = default_count
    if "_count" in params:
        raw = params["_count"]
        if not raw.isdigit():
            raise InvalidRequest(f"_count '{raw}' is not a non-negative integer", ["_count"])
        count = min(int(raw), max_count)
    since = parse_instant(params["_since"], "_since") if "_since" in params else None
    token = params.get("_page")
    after = history_cursor(token) if token is not None else None
    return HistoryQuery(count, since, after, token)


async def history(
    ctx: FhirContext, query: HistoryQuery, resource_type: str | None = None, resource_id: str | None = None
) -> HistoryPage:
    if resource_id is not None:
        assert resource_type is not None
        ctx.require_known(resource_type, resource_id)
    elif resource_type is not None:
        ctx.require_type(resource_type)
    async with ctx.db.read() as conn:
        rows = await read_history(conn, resource_type, resource_id, query.since, query.after, query.count + 1)
        if resource_id is not None and not rows and query.after is None:
            assert resource_type is not None
            if await read_current(conn, resource_type, resource_id) is None:
                raise NotFound(f"{resource_type}/{resource_id} is not known")
    versions = rows[: query.count]
    last = versions[-1] if versions else None
    next_cursor = None
    if len(rows) > query.count and last is not None:
        next_cursor = encode_cursor([last.last_updated, last.resource_type, last.id, last.version_id])
    return HistoryPage(versions, next_cursor, query)
