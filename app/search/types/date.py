"""date parameters (search.html#date): a prefix and a value whose precision makes it a closed UTC range.

The index holds each element's range too (a Period's bounds, or the range
a date's precision covers), so every prefix compares two ranges
(search.html#prefix).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_

from app.search.dates import parse_date_range, widen
from app.search.params import Prefix, split_prefix
from app.search.types.base import ParamType, ValueContext
from app.search.values import DateValue
from app.storage.index_tables import Columns


@dataclass(frozen=True, slots=True)
class DateSearch:
    """``prefix`` and the closed UTC range [low, high] the value covers."""

    prefix: Prefix
    low: datetime
    high: datetime

    def show(self) -> str:
        return f"{self.prefix} {_instant(self.low)}/{_instant(self.high)}"


def _instant(value: datetime) -> str:
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse(value: str, context: ValueContext) -> DateSearch:
    prefix, text = split_prefix(value)
    parsed = parse_date_range(text)
    if parsed is None:
        raise context.bad(value, "not a valid date (YYYY, YYYY-MM, YYYY-MM-DD or dateTime)")
    return DateSearch(prefix, parsed.low, parsed.high)


def range_condition(
    value: DateSearch, col_low: ColumnElement[datetime], col_high: ColumnElement[datetime]
) -> ColumnElement[bool]:
    """Index range [col_low, col_high] against the search range (search.html#prefix)."""
    prefix, low, high = value.prefix, value.low, value.high
    if prefix == "eq":
        return and_(col_low >= low, col_high <= high)
    if prefix == "ne":
        return or_(col_low < low, col_high > high)
    if prefix == "gt":
        return col_high > high
    if prefix == "lt":
        return col_low < low
    if prefix == "ge":
        return col_high >= low
    if prefix == "le":
        return col_low <= high
    if prefix == "sa":
        return col_low > high
    if prefix == "eb":
        return col_high < low
    # ap: within 10% of the distance between the value and now, as HAPI does
    now = datetime.now(UTC)
    margin = max(abs(now - low) * 0.1, timedelta(days=1))
    near = widen(DateValue(low, high), margin)
    return and_(col_low <= near.high, col_high >= near.low)


def condition(value: DateSearch, modifier: str | None, d: Columns) -> ColumnElement[bool]:
    return range_condition(value, d.low, d.high)


class _DateType(ParamType):
    def sort_by(self, columns: Columns, descending: bool) -> ColumnElement[datetime]:
        """Descending sorts by the latest instant a resource covers, ascending by the earliest."""
        return columns.high if descending else columns.low


DATE = _DateType("date", frozenset({"missing"}), parse, condition, "low")
