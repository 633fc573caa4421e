"""Required bindings are checked from the official definitions (terminologies.html#required)."""

from __future__ import annotations

import pytest

from app.errors import InvalidResource
from app.validation.bindings import BindingTable
from app.validation.validator import ResourceValidator
from tests.examples import EXAMPLES, load

TABLE = BindingTable.load()
VALIDATOR = ResourceValidator(TABLE)


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.json")))
def test_official_examples_are_valid(name: str) -> None:
    example = load(name)
    VALIDATOR.validate(example["resourceType"], example)


@pytest.mark.parametrize(
    ("resource_type", "element", "valueset"),
    [
        ("Task", "status", "task-status"),
        ("Task", "intent", "task-intent"),
        ("Task", "priority", "request-priority"),
        ("CarePlan", "status", "request-status"),
        ("CarePlan", "intent", "care-plan-intent"),
        ("CareTeam", "status", "care-team-status"),
        ("Goal", "lifecycleStatus", "goal-status"),
        ("Communication", "status", "event-status"),
        ("ServiceRequest", "intent", "request-intent"),
    ],
)
def test_care_coordination_status_elements_are_bound(resource_type: str, element: str, valueset: str) -> None:
    assert TABLE.bound_elements(resource_type)[element] == f"http://hl7.org/fhir/ValueSet/{valueset}"


def test_code_outside_value_set_is_reported_with_path() -> None:
    problems = TABLE.check({"resourceType": "Task", "status": "bogus", "intent": "order"})
    assert problems == [
        ("code 'bogus' is not in the required value set http://hl7.org/fhir/ValueSet/task-status", "Task.status")
    ]


def test_nested_backbone_and_datatype_bindings() -> None:
    plan = {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "identifier": [{"use": "usual"}, {"use": "sometimes"}],
        "activity": [{"detail": {"status": "done"}}],
    }
    paths = [path for _, path in TABLE.check(plan)]
    assert paths == ["CarePlan.identifier[1].use", "CarePlan.activity[0].detail.status"]


def test_contained_resources_are_checked_by_their_own_type() -> None:
    team = {
        "resourceType": "CareTeam",
        "contained": [{"resourceType": "Practitioner", "id": "p", "gender": "robot"}],
    }
    assert [path for _, path in TABLE.check(team)] == ["CareTeam.contained[0].gender"]


def test_required_codeable_concept_needs_a_coding_from_the_value_set() -> None:
    system = "http://terminology.hl7.org/CodeSystem/condition-clinical"
    assert TABLE.bound_elements("Condition")["clinicalStatus"] == "http://hl7.org/fhir/ValueSet/condition-clinical"
    text_only = {"resourceType": "Condition", "subject": {"reference": "Patient/1"}, "clinicalStatus": {"text": "on"}}
    assert [path for _, path in TABLE.check(text_only)] == ["Condition.clinicalStatus"]
    good = {**text_only, "clinicalStatus": {"coding": [{"system": system, "code": "active"}]}}
    assert TABLE.check(good) == []
    wrong = {**text_only, "clinicalStatus": {"coding": [{"system": system, "code": "nope"}]}}
    assert [path for _, path in TABLE.check(wrong)] == ["Condition.clinicalStatus.coding[0]"]


def test_validator_reports_structure_before_bindings() -> None:
    with pytest.raises(InvalidResource) as caught:
        VALIDATOR.validate("Task", {"resourceType": "Task", "status": "bogus", "intent": "order", "authoredOn": "x"})
    assert [path for _, path in caught.value.issues] == ["Task.authoredOn"]
