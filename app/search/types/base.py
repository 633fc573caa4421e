"""What every search parameter type provides, and the helpers several of them share.

A parameter type (search.html#ptypes) owns four things: the modifiers it
accepts, how a value in the query string becomes a typed value (the only
place a malformed value is a 400), the SQL condition that value puts on the
type's index table, and the column a ``_sort`` on it uses. The index rows
themselves are made by ``app.search.indexing`` from the same table layout
(``app.storage.index_tables``). ``app.search.types`` registers one
``ParamType`` per type; the parser and the compiler only look them up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import ColumnElement, and_

from app.errors import InvalidRequest
from app.storage.index_tables import Columns


class SearchValue(Protocol):
    """A parsed search value: it prints itself for the s-expression form of a search."""

    def show(self) -> str: ...


@dataclass(frozen=True, slots=True)
class ValueContext:
    """What parsing one value may need to know: the parameter's name as sent (for messages) and its
    modifier."""

    name: str
    modifier: str | None

    def bad(self, value: str, why: str) -> InvalidRequest:
        return InvalidRequest(f"{self.name}={value}: {why}", [self.name])


Parse = Callable[[str, ValueContext], Any]
Condition = Callable[[Any, str | None, Columns], ColumnElement[bool]]


@dataclass(frozen=True, slots=True)
class ParamType:
    """One search parameter type: modifiers, value parsing, SQL condition per value, sort column.

    ``condition(value, modifier, columns)`` is the condition one value puts on
    one row of the type's index table (``columns``); the compiler ORs the
    values of a clause and decides how the rows become resource ids.
    ``sort_column`` names the index column ``_sort`` uses (None: not sortable
    through the index; dates pick ``low`` or ``high`` by direction).
    """

    name: str
    modifiers: frozenset[str]
    parse: Parse
    condition: Condition
    sort_column: str | None

    def sort_by(self, columns: Columns, descending: bool) -> ColumnElement[Any]:
        assert self.sort_column is not None
        return columns[self.sort_column]


def prefix_range(column: ColumnElement[str], prefix: str) -> ColumnElement[bool]:
    """``column`` starts with ``prefix``, as a range so a B-tree index serves it."""
    return and_(column >= prefix, column < prefix + "\U0010ffff")


def show_text(text: str) -> str:
    """A value in an s-expression: bare when it has no space, bracket or quote; else a quoted string."""
    if text and not any(c in text for c in ' ()"\\'):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
