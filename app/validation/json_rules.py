"""The FHIR JSON rules, checked on the JSON as sent (hl7.org/fhir/R4/json.html).

fhir.resources validates in pydantic's lax mode: it turns ``"active": "yes"``
and ``"active": 1`` into ``true`` and ``"multipleBirthInteger": "3"`` into
``3``, and it accepts ``null``, ``{}`` and ``[]``, none of which FHIR allows.
This walk runs first, guided by the element table generated from the
official StructureDefinitions (``capability/elements.json``), and refuses:

* ``null`` anywhere, except inside an array of primitives whose ``_name``
  array carries the id or extensions of that position (json.html#primitive);
* empty objects, empty arrays and empty strings (ele-1: every element has a
  value or children);
* an array where one value belongs, or one value where an array belongs;
* JSON types that do not match the element: booleans must be ``true`` or
  ``false``, integers JSON integers in their range (integer, positiveInt,
  unsignedInt are 32-bit), decimals finite JSON numbers, everything else a
  JSON string;
* narrative ``div`` content outside the XHTML rules txt-1 and txt-2
  (``app.validation.narrative``);
* arrays longer and objects nested deeper than the server's limits, before
  any per-element work is done on them, so an oversized body costs little.

Control characters and unpaired surrogates, in any string or property name,
are refused by the parser (``app.fhirjson``) before this walk. Unknown
properties are left to fhir.resources, which names them. The walk
also collects every ``Reference.reference`` it passes, so the write path
learns of ``urn:uuid:`` and conditional references without a second walk.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from app.fhirjson import JsonNumber

_INTEGER_RANGES = {
    "integer": (-(2**31), 2**31 - 1),
    "positiveInt": (1, 2**31 - 1),
    "unsignedInt": (0, 2**31 - 1),
}
MAX_ISSUES = 20


@dataclass(frozen=True, slots=True)
class JsonLimits:
    """Bounds on one resource's JSON; both are documented in the README and the CapabilityStatement."""

    max_array_items: int = 10_000
    max_depth: int = 64
    max_bytes: int = 10 * 1024 * 1024  # a stored resource, e.g. a PATCH result, obeys the request body limit


@dataclass(frozen=True, slots=True)
class ElementTable:
    """type -> JSON property -> (child type, repeats); primitive type -> JSON kind."""

    types: Mapping[str, Mapping[str, tuple[str, bool]]]
    kinds: Mapping[str, str]

    def repeats(self, type_name: str, key: str) -> bool | None:
        """Whether ``type_name.key`` is an array; None when the table does not know it."""
        rule = self.types.get(type_name, {}).get(key)
        return None if rule is None else rule[1]

    def child_type(self, type_name: str, key: str) -> str | None:
        rule = self.types.get(type_name, {}).get(key)
        return None if rule is None else rule[0]


@cache
def load_element_table() -> ElementTable:
    raw = json.loads(resources.files("capability").joinpath("elements.json").read_bytes())
    types = {name: {key: (spec[0], bool(spec[1])) for key, spec in keys.items()} for name, keys in raw["types"].items()}
    return ElementTable(types, dict(raw["kinds"]))


@dataclass(slots=True)
class ShapeReport:
    """What the walk found: problems as (message, path), and the references it passed."""

    issues: list[tuple[str, str]] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    large: bool = False  # set by the caller that measured the body: its other CPU work goes off the event loop


class JsonRules:
    """The walk; built once with the table, the limits and the narrative checker."""

    def __init__(self, table: ElementTable, limits: JsonLimits, narrative_problems: Callable[[str], list[str]]) -> None:
        self.table = table
        self.limits = limits
        self.narrative_problems = narrative_problems

    def check_resource(self, resource: dict[str, Any], path: str | None = None) -> ShapeReport:
        """Check a whole resource; ``path`` prefixes locations (default: its resourceType)."""
        walk = _Walk(self, ShapeReport(), skip_resources=False)
        walk.resource(resource, path, 1)
        return walk.report

    def check_element(self, node: Any, type_name: str, path: str, skip_resources: bool = False) -> ShapeReport:
        """Check one element of a known type (a Bundle entry, say); ``skip_resources`` leaves nested
        resources to be checked on their own."""
        walk = _Walk(self, ShapeReport(), skip_resources)
        walk.value(node, type_name, path, 1)
        return walk.report


