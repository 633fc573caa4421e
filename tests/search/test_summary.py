"""_summary and _elements on search and read (search.html#summary, #elements)."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import FHIR_JSON_HEADERS

PLAN = {
    "resourceType": "CarePlan",
    "id": "cp1",
    "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Plan</div>'},
    "status": "active",
    "intent": "plan",
    "title": "Heart failure plan",
    "subject": {"reference": "Patient/p1"},
    "note": [{"text": "not in the summary"}],
    "activity": [{"detail": {"status": "scheduled"}}],
}
SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}


@pytest.fixture
async def data(client: httpx.AsyncClient) -> httpx.AsyncClient:
    assert (await client.put("/fhir/CarePlan/cp1", json=PLAN, headers=FHIR_JSON_HEADERS)).status_code == 201
    return client


async def test_summary_true_keeps_summary_and_mandatory_elements(data: httpx.AsyncClient) -> None:
    plan = (await data.get("/fhir/CarePlan/cp1?_summary=true")).json()
    assert set(plan) == {"resourceType", "id", "meta", "status", "intent", "title", "subject"}
    assert SUBSETTED in plan["meta"]["tag"]
    bundle = (await data.get("/fhir/CarePlan?_summary=true")).json()
    assert set(bundle["entry"][0]["resource"]) == set(plan)
    assert "_summary=true" in bundle["link"][0]["url"]


async def test_summary_text_data_and_count(data: httpx.AsyncClient) -> None:
    text = (await data.get("/fhir/CarePlan/cp1?_summary=text")).json()
    assert set(text) == {"resourceType", "id", "meta", "text", "status", "intent", "subject"}
    no_text = (await data.get("/fhir/CarePlan/cp1?_summary=data")).json()
    assert "text" not in no_text and "note" in no_text
    count = (await data.get("/fhir/CarePlan?_summary=count")).json()
    assert count["total"] == 1
    assert "entry" not in count
    full = (await data.get("/fhir/CarePlan/cp1?_summary=false")).json()
    assert "note" in full and "tag" not in full["meta"]


async def test_elements_keeps_the_listed_ones(data: httpx.AsyncClient) -> None:
    plan = (await data.get("/fhir/CarePlan/cp1?_elements=title,note")).json()
    assert set(plan) == {"resourceType", "id", "meta", "title", "note", "status", "intent", "subject"}
    bundle = (await data.get("/fhir/CarePlan?_elements=title")).json()
    assert "note" not in bundle["entry"][0]["resource"]


async def test_bad_summary_is_400(data: httpx.AsyncClient) -> None:
    response = await data.get("/fhir/CarePlan?_summary=maybe")
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["_summary"]
