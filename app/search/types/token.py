"""token parameters (search.html#token): ``[system]|[code]``, ``code``, ``|code``, ``system|``; ``:text``, ``:not``."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_

from app.search.params import split_escaped, unescape
from app.search.types.base import ParamType, ValueContext, prefix_range, show_text
from app.search.values import normalize_string
from app.storage.index_tables import MAX_INDEXED_CHARS, Columns, indexed_text


@dataclass(frozen=True, slots=True)
class TokenSearch:
    """``system``: None matches any system, "" only codes without one; ``code`` None matches any code
    of the system. ``text`` is set instead for ``:text`` (a prefix of the normalised display)."""

    system: str | None
    code: str | None
    text: str | None = None

    def show(self) -> str:
        if self.text is not None:
            return show_text(self.text)
        if self.system is None:
            return show_text(self.code or "")
        return show_text(f"{self.system}|{self.code or ''}")


def parse_system_code(value: str) -> tuple[str | None, str | None]:
    """``system|code`` -> (system, code) with escapes resolved; no ``|`` -> (None, code)."""
    parts = split_escaped(value, "|")
    if len(parts) == 1:
        return None, unescape(parts[0])
    code = unescape("|".join(parts[1:]))
    return unescape(parts[0]), code or None


def parse(value: str, context: ValueContext) -> TokenSearch:
    if context.modifier == "text":
        return TokenSearch(None, None, normalize_string(unescape(value))[:MAX_INDEXED_CHARS])
    system, code = parse_system_code(value)
    return TokenSearch(system, code)


def condition(value: TokenSearch, modifier: str | None, t: Columns) -> ColumnElement[bool]:
    if value.text is not None:
        return prefix_range(t.display_norm, value.text)
    if value.system is None:
        return t.code == indexed_text(value.code or "")
    conditions = [t.system.is_(None) if value.system == "" else t.system == indexed_text(value.system)]
    if value.code is not None:
        conditions.append(t.code == indexed_text(value.code))
    return and_(*conditions)


TOKEN = ParamType("token", frozenset({"missing", "not", "text"}), parse, condition, "code")
