"""The read gate: a caller confined to Patient/p1's compartment gets nothing else, on every route.

The caller is installed the way authentication will install it, by replacing
the request context dependency; the data holds two patients' records and
resources outside any compartment. Every route that returns resources
(read, vread, search with includes, chains and _has, compartment and system
search, history at all three levels, transaction and batch entries,
conditional matching and conditional references) must show p1's compartment
only, with totals that count only what the caller may see; and a PUT, PATCH
or DELETE by id cannot reach a resource the caller cannot read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.requests import Request

from app.api.deps import RouteContext, route_context
from app.interactions.request_context import Caller
from tests.conftest import FHIR_JSON_HEADERS

# ServiceRequest and CarePlan are in the R4 Patient compartment, and for access so is Task through
# Task.for (app/search/gate.py); Practitioner is not, so a caller confined to a patient's compartment
# does not see it (compartmentdefinition-patient.html).
SEED: list[dict[str, Any]] = [
    {"resourceType": "Patient", "id": "p1", "name": [{"family": "Rivera"}],
     "identifier": [{"system": "urn:mrn", "value": "1"}]},
    {"resourceType": "Patient", "id": "p2", "name": [{"family": "Rivera"}],
     "identifier": [{"system": "urn:mrn", "value": "2"}]},
    {"resourceType": "Practitioner", "id": "dr", "name": [{"family": "Osei"}]},
    {"resourceType": "CarePlan", "id": "c1", "status": "active", "intent": "plan",
     "subject": {"reference": "Patient/p1"}, "identifier": [{"system": "urn:plan", "value": "c1"}]},
    {"resourceType": "CarePlan", "id": "c2", "status": "active", "intent": "plan",
     "subject": {"reference": "Patient/p2"}, "identifier": [{"system": "urn:plan", "value": "c2"}]},
    {"resourceType": "ServiceRequest", "id": "s1", "status": "active", "intent": "order",
     "subject": {"reference": "Patient/p1"}, "basedOn": [{"reference": "CarePlan/c1"}],
     "requester": {"reference": "Practitioner/dr"}},
    {"resourceType": "ServiceRequest", "id": "s2", "status": "active", "intent": "order",
     "subject": {"reference": "Patient/p2"}, "basedOn": [{"reference": "CarePlan/c2"}],
     "requester": {"reference": "Practitioner/dr"}},
    {"resourceType": "Task", "id": "t1", "status": "requested", "intent": "order", "for": {"reference": "Patient/p1"}},
    {"resourceType": "Task", "id": "t2", "status": "requested", "intent": "order", "for": {"reference": "Patient/p2"}},
]  # fmt: skip
VISIBLE = {"Patient/p1", "CarePlan/c1", "ServiceRequest/s1", "Task/t1"}


@pytest.fixture
async def confined(app: FastAPI, client: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    """The seed data written by an unrestricted caller, then every request as a p1-confined caller."""
    for resource in SEED:
        url = f"/fhir/{resource['resourceType']}/{resource['id']}"
        assert (await client.put(url, json=resource, headers=FHIR_JSON_HEADERS)).status_code == 201
    for resource in SEED:  # a second version of each, for history
        url = f"/fhir/{resource['resourceType']}/{resource['id']}"
        assert (
            await client.put(url, json={**resource, "language": "en"}, headers=FHIR_JSON_HEADERS)
        ).status_code == 200

    async def confined_context(request: Request) -> RouteContext:
        context = await route_context(request)
        caller = Caller("patient-app", ("Patient", "p1"))
        return dataclasses.replace(context, rc=dataclasses.replace(context.rc, caller=caller))

    app.dependency_overrides[route_context] = confined_context
    yield client
    app.dependency_overrides.clear()


def keys(bundle: dict[str, Any]) -> set[str]:
    found = set()
    for entry in bundle.get("entry", []):
        resource = entry.get("resource", {})
        if resource.get("resourceType") == "Bundle":  # a search inside a transaction response
            found |= keys(resource)
        elif "id" in resource:
            found.add(f"{resource['resourceType']}/{resource['id']}")
    return found


async def bundle(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    response = await client.get(url)
    assert response.status_code == 200, (url, response.text)
    return dict(response.json())


async def test_reads_and_vreads(confined: httpx.AsyncClient) -> None:
    assert (await confined.get("/fhir/Patient/p1")).status_code == 200
    assert (await confined.get("/fhir/CarePlan/c1/_history/1")).status_code == 200
    for url in ("/fhir/Patient/p2", "/fhir/CarePlan/c2", "/fhir/ServiceRequest/s2", "/fhir/Practitioner/dr",
                "/fhir/Task/t2", "/fhir/Patient/p2/_history/1", "/fhir/CarePlan/c2/_history/2"):  # fmt: skip
        assert (await confined.get(url)).status_code == 404, url


async def test_searches_with_includes_chains_and_has(confined: httpx.AsyncClient) -> None:
    for url, expected in (
        ("/fhir/CarePlan?_total=accurate", {"CarePlan/c1"}),
        ("/fhir/Patient?name=rivera", {"Patient/p1"}),
        (
            "/fhir/ServiceRequest?_include=ServiceRequest:patient&_include=ServiceRequest:requester"
            "&_include=ServiceRequest:based-on",
            VISIBLE - {"Task/t1"},
        ),
        ("/fhir/Patient?_revinclude=CarePlan:subject&_revinclude=ServiceRequest:patient", VISIBLE - {"Task/t1"}),
        ("/fhir/Patient?_revinclude=Task:patient", {"Patient/p1", "Task/t1"}),
        ("/fhir/ServiceRequest?patient.name=rivera", {"ServiceRequest/s1"}),
        ("/fhir/ServiceRequest?based-on:CarePlan.identifier=urn:plan|c2", set()),
        ("/fhir/Patient?_has:CarePlan:subject:identifier=urn:plan|c2", set()),
        ("/fhir/Patient?_has:ServiceRequest:patient:status=active", {"Patient/p1"}),
        ("/fhir/Practitioner", set()),
        ("/fhir/Task", {"Task/t1"}),
        ("/fhir/Task?patient=Patient/p2", set()),
        ("/fhir/Patient/p2/CarePlan", set()),
        ("/fhir/Patient/p1/ServiceRequest", {"ServiceRequest/s1"}),
        ("/fhir?_type=Patient,CarePlan,ServiceRequest,Task,Practitioner", VISIBLE),
    ):
        assert keys(await bundle(confined, url)) == expected, url
    assert (await bundle(confined, "/fhir/CarePlan?_total=accurate"))["total"] == 1
    assert (await bundle(confined, "/fhir/ServiceRequest?_summary=count"))["total"] == 1
    assert (await bundle(confined, "/fhir?_summary=count"))["total"] == 4
    page = await bundle(confined, "/fhir/Patient?_count=1&_sort=-_lastUpdated&_total=accurate")
    assert keys(page) == {"Patient/p1"} and page["total"] == 1  # pages stay full, totals stay true


async def test_history_at_every_level(confined: httpx.AsyncClient) -> None:
    for url, expected in (
        ("/fhir/_history", VISIBLE),
        ("/fhir/CarePlan/_history", {"CarePlan/c1"}),
        ("/fhir/ServiceRequest/s1/_history", {"ServiceRequest/s1"}),
    ):
        assert keys(await bundle(confined, url)) == expected, url
    assert len((await bundle(confined, "/fhir/_history"))["entry"]) == 8  # two versions of each visible one
    assert (await confined.get("/fhir/ServiceRequest/s2/_history")).status_code == 404
    assert (await confined.get("/fhir/Task/t2/_history")).status_code == 404
    assert keys(await bundle(confined, "/fhir/Task/t1/_history")) == {"Task/t1"}


async def test_transaction_and_batch_entries(confined: httpx.AsyncClient) -> None:
    entries = [
        {"request": {"method": "GET", "url": "Patient/p2"}},
        {"request": {"method": "GET", "url": "CarePlan/c1"}},
        {"request": {"method": "GET", "url": "CarePlan/c2/_history/1"}},
        {"request": {"method": "GET", "url": "ServiceRequest?status=active"}},
    ]
    batch = await confined.post(
        "/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": entries}, headers=FHIR_JSON_HEADERS
    )
    assert [e["response"]["status"][:3] for e in batch.json()["entry"]] == ["404", "200", "404", "200"]
    assert keys(batch.json()) == {"CarePlan/c1", "ServiceRequest/s1"}
    transaction = await confined.post(
        "/fhir",
        json={"resourceType": "Bundle", "type": "transaction", "entry": entries[1:2] + entries[3:]},
        headers=FHIR_JSON_HEADERS,
    )
    assert keys(transaction.json()) == {"CarePlan/c1", "ServiceRequest/s1"}


async def test_conditional_matching_and_references_see_only_the_compartment(confined: httpx.AsyncClient) -> None:
    # conditional create: the other patient's plan does not match, so it is not returned
    plan = {"resourceType": "CarePlan", "status": "draft", "intent": "plan", "subject": {"reference": "Patient/p1"},
            "identifier": [{"system": "urn:plan", "value": "c2"}]}  # fmt: skip
    created = await confined.post(
        "/fhir/CarePlan", json=plan, headers={**FHIR_JSON_HEADERS, "If-None-Exist": "identifier=urn:plan|c2"}
    )
    assert created.status_code == 201
    assert created.json()["id"] != "c2"
    # a conditional reference to the other patient matches nothing
    task = {
        "resourceType": "Task",
        "status": "draft",
        "intent": "order",
        "for": {"reference": "Patient?identifier=urn:mrn|2"},
    }
    assert (await confined.post("/fhir/Task", json=task, headers=FHIR_JSON_HEADERS)).status_code == 412
    mine = {**task, "for": {"reference": "Patient?identifier=urn:mrn|1"}}
    resolved = await confined.post("/fhir/Task", json=mine, headers=FHIR_JSON_HEADERS)
    assert resolved.json()["for"]["reference"] == "Patient/p1"
    # conditional patch of the other patient's plan: not found
    patch = [{"op": "replace", "path": "/status", "value": "revoked"}]
    response = await confined.patch(
        "/fhir/CarePlan?identifier=urn:plan|c1", json=patch, headers={"Content-Type": "application/json-patch+json"}
    )
    assert response.status_code == 200
    plans = await bundle(confined, "/fhir/CarePlan?status=active")
    assert keys(plans) == set()  # c1 revoked; c2 untouched and invisible anyway


async def test_conditional_delete_deletes_only_what_the_caller_sees(app: FastAPI, confined: httpx.AsyncClient) -> None:
    response = await confined.delete("/fhir/ServiceRequest?status=active")
    assert response.status_code == 200
    assert "Deleted 1 resource(s): ServiceRequest/s1" in response.json()["issue"][0]["diagnostics"]
    app.dependency_overrides.clear()
    assert (await confined.get("/fhir/ServiceRequest/s2")).status_code == 200  # the other patient's is still there


async def test_writes_by_id_cannot_reach_what_the_caller_cannot_see(app: FastAPI, confined: httpx.AsyncClient) -> None:
    """A PATCH returns the patched resource, and PUT and DELETE act on it: outside the caller's compartment
    all three are 404 (as a read is) and change nothing, alone or as transaction entries."""
    headers = {"Content-Type": "application/json-patch+json"}
    patch = [{"op": "replace", "path": "/status", "value": "revoked"}]
    patched = await confined.patch("/fhir/CarePlan/c2", json=patch, headers=headers)
    assert patched.status_code == 404 and "c2" not in patched.text.replace("CarePlan/c2 is not known", "")
    plan = {"resourceType": "CarePlan", "id": "c2", "status": "revoked", "intent": "plan",
            "subject": {"reference": "Patient/p1"}}  # fmt: skip
    assert (await confined.put("/fhir/CarePlan/c2", json=plan, headers=FHIR_JSON_HEADERS)).status_code == 404
    assert (await confined.delete("/fhir/CarePlan/c2")).status_code == 404
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "DELETE", "url": "CarePlan/c2"}},
        {"resource": plan, "request": {"method": "PUT", "url": "CarePlan/c2"}},
        {"resource": {"resourceType": "Binary", "contentType": "application/json-patch+json",
                      "data": "W3sib3AiOiJyZXBsYWNlIiwicGF0aCI6Ii9zdGF0dXMiLCJ2YWx1ZSI6InJldm9rZWQifV0="},
         "request": {"method": "PATCH", "url": "CarePlan/c2"}},
    ]}  # fmt: skip
    answered = await confined.post("/fhir", json=bundle, headers=FHIR_JSON_HEADERS)
    assert [e["response"]["status"][:3] for e in answered.json()["entry"]] == ["404", "404", "404"]
    own = await confined.patch("/fhir/CarePlan/c1", json=patch, headers=headers)
    assert own.status_code == 200 and own.json()["status"] == "revoked"
    app.dependency_overrides.clear()
    stored = (await confined.get("/fhir/CarePlan/c2")).json()
    assert stored["status"] == "active" and stored["meta"]["versionId"] == "2"
