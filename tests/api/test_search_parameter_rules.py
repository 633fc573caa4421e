"""Rules for SearchParameters clients store: no taking over official codes, no patterns RE2 cannot run."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.conftest import FHIR_JSON_HEADERS


def search_parameter(**changes: Any) -> dict[str, Any]:
    resource = {
        "resourceType": "SearchParameter",
        "url": "http://example.org/fhir/SearchParameter/patient-nickname",
        "name": "PatientNickname",
        "status": "active",
        "description": "Nickname",
        "code": "nickname",
        "base": ["Patient"],
        "type": "string",
        "expression": "Patient.name.where(use = 'nickname').given",
    }
    resource.update(changes)
    return resource


async def test_an_official_parameter_cannot_be_replaced(client: httpx.AsyncClient) -> None:
    for changes in (
        {"code": "name"},
        {"code": "_id", "base": ["Resource"], "expression": "Resource.id"},
        {"code": "status", "base": ["Task"], "expression": "Task.status"},
    ):
        response = await client.post(
            "/fhir/SearchParameter", json=search_parameter(**changes), headers=FHIR_JSON_HEADERS
        )
        assert response.status_code == 400, (changes, response.text)
        assert response.json()["issue"][0]["expression"] == ["SearchParameter.code"]
    draft = search_parameter(code="name", status="draft")  # not used for search: may be stored
    assert (await client.post("/fhir/SearchParameter", json=draft, headers=FHIR_JSON_HEADERS)).status_code == 201
    assert (
        await client.post("/fhir/SearchParameter", json=search_parameter(), headers=FHIR_JSON_HEADERS)
    ).status_code == 201


async def test_patterns_re2_cannot_run_are_refused(client: httpx.AsyncClient) -> None:
    backreference = search_parameter(expression="Patient.name.family.where(matches('(a)\\\\1'))")
    response = await client.post("/fhir/SearchParameter", json=backreference, headers=FHIR_JSON_HEADERS)
    assert response.status_code == 400, response.text
    assert "not supported" in response.json()["issue"][0]["diagnostics"]


@pytest.mark.alone
async def test_a_catastrophic_pattern_costs_nothing_on_writes(client: httpx.AsyncClient) -> None:
    redos = search_parameter(code="redos", expression="Patient.name.family.where(matches('^(a+)+$'))")
    assert (await client.post("/fhir/SearchParameter", json=redos, headers=FHIR_JSON_HEADERS)).status_code == 201
    patient = {"resourceType": "Patient", "name": [{"family": "a" * 28 + "!"}]}
    started = time.perf_counter()
    assert (await client.post("/fhir/Patient", json=patient, headers=FHIR_JSON_HEADERS)).status_code == 201
    assert time.perf_counter() - started < 0.5
    plain = {"resourceType": "Patient", "name": [{"family": "aaaa"}]}
    assert (await client.post("/fhir/Patient", json=plain, headers=FHIR_JSON_HEADERS)).status_code == 201
    found = (await client.get("/fhir/Patient?redos=aaaa")).json()
    assert [e["resource"]["name"][0]["family"] for e in found["entry"]] == ["aaaa"]
