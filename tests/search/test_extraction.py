"""Index extraction from the official definitions, checked on the official examples."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from app.main import served_resource_types
from app.search.extraction import Extractor, rewrite_as, split_union
from app.search.registry import load_registry
from app.search.values import DateValue, QuantityValue, ReferenceValue, StringValue, TokenValue
from tests.examples import EXAMPLES, load

REGISTRY = load_registry(served_resource_types())
FAST = Extractor(REGISTRY)
FHIRPATH_ONLY = Extractor(REGISTRY, use_fast_path=False)
EXAMPLE_NAMES = sorted(p.name for p in EXAMPLES.glob("*.json"))


def values(extractor: Extractor, name: str) -> list[tuple[str, str]]:
    example = load(name)
    return sorted((param.code, repr(value)) for param, value in extractor.extract(example["resourceType"], example))


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_fast_path_extracts_exactly_what_fhirpathpy_extracts(name: str) -> None:
    assert values(FAST, name) == values(FHIRPATH_ONLY, name)


def test_fast_path_covers_the_plain_paths() -> None:
    parts = [p for t in REGISTRY.by_type for c in FAST.compiled_for(t) for p in c.parts]
    fast = [p for p in parts if getattr(p.evaluate, "__name__", "") == "walk"]
    assert len(fast) / len(parts) > 0.9


def test_care_plan_values() -> None:
    plan = load("careplan-example-f001-heart.json")
    got = {(param.code, value) for param, value in FAST.extract("CarePlan", plan)}
    assert ("patient", ReferenceValue("Patient", "f001")) in got
    assert ("subject", ReferenceValue("Patient", "f001")) in got
    assert ("status", TokenValue(None, "completed")) in got
    assert ("activity-code", TokenValue("http://snomed.info/sct", "64915003", "Operation on heart")) in got
    low = datetime(2011, 6, 26, tzinfo=UTC)
    high = datetime(2011, 6, 27, 23, 59, 59, 999999, tzinfo=UTC)
    assert ("date", DateValue(low, high)) in got


def test_resolve_is_filters_references_by_target_type() -> None:
    plan = {"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": {"reference": "Group/g1"}}
    got = {(param.code, value) for param, value in FAST.extract("CarePlan", plan)}
    assert ("subject", ReferenceValue("Group", "g1")) in got
    assert not any(code == "patient" for code, _ in got)


def test_string_values_are_folded_for_case_and_accents() -> None:
    patient = {"resourceType": "Patient", "name": [{"family": "Müller", "given": ["Zoë"]}]}
    strings = {value for param, value in FAST.extract("Patient", patient) if param.code == "name"}
    assert StringValue("muller", "Müller") in strings
    assert StringValue("zoe", "Zoë") in strings


def test_choice_narrowed_with_as_picks_only_that_type() -> None:
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "weight"},
        "valueQuantity": {"value": 72.5, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"},
    }
    got = [(p.code, v) for p, v in FAST.extract("Observation", observation) if p.code == "value-quantity"]
    assert got == [("value-quantity", QuantityValue(Decimal("72.5"), "http://unitsofmeasure.org", "kg", "kg"))]


def test_union_splitting_and_as_rewriting() -> None:
    assert split_union("A.b | (A.c as X) | A.d.where(e = 'x|y')") == ["A.b", "(A.c as X)", "A.d.where(e = 'x|y')"]
    assert rewrite_as("(Observation.value as Quantity)") == "Observation.value.ofType(Quantity)"
    assert rewrite_as("Condition.abatement.as(Age)") == "Condition.abatement.ofType(Age)"


def test_registry_has_the_care_coordination_parameters() -> None:
    for resource_type, code in [
        ("CarePlan", "patient"),
        ("CarePlan", "status"),
        ("Task", "owner"),
        ("Task", "based-on"),
        ("ServiceRequest", "patient"),
        ("Goal", "lifecycle-status"),
        ("CareTeam", "participant"),
        ("Communication", "recipient"),
        ("Patient", "_lastUpdated"),
    ]:
        assert REGISTRY.get(resource_type, code) is not None, (resource_type, code)
    assert REGISTRY.get("CarePlan", "patient").description == "Who the care plan is for"  # type: ignore[union-attr]
