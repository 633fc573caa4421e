"""Transaction, batch and reference rules of http.html#transaction and #trules."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.main import create_app
from tests.conftest import FHIR_JSON_HEADERS

SYSTEM = "https://example.org/ids"


def entry(method: str, url: str, resource: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"request": {"method": method, "url": url}}
    if resource is not None:
        item["resource"] = resource
    full_url = extra.pop("full_url", None)
    if full_url:
        item["fullUrl"] = full_url
    item["request"].update(extra)
    return item


async def post(client: httpx.AsyncClient, kind: str, *entries: dict[str, Any]) -> httpx.Response:
    bundle = {"resourceType": "Bundle", "type": kind, "entry": list(entries)}
    return await client.post("/fhir", json=bundle, headers={**FHIR_JSON_HEADERS, "Prefer": "return=representation"})


def statuses(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [e["response"]["status"] for e in response.json()["entry"]]


@pytest.mark.parametrize("kind", ["transaction", "batch"])
async def test_conditional_urls_whose_values_are_absolute_urls(client: httpx.AsyncClient, kind: str) -> None:
    task = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "identifier": [{"system": SYSTEM, "value": "42"}],
    }
    criteria = f"Task?identifier={SYSTEM}|42"
    assert statuses(await post(client, kind, entry("PUT", criteria, task))) == ["201 Created"]
    assert statuses(await post(client, kind, entry("PUT", criteria, {**task, "status": "accepted"}))) == ["200 OK"]
    assert statuses(await post(client, kind, entry("POST", "Task", task, ifNoneExist=f"identifier={SYSTEM}|42"))) == [
        "200 OK"
    ]
    owned = {"resourceType": "Task", "status": "draft", "intent": "order", "partOf": [{"reference": criteria}]}
    response = await post(client, kind, entry("POST", "Task", owned))
    assert statuses(response) == ["201 Created"]
    assert response.json()["entry"][0]["resource"]["partOf"][0]["reference"].startswith("Task/")
    absolute = entry("GET", f"http://testserver/fhir/Task?identifier={SYSTEM}|42")
    assert statuses(await post(client, kind, absolute)) == ["200 OK"]
    elsewhere = await post(client, kind, entry("GET", "https://elsewhere.example/fhir/Task/1"))
    if kind == "batch":
        assert statuses(elsewhere) == ["400 Bad Request"]
    else:
        assert elsewhere.status_code == 400


async def test_conditional_references_find_resources_created_in_the_same_transaction(client: httpx.AsyncClient) -> None:
    organization = {
        "resourceType": "Organization",
        "identifier": [{"system": SYSTEM, "value": "org-1"}],
        "name": "Clinic",
    }
    practitioner = {
        "resourceType": "Practitioner",
        "identifier": [{"system": SYSTEM, "value": "dr-1"}],
        "name": [{"family": "Osei"}],
    }
    role = {
        "resourceType": "PractitionerRole",
        "practitioner": {"reference": f"Practitioner?identifier={SYSTEM}|dr-1"},
        "organization": {"reference": f"Organization?identifier={SYSTEM}|org-1"},
        "identifier": [{"system": SYSTEM, "value": "role-1"}],
    }
    task = {
        "resourceType": "Task",
        "id": "t-1",
        "status": "requested",
        "intent": "order",
        "owner": {"reference": f"PractitionerRole?identifier={SYSTEM}|role-1"},  # created by the role entry
    }
    response = await post(
        client,
        "transaction",
        entry("PUT", "Task/t-1", task),  # the PUT comes first in the Bundle, runs after every create
        entry("POST", "PractitionerRole", role),  # its references match resources the entries below create
        entry("POST", "Practitioner", practitioner),
        entry("POST", "Organization", organization),
    )
    assert statuses(response) == ["201 Created"] * 4
    entries = response.json()["entry"]
    ids = {e["resource"]["resourceType"]: e["resource"]["id"] for e in entries}
    stored_role = entries[1]["resource"]
    assert stored_role["practitioner"]["reference"] == f"Practitioner/{ids['Practitioner']}"
    assert stored_role["organization"]["reference"] == f"Organization/{ids['Organization']}"
    assert entries[0]["resource"]["owner"]["reference"] == f"PractitionerRole/{ids['PractitionerRole']}"
    found = (await client.get(f"/fhir/PractitionerRole?practitioner=Practitioner/{ids['Practitioner']}")).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [ids["PractitionerRole"]]


async def test_a_conditional_reference_nothing_creates_still_fails(client: httpx.AsyncClient) -> None:
    role = {"resourceType": "PractitionerRole", "practitioner": {"reference": f"Practitioner?identifier={SYSTEM}|none"}}
    response = await post(client, "transaction", entry("POST", "PractitionerRole", role))
    assert response.status_code == 412
    assert response.json()["issue"][0]["expression"] == ["Bundle.entry[0]"]
    assert (await client.get("/fhir/PractitionerRole?_summary=count")).json()["total"] == 0


async def test_plain_writes_refuse_bundle_references_and_resolve_conditional_ones(client: httpx.AsyncClient) -> None:
    task = {"resourceType": "Task", "status": "requested", "intent": "order", "for": {"reference": "urn:uuid:abc"}}
    assert (await client.post("/fhir/Task", json=task, headers=FHIR_JSON_HEADERS)).status_code == 400
    assert (await client.put("/fhir/Task/x", json={**task, "id": "x"}, headers=FHIR_JSON_HEADERS)).status_code == 400
    patient = {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": "mrn-9"}]}
    patient_id = (await client.post("/fhir/Patient", json=patient, headers=FHIR_JSON_HEADERS)).json()["id"]
    conditional = {**task, "for": {"reference": f"Patient?identifier={SYSTEM}|mrn-9"}}
    created = await client.post("/fhir/Task", json=conditional, headers=FHIR_JSON_HEADERS)
    assert created.status_code == 201, created.text
    assert created.json()["for"]["reference"] == f"Patient/{patient_id}"
    updated = await client.put("/fhir/Task/y", json={**conditional, "id": "y"}, headers=FHIR_JSON_HEADERS)
    assert updated.json()["for"]["reference"] == f"Patient/{patient_id}"
    by_criteria = await client.put(
        f"/fhir/Task?identifier={SYSTEM}|t-9",
        json={**conditional, "identifier": [{"system": SYSTEM, "value": "t-9"}]},
        headers=FHIR_JSON_HEADERS,
    )
    assert by_criteria.json()["for"]["reference"] == f"Patient/{patient_id}"
    found = (await client.get(f"/fhir/Task?patient={patient_id}")).json()
    assert len(found["entry"]) == 3
    nothing = {**task, "for": {"reference": f"Patient?identifier={SYSTEM}|none"}}
    assert (await client.post("/fhir/Task", json=nothing, headers=FHIR_JSON_HEADERS)).status_code == 412


async def test_fhirpath_patch_add_appends_to_repeating_elements(client: httpx.AsyncClient) -> None:
    task = {"resourceType": "Task", "status": "requested", "intent": "order"}
    task_id = (await client.post("/fhir/Task", json=task, headers=FHIR_JSON_HEADERS)).json()["id"]

    def add(text: str) -> dict[str, Any]:
        parts = [
            {"name": "type", "valueCode": "add"},
            {"name": "path", "valueString": "Task"},
            {"name": "name", "valueString": "note"},
            {"name": "value", "valueAnnotation": {"text": text}},
        ]
        return {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": parts}]}

    first = await client.patch(f"/fhir/Task/{task_id}", json=add("first"), headers=FHIR_JSON_HEADERS)
    assert first.status_code == 200, first.text
    assert first.json()["note"] == [{"text": "first"}]
    second = await client.patch(f"/fhir/Task/{task_id}", json=add("second"), headers=FHIR_JSON_HEADERS)
    assert second.json()["note"] == [{"text": "first"}, {"text": "second"}]


@pytest.fixture
async def small_budget(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    application: FastAPI = create_app(settings.model_copy(update={"max_bundle_response_resources": 50}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://testserver") as http:
        yield http
    await application.state.fhir.current.db.dispose()


async def test_batch_responses_are_bounded(small_budget: httpx.AsyncClient) -> None:
    client = small_budget
    patients = [entry("POST", "Patient", {"resourceType": "Patient", "active": True}) for _ in range(30)]
    assert statuses(await post(client, "transaction", *patients)) == ["201 Created"] * 30
    reads = [entry("GET", "Patient?_count=1000") for _ in range(4)]
    response = await post(client, "batch", *reads)
    assert [status[:3] for status in statuses(response)] == ["200", "200", "413", "413"]
    pages = [e["resource"] for e in response.json()["entry"][:2]]
    assert [len(p["entry"]) for p in pages] == [30, 20]
    assert any(link["relation"] == "next" for link in pages[1]["link"])
    transaction = await post(client, "transaction", *reads)
    assert transaction.status_code == 413
