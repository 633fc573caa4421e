"""``_summary`` and ``_elements`` (hl7.org/fhir/R4/search.html#summary, #elements).

Subsetting re-serialises a body, so it only runs when a client asks for it;
subsetted resources carry the ``SUBSETTED`` tag, as the spec requires.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from app import fhirjson
from app.errors import InvalidRequest

SUMMARY_MODES = frozenset({"true", "text", "data", "count", "false"})
SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}
ALWAYS = frozenset({"resourceType", "id", "meta"})


@dataclass(frozen=True, slots=True)
class Subsetting:
    summary: str | None = None
    elements: tuple[str, ...] = ()

    @property
    def changes_bodies(self) -> bool:
        return (self.summary not in (None, "false", "count")) or bool(self.elements)


def parse_subsetting(params: Mapping[str, str]) -> Subsetting:
    summary = params.get("_summary")
    if summary is not None and summary not in SUMMARY_MODES:
        raise InvalidRequest(f"_summary '{summary}' must be one of {', '.join(sorted(SUMMARY_MODES))}", ["_summary"])
    raw_elements = params.get("_elements")
    elements = tuple(e.strip() for e in raw_elements.split(",") if e.strip()) if raw_elements else ()
    if summary is not None and summary != "false" and elements:
        raise InvalidRequest("_summary and _elements cannot be combined", ["_elements"])
    return Subsetting(summary, elements)


@cache
def _definitions() -> dict[str, dict[str, list[str]]]:
    raw: dict[str, dict[str, list[str]]] = json.loads(
        resources.files("capability").joinpath("summary_elements.json").read_bytes()
    )
    return raw


def _matches(key: str, names: frozenset[str]) -> bool:
    """``valueQuantity`` matches ``value[x]``; ``_status`` (primitive extension) follows ``status``."""
    key = key.lstrip("_")
    if key in names:
        return True
    return any(
        name.endswith("[x]") and key.startswith(name[:-3]) and key[len(name) - 3 :][:1].isupper() for name in names
    )


def _kept_keys(resource: dict[str, Any], subsetting: Subsetting) -> frozenset[str] | None:
    definition = _definitions().get(resource.get("resourceType", ""), {"summary": [], "mandatory": []})
    mandatory = frozenset(definition["mandatory"])
    if subsetting.elements:
        return ALWAYS | mandatory | frozenset(subsetting.elements)
    if subsetting.summary == "true":
        return ALWAYS | mandatory | frozenset(definition["summary"])
    if subsetting.summary == "text":
        return ALWAYS | mandatory | {"text"}
    return None  # data: everything but text


def subset(body: bytes, subsetting: Subsetting) -> bytes:
    """The stored bytes reduced as asked, with the SUBSETTED tag."""
    resource: dict[str, Any] = fhirjson.loads(body)
    kept = _kept_keys(resource, subsetting)
    if kept is None:
        reduced = {k: v for k, v in resource.items() if k != "text"}
    else:
        reduced = {k: v for k, v in resource.items() if _matches(k, kept)}
    meta = dict(reduced.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    reduced["meta"] = meta
    return fhirjson.dumps(reduced)
