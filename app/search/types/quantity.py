"""quantity parameters (search.html#quantity): ``[prefix]number[|system|code]``."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import ColumnElement, and_

from app.search.params import Prefix, split_escaped, split_prefix, unescape
from app.search.types.base import ParamType, ValueContext, show_text
from app.search.types.number import parse_decimal, range_condition
from app.storage.index_tables import Columns, indexed_text


@dataclass(frozen=True, slots=True)
class QuantitySearch:
    """The number with its precision; ``system``/``code`` None when not given (any unit)."""

    prefix: Prefix
    number: Decimal
    system: str | None
    code: str | None

    def show(self) -> str:
        unit = "" if self.system is None and self.code is None else f"|{self.system or ''}|{self.code or ''}"
        return f"{self.prefix} {show_text(f'{self.number}{unit}')}"


def parse(value: str, context: ValueContext) -> QuantitySearch:
    parts = split_escaped(value, "|")
    prefix, text = split_prefix(parts[0])
    number = parse_decimal(value, text, context)
    if len(parts) not in (1, 3):
        raise context.bad(value, "a quantity is [prefix]number or [prefix]number|system|code")
    if len(parts) == 1:
        return QuantitySearch(prefix, number, None, None)
    return QuantitySearch(prefix, number, unescape(parts[1]) or None, unescape(parts[2]) or None)


def condition(value: QuantitySearch, modifier: str | None, q: Columns) -> ColumnElement[bool]:
    conditions = [range_condition(value.prefix, value.number, q.value)]
    if value.system is not None:
        conditions.append(q.system == indexed_text(value.system))
    if value.code is not None:
        conditions.append(q.code == indexed_text(value.code))
    return and_(*conditions)


QUANTITY = ParamType("quantity", frozenset({"missing"}), parse, condition, "value")
