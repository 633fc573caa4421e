"""The parameters every resource has as columns of ``resources`` (``_id``, ``_lastUpdated``,
search.html#all), and ``:missing``, which any type takes."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, not_, or_

from app.errors import InvalidRequest
from app.search.params import unescape
from app.search.types.base import ParamType, ValueContext, show_text
from app.search.types.date import DateSearch, range_condition
from app.search.types.date import parse as parse_date
from app.storage.index_tables import Columns

COLUMN_PARAMETERS = frozenset({"_id", "_lastUpdated"})


@dataclass(frozen=True, slots=True)
class IdSearch:
    id: str

    def show(self) -> str:
        return show_text(self.id)


@dataclass(frozen=True, slots=True)
class MissingSearch:
    """``:missing=true`` (no value for the parameter) or ``false`` (some value)."""

    missing: bool

    def show(self) -> str:
        return "true" if self.missing else "false"


def parse_missing(value: str, context: ValueContext) -> MissingSearch:
    if value not in ("true", "false"):
        raise InvalidRequest(f"{context.name} must be true or false", [context.name])
    return MissingSearch(value == "true")


def _parse_id(value: str, context: ValueContext) -> IdSearch:
    return IdSearch(unescape(value))


def _id_condition(value: IdSearch, modifier: str | None, r: Columns) -> ColumnElement[bool]:
    return r.id == value.id


def _last_updated_condition(value: DateSearch, modifier: str | None, r: Columns) -> ColumnElement[bool]:
    return range_condition(value, r.last_updated, r.last_updated)


def column_condition(code: str, values: tuple[object, ...], modifier: str | None, r: Columns) -> ColumnElement[bool]:
    """The condition of an ``_id`` or ``_lastUpdated`` clause on resource columns ``r``."""
    if code == "_id":
        ids = r.id.in_([value.id for value in values if isinstance(value, IdSearch)])
        return not_(ids) if modifier == "not" else ids
    return or_(*(_last_updated_condition(value, modifier, r) for value in values if isinstance(value, DateSearch)))


ID = ParamType("_id", frozenset({"missing", "not", "text"}), _parse_id, _id_condition, "id")
LAST_UPDATED = ParamType("_lastUpdated", frozenset({"missing"}), parse_date, _last_updated_condition, "last_updated")
