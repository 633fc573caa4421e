"""create and conditional create (hl7.org/fhir/R4/http.html#create, #ccreate)."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import parse_qsl

from app.errors import InvalidRequest, MultipleMatches, ResourceTypeMismatch
from app.interactions.context import FhirContext, WriteResult, utc_now
from app.interactions.search import find_ids
from app.interactions.stamping import stamp
from app.search.request import SearchRequest, parse_search
from app.storage.repository import StoredVersion, insert_first, read_current
from app.storage.single_statement import create_in_one_statement


def check_body_type(resource_type: str, body: dict[str, Any]) -> None:
    if body.get("resourceType") != resource_type:
        raise ResourceTypeMismatch(
            f"resourceType '{body.get('resourceType')}' does not match the URL type '{resource_type}'",
            ["resourceType"],
        )


def conditional_criteria(ctx: FhirContext, resource_type: str, query: str, header: str) -> SearchRequest:
    """Criteria of a conditional interaction: a search on the type, strictly parsed.

    Unknown parameters are an error here rather than ignored, since dropping
    a criterion would widen the match (http.html#ccreate).
    """
    if "?" in query:  # some clients send "[type]?[query]" rather than just the query
        query = query.split("?", 1)[1]
    pairs = parse_qsl(query, keep_blank_values=True)
    request = parse_search(resource_type, pairs, ctx.registry, 2, 2, strict=True)
    if not request.clauses:
        raise InvalidRequest(f"{header} has no search criteria", [header])
    return request


async def create(
    ctx: FhirContext, resource_type: str, body: dict[str, Any], if_none_exist: str | None = None
) -> WriteResult:
    """Store a new resource under a server-assigned id (a client id in the body is ignored).

    With ``If-None-Exist``: no match creates (201), one match returns it without
    writing (200), several matches fail (412). The criteria are locked for the
    transaction so concurrent conditional creates cannot both create.
    """
    ctx.require_type(resource_type)
    check_body_type(resource_type, body)
    criteria = conditional_criteria(ctx, resource_type, if_none_exist, "If-None-Exist") if if_none_exist else None
    ctx.validator.validate(resource_type, body)
    resource_id = str(uuid.uuid4())
    rows = ctx.index_rows(resource_type, resource_id, body)
    if criteria is None and ctx.db.dialect == "postgresql":  # one statement, no transaction round trips
        now = utc_now()
        version = StoredVersion(resource_type, resource_id, 1, now, False, stamp(body, resource_id, 1, now), "POST")
        async with ctx.db.single_statement() as conn:
            await create_in_one_statement(conn, version, rows)
        return WriteResult(status=201, stored=version, created=True)
    async with ctx.db.write() as conn:
        if criteria is not None:
            await ctx.db.lock_key(conn, f"{resource_type}?{sorted(criteria.applied())}")
            matches = await find_ids(conn, criteria, 2)
            if len(matches) > 1:
                raise MultipleMatches(f"If-None-Exist criteria '{if_none_exist}' match more than one resource")
            if matches:
                existing = await read_current(conn, resource_type, matches[0])
                assert existing is not None
                return WriteResult(status=200, stored=existing, changed=False)
        now = utc_now()
        version = StoredVersion(resource_type, resource_id, 1, now, False, stamp(body, resource_id, 1, now), "POST")
        await insert_first(conn, version)
        await ctx.write_index(conn, resource_type, resource_id, rows, is_new=True)
    return WriteResult(status=201, stored=version, created=True)
