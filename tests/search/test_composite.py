"""Composite parameters (search.html#composite) and the reference ``:identifier`` modifier, both backends."""

from __future__ import annotations

import httpx
import pytest

from tests.examples import load
from tests.search.loading import put_all
from tests.search.test_search_api import ids

LOINC = "http://loinc.org"
SYSTOLIC, DIASTOLIC, WEIGHT = "8480-6", "8462-4", "29463-7"


@pytest.fixture
async def observations(client: httpx.AsyncClient) -> httpx.AsyncClient:
    # blood-pressure: components systolic 107 and diastolic 60 mm[Hg]; example: weight 185 [lb_av]
    examples = [load("observation-example-bloodpressure.json"), load("observation-example.json")]
    examples.append(load("documentreference-example.json"))
    return await put_all(client, examples)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (f"component-code-value-quantity={LOINC}|{SYSTOLIC}$gt100", ["blood-pressure"]),
        (f"component-code-value-quantity={LOINC}|{SYSTOLIC}$lt100", []),
        # diastolic is 60: the systolic 107 of another component must not satisfy it
        (f"component-code-value-quantity={LOINC}|{DIASTOLIC}$gt100", []),
        (f"component-code-value-quantity={DIASTOLIC}$60", ["blood-pressure"]),
        (f"component-code-value-quantity={LOINC}|{DIASTOLIC}$60|http://unitsofmeasure.org|mm[Hg]", ["blood-pressure"]),
        (f"component-code-value-quantity={LOINC}|{DIASTOLIC}$60|http://unitsofmeasure.org|kg", []),
        (f"code-value-quantity={LOINC}|{WEIGHT}$ge185", ["example"]),
        (f"code-value-quantity={LOINC}|{WEIGHT}$gt185", []),
        # the panel code with the weight value: different elements, so no match
        (f"code-value-quantity={LOINC}|85354-9$185", []),
        # combo: the observation's own code/value or any component's
        (f"combo-code-value-quantity={WEIGHT}$185,{SYSTOLIC}$107", ["blood-pressure", "example"]),
        (f"combo-code-value-quantity={WEIGHT}$185&combo-code-value-quantity={SYSTOLIC}$107", []),
        ("component-code-value-quantity:missing=false", ["blood-pressure"]),
        ("component-code-value-quantity:missing=true", ["example"]),
    ],
)
async def test_composite_values_come_from_one_element(
    observations: httpx.AsyncClient, query: str, expected: list[str]
) -> None:
    assert await ids(observations, f"Observation?{query}") == expected


async def test_composite_of_reference_and_token(observations: httpx.AsyncClient) -> None:
    # DocumentReference.relatesTo: code "appends", target DocumentReference/example
    assert await ids(observations, "DocumentReference?relationship=DocumentReference/example$appends") == ["example"]
    assert await ids(observations, "DocumentReference?relationship=DocumentReference/example$replaces") == []


@pytest.mark.parametrize(
    "query",
    [
        f"component-code-value-quantity={SYSTOLIC}",
        f"component-code-value-quantity={SYSTOLIC}$1$2",
        "code-value-quantity=$5",
    ],
)
async def test_malformed_composite_value_is_400_naming_the_parameter(
    observations: httpx.AsyncClient, query: str
) -> None:
    response = await observations.get(f"/fhir/Observation?{query}")
    assert response.status_code == 400
    issue = response.json()["issue"][0]
    assert issue["code"] == "invalid"
    assert issue["expression"] == [query.split("=")[0]]


async def test_composite_escaped_dollar_is_part_of_the_value(client: httpx.AsyncClient) -> None:
    observation = {
        "resourceType": "Observation",
        "id": "dollar",
        "status": "final",
        "code": {"coding": [{"system": "urn:codes", "code": "a$b"}]},
        "valueString": "x",
    }
    await put_all(client, [observation])
    assert await ids(client, "Observation?code-value-string=urn:codes|a\\$b$x") == ["dollar"]


PLANS = [
    {
        "resourceType": "CarePlan",
        "id": "by-identifier",
        "status": "active",
        "intent": "plan",
        "subject": {"type": "Patient", "identifier": {"system": "urn:mrn", "value": "123"}},
    },
    {
        "resourceType": "CarePlan",
        "id": "both",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": "Patient/p9", "identifier": {"system": "urn:mrn", "value": "456"}},
    },
    {
        "resourceType": "CarePlan",
        "id": "plain",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": "Patient/p9"},
    },
]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("subject:identifier=urn:mrn|123", ["by-identifier"]),
        ("subject:identifier=123", ["by-identifier"]),
        ("subject:identifier=urn:other|123", []),
        ("subject:identifier=urn:mrn|", ["both", "by-identifier"]),
        ("patient:identifier=urn:mrn|456", ["both"]),
        ("patient:identifier=urn:mrn|123,urn:mrn|456", ["both", "by-identifier"]),
        ("subject=Patient/p9", ["both", "plain"]),
    ],
)
async def test_reference_identifier_modifier(client: httpx.AsyncClient, query: str, expected: list[str]) -> None:
    await put_all(client, PLANS)
    assert await ids(client, f"CarePlan?{query}") == expected
