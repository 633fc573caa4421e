"""One entry point that decides whether a parsed body may be stored."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from app.errors import InvalidResource
from app.validation.bindings import BindingTable
from app.validation.json_rules import JsonLimits, JsonRules, ShapeReport, load_element_table
from app.validation.model_walk import ModelWalk
from app.validation.narrative import narrative_problems
from app.validation.structure import structural_problems


class ResourceValidator:
    """The FHIR JSON rules, then structure (fhir.resources' models, walked or built), then required
    bindings; built once at start-up."""

    def __init__(
        self,
        bindings: BindingTable,
        rules: Mapping[str, Callable[[dict[str, Any]], None]] | None = None,
        limits: JsonLimits | None = None,
    ) -> None:
        self.bindings = bindings
        self.json_rules = JsonRules(load_element_table(), limits or JsonLimits(), narrative_problems)
        self.model_walk = ModelWalk()
        # server rules per type, run on a structurally valid body (e.g. an active SearchParameter must be usable)
        self.rules = dict(rules or {})

    @property
    def limits(self) -> JsonLimits:
        return self.json_rules.limits

    def validate(self, resource_type: str, body: dict[str, Any]) -> ShapeReport:
        """Raise InvalidResource listing the problems, or return what the JSON walk found (its references).

        The JSON rules run first and alone: fhir.resources would coerce or
        accept what they refuse, and their walk bounds the cost of the rest.
        """
        report = self.json_rules.check_resource(body)
        if report.issues:
            raise InvalidResource(report.issues)
        problems = structural_problems(resource_type, body, self.model_walk)
        if not problems:
            problems = self.bindings.check(body)
        if problems:
            raise InvalidResource(problems)
        rule = self.rules.get(resource_type)
        if rule is not None:
            rule(body)
        return report
