"""Conditional update and delete with search criteria: the spec's 0 / 1 / many outcomes."""

from __future__ import annotations

import httpx

from tests.conftest import FHIR_JSON_HEADERS


def task(status: str, marker: str, **extra: object) -> dict[str, object]:
    return {
        "resourceType": "Task",
        "status": status,
        "intent": "order",
        "identifier": [{"system": "urn:ref", "value": marker}],
        **extra,
    }


async def test_conditional_update_zero_one_many(client: httpx.AsyncClient) -> None:
    created = await client.put(
        "/fhir/Task?identifier=urn:ref|a", json=task("requested", "a"), headers=FHIR_JSON_HEADERS
    )
    assert created.status_code == 201
    tid = created.json()["id"]
    updated = await client.put("/fhir/Task?identifier=urn:ref|a", json=task("accepted", "a"), headers=FHIR_JSON_HEADERS)
    assert updated.status_code == 200
    assert updated.json()["id"] == tid
    assert updated.json()["meta"]["versionId"] == "2"
    assert (await client.get(f"/fhir/Task/{tid}")).json()["status"] == "accepted"
    wrong_id = await client.put(
        "/fhir/Task?identifier=urn:ref|a", json=task("accepted", "a", id="other"), headers=FHIR_JSON_HEADERS
    )
    assert wrong_id.status_code == 400
    await client.post("/fhir/Task", json=task("requested", "b"), headers=FHIR_JSON_HEADERS)
    many = await client.put(
        "/fhir/Task?status=requested,accepted", json=task("accepted", "c"), headers=FHIR_JSON_HEADERS
    )
    assert many.status_code == 412
    with_id = await client.put(
        "/fhir/Task?identifier=urn:ref|new", json=task("draft", "new", id="chosen-1"), headers=FHIR_JSON_HEADERS
    )
    assert with_id.status_code == 201
    assert with_id.json()["id"] == "chosen-1"


async def test_conditional_update_honours_if_match_and_rejects_empty_criteria(client: httpx.AsyncClient) -> None:
    await client.put("/fhir/Task?identifier=urn:ref|m", json=task("requested", "m"), headers=FHIR_JSON_HEADERS)
    stale = await client.put(
        "/fhir/Task?identifier=urn:ref|m",
        json=task("accepted", "m"),
        headers={**FHIR_JSON_HEADERS, "If-Match": 'W/"5"'},
    )
    assert stale.status_code == 412
    assert (await client.put("/fhir/Task", json=task("accepted", "m"), headers=FHIR_JSON_HEADERS)).status_code == 400
    unknown = await client.put("/fhir/Task?colour=red", json=task("accepted", "m"), headers=FHIR_JSON_HEADERS)
    assert unknown.status_code == 400


async def test_conditional_delete_deletes_every_match(client: httpx.AsyncClient) -> None:
    ids = []
    for marker in ("x", "y", "z"):
        response = await client.post(
            "/fhir/Task", json=task("cancelled" if marker != "z" else "requested", marker), headers=FHIR_JSON_HEADERS
        )
        ids.append(response.json()["id"])
    response = await client.delete("/fhir/Task?status=cancelled")
    assert response.status_code == 200
    assert "Deleted 2" in response.json()["issue"][0]["diagnostics"]
    assert [(await client.get(f"/fhir/Task/{i}")).status_code for i in ids] == [410, 410, 200]
    nothing = await client.delete("/fhir/Task?status=cancelled", headers={"Prefer": "return=minimal"})
    assert nothing.status_code == 204
    assert (await client.delete("/fhir/Task")).status_code == 400


async def test_capability_statement_advertises_conditional_update_and_delete(client: httpx.AsyncClient) -> None:
    statement = (await client.get("/fhir/metadata")).json()
    entry = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Task")
    assert entry["conditionalUpdate"] is True
    assert entry["conditionalDelete"] == "multiple"
    assert entry["conditionalCreate"] is True
