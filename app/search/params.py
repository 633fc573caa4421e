"""Parsing of search parameter values: escaping, OR lists, prefixes (search.html#escaping, #prefix)."""

from __future__ import annotations

from typing import Literal, cast

from app.errors import InvalidRequest

Prefix = Literal["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"]
PREFIXES: tuple[Prefix, ...] = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")


def parse_count(raw: str, name: str = "_count") -> int:
    """A non-negative count in ASCII digits (``²`` and other Unicode digits are not numbers here)."""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
        raise InvalidRequest(f"{name} '{raw[:20]}' is not a non-negative integer", [name])
    return int(raw)


def split_escaped(text: str, separator: str) -> list[str]:
    """Split at ``separator`` unless escaped with a backslash; escapes are kept for later levels."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append("\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if escaped:
        current.append("\\")
    parts.append("".join(current))
    return parts


def unescape(text: str) -> str:
    """``\\,`` ``\\$`` ``\\|`` ``\\\\`` -> the character itself."""
    out: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        else:
            out.append(char)
    if escaped:
        out.append("\\")
    return "".join(out)


def split_prefix(value: str) -> tuple[Prefix, str]:
    """``ge2020`` -> ("ge", "2020"); no prefix means ``eq``."""
    head = cast(Prefix, value[:2])
    if head in PREFIXES and len(value) > 2 and (value[2].isdigit() or value[2] in "-+."):
        return head, value[2:]
    return "eq", value
