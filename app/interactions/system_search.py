"""System-level search ``GET [base]?_type=A,B&...`` (hl7.org/fhir/R4/http.html#search).

Only parameters that every searched type defines are applied (search.html#_type);
one that some type lacks is dropped everywhere, or a 400 under strict handling.
Results come in (type, id) order with a keyset cursor; ``_sort``, ``_include``
and ``_revinclude`` are not applied at this level.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from app.errors import InvalidRequest
from app.interactions.context import FhirContext, is_valid_id
from app.interactions.cursors import decode_cursor, encode_cursor
from app.interactions.request_context import RequestContext
from app.search.compiler import compile_count, compile_search
from app.search.request import SearchRequest, parse_search

NOT_AT_SYSTEM_LEVEL = ("_sort", "_include", "_revinclude", "_include:iterate", "_revinclude:iterate", "_page")


@dataclass(frozen=True, slots=True)
class SystemSearchPage:
    types: tuple[str, ...]
    applied: list[tuple[str, str]]
    count: int
    page_token: str | None
    matches: list[tuple[str, str, bytes]]
    next_token: str | None
    total: int | None


def _after(token: str) -> tuple[str, str]:
    resource_type, resource_id = decode_cursor(token, 2)
    if not isinstance(resource_type, str) or not isinstance(resource_id, str) or not is_valid_id(resource_id):
        raise InvalidRequest(f"_page '{token}' is not a valid paging cursor", ["_page"])
    return resource_type, resource_id


def plan_system_search(
    ctx: FhirContext, rc: RequestContext, pairs: Sequence[tuple[str, str]], default_count: int, max_count: int
) -> tuple[list[SearchRequest], str | None]:
    """One request per searched type, all with the same applied parameters."""
    strict = rc.strict
    type_values = [v for k, v in pairs if k == "_type"]
    if type_values:
        types = sorted({t.strip() for v in type_values for t in v.split(",") if t.strip()})
        for resource_type in types:
            if resource_type not in ctx.resource_types:
                raise InvalidRequest(f"_type names an unknown resource type '{resource_type[:80]}'", ["_type"])
    else:
        types = sorted(ctx.resource_types)
    rest = [(k, v) for k, v in pairs if k != "_type" and k not in NOT_AT_SYSTEM_LEVEL]
    page_token = next((v for k, v in pairs if k == "_page"), None)
    requests = [parse_search(t, rest, ctx.registry, default_count, max_count, strict) for t in types]
    names = [{c.name for c in r.clauses} for r in requests]
    common = set.intersection(*names) if names else set()
    partial = set.union(*names) - common if names else set()
    if partial:
        if strict:
            raise InvalidRequest(f"not every searched type has the parameter(s) {', '.join(sorted(partial))}")
        rest = [(k, v) for k, v in rest if k not in partial]
        requests = [parse_search(t, rest, ctx.registry, default_count, max_count, strict) for t in types]
    return requests, page_token


async def system_search(
    ctx: FhirContext, rc: RequestContext, requests: list[SearchRequest], page_token: str | None
) -> SystemSearchPage:
    count = requests[0].count if requests else 0
    after = _after(page_token) if page_token else None
    matches: list[tuple[str, str, bytes]] = []
    more = False
    total: int | None = None
    gate = ctx.read_gate(rc.caller)
    gate.require_any("s")  # then each type's matches are those the gate admits
    count_only = bool(requests) and (requests[0].subsetting.summary == "count" or count == 0)
    async with ctx.db.read() as conn:
        for request in requests:
            if count_only:
                break
            if after is not None and request.resource_type < after[0]:
                continue
            cursor = [after[1]] if after is not None and request.resource_type == after[0] else None
            if len(matches) > count:
                break
            rows = await conn.execute(compile_search(request, cursor, count + 1 - len(matches), gate))
            matches.extend((request.resource_type, row[0], row[1]) for row in rows if row[1] is not None)
        if len(matches) > count:
            more = True
            matches = matches[:count]
        if requests and (requests[0].total != "none" or count_only):
            total = 0
            for request in requests:
                total += (await conn.execute(compile_count(request, gate))).scalar_one()
    next_token = encode_cursor([matches[-1][0], matches[-1][1]]) if more and matches else None
    applied = requests[0].applied() if requests else []
    types = tuple(r.resource_type for r in requests)
    return SystemSearchPage(types, applied, count, page_token, matches, next_token, total)
