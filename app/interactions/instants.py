"""Points in time a client sends: ``_since``, ``If-Modified-Since``, a Bundle entry's ``ifModifiedSince``.

FHIR instants (datatypes.html#instant) carry a zone; HTTP dates (RFC 9110
section 5.6.7) are UTC, and RFC 5322's ``-0000`` zone ("UTC, origin unknown")
makes Python return a naive datetime, which is read as UTC here rather than
compared with aware ones and failing. Instants at the calendar's edge
(``0001-01-01T00:00:00+14:00`` is in year 0 in UTC) are clamped to the
first and last representable instants instead of overflowing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from app.errors import InvalidRequest
from app.search.dates import MAX_INSTANT, MIN_INSTANT


def to_utc(value: datetime) -> datetime:
    """``value`` in UTC (naive means UTC), clamped to the representable range."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        return MIN_INSTANT if value.year == 1 else MAX_INSTANT


def parse_fhir_instant(value: str, name: str) -> datetime:
    """A FHIR instant with its zone (``Z`` or ``+hh:mm``); 400 naming ``name`` otherwise."""
    text = value.strip()
    if not text.isascii() or len(text) > 40:
        raise InvalidRequest(f"{name} '{value[:40]}' is not a valid instant", [name])
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"{name} '{value[:40]}' is not a valid instant", [name]) from None
    if parsed.tzinfo is None:
        raise InvalidRequest(f"{name} '{value[:40]}' must include a time zone", [name])
    return to_utc(parsed)


def parse_http_date(value: str | None) -> datetime | None:
    """An HTTP date in UTC; None when absent or not a date (the header is then ignored, RFC 9110 13.1.3)."""
    if not value:
        return None
    try:
        return to_utc(parsedate_to_datetime(value))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def parse_http_or_fhir_instant(value: object, name: str) -> datetime:
    """Bundle.entry.request.ifModifiedSince is an ``instant``; HTTP dates are accepted as well."""
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be an instant", [name])
    if value[:4].isdigit():
        return parse_fhir_instant(value, name)
    parsed = parse_http_date(value)
    if parsed is None:
        raise InvalidRequest(f"{name} '{value[:40]}' is not an instant or an HTTP date", [name])
    return parsed
