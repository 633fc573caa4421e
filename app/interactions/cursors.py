"""Opaque keyset paging cursors, shared by history, type search and system search.

A cursor is the list of values that position the last row of a page (sort
values, then keys), JSON-encoded (datetimes and decimals tagged so they come
back typed) and base64url-encoded. A token that does not decode to a list of
``length`` values is a 400 naming ``_page``.
"""

from __future__ import annotations

import base64
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from app.errors import InvalidRequest


def _encode_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"t": value.isoformat()}
    if isinstance(value, Decimal):
        return {"n": str(value)}
    return value


def _decode_value(value: Any) -> Any:
    """A value as the cursor was written: str, int, None, or a tagged instant or decimal. Anything else
    (a crafted token) is refused here rather than passed to SQL."""
    if isinstance(value, dict):
        if "t" in value:
            parsed = datetime.fromisoformat(value["t"])
            if parsed.tzinfo is None:
                raise ValueError("cursor instants carry a zone")
            return parsed
        number = Decimal(value["n"])
        if not number.is_finite() or not -300 < number.adjusted() < 300:
            raise ValueError("cursor number out of range")
        return number
    if isinstance(value, str):
        if "\x00" in value or len(value) > 2048:
            raise ValueError("cursor string not usable")
        return value
    if value is None or (type(value) is int and -(2**63) <= value < 2**63):
        return value
    raise ValueError("cursor value of an unknown kind")


def encode_cursor(values: list[Any]) -> str:
    raw = orjson.dumps([_encode_value(v) for v in values])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str, length: int) -> list[Any]:
    values: list[Any] = []
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
        document = orjson.loads(raw)
        if isinstance(document, list):  # a string or object would iterate too: refuse it here
            values = [_decode_value(v) for v in document]
    except (ValueError, TypeError, KeyError, ArithmeticError, orjson.JSONDecodeError):
        values = []
    if len(values) != length:
        raise InvalidRequest(f"_page '{token[:80]}' is not a valid paging cursor for this request", ["_page"])
    return values
