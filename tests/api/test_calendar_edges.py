"""Dates at the ends of the calendar: stored, indexed and searched like any other (search.html#date)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import FHIR_JSON_HEADERS

EDGE_PATIENT = {"resourceType": "Patient", "birthDate": "9999-12-31"}
EDGE_PLAN = {
    "resourceType": "CarePlan",
    "status": "active",
    "intent": "plan",
    "subject": {"reference": "Patient/p1"},
    "period": {"start": "0001-01-01", "end": "9999-12-31"},
}
EDGE_OBSERVATION = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"text": "weight"},
    "effectiveDateTime": "0001-01-01T00:00:00+14:00",
}


def found(bundle: dict[str, Any]) -> list[str]:
    return sorted(f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", []))


@pytest.mark.parametrize("resource", [EDGE_PATIENT, EDGE_PLAN, EDGE_OBSERVATION])
async def test_edge_dates_are_stored_by_every_write(client: httpx.AsyncClient, resource: dict[str, Any]) -> None:
    kind = resource["resourceType"]
    created = await client.post(f"/fhir/{kind}", json=resource, headers=FHIR_JSON_HEADERS)
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    updated = await client.put(f"/fhir/{kind}/{rid}", json={**resource, "id": rid}, headers=FHIR_JSON_HEADERS)
    assert updated.status_code == 200, updated.text
    as_created = await client.put(
        f"/fhir/{kind}/edge-{kind}", json={**resource, "id": f"edge-{kind}"}, headers=FHIR_JSON_HEADERS
    )
    assert as_created.status_code == 201, as_created.text
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": resource, "request": {"method": "POST", "url": kind}}],
    }
    assert (await client.post("/fhir", json=bundle, headers=FHIR_JSON_HEADERS)).status_code == 200


async def test_patch_to_edge_dates(client: httpx.AsyncClient) -> None:
    rid = (
        await client.post(
            "/fhir/Patient", json={"resourceType": "Patient"} | {"active": True}, headers=FHIR_JSON_HEADERS
        )
    ).json()["id"]
    patch = [{"op": "add", "path": "/birthDate", "value": "9999-12-31"}]
    response = await client.patch(
        f"/fhir/Patient/{rid}", json=patch, headers={"Content-Type": "application/json-patch+json"}
    )
    assert response.status_code == 200, response.text
    assert (await client.get("/fhir/Patient?birthdate=9999-12-31")).json()["entry"][0]["resource"]["id"] == rid


async def test_searches_at_the_edges(client: httpx.AsyncClient) -> None:
    patient = (await client.post("/fhir/Patient", json=EDGE_PATIENT, headers=FHIR_JSON_HEADERS)).json()["id"]
    plan = (await client.post("/fhir/CarePlan", json=EDGE_PLAN, headers=FHIR_JSON_HEADERS)).json()["id"]
    observation = (await client.post("/fhir/Observation", json=EDGE_OBSERVATION, headers=FHIR_JSON_HEADERS)).json()[
        "id"
    ]

    async def search(query: str) -> list[str]:
        response = await client.get(f"/fhir/{query}")
        assert response.status_code == 200, (query, response.text)
        return found(response.json())

    assert await search("Patient?birthdate=ap9999-12-31") == [f"Patient/{patient}"]
    assert await search("Patient?birthdate=9999-12-31") == [f"Patient/{patient}"]
    assert await search("Patient?birthdate=gt9999-12-30") == [f"Patient/{patient}"]
    assert await search("Patient?birthdate=ap0001-01-01") == []
    assert await search("CarePlan?date=ap0001-01-01") == [f"CarePlan/{plan}"]
    assert await search("CarePlan?date=9999") == []  # the period is wider than the year 9999
    assert await search("CarePlan?date=ge9999-12-31") == [f"CarePlan/{plan}"]
    assert await search("Observation?date=le0001-01-01T00:00:00%2B14:00") == [f"Observation/{observation}"]
    assert await search("Observation?date=ap0001-01-01T00:00:00Z") == [f"Observation/{observation}"]
    assert len(await search("Patient?_lastUpdated=ge0001-01-01T00:00:00%2B14:00")) == 1
    assert await search("Patient?_lastUpdated=le0001-01-01T00:00:00%2B14:00") == []
    assert len(await search("Patient?_lastUpdated=ap9999-12-31")) == 0

    history = await client.get("/fhir/_history?_since=0001-01-01T00:00:00%2B14:00")
    assert history.status_code == 200, history.text
    assert len(history.json()["entry"]) == 3
    assert "_since=0001-01-01T00%3A00%3A00.000000Z" in history.json()["link"][0]["url"]
    later = await client.get("/fhir/Patient/_history?_since=9999-12-31T23:59:59Z")
    assert later.status_code == 200
    assert "entry" not in later.json()
