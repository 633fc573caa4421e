"""Granular SMART v2 scopes: ``patient/Observation.rs?category=...`` reaches only what its query matches.

hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html#finer-grained-resource-constraints-using-search-parameters:
the query narrows the scope to the resources the same search would find. Reads, searches, history
and includes see only those; a write permitted only by such a scope must store (or delete) a
resource the query matches, or it is 403 and nothing is kept. A query this server cannot run grants
nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.api.auth import issuer
from app.config import Settings
from app.main import create_app
from app.smart.tokens import issue_access_token
from tests.conftest import FHIR_JSON_HEADERS, TEST_BASE_URL

CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
LAB = f"category={CATEGORY}|laboratory"


def observation(obs_id: str, patient: str, category: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": obs_id, "status": "final", "code": {"text": obs_id},
            "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
            "subject": {"reference": f"Patient/{patient}"}}  # fmt: skip


@pytest.fixture
async def server(database_url: str) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    application = create_app(Settings(database_url=database_url, base_url=TEST_BASE_URL, log_level="warning"))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            admin = headers(application, "system/*.cruds")
            for resource in (
                {"resourceType": "Patient", "id": "p1"},
                {"resourceType": "Patient", "id": "p2"},
                observation("lab-1", "p1", "laboratory"),
                observation("vitals-1", "p1", "vital-signs"),
                observation("lab-2", "p2", "laboratory"),
            ):
                url = f"/fhir/{resource['resourceType']}/{resource['id']}"
                assert (await http.put(url, json=resource, headers=admin)).status_code == 201
            yield application, http


def headers(app: FastAPI, scope: str, patient: str | None = None) -> dict[str, str]:
    settings: Settings = app.state.settings
    token, _ = issue_access_token(
        app.state.auth.verifier.keys, issuer(settings), settings.public_base_url, "app", scope, 300, patient=patient
    )
    return {**FHIR_JSON_HEADERS, "Authorization": f"Bearer {token}"}


def ids(bundle: httpx.Response) -> list[str]:
    assert bundle.status_code == 200, bundle.text
    return sorted(entry["resource"]["id"] for entry in bundle.json().get("entry", []))


async def test_a_granular_patient_scope_reads_only_matching_resources_of_the_patient(
    server: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, http = server
    labs = headers(app, f"patient/Observation.rs?{LAB}", patient="p1")
    assert ids(await http.get("/fhir/Observation", headers=labs)) == ["lab-1"]
    assert ids(await http.get("/fhir/Observation?_total=accurate", headers=labs)) == ["lab-1"]
    assert (await http.get("/fhir/Observation?_total=accurate", headers=labs)).json()["total"] == 1
    assert (await http.get("/fhir/Observation/lab-1", headers=labs)).status_code == 200
    assert (await http.get("/fhir/Observation/vitals-1", headers=labs)).status_code == 404
    assert (await http.get("/fhir/Observation/lab-2", headers=labs)).status_code == 404  # another patient
    assert ids(await http.get("/fhir/Observation/_history", headers=labs)) == ["lab-1"]
    everything = await http.get("/fhir/_history", headers=labs)
    assert {e["resource"]["id"] for e in everything.json()["entry"]} == {"lab-1"}


async def test_several_granular_scopes_add_up(server: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, http = server
    both = headers(app, f"user/Observation.rs?{LAB} user/Observation.rs?category={CATEGORY}|vital-signs")
    assert ids(await http.get("/fhir/Observation", headers=both)) == ["lab-1", "lab-2", "vitals-1"]
    plain = headers(app, f"user/Observation.rs?{LAB} user/Observation.rs")  # the unnarrowed scope wins
    assert ids(await http.get("/fhir/Observation", headers=plain)) == ["lab-1", "lab-2", "vitals-1"]


async def test_a_granular_write_must_store_what_the_query_matches(server: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, http = server
    writer = headers(app, f"user/Observation.cruds?{LAB}")
    created = await http.post("/fhir/Observation", json=observation("x", "p1", "laboratory"), headers=writer)
    assert created.status_code == 201, created.text
    refused = await http.post("/fhir/Observation", json=observation("y", "p1", "vital-signs"), headers=writer)
    assert refused.status_code == 403 and "granular" in refused.json()["issue"][0]["diagnostics"]
    moved = await http.put("/fhir/Observation/lab-1", json=observation("lab-1", "p1", "vital-signs"), headers=writer)
    assert moved.status_code == 403
    assert (await http.delete("/fhir/Observation/vitals-1", headers=writer)).status_code == 404  # not readable
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": observation("z", "p2", "laboratory"), "request": {"method": "POST", "url": "Observation"}},
        {"resource": observation("w", "p2", "vital-signs"), "request": {"method": "POST", "url": "Observation"}},
    ]}  # fmt: skip
    assert (await http.post("/fhir", json=bundle, headers=writer)).status_code == 403
    admin = headers(app, "system/*.cruds")
    stored = ids(await http.get("/fhir/Observation", headers=admin))
    assert stored == sorted(["lab-1", "vitals-1", "lab-2", created.json()["id"]])  # nothing refused was kept
    assert (await http.get("/fhir/Observation/lab-1", headers=admin)).json()["category"][0]["coding"][0]["code"] == (
        "laboratory"
    )


async def test_a_query_the_server_cannot_run_grants_nothing(server: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, http = server
    for scope in ("user/Observation.rs?no-such-parameter=1", "user/Observation.rs?_count=5", "user/*.rs?category=x"):
        response = await http.get("/fhir/Observation", headers=headers(app, scope))
        assert response.status_code == 403, scope
