"""number parameters (search.html#number): a prefix and a decimal whose written precision is its range."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from sqlalchemy import ColumnElement, and_, or_

from app.search.params import Prefix, split_prefix
from app.search.types.base import ParamType, ValueContext
from app.storage.index_tables import Columns

_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")


@dataclass(frozen=True, slots=True)
class NumberSearch:
    """``prefix`` and the number as written: ``Decimal`` keeps its precision (``100`` vs ``100.0``)."""

    prefix: Prefix
    number: Decimal

    def show(self) -> str:
        return f"{self.prefix} {self.number}"


def parse_decimal(value: str, text: str, context: ValueContext) -> Decimal:
    """A FHIR decimal (datatypes.html#decimal) within about 1e-300..1e300, so that range arithmetic
    and both databases' numeric types can hold it."""
    if len(text) > 64 or not _DECIMAL.fullmatch(text):
        raise context.bad(value, "not a number")
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise context.bad(value, "not a number") from None
    if number and not -300 < number.adjusted() < 300:
        raise context.bad(value, "the number is outside the supported range (1e-300 to 1e300)")
    return number


def parse(value: str, context: ValueContext) -> NumberSearch:
    prefix, text = split_prefix(value)
    return NumberSearch(prefix, parse_decimal(value, text, context))


def range_condition(prefix: Prefix, number: Decimal, column: ColumnElement[Decimal]) -> ColumnElement[bool]:
    """Implicit precision: ``100`` means [99.5, 100.5) (search.html#number)."""
    exponent = number.as_tuple().exponent
    half = Decimal(5).scaleb(int(exponent) - 1) if isinstance(exponent, int) else Decimal(0)
    low, high = number - half, number + half
    beyond_double = float(low) == float(high)  # SQLite compares as REAL: make the range closed
    if prefix == "eq":
        if beyond_double:
            return and_(column >= low, column <= high)
        return and_(column >= low, column < high)
    if prefix == "ne":
        return or_(column < low, column > high) if beyond_double else or_(column < low, column >= high)
    if prefix in ("gt", "sa"):
        return column > number
    if prefix in ("lt", "eb"):
        return column < number
    if prefix == "ge":
        return column >= number
    if prefix == "le":
        return column <= number
    margin = abs(number) * Decimal("0.1")  # ap: within 10%
    return and_(column >= number - margin, column <= number + margin)


def condition(value: NumberSearch, modifier: str | None, n: Columns) -> ColumnElement[bool]:
    return range_condition(value.prefix, value.number, n.value)


NUMBER = ParamType("number", frozenset({"missing"}), parse, condition, "value")
