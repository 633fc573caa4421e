"""FHIRPath results to index values: one converter per search parameter type.

FHIRPath over JSON returns plain values (str, bool, int, float, Decimal) and
dicts for complex types; the converters tell datatypes apart by shape, which
is unambiguous for the types each parameter type can point at
(search.html#table: e.g. a token is a Coding, CodeableConcept, Identifier,
ContactPoint, code, boolean, uri or string).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from app.fhirjson import JsonNumber
from app.search.dates import MAX_INSTANT, MIN_INSTANT, parse_date_range
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
from app.storage.index_tables import MAX_INDEXED_CHARS

NAME_PARTS = ("text", "family", "given", "prefix", "suffix")
ADDRESS_PARTS = ("text", "line", "city", "district", "state", "postalCode", "country")


def _strings(values: Any) -> list[str]:
    if isinstance(values, str):
        return [values]
    if isinstance(values, list):
        return [v for v in values if isinstance(v, str)]
    return []


NORMALIZED_INPUT_CHARS = 4 * MAX_INDEXED_CHARS


def to_strings(item: Any) -> list[IndexValue]:
    texts: list[str] = []
    if isinstance(item, str):
        texts = [item]
    elif isinstance(item, dict):
        parts = ADDRESS_PARTS if any(k in item for k in ("line", "city", "postalCode", "country")) else NAME_PARTS
        for key in parts:
            texts.extend(_strings(item.get(key)))
    # only the start of the normalized form is indexed (MAX_INDEXED_CHARS): normalize no more than can reach it
    return [StringValue(normalize_string(t[:NORMALIZED_INPUT_CHARS]), t) for t in texts if t.strip()]


def to_tokens(item: Any) -> list[IndexValue]:
    if isinstance(item, bool):
        return [TokenValue(None, "true" if item else "false")]
    if isinstance(item, str):
        return [TokenValue(None, item)]
    if not isinstance(item, dict):
        return []
    if "coding" in item or ("text" in item and "value" not in item and "code" not in item):
        tokens: list[IndexValue] = [
            TokenValue(c.get("system"), c.get("code"), c.get("display"))
            for c in item.get("coding", [])
            if isinstance(c, dict) and (c.get("code") or c.get("system"))
        ]
        if item.get("text") and not tokens:
            tokens.append(TokenValue(None, None, item["text"]))
        elif item.get("text"):
            tokens = [TokenValue(t.system, t.code, t.display or item["text"]) for t in tokens]  # type: ignore[union-attr]
        return tokens
    if "value" in item and isinstance(item.get("value"), str):  # Identifier, ContactPoint
        type_text = item.get("type", {}).get("text") if isinstance(item.get("type"), dict) else None
        return [TokenValue(item.get("system"), item["value"], type_text)]
    if "code" in item or "system" in item:  # Coding
        return [TokenValue(item.get("system"), item.get("code"), item.get("display"))]
    return []


_TYPE_NAME = re.compile(r"[A-Z][A-Za-z]{0,63}")


def to_references(item: Any) -> list[IndexValue]:
    if isinstance(item, str):  # canonical or uri
        return [_reference_from_text(item)]
    if not isinstance(item, dict):
        return []
    reference = item.get("reference")
    identifier = item.get("identifier")
    if isinstance(identifier, dict) and isinstance(identifier.get("value"), str):
        system = identifier.get("system") if isinstance(identifier.get("system"), str) else None
        target = (
            _reference_from_text(reference)
            if isinstance(reference, str) and not reference.startswith("#")
            else ReferenceValue(item.get("type") if isinstance(item.get("type"), str) else None, None)
        )
        return [dataclasses.replace(target, identifier_system=system, identifier_value=identifier["value"])]
    if isinstance(reference, str) and not reference.startswith("#"):
        return [_reference_from_text(reference)]
    return []


@functools.lru_cache(maxsize=65_536)  # pure; the same references recur across a patient's resources
def _reference_from_text(text: str) -> ReferenceValue:
    """``Type/id`` (optionally ``/_history/n``) or an absolute/canonical URL."""
    if "://" in text or text.startswith("urn:"):
        parts = text.split("|", 1)[0].rstrip("/").split("/")
        if len(parts) >= 2 and _TYPE_NAME.fullmatch(parts[-2]):
            return ReferenceValue(parts[-2], parts[-1], text)
        if len(parts) >= 4 and parts[-2] == "_history" and _TYPE_NAME.fullmatch(parts[-4]):
            return ReferenceValue(parts[-4], parts[-3], text)
        return ReferenceValue(None, None, text)
    parts = text.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) == 2 and _TYPE_NAME.fullmatch(parts[0]):
        return ReferenceValue(parts[0], parts[1])
    return ReferenceValue(None, None, text)


def to_dates(item: Any) -> list[IndexValue]:
    if isinstance(item, str):
        value = parse_date_range(item)
        return [value] if value else []
    if not isinstance(item, dict):
        return []
    if "start" in item or "end" in item:  # Period: open ends are unbounded
        start = parse_date_range(item["start"]) if isinstance(item.get("start"), str) else None
        end = parse_date_range(item["end"]) if isinstance(item.get("end"), str) else None
        return [DateValue(start.low if start else MIN_INSTANT, end.high if end else MAX_INSTANT)]
    values: list[IndexValue] = []
    for event in _strings(item.get("event")):  # Timing
        parsed = parse_date_range(event)
        if parsed:
            values.append(parsed)
    repeat = item.get("repeat")
    if isinstance(repeat, dict) and isinstance(repeat.get("boundsPeriod"), dict):
        values.extend(to_dates(repeat["boundsPeriod"]))
    return values


def _decimal(value: Any) -> Decimal | None:
    """The value as written (a ``JsonNumber`` keeps its text, so 12345678901234567.89 stays exact)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = Decimal(value.text if isinstance(value, JsonNumber) else str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def to_numbers(item: Any) -> list[IndexValue]:
    number = _decimal(item.get("value") if isinstance(item, dict) else item)
    return [NumberValue(number)] if number is not None else []


def to_quantities(item: Any) -> list[IndexValue]:
    if not isinstance(item, dict):
        return []
    if "low" in item or "high" in item:  # Range: index both bounds
        return [v for key in ("low", "high") if isinstance(item.get(key), dict) for v in to_quantities(item[key])]
    value = _decimal(item.get("value"))
    if value is None:
        return []
    if "currency" in item:  # Money
        return [QuantityValue(value, "urn:iso:std:iso:4217", item["currency"])]
    return [QuantityValue(value, item.get("system"), item.get("code"), item.get("unit"))]


def to_uris(item: Any) -> list[IndexValue]:
    return [UriValue(item)] if isinstance(item, str) else []


CONVERTERS: dict[str, Callable[[Any], list[IndexValue]]] = {
    "string": to_strings,
    "token": to_tokens,
    "reference": to_references,
    "date": to_dates,
    "number": to_numbers,
    "quantity": to_quantities,
    "uri": to_uris,
}
