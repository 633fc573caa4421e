"""Criteria of conditional interactions (``If-None-Exist``), parsed into token lookups.

Supports ``_id`` and ``identifier`` (``[system]|[code]``, ``|[code]``,
``[system]|``, ``[code]``), combined with ``&``; anything else is rejected
rather than ignored, because ignoring a criterion would widen the match.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

from app.errors import InvalidRequest

SUPPORTED = ("_id", "identifier")


@dataclass(frozen=True, slots=True)
class Criteria:
    ids: tuple[str, ...]
    tokens: tuple[tuple[str, str | None, str | None], ...]

    def cache_key(self, resource_type: str) -> str:
        return f"{resource_type}?{sorted(self.ids)}{sorted(self.tokens, key=repr)}"


def parse_token(value: str) -> tuple[str | None, str | None]:
    """FHIR token syntax: (system, code); system None = any, "" = none; code None = any."""
    if "|" not in value:
        return None, value
    system, code = value.split("|", 1)
    return system, (code or None)


def parse_criteria(query: str) -> Criteria:
    if "?" in query:  # some clients send "[type]?[query]" rather than just the query
        query = query.split("?", 1)[1]
    pairs = parse_qsl(query, keep_blank_values=True)
    if not pairs:
        raise InvalidRequest("conditional criteria are empty", ["If-None-Exist"])
    ids: list[str] = []
    tokens: list[tuple[str, str | None, str | None]] = []
    for name, value in pairs:
        if not value:
            raise InvalidRequest(f"parameter '{name}' has no value", ["If-None-Exist"])
        if name == "_id":
            ids.append(value)
        elif name == "identifier":
            system, code = parse_token(value)
            tokens.append(("identifier", system, code))
        else:
            raise InvalidRequest(
                f"conditional criteria parameter '{name}' is not supported (supported: {', '.join(SUPPORTED)})",
                ["If-None-Exist"],
            )
    return Criteria(tuple(ids), tuple(tokens))
