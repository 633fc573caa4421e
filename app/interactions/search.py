"""search (hl7.org/fhir/R4/http.html#search, search.html): one page of matches.

Paging is a keyset cursor on the resource id (the default order), so
following ``next`` visits every match once even while others write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from app.errors import InvalidRequest
from app.interactions.context import FhirContext, is_valid_id
from app.interactions.cursors import decode_cursor, encode_cursor
from app.interactions.request_context import RequestContext
from app.search.compiler import compile_count, compile_search
from app.search.includes import MAX_ITERATIONS, forward_targets, load_live, reverse_sources
from app.search.request import Include, SearchRequest, SortKey
from app.storage.gate import OPEN, ReadGate

MAX_INCLUDED = 1000


@dataclass(frozen=True, slots=True)
class SearchPage:
    request: SearchRequest
    matches: list[tuple[str, bytes]]
    next_token: str | None
    total: int | None
    included: list[tuple[str, str, bytes]] = field(default_factory=list)


def _sort_value_type(key: SortKey) -> type:
    if key.param.code == "_lastUpdated" or key.param.type == "date":
        return datetime
    if key.param.type in ("number", "quantity"):
        return Decimal
    return str


def decode_page_token(token: str, sort: tuple[SortKey, ...]) -> list[Any]:
    """Sort values of the last row, then its id; each of the type its sort key compares with, or the
    cursor is refused (a crafted cursor must not reach SQL as a value of the wrong type)."""
    values = decode_cursor(token, len(sort) + 1)
    well_typed = all(
        value is None or (isinstance(value, _sort_value_type(key)) and not isinstance(value, bool))
        for key, value in zip(sort, values, strict=False)
    )
    if not well_typed or not isinstance(values[-1], str) or not is_valid_id(values[-1]):
        raise InvalidRequest(f"_page '{token[:80]}' is not a valid paging cursor for this search", ["_page"])
    return values


async def find_ids(conn: AsyncConnection, request: SearchRequest, limit: int, gate: ReadGate = OPEN) -> list[str]:
    """Ids of matches the gate lets the caller see, for conditional interactions inside a write transaction."""
    return [row[0] for row in await conn.execute(compile_search(request, None, limit, gate))]


async def search(ctx: FhirContext, rc: RequestContext, request: SearchRequest) -> SearchPage:
    ctx.require_type(request.resource_type)
    async with ctx.db.read() as conn:
        return await search_on(conn, request, MAX_INCLUDED, ctx.read_gate(rc.caller))


async def search_on(
    conn: AsyncConnection, request: SearchRequest, most_included: int = MAX_INCLUDED, gate: ReadGate = OPEN
) -> SearchPage:
    """One page on ``conn`` (a read connection, or a transaction that should see its own writes); at most
    ``most_included`` resources are added by ``_include``/``_revinclude``. Searching needs the type's
    ``s`` permission (403 without it); matches and included resources are those the gate admits."""
    gate.require(request.resource_type, "s")
    after = decode_page_token(request.page_token, request.sort) if request.page_token else None
    if request.subsetting.summary == "count" or request.count == 0:  # the total only (search.html#count)
        return SearchPage(request, [], None, (await conn.execute(compile_count(request, gate))).scalar_one())
    rows = list(await conn.execute(compile_search(request, after, request.count + 1, gate)))
    total: int | None = None
    if request.total != "none":
        total = (await conn.execute(compile_count(request, gate))).scalar_one()
    matches = [(row[0], row[1]) for row in rows[: request.count] if row[1] is not None]
    match_ids = [m[0] for m in matches]
    included = await resolve_includes(conn, request, match_ids, most_included, gate) if request.includes else []
    next_token = None
    if len(rows) > request.count and matches:
        last = rows[request.count - 1]
        next_token = encode_cursor([*last[2:], last[0]])
    return SearchPage(request, matches, next_token, total, included)


async def _one_round(
    conn: AsyncConnection, includes: tuple[Include, ...], frontier: dict[str, list[str]]
) -> set[tuple[str, str]]:
    """Keys reached from the frontier (type -> ids) by one application of each include."""
    reached: set[tuple[str, str]] = set()
    for include in includes:
        if not include.params:
            continue
        if include.reverse:
            for target_type, ids in frontier.items():
                rows = await conn.execute(reverse_sources(include, target_type, ids))
                reached.update((row[0], row[1]) for row in rows)
        elif include.source_type in frontier:
            rows = await conn.execute(forward_targets(include, frontier[include.source_type]))
            reached.update((row[0], row[1]) for row in rows if row[0] and row[1])
    return reached


async def resolve_includes(
    conn: AsyncConnection,
    request: SearchRequest,
    match_ids: list[str],
    most_included: int = MAX_INCLUDED,
    gate: ReadGate = OPEN,
) -> list[tuple[str, str, bytes]]:
    """Resources added by ``_include``/``_revinclude``; ``:iterate`` ones repeat on what they add."""
    seen = {(request.resource_type, rid) for rid in match_ids}
    included: list[tuple[str, str, bytes]] = []
    frontier: dict[str, list[str]] = {request.resource_type: match_ids} if match_ids else {}
    includes = request.includes
    for _ in range(MAX_ITERATIONS):
        if not frontier or not includes:
            break
        keys = [key for key in await _one_round(conn, includes, frontier) if key not in seen]
        frontier = {}
        for offset in range(0, len(keys), 500):
            for resource_type, resource_id, body in await conn.execute(load_live(keys[offset : offset + 500], gate)):
                if body is None or len(included) >= most_included:
                    continue
                seen.add((resource_type, resource_id))
                included.append((resource_type, resource_id, body))
                frontier.setdefault(resource_type, []).append(resource_id)
        includes = tuple(i for i in request.includes if i.iterate)
    return included
