"""The search criteria of conditional interactions (http.html#ccreate, #cond-update, #cdelete)."""

from __future__ import annotations

from urllib.parse import parse_qsl

from app.errors import InvalidRequest
from app.interactions.context import FhirContext
from app.search.request import SearchRequest, parse_search


def conditional_criteria(ctx: FhirContext, resource_type: str, query: str, header: str) -> SearchRequest:
    """Criteria of a conditional interaction: a search on the type, strictly parsed.

    Unknown parameters are an error here rather than ignored, since dropping
    a criterion would widen the match (http.html#ccreate).
    """
    if not isinstance(query, str):
        raise InvalidRequest(f"{header} must be a search query string", [header])
    if "?" in query:  # some clients send "[type]?[query]" rather than just the query
        query = query.split("?", 1)[1]
    pairs = parse_qsl(query, keep_blank_values=True)
    request = parse_search(resource_type, pairs, ctx.registry, 2, 2, strict=True)
    if not request.clauses:
        raise InvalidRequest(f"{header} has no search criteria", [header])
    return request
