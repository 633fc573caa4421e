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
    if isinstance(value, dict):
        if "t" in value:
            parsed = datetime.fromisoformat(value["t"])
            if parsed.tzinfo is None:
                raise ValueError("cursor instants carry a zone")
            return parsed
        return Decimal(value["n"])
    return value


def encode_cursor(values: list[Any]) -> str:
    raw = orjson.dumps([_encode_value(v) for v in values])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str, length: int) -> list[Any]:
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
        values = [_decode_value(v) for v in orjson.loads(raw)]
    except (ValueError, TypeError, KeyError, ArithmeticError, orjson.JSONDecodeError):
        values = []
    if not isinstance(values, list) or len(values) != length:
        raise InvalidRequest(f"_page '{token}' is not a valid paging cursor for this request", ["_page"])
    return values
