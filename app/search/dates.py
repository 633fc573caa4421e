"""FHIR date/dateTime/instant strings to UTC ranges (search.html#date)."""

from __future__ import annotations

import functools
import re
from calendar import monthrange
from datetime import UTC, datetime, timedelta, timezone

from app.search.values import DateValue

MIN_INSTANT = datetime(1, 1, 1, tzinfo=UTC)
MAX_INSTANT = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
ONE_MICROSECOND = timedelta(microseconds=1)

_PATTERN = re.compile(
    r"^(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<fraction>\d+))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$",
    re.ASCII,  # FHIR dates are ASCII digits: "\d" alone would also take ٢٠٢٦
)


@functools.lru_cache(maxsize=65_536)  # pure and immutable results; dates recur across resources
def parse_date_range(text: str) -> DateValue | None:
    """The closed range a value covers given its precision; None if it is not a FHIR date."""
    match = _PATTERN.match(text.strip())
    if match is None:
        return None
    g = match.groupdict()
    try:
        year = int(g["year"])
        if g["month"] is None:
            low = datetime(year, 1, 1, tzinfo=UTC)
            return DateValue(low, datetime(year, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))
        month = int(g["month"])
        if g["day"] is None:
            last = monthrange(year, month)[1]
            low = datetime(year, month, 1, tzinfo=UTC)
            return DateValue(low, datetime(year, month, last, 23, 59, 59, 999999, tzinfo=UTC))
        day = int(g["day"])
        tz = _zone(g["tz"])
        if g["hour"] is None:
            low = datetime(year, month, day, tzinfo=tz)
            return _range(low, timedelta(days=1))
        hour, minute = int(g["hour"]), int(g["minute"])
        if g["second"] is None:
            return _range(datetime(year, month, day, hour, minute, tzinfo=tz), timedelta(minutes=1))
        second = int(g["second"])
        if g["fraction"] is None:
            return _range(datetime(year, month, day, hour, minute, second, tzinfo=tz), timedelta(seconds=1))
        digits = g["fraction"][:6]
        micro = int(digits.ljust(6, "0"))
        low = datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)
        return _range(low, timedelta(microseconds=10 ** (6 - len(digits))))
    except ValueError:
        return None


def _zone(text: str | None) -> timezone:
    if text is None or text == "Z":
        return UTC
    sign = 1 if text[0] == "+" else -1
    hours, minutes = int(text[1:3]), int(text[4:6])
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def _range(low: datetime, width: timedelta) -> DateValue:
    """[low, low + width) in UTC; the calendar's ends clamp instead of overflowing (``9999-12-31``
    has no next day, ``0001-01-01T00:00:00+14:00`` is in year 0 in UTC)."""
    try:
        high = low + (width - ONE_MICROSECOND)
    except OverflowError:
        high = MAX_INSTANT
    return DateValue(_utc(low), _utc(high))


def _utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        return MIN_INSTANT if value.year == 1 else MAX_INSTANT


def widen(value: DateValue, margin: timedelta) -> DateValue:
    """The range grown by ``margin`` on both sides, within the representable instants."""
    low = value.low - margin if value.low - MIN_INSTANT > margin else MIN_INSTANT
    high = value.high + margin if MAX_INSTANT - value.high > margin else MAX_INSTANT
    return DateValue(low, high)