class _Walk:
    __slots__ = ("array_limit", "depth_limit", "kinds", "narrative", "report", "skip_resources", "types")

    def __init__(self, rules: JsonRules, report: ShapeReport, skip_resources: bool) -> None:
        self.types = rules.table.types
        self.kinds = rules.table.kinds
        self.array_limit = rules.limits.max_array_items
        self.depth_limit = rules.limits.max_depth
        self.narrative = rules.narrative_problems
        self.report = report
        self.skip_resources = skip_resources

    def problem(self, path: str, message: str) -> None:
        if len(self.report.issues) < MAX_ISSUES:
            self.report.issues.append((message, path))

    def resource(self, node: Any, path: str | None, depth: int) -> None:
        if not isinstance(node, dict):
            self.problem(path or "Resource", "must be a resource (a JSON object)")
            return
        resource_type = node.get("resourceType")
        if not isinstance(resource_type, str) or resource_type not in self.types or resource_type[:1].islower():
            shown = str(resource_type)[:80] if resource_type is not None else "missing"
            self.problem(f"{path}.resourceType" if path else "resourceType", f"unknown resourceType ({shown})")
            return
        self.object(node, resource_type, path or resource_type, depth, resource=True)

    def object(self, node: dict[str, Any], type_name: str, path: str, depth: int, resource: bool = False) -> None:
        """Every property of one object; the common valid cases are decided inline, and a location
        string is built only to report a problem or to enter a nested object."""
        if depth > self.depth_limit:
            self.problem(path, f"objects are nested more than {self.depth_limit} levels deep")
            return
        if not node:
            self.problem(path, "an empty object is not allowed")
            return
        rules = self.types.get(type_name)
        if rules is None:
            return
        kinds = self.kinds
        for key, value in node.items():
            rule = rules.get(key)
            if rule is None:
                if key.startswith("_"):
                    base = rules.get(key[1:])
                    if base is not None and base[0] in kinds:
                        self.primitive_extension(node, key, value, base[1], path, depth)
                continue  # unknown (or resourceType): fhir.resources names it
            child, repeats = rule
            if repeats:
                if type(value) is list and value and len(value) <= self.array_limit:
                    self.items(node, key, value, child, path, depth)
                else:
                    self.array(node, key, value, child, f"{path}.{key}", depth)
                continue
            kind = kinds.get(child)
            if kind is None:
                if type(value) is dict and child != "Resource":
                    self.object(value, child, f"{path}.{key}", depth + 1)
                    continue
            elif (kind == "string" and type(value) is str and value) or (
                kind == "boolean" and (value is True or value is False)
            ):
                continue
            if value is None:
                self.problem(f"{path}.{key}", "null is not allowed")
            elif type(value) is list:
                self.problem(f"{path}.{key}", "takes one value, not an array")
            else:
                self.value(value, child, f"{path}.{key}", depth)
        if type_name == "Reference":
            reference = node.get("reference")
            if isinstance(reference, str):
                self.report.references.append(reference)

    def items(self, node: dict[str, Any], key: str, value: list[Any], child: str, path: str, depth: int) -> None:
        """The items of a non-empty array within the limit."""
        kind = self.kinds.get(child)
        if kind is None and child != "Resource":
            for index, item in enumerate(value):
                if type(item) is dict:
                    self.object(item, child, f"{path}.{key}[{index}]", depth + 1)
                else:
                    self.item(node, key, value, index, child, path, depth)
            return
        if kind == "string":
            for index, item in enumerate(value):
                if not (type(item) is str and item):
                    self.item(node, key, value, index, child, path, depth)
            return
        for index in range(len(value)):
            self.item(node, key, value, index, child, path, depth)

    def item(
        self, node: dict[str, Any], key: str, value: list[Any], index: int, child: str, path: str, depth: int
    ) -> None:
        item = value[index]
        where = f"{path}.{key}[{index}]"
        if item is None:
            extensions = node.get("_" + key)
            carried = (
                child in self.kinds
                and isinstance(extensions, list)
                and index < len(extensions)
                and extensions[index] is not None
            )
            if not carried:
                self.problem(where, "null is not allowed")
            return
        self.value(item, child, where, depth)

    def array(self, node: dict[str, Any], key: str, value: Any, child: str, where: str, depth: int) -> None:
        """An array property that is not a non-empty list within the limit: say what is wrong."""
        if value is None:
            self.problem(where, "null is not allowed")
        elif not isinstance(value, list):
            self.problem(where, "must be an array")
        elif not value:
            self.problem(where, "an empty array is not allowed")
        else:
            self.problem(where, f"has {len(value)} items; at most {self.array_limit} are accepted")

    def value(self, item: Any, type_name: str, where: str, depth: int) -> None:
        kind = self.kinds.get(type_name)
        if kind is not None:
            self.primitive(item, type_name, kind, where)
        elif type_name == "Resource":
            if not self.skip_resources:
                self.resource(item, where, depth + 1)
            elif not isinstance(item, dict):
                self.problem(where, "must be a resource (a JSON object)")
        elif isinstance(item, dict):
            self.object(item, type_name, where, depth + 1)
        else:
            self.problem(where, f"must be a JSON object ({type_name.rsplit('.', 1)[-1]})")

    def primitive(self, item: Any, type_name: str, kind: str, where: str) -> None:
        if kind == "string" or kind == "xhtml":
            if not isinstance(item, str):
                self.problem(where, f"must be a JSON string ({type_name})")
            elif not item:
                self.problem(where, "an empty string is not allowed")
            elif kind == "xhtml":
                for message in self.narrative(item):
                    self.problem(where, message)
        elif kind == "boolean":
            if item is not True and item is not False:
                self.problem(where, "must be a JSON boolean (true or false)")
        elif kind == "decimal":
            if isinstance(item, bool) or not isinstance(item, int | float):
                self.problem(where, "must be a JSON number (decimal)")
            elif not _decimal_in_range(item):
                self.problem(where, "the number is outside the supported range (about 1e-308 to 1e308)")
        else:
            low, high = _INTEGER_RANGES[kind]
            if isinstance(item, JsonNumber) and item.text.lstrip("-").isdigit():
                self.problem(where, f"{type_name} must be between {low} and {high}")
            elif type(item) is not int:
                self.problem(where, f"must be a JSON integer ({type_name})")
            elif not low <= item <= high:
                self.problem(where, f"{type_name} must be between {low} and {high}")

    def primitive_extension(
        self, node: dict[str, Any], key: str, value: Any, repeats: bool, path: str, depth: int
    ) -> None:
        """``_given`` carries ids and extensions of the values of ``given`` (json.html#primitive)."""
        where = f"{path}.{key}"
        if not repeats:
            if isinstance(value, dict):
                self.object(value, "Element", where, depth + 1)
            else:
                self.problem(where, "must be a JSON object (the primitive's id and extensions)")
            return
        if not isinstance(value, list) or not value:
            self.problem(where, "must be a non-empty array aligned with the values")
            return
        values = node.get(key[1:])
        if isinstance(values, list) and len(values) != len(value):
            self.problem(where, f"has {len(value)} items but {key[1:]} has {len(values)}")
            return
        for index, item in enumerate(value):
            if item is None:
                if not isinstance(values, list) or values[index] is None:
                    self.problem(f"{where}[{index}]", "null is not allowed")
                continue
            if isinstance(item, dict):
                self.object(item, "Element", f"{where}[{index}]", depth + 1)
            else:
                self.problem(f"{where}[{index}]", "must be a JSON object or null")


def _decimal_in_range(value: int | float) -> bool:
    if isinstance(value, int):
        return True
    if not math.isfinite(value):
        return False
    if value == 0 and isinstance(value, JsonNumber):  # 1e-400 reads as 0.0: refuse, the text is not zero
        mantissa = value.text.lower().split("e", 1)[0]
        return not any(digit in mantissa for digit in "123456789")
    return True
