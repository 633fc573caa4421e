"""The benchmark population is valid FHIR and every reference in it points at a resource it contains."""

from __future__ import annotations

from collections import Counter

from app.validation.bindings import BindingTable
from app.validation.validator import ResourceValidator
from bench.population import RESOURCES_PER_PATIENT, Population


def references(value: object) -> list[str]:
    if isinstance(value, dict):
        found = [value["reference"]] if isinstance(value.get("reference"), str) else []
        return found + [r for v in value.values() for r in references(v)]
    if isinstance(value, list):
        return [r for v in value for r in references(v)]
    return []


def test_population_is_valid_and_closed() -> None:
    population = Population(40, practitioners=30, organizations=3)
    resources = list(population.shared()) + [r for i in range(40) for r in population.patient_record(i)]
    assert len(resources) == population.total == 40 * RESOURCES_PER_PATIENT + 33
    validator = ResourceValidator(BindingTable.load())
    for resource in resources:
        validator.validate(resource["resourceType"], resource)
    keys = {f"{r['resourceType']}/{r['id']}" for r in resources}
    assert len(keys) == len(resources)
    dangling = {ref for r in resources for ref in references(r)} - keys
    assert not dangling


def test_population_is_deterministic_and_skewed() -> None:
    population = Population(2_000)
    assert population.patient_record(17) == Population(2_000).patient_record(17)
    families = Counter(population.family_of(i) for i in range(2_000))
    assert 10 < families["Smith"] < 100  # common, not dominant
    assert len(families) > 500  # a long tail of rare names
    statuses = Counter(
        r["status"] for i in range(500) for r in population.patient_record(i) if r["resourceType"] == "Task"
    )
    assert 0.2 < statuses["requested"] / sum(statuses.values()) < 0.3
