"""Transaction and batch Bundles (http.html#transaction), both backends."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.main import create_app
from tests.conftest import FHIR_JSON_HEADERS


def entry(method: str, url: str, resource: dict[str, Any] | None = None, full_url: str | None = None, **request: Any):  # type: ignore[no-untyped-def]
    item: dict[str, Any] = {"request": {"method": method, "url": url, **request}}
    if resource is not None:
        item["resource"] = resource
    if full_url is not None:
        item["fullUrl"] = full_url
    return item


def bundle(*entries: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


async def post_bundle(client: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> httpx.Response:
    return await client.post("/fhir", json=body, headers={**FHIR_JSON_HEADERS, **headers})


async def total(client: httpx.AsyncClient, resource_type: str) -> int:
    response = await client.get(f"/fhir/{resource_type}?_summary=count")
    return int(response.json()["total"])


PATIENT = "urn:uuid:7f1c2a8e-0000-4000-8000-000000000001"
ENCOUNTER = "urn:uuid:7f1c2a8e-0000-4000-8000-000000000002"
REFERRAL = "urn:uuid:7f1c2a8e-0000-4000-8000-000000000003"
GOAL = "urn:oid:1.2.3.4.5"


def discharge() -> dict[str, Any]:
    subject = {"reference": PATIENT}
    return bundle(
        entry(
            "POST",
            "Patient",
            {
                "resourceType": "Patient",
                "identifier": [{"system": "urn:mrn", "value": "42"}],
                "name": [{"family": "Okafor"}],
            },
            PATIENT,
        ),
        entry(
            "POST",
            "Encounter",
            {"resourceType": "Encounter", "status": "finished", "class": {"code": "IMP"}, "subject": subject},
            ENCOUNTER,
        ),
        entry(
            "POST",
            "Goal",
            {
                "resourceType": "Goal",
                "lifecycleStatus": "active",
                "description": {"text": "Dry weight 72 kg"},
                "subject": subject,
            },
            GOAL,
        ),
        entry(
            "POST",
            "ServiceRequest",
            {
                "resourceType": "ServiceRequest",
                "status": "active",
                "intent": "order",
                "subject": subject,
                "encounter": {"reference": ENCOUNTER},
            },
            REFERRAL,
        ),
        entry(
            "POST",
            "CarePlan",
            {
                "resourceType": "CarePlan",
                "status": "active",
                "intent": "plan",
                "subject": subject,
                "encounter": {"reference": ENCOUNTER},
                "goal": [{"reference": GOAL}],
                "activity": [{"reference": {"reference": REFERRAL}}],
                "contained": [{"resourceType": "CareTeam", "id": "team", "subject": subject}],
                "careTeam": [{"reference": "#team"}],
                "extension": [{"url": "http://example.org/discharged-by", "valueReference": {"reference": ENCOUNTER}}],
            },
            "urn:uuid:7f1c2a8e-0000-4000-8000-000000000004",
        ),
        entry(
            "POST",
            "Task",
            {
                "resourceType": "Task",
                "status": "requested",
                "intent": "order",
                "for": subject,
                "basedOn": [{"reference": REFERRAL}],
            },
        ),
    )


async def test_discharge_transaction_stores_everything_with_references_rewritten(client: httpx.AsyncClient) -> None:
    response = await post_bundle(client, discharge())
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["type"] == "transaction-response"
    assert [e["response"]["status"] for e in result.get("entry", [])] == ["201 Created"] * 6
    ids = {}
    for item in result["entry"]:
        location = item["response"]["location"]
        resource_type, resource_id, _, version = location.split("/")
        assert version == "1" and item["response"]["etag"] == 'W/"1"' and item["response"]["lastModified"]
        assert item["resource"]["id"] == resource_id  # Prefer: representation by default
        ids[resource_type] = resource_id
    plan = (await client.get(f"/fhir/CarePlan/{ids['CarePlan']}")).json()
    assert plan["subject"]["reference"] == f"Patient/{ids['Patient']}"
    assert plan["goal"][0]["reference"] == f"Goal/{ids['Goal']}"
    assert plan["activity"][0]["reference"]["reference"] == f"ServiceRequest/{ids['ServiceRequest']}"
    assert plan["extension"][0]["valueReference"]["reference"] == f"Encounter/{ids['Encounter']}"
    assert plan["contained"][0]["subject"]["reference"] == f"Patient/{ids['Patient']}"
    assert plan["careTeam"][0]["reference"] == "#team"
    found = (await client.get(f"/fhir/CarePlan?subject=Patient/{ids['Patient']}")).json()["entry"]
    assert [e["resource"]["id"] for e in found] == [ids["CarePlan"]]
    tasks = (await client.get(f"/fhir/ServiceRequest?_id={ids['ServiceRequest']}&_revinclude=Task:based-on")).json()
    assert {e["resource"]["resourceType"] for e in tasks.get("entry", [])} == {"ServiceRequest", "Task"}


async def test_failing_entry_rolls_back_everything_and_names_the_entry(client: httpx.AsyncClient) -> None:
    body = discharge()
    body["entry"][5]["resource"]["status"] = "bogus"
    response = await post_bundle(client, body)
    assert response.status_code == 400
    issue = response.json()["issue"][0]
    assert issue["expression"][0].startswith("Bundle.entry[5]")
    assert "Task.status" in issue["expression"][0]
    for resource_type in ("Patient", "Encounter", "Goal", "ServiceRequest", "CarePlan", "Task"):
        assert await total(client, resource_type) == 0


async def test_order_conditionals_and_own_reads(client: httpx.AsyncClient) -> None:
    existing = await client.post(
        "/fhir/Patient",
        json={"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "7"}]},
        headers=FHIR_JSON_HEADERS,
    )
    patient_id = existing.json()["id"]
    old = await client.post(
        "/fhir/Task", json={"resourceType": "Task", "status": "draft", "intent": "order"}, headers=FHIR_JSON_HEADERS
    )
    old_id = old.json()["id"]
    body = bundle(
        entry("GET", "Patient?identifier=urn:mrn|8"),  # runs last: sees the create below
        entry(
            "POST",
            "Patient",
            {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "7"}]},
            "urn:uuid:aaaaaaaa-0000-4000-8000-000000000001",
            ifNoneExist="identifier=urn:mrn|7",
        ),
        entry(
            "POST",
            "Task",
            {
                "resourceType": "Task",
                "status": "requested",
                "intent": "order",
                "for": {"reference": "urn:uuid:aaaaaaaa-0000-4000-8000-000000000001"},
                "owner": {"reference": "Patient?identifier=urn:mrn|7"},
            },
        ),
        entry(
            "PUT",
            "Patient?identifier=urn:mrn|8",
            {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "8"}], "active": True},
        ),
        entry("DELETE", f"Task/{old_id}"),
    )
    response = await post_bundle(client, body)
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert [e["response"]["status"] for e in entries] == [
        "200 OK",
        "200 OK",
        "201 Created",
        "201 Created",
        "204 No Content",
    ]
    assert entries[1]["response"]["location"] == f"Patient/{patient_id}/_history/1"  # matched, not created
    created_eight = entries[3]["response"]["location"].split("/")[1]
    search = entries[0]["resource"]
    assert [e["resource"]["id"] for e in search.get("entry", [])] == [created_eight]
    task = entries[2]["resource"]
    assert task["for"]["reference"] == f"Patient/{patient_id}"
    assert task["owner"]["reference"] == f"Patient/{patient_id}"  # the conditional reference, resolved
    assert (await client.get(f"/fhir/Task/{old_id}")).status_code == 410
    assert await total(client, "Patient") == 2


BAD_TRANSACTIONS = [
    ([{"resource": {"resourceType": "Patient"}}], 400, "Bundle.entry[0].request"),
    ([entry("FETCH", "Patient")], 400, "Bundle.entry[0].request.method"),
    (
        [entry("GET", "Patient/1"), entry("POST", "NotAType", {"resourceType": "NotAType"})],
        400,
        "Bundle.entry[1].request.url",
    ),
    ([entry("POST", "Patient/1", {"resourceType": "Patient"})], 400, "Bundle.entry[0].request.url"),
    ([entry("POST", "Patient", {"resourceType": "Task"})], 400, "Bundle.entry[0].resource.resourceType"),
    ([entry("PUT", "Patient", {"resourceType": "Patient"})], 400, "Bundle.entry[0].request.url"),
    ([entry("DELETE", "http://elsewhere.example/fhir/Patient/1")], 400, "Bundle.entry[0].request.url"),
    (
        [entry("PUT", "Patient/a", {"resourceType": "Patient", "id": "a"}), entry("DELETE", "Patient/a")],
        400,
        "Bundle.entry[",
    ),
    (
        [
            entry("DELETE", "Patient/gone"),
            entry(
                "POST",
                "Task",
                {
                    "resourceType": "Task",
                    "status": "draft",
                    "intent": "order",
                    "for": {"reference": "Patient/gone"},
                },
            ),
        ],
        400,
        "Bundle.entry[1]",
    ),
    (
        [
            entry(
                "POST",
                "Task",
                {
                    "resourceType": "Task",
                    "status": "draft",
                    "intent": "order",
                    "for": {"reference": "urn:uuid:nowhere"},
                },
            )
        ],
        400,
        "Bundle.entry[0]",
    ),
    (
        [
            entry(
                "POST",
                "Task",
                {
                    "resourceType": "Task",
                    "status": "draft",
                    "intent": "order",
                    "for": {"reference": "Patient?identifier=none|x"},
                },
            )
        ],
        412,
        "Bundle.entry[0]",
    ),
    ([entry("PUT", "Patient/a", {"resourceType": "Patient", "id": "b"})], 400, "Bundle.entry[0]"),
    ([entry("GET", "Patient/missing")], 404, "Bundle.entry[0]"),
]


@pytest.mark.parametrize(("entries", "status", "where"), BAD_TRANSACTIONS)
async def test_bad_transactions_change_nothing(
    client: httpx.AsyncClient, entries: list[dict[str, Any]], status: int, where: str
) -> None:
    good = entry("POST", "Patient", {"resourceType": "Patient", "name": [{"family": "Kept-out"}]})
    response = await post_bundle(client, bundle(good, *entries))
    assert response.status_code == status, response.text
    issue = response.json()["issue"][0]
    # the good entry is entry 0, so the named index is shifted by one
    shifted = where.replace("entry[1]", "entry[2]").replace("entry[0]", "entry[1]")
    assert any(e.startswith(shifted) for e in issue["expression"]), issue
    assert await total(client, "Patient") == 0
    assert (await client.get("/health/ready")).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"resourceType": "Bundle", "type": "collection", "entry": []},
        {"resourceType": "Patient"},
        {"resourceType": "Bundle", "type": "transaction", "entry": {"not": "a list"}},
    ],
)
async def test_only_transaction_and_batch_bundles_are_processed(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    response = await post_bundle(client, body)
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"


async def test_a_series_of_bad_bundles_leaves_the_server_up_and_empty(client: httpx.AsyncClient) -> None:
    good = entry("POST", "Patient", {"resourceType": "Patient", "name": [{"family": "Kept-out"}]})
    for entries, status, _ in BAD_TRANSACTIONS:
        assert (await post_bundle(client, bundle(good, *entries))).status_code == status
    for resource_type in ("Patient", "Task"):
        assert await total(client, resource_type) == 0
    assert "entry" not in (await client.get("/fhir/_history")).json()
    response = await post_bundle(client, bundle(good))
    assert response.json()["entry"][0]["response"]["status"] == "201 Created"


async def test_if_match_per_entry(client: httpx.AsyncClient) -> None:
    created = (await client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON_HEADERS)).json()
    stale = entry("PUT", f"Patient/{created['id']}", {**created, "active": True}, ifMatch='W/"3"')
    response = await post_bundle(client, bundle(stale))
    assert response.status_code == 412
    assert response.json()["issue"][0]["expression"] == ["Bundle.entry[0]"]
    fresh = entry("PUT", f"Patient/{created['id']}", {**created, "active": True}, ifMatch='W/"1"')
    read = entry("GET", f"Patient/{created['id']}", ifNoneMatch='W/"2"')
    response = await post_bundle(client, bundle(fresh, read))
    assert [e["response"]["status"] for e in response.json().get("entry", [])] == ["200 OK", "304 Not Modified"]
    later = entry("GET", f"Patient/{created['id']}", ifModifiedSince="Fri, 01 Jan 2100 00:00:00 GMT")
    earlier = entry("GET", f"Patient/{created['id']}", ifModifiedSince="Thu, 01 Jan 2015 00:00:00 GMT")
    response = await post_bundle(client, bundle(later, earlier))
    entries = response.json()["entry"]
    assert [e["response"]["status"] for e in entries] == ["304 Not Modified", "200 OK"]
    assert "resource" not in entries[0] and entries[1]["resource"]["active"] is True


async def test_patch_entries_and_prefer(client: httpx.AsyncClient) -> None:
    task = (
        await client.post(
            "/fhir/Task",
            json={"resourceType": "Task", "status": "requested", "intent": "order"},
            headers=FHIR_JSON_HEADERS,
        )
    ).json()
    json_patch = base64.b64encode(orjson.dumps([{"op": "replace", "path": "/status", "value": "accepted"}])).decode()
    fhirpath_patch = {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "operation",
                "part": [
                    {"name": "type", "valueCode": "add"},
                    {"name": "path", "valueString": "Task"},
                    {"name": "name", "valueString": "priority"},
                    {"name": "value", "valueCode": "urgent"},
                ],
            }
        ],
    }
    body = bundle(
        entry(
            "PATCH",
            f"Task/{task['id']}",
            {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": json_patch},
        ),
    )
    response = await post_bundle(client, body, Prefer="return=minimal")
    assert response.status_code == 200, response.text
    only = response.json()["entry"][0]
    assert only["response"]["status"] == "200 OK" and "resource" not in only
    response = await post_bundle(
        client, bundle(entry("PATCH", f"Task/{task['id']}", fhirpath_patch)), Prefer="return=OperationOutcome"
    )
    outcome = response.json()["entry"][0]["response"]["outcome"]
    assert outcome["resourceType"] == "OperationOutcome"
    current = (await client.get(f"/fhir/Task/{task['id']}")).json()
    assert (current["status"], current["priority"], current["meta"]["versionId"]) == ("accepted", "urgent", "3")


async def test_batch_entries_are_independent(client: httpx.AsyncClient) -> None:
    body = bundle(
        entry("POST", "Patient", {"resourceType": "Patient", "name": [{"family": "One"}]}),
        entry("POST", "Task", {"resourceType": "Task", "status": "bogus", "intent": "order"}),
        entry("GET", "Patient/missing"),
        {"resource": {"resourceType": "Patient"}},
        entry("POST", "Patient", {"resourceType": "Patient", "name": [{"family": "Two"}]}),
        kind="batch",
    )
    response = await post_bundle(client, body)
    assert response.status_code == 200
    result = response.json()
    assert result["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in result.get("entry", [])]
    assert statuses == ["201 Created", "400 Bad Request", "404 Not Found", "400 Bad Request", "201 Created"]
    assert result["entry"][1]["response"]["outcome"]["issue"][0]["expression"][0].startswith("Bundle.entry[1]")
    assert await total(client, "Patient") == 2
    assert await total(client, "Task") == 0


async def test_nested_bundle_is_stored_not_executed(client: httpx.AsyncClient) -> None:
    inner = bundle(entry("POST", "Patient", {"resourceType": "Patient"}))
    response = await post_bundle(client, bundle(entry("POST", "Bundle", inner)))
    assert response.status_code == 200, response.text
    assert await total(client, "Patient") == 0
    assert await total(client, "Bundle") == 1


async def test_entry_limit(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"max_bundle_entries": 2}))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        three = bundle(*(entry("POST", "Patient", {"resourceType": "Patient"}) for _ in range(3)))
        response = await post_bundle(client, three)
        assert response.status_code == 413
        assert "at most 2" in response.json()["issue"][0]["diagnostics"]
        assert await total(client, "Patient") == 0
    await app.state.fhir.current.db.dispose()


async def test_concurrent_conditional_creates_make_one_patient(app: FastAPI, client: httpx.AsyncClient) -> None:
    """50 transactions each conditionally creating the same Patient: exactly one is created."""

    async def one(n: int) -> int:
        body = bundle(
            entry(
                "POST",
                "Patient",
                {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "same"}]},
                ifNoneExist="identifier=urn:mrn|same",
            ),
            entry(
                "POST",
                "Task",
                {"resourceType": "Task", "status": "requested", "intent": "order", "description": f"t{n}"},
            ),
        )
        response = await post_bundle(client, body)
        assert response.status_code == 200, response.text
        return int(response.json()["entry"][0]["response"]["status"][:3])

    statuses = await asyncio.gather(*(one(n) for n in range(50)))
    assert sorted(statuses) == [200] * 49 + [201]
    assert await total(client, "Patient") == 1
    assert await total(client, "Task") == 50


@pytest.mark.parametrize(
    ("existing", "status", "code"), [(0, 412, "not-found"), (1, 200, None), (2, 412, "multiple-matches")]
)
async def test_conditional_reference_zero_one_many(
    client: httpx.AsyncClient, existing: int, status: int, code: str | None
) -> None:
    for _ in range(existing):
        patient = {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "c-1"}]}
        await client.post("/fhir/Patient", json=patient, headers=FHIR_JSON_HEADERS)
    task = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "for": {"reference": "Patient?identifier=urn:mrn|c-1"},
    }
    response = await post_bundle(client, bundle(entry("POST", "Task", task)))
    assert response.status_code == status, response.text
    if code:
        assert response.json()["issue"][0]["code"] == code
        assert await total(client, "Task") == 0
    else:
        assert response.json()["entry"][0]["resource"]["for"]["reference"].startswith("Patient/")
