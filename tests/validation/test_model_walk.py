"""The model walk proves only what fhir.resources' models accept (the models are the oracle)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fhir.resources.R4B import fhirtypes
from pydantic import ValidationError

from app.errors import InvalidResource
from app.validation.bindings import BindingTable
from app.validation.model_walk import LONGEST_REMEMBERED, REMEMBERED_IN_ALL, ModelWalk, PrimitiveCheck
from app.validation.structure import model_class, structural_problems
from app.validation.validator import ResourceValidator
from tests.examples import CARE_COORDINATION_TYPES, EXAMPLES, examples_of

WALK = ModelWalk()
ALL_EXAMPLES = sorted(path.name for path in EXAMPLES.glob("*.json"))
# values that break one primitive type or another: calendar, clock, code and id patterns, ranges, JSON kinds
BAD_VALUES: tuple[Any, ...] = ("", "a  b", "2020-02-30", "2020-01-01T25:00:00Z", "x" * 65, "urn:oid:1.x", True, 2**31)
MUTATED_TYPES = (*CARE_COORDINATION_TYPES, "Patient", "Observation", "Encounter")


def model_accepts(body: dict[str, Any]) -> bool:
    try:
        model_class(body["resourceType"]).model_validate(body)
    except (ValidationError, KeyError, ValueError, TypeError, AttributeError, IndexError, RecursionError):
        return False
    return True


def proves(body: dict[str, Any]) -> bool:
    return WALK.proves(model_class(body["resourceType"]), body)


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLES / name).read_text())
    return data


@pytest.mark.parametrize("name", ALL_EXAMPLES)
def test_an_official_example_proven_valid_is_accepted_by_its_model(name: str) -> None:
    body = load(name)
    if proves(body):
        assert model_accepts(body)


def test_the_walk_proves_nearly_every_official_example() -> None:
    """What it declines (``_name`` primitive extensions, Element-typed fields) goes to the model."""
    unproven = [name for name in ALL_EXAMPLES if model_accepts(load(name)) and not proves(load(name))]
    assert len(unproven) <= 20, unproven


@pytest.mark.parametrize("resource_type", CARE_COORDINATION_TYPES)
def test_every_care_coordination_example_is_proven(resource_type: str) -> None:
    for name, body in examples_of(resource_type):
        assert proves(body), name


def _paths(value: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*path, index))


def _changed(body: dict[str, Any], path: tuple[str | int, ...], change: Any) -> dict[str, Any]:
    copy: dict[str, Any] = orjson.loads(orjson.dumps(body))
    parent: Any = copy
    for part in path[:-1]:
        parent = parent[part]
    change(parent, path[-1])
    return copy


def mutations(body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Bodies one change away: each property removed, nulled, put in an array or taken out of one;
    an unknown property in each object; each primitive value replaced by each of BAD_VALUES."""
    for path, value in _paths(body):
        if isinstance(value, dict):
            yield _changed(body, (*path, "unknownElement"), lambda parent, key: parent.__setitem__(key, "x"))
        if not path or path == ("resourceType",):
            continue
        yield _changed(body, path, lambda parent, key: parent.pop(key))
        yield _changed(body, path, lambda parent, key: parent.__setitem__(key, None))
        if isinstance(value, list):
            yield _changed(body, path, lambda parent, key: parent.__setitem__(key, parent[key][0]))
        else:
            yield _changed(body, path, lambda parent, key: parent.__setitem__(key, [parent[key]]))
        if not isinstance(value, (dict, list)):
            for bad in BAD_VALUES:
                yield _changed(body, path, lambda parent, key, bad=bad: parent.__setitem__(key, bad))


@pytest.mark.parametrize("name", [name for t in MUTATED_TYPES for name, _ in examples_of(t)[:4]])
def test_no_body_one_change_from_an_example_is_proven_unless_its_model_accepts_it(name: str) -> None:
    body = load(name)
    proven = refused = 0
    for variant in mutations(body):
        if proves(variant):
            proven += 1
            assert model_accepts(variant), json.dumps(variant)[:2000]
        else:
            refused += 1
    assert proven and refused  # both kinds occur: the variants test the walk's refusals and its proofs


def test_a_required_element_missing_is_not_proven() -> None:
    body = {"resourceType": "CarePlan", "status": "active", "intent": "plan"}  # subject is 1..1
    assert not proves(body)
    assert structural_problems("CarePlan", body, WALK) == [("required element is missing", "CarePlan.subject")]


