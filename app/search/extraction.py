"""Index values of a resource, from its search parameters' FHIRPath expressions.

Each expression is compiled once (``app.search.fhirpath.compile_fhirpath``, R4 model,
so choice elements such as ``Observation.value`` resolve), lazily per
resource type on first use, and cached in the extractor. fhirpathpy has no
``resolve()``; every R4 use of it has the form ``X.where(resolve() is T)``,
which means "references in X whose target type is T", so such a part is
compiled as ``X`` and its references filtered by type.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.search.composite import CompiledComposite, compile_composite, extract_composite, indexable_composite
from app.search.converters import CONVERTERS
from app.search.fastpath import compile_fast
from app.search.fhirpath import R4_MODEL, compile_fhirpath, skipping_errors, split_top_level, split_union
from app.search.registry import SearchParam, SearchRegistry
from app.search.values import IndexValue, ReferenceValue

__all__ = ["Extractor", "compile_expression", "rewrite_as", "split_top_level", "split_union"]

_RESOLVE_IS = re.compile(r"^(?P<path>.+)\.where\(resolve\(\) is (?P<type>[A-Za-z]+)\)$")
# R4 writes "(X as T)" where X may be a collection; FHIRPath's "as" needs a singleton,
# and "ofType" is the collection-safe equivalent (as Medplum's definitions also rewrite it).
_AS_OPERATOR = re.compile(r"\((?P<path>[^()]+?) as (?P<type>[A-Za-z]+)\)")
_AS_FUNCTION = re.compile(r"\.as\((?P<type>[A-Za-z]+)\)")
# Parameters stored on the resources table itself, not in index tables.
COLUMN_PARAMS = frozenset({"_id", "_lastUpdated"})
_MODEL = R4_MODEL


@dataclass(frozen=True, slots=True)
class CompiledPart:
    evaluate: Callable[..., list[Any]]
    target_type: str | None
    # top-level JSON keys the part starts from (fast-path parts only): absent keys mean no values
    first_keys: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class CompiledParam:
    param: SearchParam
    parts: tuple[CompiledPart, ...]


def rewrite_as(expression: str) -> str:
    """``(X as T)`` and ``X.as(T)`` -> ``X.ofType(T)``."""
    expression = _AS_OPERATOR.sub(lambda m: f"{m.group('path').strip()}.ofType({m.group('type')})", expression)
    return _AS_FUNCTION.sub(lambda m: f".ofType({m.group('type')})", expression)


def compile_part(part: str, use_fast_path: bool = True, guarded: bool = True) -> Callable[..., list[Any]]:
    """The fast walker when the part is a plain path, else fhirpathpy's compiled form (``guarded``:
    giving no values where it fails on a resource, see ``skipping_errors``)."""
    rewritten = rewrite_as(part)
    if use_fast_path:
        fast = compile_fast(rewritten, _MODEL)
        if fast is not None:
            return fast
    compiled = compile_fhirpath(rewritten, _MODEL)
    return skipping_errors(compiled, rewritten) if guarded else compiled


def compile_expression(expression: str, use_fast_path: bool = True, guarded: bool = True) -> tuple[CompiledPart, ...]:
    compiled = []
    for part in split_union(expression):
        target = None
        match = _RESOLVE_IS.match(part)
        if match:
            part, target = match.group("path"), match.group("type")
        evaluate = compile_part(part, use_fast_path, guarded)
        compiled.append(CompiledPart(evaluate, target, getattr(evaluate, "first_keys", None)))
    return tuple(compiled)


def _evaluate_all(parts: tuple[CompiledPart, ...]) -> Callable[[dict[str, Any]], list[Any]]:
    return lambda body: [item for part in parts for item in part.evaluate(body)]


def indexable(param: SearchParam) -> bool:
    return param.type in CONVERTERS and bool(param.expression) and param.code not in COLUMN_PARAMS


class Extractor:
    """Extracts (parameter, value) pairs; holds the compiled expressions."""

    def __init__(self, registry: SearchRegistry, use_fast_path: bool = True) -> None:
        self.registry = registry
        self.use_fast_path = use_fast_path
        self._compiled: dict[str, tuple[CompiledParam, ...]] = {}
        self._composites: dict[str, tuple[CompiledComposite, ...]] = {}
        self._tables: dict[str, frozenset[str]] = {}

    def compiled_for(self, resource_type: str) -> tuple[CompiledParam, ...]:
        compiled = self._compiled.get(resource_type)
        if compiled is None:
            compiled = tuple(
                CompiledParam(param, compile_expression(param.expression or "", self.use_fast_path))
                for param in self.registry.for_type(resource_type).values()
                if indexable(param)
            )
            self._compiled[resource_type] = compiled
        return compiled

    def composites_for(self, resource_type: str) -> tuple[CompiledComposite, ...]:
        composites = self._composites.get(resource_type)
        if composites is None:
            composites = tuple(
                compile_composite(param, _evaluate_all(compile_expression(param.expression or "", self.use_fast_path)))
                for param in self.registry.for_type(resource_type).values()
                if indexable_composite(param)
            )
            self._composites[resource_type] = composites
        return composites

    def tables_for(self, resource_type: str) -> frozenset[str]:
        """The index tables (by parameter type) a resource of this type can have rows in."""
        tables = self._tables.get(resource_type)
        if tables is None:  # asked on every write: computed once per type
            tables = frozenset(c.param.type for c in self.compiled_for(resource_type)) | frozenset(
                component.type for c in self.composites_for(resource_type) for component in c.param.components
            )
            self._tables[resource_type] = tables
        return tables

    def extract_composites(self, resource_type: str, body: dict[str, Any]) -> list[tuple[int, IndexValue, int]]:
        """(component hash, value, combo) rows of every composite parameter of the type."""
        return [row for compiled in self.composites_for(resource_type) for row in extract_composite(compiled, body)]

    def extract(self, resource_type: str, body: dict[str, Any]) -> list[tuple[SearchParam, IndexValue]]:
        rows: list[tuple[SearchParam, IndexValue]] = []
        for compiled in self.compiled_for(resource_type):
            convert = CONVERTERS[compiled.param.type]
            seen: set[IndexValue] = set()
            for part in compiled.parts:
                if part.first_keys is not None and body.keys().isdisjoint(part.first_keys):
                    continue  # most of a type's parameters name elements the resource does not have
                for item in part.evaluate(body):
                    for value in convert(item):
                        if part.target_type and not (
                            isinstance(value, ReferenceValue) and value.target_type == part.target_type
                        ):
                            continue
                        if value not in seen:
                            seen.add(value)
                            rows.append((compiled.param, value))
        return rows
