"""string parameters (search.html#string): prefix match on a case- and accent-folded form; ``:exact``,
``:contains``."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement

from app.search.params import unescape
from app.search.types.base import ParamType, ValueContext, prefix_range, show_text
from app.search.values import normalize_string
from app.storage.index_tables import MAX_INDEXED_CHARS, Columns


@dataclass(frozen=True, slots=True)
class StringSearch:
    """The text as sent (for ``:exact``) and its normalised form (for the default and ``:contains``)."""

    text: str
    normalized: str

    def show(self) -> str:
        return show_text(self.text)


def parse(value: str, context: ValueContext) -> StringSearch:
    text = unescape(value)
    return StringSearch(text, normalize_string(text)[:MAX_INDEXED_CHARS])


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def condition(value: StringSearch, modifier: str | None, s: Columns) -> ColumnElement[bool]:
    if modifier == "exact":
        return s.value_exact == value.text
    if modifier == "contains":
        return s.value_norm.like(f"%{_like_escape(value.normalized)}%", escape="\\")
    return prefix_range(s.value_norm, value.normalized)


STRING = ParamType("string", frozenset({"missing", "exact", "contains"}), parse, condition, "value_norm")
