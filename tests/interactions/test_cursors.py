"""Keyset paging cursors (``app/interactions/cursors.py``), without a server.

``encode_cursor`` writes the values that position the last row of a page and
``decode_cursor`` gives them back with their types (str, int, None, aware
datetime, Decimal). Every token that is not one the server wrote (wrong
length, not base64url, not JSON, or a crafted value that could reach SQL in
an unexpected form) is a 400 naming ``_page``.
"""

from __future__ import annotations

import base64
import string
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest

from app.errors import InvalidRequest
from app.interactions.cursors import decode_cursor, encode_cursor


def crafted(values: Any) -> str:
    """A token as a client could forge it: any JSON, base64url without padding."""
    return raw_token(orjson.dumps(values))


def raw_token(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def assert_refused(token: str, length: int) -> None:
    with pytest.raises(InvalidRequest) as refused:
        decode_cursor(token, length)
    assert refused.value.expression == ["_page"]
    assert refused.value.message == f"_page '{token[:80]}' is not a valid paging cursor for this request"


@pytest.mark.parametrize(
    "values",
    [
        ["Patient", "abc-1", 42],
        [None, "x", None],
        [datetime(2024, 3, 1, 12, 30, tzinfo=UTC), 7],
        [datetime(2024, 3, 1, 12, 30, 0, 123456, tzinfo=timezone(timedelta(hours=-5))), "id"],
        [Decimal("1.50"), Decimal("-0.001"), Decimal("1E+10"), Decimal("0")],
        [0, -(2**63), 2**63 - 1],
        ["", "ünïcödé ✓", "a/b?c=d&e"],
        [],
    ],
    ids=["strings-and-int", "nulls", "utc-instant", "offset-instant", "decimals", "int-bounds", "odd-strings", "empty"],
)
def test_values_come_back_with_their_types(values: list[Any]) -> None:
    decoded = decode_cursor(encode_cursor(values), len(values))
    assert decoded == values
    assert [type(v) for v in decoded] == [type(v) for v in values]
    # str() keeps what == does not compare: a decimal's trailing zeros, a datetime's offset
    assert [str(v) for v in decoded] == [str(v) for v in values]


def test_tokens_are_base64url_without_padding() -> None:
    token = encode_cursor(["a>b?c", "ÿÿÿ", datetime(2024, 1, 1, tzinfo=UTC), Decimal("2.5")])
    assert set(token) <= set(string.ascii_letters + string.digits + "-_")
    assert "_" in token  # this input needs the URL-safe alphabet
    assert decode_cursor(token, 4)[0] == "a>b?c"


@pytest.mark.parametrize("length", [0, 1, 3, 10])
def test_a_token_of_another_length_is_refused(length: int) -> None:
    assert_refused(encode_cursor(["Patient", 2]), length)


@pytest.mark.parametrize(
    "token",
    [
        "%%%%",
        "abc$",
        "a",  # one character is never base64
        "WyJh Il0",
        raw_token(b"not json"),
        raw_token(b"\xff\xfe"),
        raw_token(b'["a"'),
    ],
)
def test_what_is_not_base64url_json_is_refused(token: str) -> None:
    assert_refused(token, 1)


@pytest.mark.parametrize(
    "value",
    [
        {"t": "2020-01-01T00:00:00"},  # naive instant
        {"t": "yesterday"},
        {"t": 5},
        {"n": "NaN"},
        {"n": "Infinity"},
        {"n": "-Infinity"},
        {"n": "1e400"},
        {"n": "1e300"},
        {"n": "1e-300"},
        {"n": "abc"},
        {"x": 1},
        {},
        "a\x00b",
        "x" * 2049,
        1.5,
        1e308,
        True,
        False,
        2**63,
        [1, 2],
        ["nested"],
    ],
    ids=lambda v: repr(v)[:30],
)
def test_crafted_values_are_refused(value: Any) -> None:
    assert_refused(crafted([value, "abc"]), 2)


def test_an_integer_below_64_bits_is_refused() -> None:
    assert_refused(raw_token(b'[-9223372036854775809,"abc"]'), 2)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"n": "1e299"}, Decimal("1e299")),
        ({"n": "-1e-299"}, Decimal("-1e-299")),
        ("x" * 2048, "x" * 2048),
        ("tab\tand\nnewline", "tab\tand\nnewline"),
        (2**63 - 1, 2**63 - 1),
        ({"t": "2020-01-01T00:00:00Z"}, datetime(2020, 1, 1, tzinfo=UTC)),
    ],
    ids=["big-decimal", "small-decimal", "longest-string", "whitespace", "max-int", "z-instant"],
)
def test_values_at_the_edges_are_accepted(value: Any, expected: Any) -> None:
    assert decode_cursor(crafted([value, "abc"]), 2) == [expected, "abc"]


@pytest.mark.parametrize(
    ("document", "length"),
    [(5, 1), (None, 1), (True, 1), ("abc", 2), ({"a": 1, "b": 2}, 1), (1.5, 1)],
)
def test_json_that_is_not_a_list_is_refused_when_it_does_not_fit(document: Any, length: int) -> None:
    assert_refused(crafted(document), length)


def test_json_string_or_object_of_the_expected_length_is_refused() -> None:
    """A string or object of ``length`` items iterates like a list; only a list is a cursor."""
    assert_refused(crafted("ab"), 2)
    assert_refused(crafted({"t": "2020-01-01T00:00:00+00:00"}), 1)
