"""Index values, one type per search parameter type, shared by indexing and querying.

A date is always a closed UTC range [low, high] derived from the precision of
the value (``2024`` covers the whole year) or from a Period's bounds, as in
hl7.org/fhir/R4/search.html#date.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class StringValue:
    normalized: str
    exact: str


@dataclass(frozen=True, slots=True)
class TokenValue:
    system: str | None
    code: str | None
    display: str | None = None


@dataclass(frozen=True, slots=True)
class ReferenceValue:
    """``Type/id`` references fill type and id; absolute or canonical URLs fill ``url``;
    ``Reference.identifier`` fills the identifier pair (for ``:identifier``)."""

    target_type: str | None
    target_id: str | None
    url: str | None = None
    identifier_system: str | None = None
    identifier_value: str | None = None


@dataclass(frozen=True, slots=True)
class DateValue:
    low: datetime
    high: datetime


@dataclass(frozen=True, slots=True)
class NumberValue:
    value: Decimal


@dataclass(frozen=True, slots=True)
class QuantityValue:
    value: Decimal
    system: str | None
    code: str | None
    unit: str | None = None


@dataclass(frozen=True, slots=True)
class UriValue:
    value: str


IndexValue = StringValue | TokenValue | ReferenceValue | DateValue | NumberValue | QuantityValue | UriValue


def normalize_string(value: str) -> str:
    """Case- and accent-insensitive form used by string search (search.html#string).

    ASCII text has nothing to decompose or strip, so it takes the short way (most values do)."""
    if value.isascii():
        return value.casefold().strip()
    decomposed = unicodedata.normalize("NFKD", value)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold().strip()
