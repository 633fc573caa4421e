"""search (hl7.org/fhir/R4/http.html#search, search.html): one page of matches.

Paging is a keyset cursor on the resource id (the default order), so
following ``next`` visits every match once even while others write.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from app.errors import InvalidRequest
from app.interactions.context import FhirContext, is_valid_id
from app.search.compiler import compile_count, compile_search
from app.search.request import SearchRequest


@dataclass(frozen=True, slots=True)
class SearchPage:
    request: SearchRequest
    matches: list[tuple[str, bytes]]
    next_token: str | None
    total: int | None


def encode_page_token(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_page_token(token: str) -> str:
    try:
        last_id = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        last_id = ""
    if not is_valid_id(last_id):
        raise InvalidRequest(f"_page '{token}' is not a valid paging cursor", ["_page"])
    return last_id


async def find_ids(conn: AsyncConnection, request: SearchRequest, limit: int) -> list[str]:
    """Ids of matches, for conditional interactions inside a write transaction."""
    return [row[0] for row in await conn.execute(compile_search(request, None, limit))]


async def search(ctx: FhirContext, request: SearchRequest) -> SearchPage:
    ctx.require_type(request.resource_type)
    after = decode_page_token(request.page_token) if request.page_token else None
    async with ctx.db.read() as conn:
        rows = list(await conn.execute(compile_search(request, after, request.count + 1)))
        total = None
        if request.total != "none":
            total = (await conn.execute(compile_count(request))).scalar_one()
    matches = [(row[0], row[1]) for row in rows[: request.count] if row[1] is not None]
    next_token = encode_page_token(matches[-1][0]) if len(rows) > request.count and matches else None
    return SearchPage(request, matches, next_token, total)
