"""SearchParameter resources -> registry definitions, for the official set and for ones clients add.

A definition is the reduced form the registry reads (``registry._params_of``):
url, code, type, description, base, target, modifier, comparator, component,
and the FHIRPath expression split per base type, because shared parameters
carry one union expression for many types (``AllergyIntolerance.patient |
CarePlan.subject...``) and each type should evaluate only its own part.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from app.errors import InvalidResource
from app.search.composite import compile_component
from app.search.extraction import compile_expression, split_union
from app.search.fhirpath import MAX_EXPRESSION_CHARS, explain

KEPT = ("url", "code", "type", "description", "target", "modifier", "comparator", "multipleOr", "multipleAnd")
# Types a client-defined parameter may have: the ones the index can hold.
INDEXED_TYPES = frozenset({"number", "date", "string", "token", "reference", "composite", "quantity", "uri"})


def root_type(part: str) -> str:
    """The resource type an expression part starts from (``(Observation.value as X)`` -> Observation)."""
    head = part.lstrip("(").strip()
    name = ""
    for char in head:
        if char.isalnum():
            name += char
        else:
            break
    return name


def expressions_per_base(expression: str, bases: Iterable[str]) -> dict[str, str]:
    parts = split_union(expression)
    per_base: dict[str, str] = {}
    for base in bases:
        # a part with no type in front ("name | alias") is relative to the base
        absolute = [p if root_type(p)[:1].isupper() else f"{base}.{p}" for p in parts]
        own = [p for p in absolute if root_type(p) in (base, "Resource", "DomainResource")]
        if own:
            per_base[base] = " | ".join(own)
    return per_base


def reduce(parameter: Mapping[str, Any]) -> dict[str, Any]:
    """The registry definition of a SearchParameter resource."""
    out: dict[str, Any] = {key: parameter[key] for key in KEPT if key in parameter}
    out["base"] = list(parameter.get("base", []))
    expression = parameter.get("expression")
    if expression:
        out["expressions"] = expressions_per_base(expression, out["base"])
    if "component" in parameter:
        out["component"] = [
            {"definition": c.get("definition"), "expression": c.get("expression")} for c in parameter["component"]
        ]
    return out


def client_definition(parameter: Mapping[str, Any], resource_types: frozenset[str]) -> dict[str, Any]:
    """The definition of a client's SearchParameter, or InvalidResource saying why it cannot be searched.

    Checked when it is written, as HAPI does, so a parameter that is stored
    as active always works: its bases are served types, its type is one the
    index holds, and its expression compiles for every base.
    """
    problems: list[tuple[str, str]] = []
    bases = list(parameter.get("base", []))
    unknown = [b for b in bases if b not in resource_types and b not in ("Resource", "DomainResource")]
    if unknown:
        problems.append(
            (f"base {', '.join(unknown)} is not a resource type this server serves", "SearchParameter.base")
        )
    if parameter.get("type") not in INDEXED_TYPES:
        problems.append((f"type '{parameter.get('type')}' cannot be indexed", "SearchParameter.type"))
    expression = parameter.get("expression")
    if not expression:
        problems.append(("an active SearchParameter needs an expression", "SearchParameter.expression"))
    elif not isinstance(expression, str) or len(expression) > MAX_EXPRESSION_CHARS:
        problems.append((f"expression longer than {MAX_EXPRESSION_CHARS} characters", "SearchParameter.expression"))
        raise InvalidResource(problems)
    definition = reduce(parameter)
    if expression and not problems:
        for base, part in definition.get("expressions", {}).items():
            try:
                # fhirpathpy compiles leniently and reports some errors only when run: run it once
                for compiled in compile_expression(part, guarded=False):
                    compiled.evaluate({"resourceType": base})
            except Exception as exc:  # fhirpathpy raises plain exceptions for syntax errors
                problems.append(
                    (f"expression for {base} does not compile: {explain(exc)}", "SearchParameter.expression")
                )
        missing = [b for b in bases if b not in definition.get("expressions", {})]
        if missing and not any(b in ("Resource", "DomainResource") for b in bases):
            problems.append((f"expression has no part for {', '.join(missing)}", "SearchParameter.expression"))
    for index, component in enumerate(definition.get("component", [])):
        try:
            compile_component(component["expression"] or "")
        except Exception as exc:
            where = f"SearchParameter.component[{index}]"
            problems.append((f"component expression does not compile: {explain(exc)}", where))
    if problems:
        raise InvalidResource(problems)
    return definition
