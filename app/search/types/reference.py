"""reference parameters (search.html#reference): ``Type/id``, ``id`` (with ``:Type``), absolute URLs,
and ``:identifier`` (``system|value`` against ``Reference.identifier``)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, or_

from app.search.params import unescape
from app.search.types.base import ParamType, ValueContext, show_text
from app.search.types.token import parse_system_code
from app.storage.index_tables import MAX_TYPE_CHARS, Columns, indexed_text


@dataclass(frozen=True, slots=True)
class ReferenceSearch:
    """A reference target: ``url`` for an absolute or ``urn:`` reference (with the type and id read
    from its last two segments, when they look like ``Type/id``), else a type (None: any) and id."""

    target_type: str | None
    target_id: str | None
    url: str | None = None

    def show(self) -> str:
        if self.url is not None:
            return show_text(self.url)
        if self.target_type is not None:
            return show_text(f"{self.target_type}/{self.target_id}")
        return show_text(self.target_id or "")


@dataclass(frozen=True, slots=True)
class IdentifierSearch:
    """``:identifier``: ``system`` None matches any system, "" none; ``value`` None any value."""

    system: str | None
    value: str | None

    def show(self) -> str:
        if self.system is None:
            return show_text(self.value or "")
        return show_text(f"{self.system}|{self.value or ''}")


def parse(value: str, context: ValueContext) -> ReferenceSearch | IdentifierSearch:
    if context.modifier == "identifier":
        return IdentifierSearch(*parse_system_code(value))
    text = unescape(value)
    if "://" in text or text.startswith("urn:"):
        parts = text.rstrip("/").split("/")
        if len(parts) >= 2 and parts[-2][:1].isupper():
            return ReferenceSearch(parts[-2][:MAX_TYPE_CHARS], parts[-1], text)
        return ReferenceSearch(None, None, text)
    if "/" in text:
        target_type, _, target_id = text.partition("/")
        return ReferenceSearch(target_type[:MAX_TYPE_CHARS], target_id)
    type_modifier = context.modifier if context.modifier and context.modifier[:1].isupper() else None
    return ReferenceSearch(type_modifier, text)


def condition(value: ReferenceSearch | IdentifierSearch, modifier: str | None, ref: Columns) -> ColumnElement[bool]:
    if isinstance(value, IdentifierSearch):
        return _identifier_condition(value, ref)
    by_id = None
    if value.target_id is not None:
        by_id = ref.target_id == indexed_text(value.target_id)
        if value.target_type is not None:
            by_id = and_(ref.target_type == value.target_type, by_id)
    if value.url is None:
        assert by_id is not None
        return by_id
    by_url = ref.url == indexed_text(value.url)
    return by_url if by_id is None else or_(by_url, by_id)


def _identifier_condition(value: IdentifierSearch, ref: Columns) -> ColumnElement[bool]:
    if value.system is None:
        return ref.identifier_value == indexed_text(value.value or "")
    conditions = [
        ref.identifier_system.is_(None) if value.system == "" else ref.identifier_system == indexed_text(value.system)
    ]
    if value.value is not None:
        conditions.append(ref.identifier_value == indexed_text(value.value))
    else:
        conditions.append(ref.identifier_value.is_not(None))
    return and_(*conditions)


REFERENCE = ParamType("reference", frozenset({"missing", "identifier"}), parse, condition, "target_id")
"""Besides these modifiers a reference takes a target type (``subject:Patient``): see ``is_type_modifier``."""


def is_type_modifier(targets: tuple[str, ...], modifier: str) -> bool:
    """``:Patient`` on a reference parameter that may point to Patient (or to any type)."""
    return modifier[:1].isupper() and (not targets or modifier in targets)
