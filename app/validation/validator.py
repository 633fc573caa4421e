"""One entry point that decides whether a parsed body may be stored."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from app.errors import InvalidResource
from app.validation.bindings import BindingTable
from app.validation.structure import structural_problems


class ResourceValidator:
    """Structure (fhir.resources) then required bindings; built once at start-up."""

    def __init__(
        self, bindings: BindingTable, rules: Mapping[str, Callable[[dict[str, Any]], None]] | None = None
    ) -> None:
        self.bindings = bindings
        # server rules per type, run on a structurally valid body (e.g. an active SearchParameter must be usable)
        self.rules = dict(rules or {})

    def validate(self, resource_type: str, body: dict[str, Any]) -> None:
        """Raise InvalidResource listing every problem, or return when the body is valid."""
        problems = structural_problems(resource_type, body)
        if not problems:
            problems = self.bindings.check(body)
        if problems:
            raise InvalidResource(problems)
        rule = self.rules.get(resource_type)
        if rule is not None:
            rule(body)
