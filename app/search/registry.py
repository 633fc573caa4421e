"""SearchParameter registry: the official R4 definitions, per resource type, built once.

Source data: ``capability/search_parameters.json`` (regenerated from the
spec by ``capability/build_search_parameters.py``), with each parameter's
expression already split per base type. Parameters whose base is ``Resource``
or ``DomainResource`` (``_id``, ``_lastUpdated``, ``_tag``, ...) apply to every
type. A registry is immutable; adding a SearchParameter builds a new one
(``with_parameter``) that replaces the old in whole.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any, Literal

from app.search.row_columns import RowColumn, row_key_rule, row_parameters
from app.storage.row_keys import NO_RULE, RowKeyRule

ParamType = Literal["number", "date", "string", "token", "reference", "composite", "quantity", "uri", "special"]
ABSTRACT_BASES = ("Resource", "DomainResource")


@dataclass(frozen=True, slots=True)
class Component:
    """One part of a composite parameter (search.html#composite).

    ``type`` comes from the component's own definition and ``hash`` keys its
    index rows (``Type.code$index``), which carry a ``combo`` number shared by
    the values taken from the same element.
    """

    definition: str
    expression: str
    type: str = ""
    hash: int = 0


@dataclass(frozen=True, slots=True)
class SearchParam:
    """One search parameter as it applies to one resource type."""

    resource_type: str
    code: str
    type: ParamType
    url: str
    description: str
    expression: str | None
    targets: tuple[str, ...] = ()
    modifiers: tuple[str, ...] = ()
    comparators: tuple[str, ...] = ()
    components: tuple[Component, ...] = ()
    hash: int = 0
    # the column of the resource row that also holds this parameter's value, and the target type the
    # parameter narrows it to (app.search.row_columns)
    row_column: RowColumn | None = None
    row_target: str | None = None


def param_hash(resource_type: str, code: str) -> int:
    """Signed 64-bit key of ``Type.code``: the leading column of every index table."""
    digest = hashlib.blake2b(f"{resource_type}.{code}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@dataclass(frozen=True)
class SearchRegistry:
    """Lookups by (type, code) and by URL."""

    by_type: Mapping[str, Mapping[str, SearchParam]]
    by_url: Mapping[str, Mapping[str, SearchParam]] = field(default_factory=dict)
    # compartment type -> member resource type -> parameter codes (compartmentdefinition.html)
    compartments: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)
    # per type: which index rows fill the row columns (app.search.row_columns)
    row_keys: Mapping[str, RowKeyRule] = field(default_factory=dict)

    def row_key_rule(self, resource_type: str) -> RowKeyRule:
        return self.row_keys.get(resource_type, NO_RULE)

    def get(self, resource_type: str, code: str) -> SearchParam | None:
        return self.by_type.get(resource_type, {}).get(code)

    def for_type(self, resource_type: str) -> Mapping[str, SearchParam]:
        return self.by_type.get(resource_type, MappingProxyType({}))

    def with_parameter(self, definition: Mapping[str, Any], resource_types: Iterable[str]) -> SearchRegistry:
        """A new registry with one more (or a replaced) SearchParameter."""
        extra = _params_of(definition, frozenset(resource_types))
        by_type = {t: dict(params) for t, params in self.by_type.items()}
        for param in extra:
            by_type.setdefault(param.resource_type, {})[param.code] = param
        return _freeze(by_type, self.compartments)


def _params_of(definition: Mapping[str, Any], resource_types: frozenset[str]) -> list[SearchParam]:
    bases = definition.get("base", [])
    expressions: Mapping[str, str] = definition.get("expressions", {})
    applies_to = (
        resource_types if any(b in ABSTRACT_BASES for b in bases) else [b for b in bases if b in resource_types]
    )
    params = []
    for resource_type in sorted(applies_to):
        expression = expressions.get(resource_type)
        if expression is None:
            for base in ABSTRACT_BASES:
                if base in expressions:
                    expression = expressions[base].replace(f"{base}.", f"{resource_type}.")
        params.append(
            SearchParam(
                resource_type=resource_type,
                code=definition["code"],
                type=definition["type"],
                url=definition["url"],
                description=_description_for(definition.get("description", ""), resource_type),
                expression=expression,
                targets=tuple(definition.get("target", ())),
                modifiers=tuple(definition.get("modifier", ())),
                comparators=tuple(definition.get("comparator", ())),
                components=tuple(Component(c["definition"], c["expression"]) for c in definition.get("component", ())),
                hash=param_hash(resource_type, definition["code"]),
            )
        )
    return params


def _description_for(description: str, resource_type: str) -> str:
    """The type's own line of a shared parameter's "Multiple Resources" description."""
    if not description.startswith("Multiple Resources"):
        return description
    marker = f"* [{resource_type}]("
    for line in description.splitlines():
        if line.startswith(marker):
            return line.split("): ", 1)[-1].strip()
    return description


def _resolve_components(param: SearchParam, by_url: Mapping[str, Mapping[str, SearchParam]]) -> SearchParam:
    """A composite with each component's type looked up from its definition (unknown: left empty)."""
    resolved = []
    for index, component in enumerate(param.components):
        definitions = by_url.get(component.definition, {})
        target = definitions.get(param.resource_type) or next(iter(definitions.values()), None)
        resolved.append(
            Component(
                component.definition,
                component.expression,
                target.type if target else "",
                param_hash(param.resource_type, f"{param.code}${index}"),
            )
        )
    return dataclasses.replace(param, components=tuple(resolved))


def _freeze(
    by_type: dict[str, dict[str, SearchParam]], compartments: Mapping[str, Mapping[str, tuple[str, ...]]]
) -> SearchRegistry:
    by_url: dict[str, dict[str, SearchParam]] = {}
    for params in by_type.values():
        for param in params.values():
            by_url.setdefault(param.url, {})[param.resource_type] = param
    for params in by_type.values():
        for code, param in params.items():
            if param.type == "composite":
                params[code] = by_url[param.url][param.resource_type] = _resolve_components(param, by_url)
        for code, (column, target) in row_parameters(params).items():
            param = dataclasses.replace(params[code], row_column=column, row_target=target)
            params[code] = by_url[param.url][param.resource_type] = param
    return SearchRegistry(
        by_type=MappingProxyType({t: MappingProxyType(p) for t, p in by_type.items()}),
        by_url=MappingProxyType({u: MappingProxyType(p) for u, p in by_url.items()}),
        compartments=compartments,
        row_keys=MappingProxyType({t: row_key_rule(p) for t, p in by_type.items()}),
    )


def load_registry(resource_types: Iterable[str]) -> SearchRegistry:
    """The registry of the official R4 parameters for the served types: built once per process and set of
    types, then shared (it is immutable; a SearchParameter stored at run time makes a new one)."""
    return _official_registry(frozenset(resource_types))


@cache
def _official_registry(types: frozenset[str]) -> SearchRegistry:
    raw = json.loads(resources.files("capability").joinpath("search_parameters.json").read_bytes())
    by_type: dict[str, dict[str, SearchParam]] = {t: {} for t in types}
    for definition in raw:
        for param in _params_of(definition, types):
            by_type[param.resource_type][param.code] = param
    raw_compartments = json.loads(resources.files("capability").joinpath("compartments.json").read_bytes())
    compartments = MappingProxyType(
        {
            compartment: MappingProxyType({t: tuple(codes) for t, codes in members.items() if t in types})
            for compartment, members in raw_compartments.items()
        }
    )
    return _freeze(by_type, compartments)
