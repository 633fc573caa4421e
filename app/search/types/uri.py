"""uri parameters (search.html#uri): exact match, ``:below`` (a prefix), ``:above`` (the value's ancestors)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement

from app.search.params import unescape
from app.search.types.base import ParamType, ValueContext, prefix_range, show_text
from app.storage.index_tables import MAX_INDEXED_BYTES, Columns, indexed_text


@dataclass(frozen=True, slots=True)
class UriSearch:
    uri: str

    def show(self) -> str:
        return show_text(self.uri)


def parse(value: str, context: ValueContext) -> UriSearch:
    return UriSearch(unescape(value))


def condition(value: UriSearch, modifier: str | None, u: Columns) -> ColumnElement[bool]:
    text = value.uri
    if modifier == "below":
        # a long prefix is compared on its stored form: the first bytes before the hash indexed_text appends
        return prefix_range(u.value, text if len(text.encode()) <= MAX_INDEXED_BYTES else indexed_text(text)[:-33])
    if modifier == "above":
        segments = text.split("/")
        prefixes = ["/".join(segments[:end]) for end in range(3, len(segments) + 1)]
        return u.value.in_([indexed_text(p) for p in prefixes or [text]])
    return u.value == indexed_text(text)


URI = ParamType("uri", frozenset({"missing", "below", "above"}), parse, condition, "value")
