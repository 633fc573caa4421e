"""composite parameters (search.html#composite): ``part$part``, each part a value of its component's type.

The rows of one combination of component values, taken from one element,
share a ``combo`` number in the components' tables (``app.search.composite``),
so the compiler joins the parts on (resource_id, combo).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement

from app.search.params import split_escaped
from app.search.types.base import ParamType, SearchValue, ValueContext
from app.storage.index_tables import Columns


@dataclass(frozen=True, slots=True)
class CompositeSearch:
    """One value per component, in the components' order, each parsed by its own type."""

    parts: tuple[SearchValue, ...]

    def show(self) -> str:
        return "(" + " ".join(part.show() for part in self.parts) + ")"


def parse_composite(
    value: str, context: ValueContext, component_types: tuple[str, ...], parse_part: Callable[[str, str], Any]
) -> CompositeSearch:
    """``parse_part(type, text)`` parses one part; the number of parts must match the components."""
    parts = split_escaped(value, "$")
    if len(parts) != len(component_types):
        raise context.bad(value, f"a value of this composite has {len(component_types)} parts separated by '$'")
    parsed = []
    for index, (kind, part) in enumerate(zip(component_types, parts, strict=True)):
        if part == "":
            raise context.bad(value, f"part {index + 1} of the composite value is empty")
        parsed.append(parse_part(kind, part))
    return CompositeSearch(tuple(parsed))


def _parse(value: str, context: ValueContext) -> CompositeSearch:
    raise AssertionError("composite values are parsed with their components' types (parse_composite)")


def _condition(value: CompositeSearch, modifier: str | None, columns: Columns) -> ColumnElement[bool]:
    raise AssertionError("composite conditions join the components' tables (app.search.compiler)")


COMPOSITE = ParamType("composite", frozenset({"missing"}), _parse, _condition, None)
