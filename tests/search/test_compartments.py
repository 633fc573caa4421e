"""Compartment search: [base]/Patient/[id]/[type] (compartmentdefinition.html)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import TEST_BASE_URL
from tests.search.loading import put_all

RESOURCES: list[dict[str, Any]] = [
    {
        "resourceType": "CarePlan",
        "id": "cp-subject",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": "Patient/pat1"},
    },
    {
        "resourceType": "CarePlan",
        "id": "cp-performer",
        "status": "draft",
        "intent": "plan",
        "subject": {"reference": "Patient/pat2"},
        "activity": [{"detail": {"status": "scheduled", "performer": [{"reference": "Patient/pat1"}]}}],
    },
    {
        "resourceType": "CarePlan",
        "id": "cp-other",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": "Patient/pat2"},
    },
    {
        "resourceType": "Communication",
        "id": "msg1",
        "status": "completed",
        "recipient": [{"reference": "Patient/pat1"}],
    },
]


@pytest.fixture
async def data(client: httpx.AsyncClient) -> httpx.AsyncClient:
    return await put_all(client, RESOURCES)


async def ids(client: httpx.AsyncClient, path: str) -> list[str]:
    response = await client.get(f"/fhir/{path}")
    assert response.status_code == 200, response.text
    return sorted(e["resource"]["id"] for e in response.json().get("entry", []))


async def test_patient_compartment_uses_every_compartment_parameter(data: httpx.AsyncClient) -> None:
    assert await ids(data, "Patient/pat1/CarePlan") == ["cp-performer", "cp-subject"]
    assert await ids(data, "Patient/pat1/CarePlan?status=active") == ["cp-subject"]
    assert await ids(data, "Patient/pat1/Communication") == ["msg1"]
    assert await ids(data, "Patient/pat2/CarePlan") == ["cp-other", "cp-performer"]


async def test_links_keep_the_compartment_path(data: httpx.AsyncClient) -> None:
    bundle = (await data.get("/fhir/Patient/pat1/CarePlan?_count=1")).json()
    assert bundle["link"][0]["url"] == f"{TEST_BASE_URL}/Patient/pat1/CarePlan?_count=1"
    assert bundle["link"][1]["url"].startswith(f"{TEST_BASE_URL}/Patient/pat1/CarePlan?_count=1&_page=")


async def test_types_outside_the_compartment_and_unknown_compartments(data: httpx.AsyncClient) -> None:
    response = await data.get("/fhir/Patient/pat1/Task")  # R4 lists Task with no parameter
    assert response.status_code == 400
    assert "compartment" in response.json()["issue"][0]["diagnostics"]
    assert (await data.get("/fhir/Observation/o1/CarePlan")).status_code == 404


async def test_capability_statement_lists_compartments(data: httpx.AsyncClient) -> None:
    rest = (await data.get("/fhir/metadata")).json()["rest"][0]
    assert "http://hl7.org/fhir/CompartmentDefinition/patient" in rest["compartment"]
