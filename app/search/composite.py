"""Index values of composite parameters (search.html#composite), one combination per element.

A composite such as Observation ``code-value-quantity`` matches only when
both values come from the same element (the same ``component`` of a blood
pressure, the same ``useContext``). The base expression selects the
elements; each component expression is evaluated on one element, and every
combination of the components' values becomes one ``combo``: the rows of a
combination share that number, so the query joins the component rows on it.

Component expressions are short relative paths (``code``,
``value.as(Quantity)``, ``%resource.referenceSeq.chromosome``); on JSON a
choice type is its own key (``valueQuantity``), so they are walked directly,
with fhirpathpy for anything that is not a plain path.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.search.converters import CONVERTERS
from app.search.fhirpath import compile_fhirpath, skipping_errors
from app.search.registry import Component, SearchParam
from app.search.values import IndexValue

# Combinations kept per element: a guard against a pathological cross product.
MAX_COMBINATIONS = 64
_SEGMENT = re.compile(r"^[A-Za-z][A-Za-z0-9]*(\.(as|ofType)\([A-Za-z]+\))?$")
_TYPED = re.compile(r"^(?P<name>[A-Za-z0-9]+)\.(as|ofType)\((?P<type>[A-Za-z]+)\)$")

Evaluate = Callable[[Any, dict[str, Any]], list[Any]]


def _children(items: list[Any], segment: str) -> list[Any]:
    """One path step on JSON: ``name``, ``name.as(Type)`` (the key ``nameType``), or a choice ``name[x]``."""
    typed = _TYPED.match(segment)
    out: list[Any] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        if typed:
            kind = typed.group("type")
            keys = [typed.group("name") + kind[:1].upper() + kind[1:]]
        elif segment in item:
            keys = [segment]
        else:  # a choice element named without its type: any of value[x]
            keys = [k for k in item if k.startswith(segment) and k[len(segment) : len(segment) + 1].isupper()]
        for key in keys:
            value = item.get(key)
            if isinstance(value, list):
                out.extend(value)
            elif value is not None:
                out.append(value)
    return out


def _split_path(path: str) -> list[str] | None:
    """``a.b.as(T)`` -> ``["a", "b.as(T)"]``; None when the part is not a plain path."""
    segments: list[str] = []
    for raw in re.split(r"\.(?![a-zA-Z]+\()", path):
        if not _SEGMENT.match(raw):
            return None
        segments.append(raw)
    return segments


def compile_component(expression: str) -> Evaluate:
    """A function (element, resource) -> values of one component expression."""
    walkers: list[Evaluate] = []
    for part in (p.strip() for p in expression.split("|")):
        from_resource = part.startswith("%resource.")
        segments = _split_path(part.removeprefix("%resource."))
        if segments is None:
            compiled = skipping_errors(compile_fhirpath(part, None), part)

            def evaluate(element: Any, resource: dict[str, Any], f: Callable[..., list[Any]] = compiled) -> list[Any]:
                return f(element, {"resource": resource})

            walkers.append(evaluate)
            continue

        def walk(
            element: Any, resource: dict[str, Any], s: list[str] = segments, root: bool = from_resource
        ) -> list[Any]:
            items = [resource if root else element]
            for segment in s:
                items = _children(items, segment)
            return items

        walkers.append(walk)
    return lambda element, resource: [value for walker in walkers for value in walker(element, resource)]


@dataclass(frozen=True, slots=True)
class CompiledComposite:
    param: SearchParam
    elements: Callable[[dict[str, Any]], list[Any]]
    components: tuple[tuple[Component, Evaluate], ...]


def compile_composite(param: SearchParam, elements: Callable[[dict[str, Any]], list[Any]]) -> CompiledComposite:
    return CompiledComposite(param, elements, tuple((c, compile_component(c.expression)) for c in param.components))


def indexable_composite(param: SearchParam) -> bool:
    """Composites whose every component has a type the index can hold."""
    return (
        param.type == "composite"
        and bool(param.expression)
        and bool(param.components)
        and all(c.type in CONVERTERS for c in param.components)
    )


def extract_composite(compiled: CompiledComposite, body: dict[str, Any]) -> list[tuple[int, IndexValue, int]]:
    """(component hash, value, combo) rows of one composite, combos numbered from 0."""
    rows: list[tuple[int, IndexValue, int]] = []
    seen: set[tuple[IndexValue, ...]] = set()
    combo = 0
    for element in compiled.elements(body):
        per_component: list[list[IndexValue]] = []
        for component, evaluate in compiled.components:
            convert = CONVERTERS[component.type]
            values = list(dict.fromkeys(v for item in evaluate(element, body) for v in convert(item)))
            if not values:
                break
            per_component.append(values)
        else:
            for combination in itertools.islice(itertools.product(*per_component), MAX_COMBINATIONS):
                if combination in seen:
                    continue
                seen.add(combination)
                for (component, _), value in zip(compiled.components, combination, strict=True):
                    rows.append((component.hash, value, combo))
                combo += 1
    return rows
