"""The FHIR JSON rules on the JSON as sent (json.html), without a server."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from app import fhirjson
from app.validation.json_rules import JsonLimits, JsonRules, load_element_table
from app.validation.narrative import narrative_problems

EXAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "examples"
RULES = JsonRules(load_element_table(), JsonLimits(max_array_items=50, max_depth=12), narrative_problems)


def problems(resource: dict[str, Any]) -> list[tuple[str, str]]:
    return RULES.check_resource(resource).issues


def paths(resource: dict[str, Any]) -> list[str]:
    return [path for _, path in problems(resource)]


@pytest.mark.parametrize(
    ("resource", "path"),
    [
        ({"resourceType": "Patient", "active": "yes"}, "Patient.active"),
        ({"resourceType": "Patient", "active": 1}, "Patient.active"),
        ({"resourceType": "Patient", "multipleBirthInteger": "3"}, "Patient.multipleBirthInteger"),
        ({"resourceType": "Patient", "multipleBirthInteger": 3.0}, "Patient.multipleBirthInteger"),
        ({"resourceType": "Patient", "multipleBirthInteger": True}, "Patient.multipleBirthInteger"),
        ({"resourceType": "Patient", "name": [{"family": 5}]}, "Patient.name[0].family"),
        ({"resourceType": "Patient", "gender": None}, "Patient.gender"),
        ({"resourceType": "Patient", "name": None}, "Patient.name"),
        ({"resourceType": "Patient", "name": []}, "Patient.name"),
        ({"resourceType": "Patient", "name": [{}]}, "Patient.name[0]"),
        ({"resourceType": "Patient", "name": [None]}, "Patient.name[0]"),
        ({"resourceType": "Patient", "name": {"family": "x"}}, "Patient.name"),
        ({"resourceType": "Patient", "maritalStatus": [{"text": "x"}]}, "Patient.maritalStatus"),
        ({"resourceType": "Patient", "maritalStatus": "married"}, "Patient.maritalStatus"),
        ({"resourceType": "Patient", "name": [{"given": []}]}, "Patient.name[0].given"),
        ({"resourceType": "Patient", "name": [{"given": ["a", None]}]}, "Patient.name[0].given[1]"),
        ({"resourceType": "Patient", "name": [{"family": ""}]}, "Patient.name[0].family"),
        ({"resourceType": "Patient", "extension": [{"url": "", "valueString": "x"}]}, "Patient.extension[0].url"),
        ({"resourceType": "Patient", "communication": [{"preferred": "true"}]}, "Patient.communication[0].preferred"),
        ({"resourceType": "Observation", "valueQuantity": {"value": "1.5"}}, "Observation.valueQuantity.value"),
        ({"resourceType": "Observation", "valueQuantity": {"value": True}}, "Observation.valueQuantity.value"),
        ({"resourceType": "Observation", "valueInteger": 2**31}, "Observation.valueInteger"),
        ({"resourceType": "Observation", "valueInteger": 1.5}, "Observation.valueInteger"),
        ({"resourceType": "Goal", "target": [{"detailInteger": -1}]}, None),
        (
            {"resourceType": "Patient", "contained": [{"resourceType": "Patient", "active": "no"}]},
            "Patient.contained[0].active",
        ),
        ({"resourceType": "Patient", "contained": [{}]}, "Patient.contained[0].resourceType"),
        ({"resourceType": "Patient", "_gender": None}, "Patient._gender"),
        ({"resourceType": "Patient", "_gender": {}}, "Patient._gender"),
        ({"resourceType": "Patient", "name": [{"given": ["a"], "_given": [None, None]}]}, "Patient.name[0]._given"),
    ],
)
def test_wrong_shapes_are_named(resource: dict[str, Any], path: str | None) -> None:
    found = paths(resource)
    if path is None:  # Goal.target.detailInteger is a plain integer: negative is fine
        assert found == []
    else:
        assert path in found, problems(resource)


def test_null_is_allowed_where_the_extension_array_carries_the_position() -> None:
    aligned = {"given": ["a", None], "_given": [None, {"extension": [{"url": "http://x", "valueCode": "y"}]}]}
    assert problems({"resourceType": "Patient", "name": [aligned]}) == []
    both_null = {"given": ["a", None], "_given": [None, None]}
    assert paths({"resourceType": "Patient", "name": [both_null]}) == [
        "Patient.name[0].given[1]",
        "Patient.name[0]._given[1]",
    ]


def test_messages_say_what_is_wrong() -> None:
    messages = dict((path, message) for message, path in problems({"resourceType": "Patient", "active": "yes"}))
    assert messages["Patient.active"] == "must be a JSON boolean (true or false)"
    messages = dict((path, m) for m, path in problems({"resourceType": "Patient", "name": [], "gender": None}))
    assert messages == {"Patient.name": "an empty array is not allowed", "Patient.gender": "null is not allowed"}


def test_decimals_must_be_finite_numbers_in_range() -> None:
    for text in ("1e999999999", "-1e400", "1e-400"):
        body = fhirjson.loads(f'{{"resourceType":"Observation","valueQuantity":{{"value":{text}}}}}')
        assert paths(body) == ["Observation.valueQuantity.value"], text
    body = fhirjson.loads('{"resourceType":"Observation","valueQuantity":{"value":0.000}}')
    assert problems(body) == []
    long_integer = "9" * 40
    body = fhirjson.loads(f'{{"resourceType":"Observation","valueInteger":{long_integer}}}')
    assert problems(body) == [("integer must be between -2147483648 and 2147483647", "Observation.valueInteger")]


def test_limits_are_checked_before_the_content() -> None:
    names = [{"family": "x"}] * 51
    assert problems({"resourceType": "Patient", "name": names}) == [
        ("has 51 items; at most 50 are accepted", "Patient.name")
    ]
    deep: dict[str, Any] = {"url": "http://x", "valueString": "leaf"}
    for _ in range(12):
        deep = {"url": "http://x", "extension": [deep]}
    found = problems({"resourceType": "Patient", "extension": [deep]})
    assert [m for m, _ in found] == ["objects are nested more than 12 levels deep"]


def test_narrative_rules_apply_to_div() -> None:
    div = '<div xmlns="http://www.w3.org/1999/xhtml"><script>alert(1)</script>hi</div>'
    found = problems({"resourceType": "Patient", "text": {"status": "generated", "div": div}})
    assert found and all(path == "Patient.text.div" for _, path in found)
    assert any("script" in message for message, _ in found)


def test_references_are_collected_on_the_way() -> None:
    plan = {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": "Patient?identifier=urn:mrn|1"},
        "contained": [{"resourceType": "Goal", "subject": {"reference": "urn:uuid:1"}}],
        "activity": [{"reference": {"reference": "Task/t1"}}],
    }
    assert sorted(RULES.check_resource(plan).references) == ["Patient?identifier=urn:mrn|1", "Task/t1", "urn:uuid:1"]


def test_every_official_example_follows_the_rules() -> None:
    names = sorted(os.listdir(EXAMPLES))
    assert len(names) == 365
    rules = JsonRules(load_element_table(), JsonLimits(), narrative_problems)
    for name in names:
        body = fhirjson.loads((EXAMPLES / name).read_bytes())
        assert rules.check_resource(body).issues == [], name


def test_bundle_entries_can_be_checked_without_their_resources() -> None:
    entry = {"request": {"method": "POST", "url": "Patient", "ifNoneExist": 123}, "resource": {"active": "x"}}
    report = RULES.check_element(entry, "Bundle.entry", "Bundle.entry[0]", skip_resources=True)
    assert report.issues == [("must be a JSON string (string)", "Bundle.entry[0].request.ifNoneExist")]