def test_a_required_primitive_given_only_as_an_extension_goes_to_the_model_which_accepts_it() -> None:
    absent = {
        "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}]
    }
    body = {"resourceType": "CarePlan", "_status": absent, "intent": "plan", "subject": {"reference": "Patient/1"}}
    assert not proves(body)
    assert structural_problems("CarePlan", body, WALK) == []


def test_two_types_of_one_choice_element_are_not_proven() -> None:
    body = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "weight"},
        "effectiveDateTime": "2026-12-01",
        "effectivePeriod": {"start": "2026-12-01"},
    }
    assert not proves(body)
    assert structural_problems("Observation", body, WALK) != []


def test_a_date_that_is_not_in_the_calendar_is_not_proven() -> None:
    body = {"resourceType": "Patient", "birthDate": "2020-02-30"}
    assert not proves(body)
    assert structural_problems("Patient", body, WALK) != []
    assert proves({"resourceType": "Patient", "birthDate": "2020-02-29"})


def test_a_primitive_check_remembers_valid_strings_only() -> None:
    check = PrimitiveCheck(fhirtypes.DateTimeType)
    check.validate("2020-02-29")
    for _ in range(2):  # refused each time: a refusal is never remembered
        with pytest.raises(ValidationError):
            check.validate("2021-02-29")
    check.validate("2020-02-29")
    assert check._valid == {"2020-02-29"}


def test_a_primitive_check_remembers_short_exact_strings_and_no_more_than_the_bound_for_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flags = PrimitiveCheck(fhirtypes.BooleanType)
    flags.validate(True)
    assert flags._valid == set()  # True == 1 == 1.0: not a key that says which was valid
    codes, texts = PrimitiveCheck(fhirtypes.CodeType), PrimitiveCheck(fhirtypes.StringType)
    texts.validate("x" * (LONGEST_REMEMBERED + 1))
    assert texts._valid == set()
    monkeypatch.setattr(PrimitiveCheck, "remembered", REMEMBERED_IN_ALL - 3)
    codes.validate("code-0")
    for number in range(10):
        texts.validate(f"text-{number}")
    assert codes._valid == {"code-0"} and texts._valid == {"text-0", "text-1"}  # three in all, then no more
    texts.validate("text-9")  # still judged, only not remembered
    with pytest.raises(ValidationError):
        codes.validate(" not a code")


def test_contained_resources_are_walked_by_their_own_models() -> None:
    body = {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": "#p"},
        "contained": [{"resourceType": "Patient", "id": "p", "birthDate": "1950-01-01"}],
    }
    assert proves(body)
    body["contained"][0]["birthDate"] = "1950-13-01"
    assert not proves(body)
    body["contained"][0] = {"resourceType": "NoSuchType", "id": "p"}
    assert not proves(body)
    assert structural_problems("CarePlan", body, WALK) != []


def test_a_nested_resource_type_or_a_python_field_name_goes_to_the_model() -> None:
    subject = {"reference": "Patient/1"}
    nested = {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "subject": {**subject, "resourceType": "Reference"},
    }
    python_name = {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "subject": subject,
        "status__ext": {},
    }
    for body in (nested, python_name):
        assert not proves(body)
    assert structural_problems("CarePlan", nested, WALK) == structural_problems("CarePlan", nested)


def test_a_body_of_another_type_is_not_proven() -> None:
    assert not WALK.proves(model_class("Patient"), {"resourceType": "Group", "type": "person", "actual": True})


def test_the_validator_builds_a_model_only_for_a_body_the_walk_did_not_prove(monkeypatch: pytest.MonkeyPatch) -> None:
    """A valid care plan is stored without its model being built; an invalid one gets the model's own errors."""
    model = model_class("CarePlan")
    built: list[dict[str, Any]] = []
    build = model.model_validate
    monkeypatch.setattr(model, "model_validate", lambda body: built.append(body) or build(body))
    validator = ResourceValidator(BindingTable.load())
    body = examples_of("CarePlan")[0][1]
    validator.validate("CarePlan", body)
    assert built == []
    broken = {key: value for key, value in body.items() if key != "subject"}
    with pytest.raises(InvalidResource) as refused:
        validator.validate("CarePlan", broken)
    assert built == [broken]
    assert refused.value.issues == [("required element is missing", "CarePlan.subject")]
