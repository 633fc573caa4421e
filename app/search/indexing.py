"""Rows for the typed index tables, built from extracted (parameter, value) pairs.

The rows are written in the same transaction as the resource version
(``app.storage.index_writer``), so a search never sees a version without its
index or the reverse.
"""

from __future__ import annotations

from typing import Any

from app.search.registry import SearchParam
from app.search.values import (
    DateValue,
    IndexValue,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
    normalize_string,
)
from app.storage.index_tables import MAX_INDEXED_CHARS, IndexRows, indexed_text


def _key(value: str | None) -> str | None:
    """``indexed_text`` with the common short value decided inline (this runs for every index row)."""
    return value if value is None or len(value) <= 128 else indexed_text(value)


def _cut(value: str | None) -> str | None:
    return value[:MAX_INDEXED_CHARS] if value is not None else None


def _row(param_hash: int, value: IndexValue) -> tuple[str, dict[str, Any]]:
    key: dict[str, Any] = {"param_hash": param_hash}
    if isinstance(value, TokenValue):
        display = normalize_string(value.display) if value.display else None
        return "token", {
            **key,
            "system": _key(value.system),
            "code": _key(value.code),
            "display_norm": _cut(display),
        }
    if isinstance(value, StringValue):
        return "string", {**key, "value_norm": _cut(value.normalized), "value_exact": value.exact}
    if isinstance(value, ReferenceValue):
        return "reference", {
            **key,
            "target_type": value.target_type,
            "target_id": _key(value.target_id),
            "url": _key(value.url),
            "identifier_system": _key(value.identifier_system),
            "identifier_value": _key(value.identifier_value),
        }
    if isinstance(value, DateValue):
        return "date", {**key, "low": value.low, "high": value.high}
    if isinstance(value, NumberValue):
        return "number", {**key, "value": value.value}
    if isinstance(value, QuantityValue):
        return "quantity", {
            **key,
            "value": value.value,
            "system": _key(value.system),
            "code": _key(value.code),
        }
    assert isinstance(value, UriValue)
    return "uri", {**key, "value": indexed_text(value.value)}


def build_index_rows(
    resource_type: str,
    resource_id: str,
    extracted: list[tuple[SearchParam, IndexValue]],
    composites: list[tuple[int, IndexValue, int]] = (),  # type: ignore[assignment]
) -> IndexRows:
    """Rows per table; every table's rows have the same keys so they insert as one batch."""
    rows: IndexRows = {}
    for param, value in extracted:
        table, row = _row(param.hash, value)
        row["resource_type"] = resource_type
        row["resource_id"] = resource_id
        row["combo"] = None
        rows.setdefault(table, []).append(row)
    for component_hash, value, combo in composites:
        table, row = _row(component_hash, value)
        row["resource_type"] = resource_type
        row["resource_id"] = resource_id
        row["combo"] = combo
        rows.setdefault(table, []).append(row)
    return rows
