"""Required-binding checks (hl7.org/fhir/R4/terminologies.html#required).

fhir.resources validates structure and datatypes but accepts any string in a
``code`` element, so ``Task.status = "bogus"`` would be stored. This module
walks the instance JSON guided by the table in ``capability/required_bindings.json``
(generated from the official StructureDefinitions) and reports every coded
value outside its required value set, with the FHIRPath-style location.

The table is loaded once into ``BindingTable``; the walk visits only keys that
can lead to a binding and does no allocation on the happy path beyond the
recursion itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any


@dataclass(frozen=True, slots=True)
class ElementRule:
    """What to do with one JSON key of one type."""

    child_type: str | None
    valueset: str | None


@dataclass(frozen=True, slots=True)
class ValueSetCodes:
    url: str
    codes: frozenset[str]
    pairs: frozenset[tuple[str, str]]
    systems: frozenset[str]


class BindingTable:
    """Immutable (type, key) -> rule table plus the expanded value sets."""

    def __init__(self, types: dict[str, dict[str, ElementRule]], valuesets: dict[str, ValueSetCodes]):
        self._types = types
        self._valuesets = valuesets

    @classmethod
    def load(cls) -> BindingTable:
        """The table of the shipped definitions: read once per process, then shared (it is immutable)."""
        return _shipped_table()

    @classmethod
    def read(cls) -> BindingTable:
        raw = json.loads(resources.files("capability").joinpath("required_bindings.json").read_bytes())
        valuesets = {
            url: ValueSetCodes(
                url=url,
                codes=frozenset(code for _, code in pairs),
                pairs=frozenset((system, code) for system, code in pairs),
                systems=frozenset(system for system, _ in pairs),
            )
            for url, pairs in raw["valuesets"].items()
        }
        types = {
            type_name: {
                key: ElementRule(child_type=spec.get("type"), valueset=spec.get("valueset"))
                for key, spec in keys.items()
            }
            for type_name, keys in raw["types"].items()
        }
        return cls(types, valuesets)

    def bound_elements(self, type_name: str) -> dict[str, str]:
        """Key -> value set URL of the directly bound elements of a type (for tests, docs)."""
        return {k: r.valueset for k, r in self._types.get(type_name, {}).items() if r.valueset}

    def check(self, resource: dict[str, Any]) -> list[tuple[str, str]]:
        """Return (message, path) for every coded value outside its required value set."""
        problems: list[tuple[str, str]] = []
        resource_type = resource.get("resourceType")
        if isinstance(resource_type, str):
            self._walk(resource, resource_type, resource_type, problems)
        return problems

    def _walk(self, node: dict[str, Any], type_name: str, path: str, problems: list[tuple[str, str]]) -> None:
        rules = self._types.get(type_name)
        if rules is None:
            return
        for key, value in node.items():
            rule = rules.get(key)
            if rule is None:
                continue
            if isinstance(value, list):
                for index, item in enumerate(value):
                    self._visit(rule, item, f"{path}.{key}[{index}]", problems)
            else:
                self._visit(rule, value, f"{path}.{key}", problems)

    def _visit(self, rule: ElementRule, value: Any, path: str, problems: list[tuple[str, str]]) -> None:
        if rule.valueset is not None:
            self._check_value(self._valuesets[rule.valueset], value, path, problems)
        child = rule.child_type
        if child is not None and isinstance(value, dict):
            if child == "Resource":
                inner = value.get("resourceType")
                if isinstance(inner, str):
                    self._walk(value, inner, path, problems)
            else:
                self._walk(value, child, path, problems)

    @staticmethod
    def _check_value(vs: ValueSetCodes, value: Any, path: str, problems: list[tuple[str, str]]) -> None:
        if isinstance(value, str):
            if value not in vs.codes:
                problems.append((f"code '{value}' is not in the required value set {vs.url}", path))
            return
        if isinstance(value, dict):  # CodeableConcept: at least one coding from the value set
            codings = value.get("coding") or []
            valid = False
            for index, coding in enumerate(codings):
                if not isinstance(coding, dict):
                    continue
                system, code = coding.get("system"), coding.get("code")
                if (system, code) in vs.pairs or (system is None and code in vs.codes):
                    valid = True
                elif system in vs.systems:
                    problems.append(
                        (f"code '{code}' is not in the required value set {vs.url}", f"{path}.coding[{index}]")
                    )
                    return
            if not valid:
                problems.append((f"no coding from the required value set {vs.url}", path))


@cache
def _shipped_table() -> BindingTable:
    return BindingTable.read()
