"""create and conditional create (hl7.org/fhir/R4/http.html#create, #ccreate)."""

from __future__ import annotations

import uuid
from typing import Any

from app.errors import MultipleMatches, ResourceTypeMismatch
from app.interactions.context import FhirContext, WriteResult, utc_now
from app.interactions.stamping import stamp
from app.search.conditional import parse_criteria
from app.search.indexing import extract_index_rows
from app.storage.repository import StoredVersion, find_by_token, insert_first, read_current, replace_tokens


def check_body_type(resource_type: str, body: dict[str, Any]) -> None:
    if body.get("resourceType") != resource_type:
        raise ResourceTypeMismatch(
            f"resourceType '{body.get('resourceType')}' does not match the URL type '{resource_type}'",
            ["resourceType"],
        )


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
    criteria = parse_criteria(if_none_exist) if if_none_exist is not None else None
    ctx.validator.validate(resource_type, body)
    resource_id = str(uuid.uuid4())
    async with ctx.db.write() as conn:
        if criteria is not None:
            await ctx.db.lock_key(conn, criteria.cache_key(resource_type))
            matches = await find_by_token(conn, resource_type, list(criteria.tokens), list(criteria.ids), 2)
            if len(matches) > 1:
                raise MultipleMatches(f"If-None-Exist criteria '{if_none_exist}' match more than one resource")
            if matches:
                existing = await read_current(conn, resource_type, matches[0])
                assert existing is not None
                return WriteResult(status=200, stored=existing, changed=False)
        now = utc_now()
        version = StoredVersion(resource_type, resource_id, 1, now, False, stamp(body, resource_id, 1, now), "POST")
        await insert_first(conn, version)
        await replace_tokens(conn, resource_type, resource_id, extract_index_rows(body), is_new=True)
    return WriteResult(status=201, stored=version, created=True)
