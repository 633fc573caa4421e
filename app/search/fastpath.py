"""A hand-written evaluator for the plain element paths that dominate R4 search parameters.

Most expressions are a type followed by element names (``CarePlan.activity.detail.code``),
sometimes narrowed to one type of a choice element (``(Observation.value as Quantity)``
or ``Observation.value.ofType(Quantity)``). For those, walking the JSON directly gives the
same values as fhirpathpy at a fraction of the cost; the FHIRPath model of R4 (the one
fhirpathpy ships) says which elements are choices and what type each path has, so the walk
knows that ``scheduled`` means ``scheduledTiming | scheduledPeriod | scheduledString``.
Anything else returns None and is left to fhirpathpy. ``tests/search/test_fastpath.py``
proves both give the same index values on every official example.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

_PLAIN = re.compile(r"^(?P<path>[A-Z][A-Za-z]*(?:\.[a-z][A-Za-z]*)+)$")
_AS = re.compile(r"^\((?P<path>[A-Z][A-Za-z]*(?:\.[a-z][A-Za-z]*)+) as (?P<type>[A-Za-z]+)\)$")
_OF_TYPE = re.compile(r"^(?P<path>[A-Z][A-Za-z]*(?:\.[a-z][A-Za-z]*)+)\.ofType\((?P<type>[A-Za-z]+)\)$")
_STRUCTURAL = {"Element", "BackboneElement"}


def _upper_first(name: str) -> str:
    return name[:1].upper() + name[1:]


_BACKBONES: dict[int, frozenset[str]] = {}


def _backbone_paths(model: dict[str, Any]) -> frozenset[str]:
    """Paths of backbone elements: the model lists only their children."""
    key = id(model)
    if key not in _BACKBONES:
        prefixes = set()
        for path in model["path2Type"]:
            parts = path.split(".")
            for end in range(2, len(parts)):
                prefixes.add(".".join(parts[:end]))
        _BACKBONES[key] = frozenset(prefixes)
    return _BACKBONES[key]


def plan_steps(path: str, narrowed_to: str | None, model: dict[str, Any]) -> list[tuple[str, ...]] | None:
    """JSON keys to follow per step, or None when the path needs real FHIRPath."""
    path2type: dict[str, str] = model["path2Type"]
    choices: dict[str, list[str]] = model["choiceTypePaths"]
    elsewhere: dict[str, str] = model["pathsDefinedElsewhere"]
    segments = path.split(".")
    context = segments[0]
    steps: list[tuple[str, ...]] = []
    for index, segment in enumerate(segments[1:], start=1):
        full = f"{context}.{segment}"
        full = elsewhere.get(full, full)
        last = index == len(segments) - 1
        if full in choices:
            types = choices[full]
            if last and narrowed_to is not None:
                wanted = [t for t in types if t.lower() == narrowed_to.lower()]
                if not wanted:
                    return None
                types = wanted
            elif not last:
                return None  # descending through an untyped choice: leave to FHIRPath
            steps.append(tuple(segment + _upper_first(t) for t in types))
            continue
        if full not in path2type:
            if last or full not in _backbone_paths(model):
                return None
            steps.append((segment,))  # a backbone element: its children are named by its path
            context = full
            continue
        steps.append((segment,))
        element_type = path2type[full]
        if last:
            if narrowed_to is not None and element_type.lower() != narrowed_to.lower():
                return None
            break
        if element_type in _STRUCTURAL:
            context = full
        elif element_type[:1].isupper() and element_type != "Resource":
            context = element_type
        else:
            return None
    return steps


def compile_fast(expression: str, model: dict[str, Any]) -> Callable[[dict[str, Any]], list[Any]] | None:
    """A walker for ``expression`` if it is a plain (optionally narrowed) path, else None."""
    expression = expression.strip()
    narrowed_to = None
    match = _PLAIN.match(expression)
    if match is None:
        match = _AS.match(expression) or _OF_TYPE.match(expression)
        if match is None:
            return None
        narrowed_to = match.group("type")
    steps = plan_steps(match.group("path"), narrowed_to, model)
    if steps is None:
        return None
    resource_type = match.group("path").split(".", 1)[0]
    frozen_steps = tuple(steps)
    first_keys = frozen_steps[0] if frozen_steps else ()

    def walk(resource: dict[str, Any]) -> list[Any]:
        if resource.get("resourceType") != resource_type:
            return []
        nodes: list[Any] = [resource]
        for keys in frozen_steps:
            found: list[Any] = []
            for node in nodes:
                if not isinstance(node, dict):
                    continue
                for key in keys:
                    value = node.get(key)
                    if value is None:
                        continue
                    if isinstance(value, list):
                        found.extend(v for v in value if v is not None)
                    else:
                        found.append(value)
            if not found:
                return []
            nodes = found
        return nodes

    walk.first_keys = first_keys  # type: ignore[attr-defined]  # lets callers skip absent elements
    return walk
