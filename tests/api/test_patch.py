"""PATCH (http.html#patch): JSON Patch and FHIRPath Patch, conditional, If-Match, 400/422, no lost updates."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.conftest import FHIR_JSON_HEADERS

JSON_PATCH = {"Content-Type": "application/json-patch+json"}
TASK = {
    "resourceType": "Task",
    "status": "requested",
    "intent": "order",
    "identifier": [{"system": "urn:task", "value": "t-1"}],
    "for": {"reference": "Patient/p1"},
    "note": [{"text": "first"}, {"text": "second"}],
}


async def new_task(client: httpx.AsyncClient, **changes: Any) -> str:
    response = await client.post("/fhir/Task", json={**TASK, **changes}, headers=FHIR_JSON_HEADERS)
    assert response.status_code == 201
    return str(response.json()["id"])


async def current(client: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    response = await client.get(f"/fhir/Task/{task_id}")
    assert response.status_code == 200
    return dict(response.json())


def operation(kind: str, path: str, **parts: Any) -> dict[str, Any]:
    part = [{"name": "type", "valueCode": kind}, {"name": "path", "valueString": path}]
    for name, value in parts.items():
        part.append({"name": name, **value})
    return {"name": "operation", "part": part}


def fhirpath_patch(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(operations)}


async def test_json_patch_changes_one_field_and_versions(client: httpx.AsyncClient) -> None:
    task_id = await new_task(client)
    patch = [{"op": "replace", "path": "/status", "value": "accepted"}, {"op": "remove", "path": "/note/0"}]
    response = await client.patch(f"/fhir/Task/{task_id}", json=patch, headers=JSON_PATCH)
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == 'W/"2"'
    body = response.json()
    assert body["status"] == "accepted"
    assert body["note"] == [{"text": "second"}]
    assert body["meta"]["versionId"] == "2"
    assert (await current(client, task_id))["status"] == "accepted"
    assert (await client.get(f"/fhir/Task?status=accepted&_id={task_id}")).json()["entry"][0]["resource"][
        "id"
    ] == task_id
    history = (await client.get(f"/fhir/Task/{task_id}/_history")).json()
    assert [e["request"]["method"] for e in history.get("entry", [])] == ["PATCH", "POST"]


@pytest.mark.parametrize(
    ("patch", "status", "expression"),
    [
        ({"op": "replace", "path": "/status"}, 400, None),  # malformed: no value
        ("not an array", 400, None),
        ([{"op": "frobnicate", "path": "/status"}], 400, None),
        ([{"op": "remove", "path": "/priority"}], 422, None),  # nothing there
        ([{"op": "test", "path": "/status", "value": "accepted"}], 422, None),
        ([{"op": "replace", "path": "/status", "value": "bogus"}], 422, "Task.status"),
        ([{"op": "replace", "path": "/id", "value": "other"}], 422, None),
        ([{"op": "add", "path": "/unknownElement", "value": 1}], 422, None),
    ],
)
async def test_bad_json_patch_stores_nothing(
    client: httpx.AsyncClient, patch: Any, status: int, expression: str | None
) -> None:
    task_id = await new_task(client)
    document = [patch] if isinstance(patch, dict) else patch
    response = await client.patch(f"/fhir/Task/{task_id}", json=document, headers=JSON_PATCH)
    assert response.status_code == status, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == ("invalid" if status == 400 else "processing")
    if expression:
        assert expression in outcome["issue"][0]["expression"]
    stored = await current(client, task_id)
    assert stored["meta"]["versionId"] == "1"
    assert stored["status"] == "requested"


async def test_fhirpath_patch_operations(client: httpx.AsyncClient) -> None:
    task_id = await new_task(client)
    patch = fhirpath_patch(
        operation("replace", "Task.status", value={"valueCode": "in-progress"}),
        operation("add", "Task", name={"valueString": "priority"}, value={"valueCode": "urgent"}),
        operation(
            "add",
            "Task",
            name={"valueString": "owner"},
            value={"part": [{"name": "reference", "valueString": "Practitioner/nurse-1"}]},
        ),
        operation(
            "insert", "Task.note", index={"valueInteger": 0}, value={"part": [{"name": "text", "valueString": "zero"}]}
        ),
        operation("move", "Task.note", source={"valueInteger": 2}, destination={"valueInteger": 0}),
        operation("delete", "Task.identifier.where(system = 'urn:task')"),
        operation("replace", "Task.note[1].text", value={"valueString": "ZERO"}),
    )
    response = await client.patch(f"/fhir/Task/{task_id}", json=patch, headers=FHIR_JSON_HEADERS)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "in-progress"
    assert body["priority"] == "urgent"
    assert body["owner"] == {"reference": "Practitioner/nurse-1"}
    assert [n["text"] for n in body["note"]] == ["second", "ZERO", "first"]
    assert "identifier" not in body
    found = (await client.get("/fhir/Task?owner=Practitioner/nurse-1")).json()["entry"]
    assert [e["resource"]["id"] for e in found] == [task_id]


@pytest.mark.parametrize(
    ("operations", "status"),
    [
        ([operation("replace", "Task.note", value={"valueString": "x"})], 422),  # names two elements
        ([operation("replace", "Task.priority", value={"valueCode": "urgent"})], 422),  # names none
        ([operation("insert", "Task.note", index={"valueInteger": 9}, value={"valueString": "x"})], 422),
        ([operation("replace", "Patient.status", value={"valueCode": "x"})], 422),  # wrong type
        ([operation("replace", "Task.status", value={"valueCode": "bogus"})], 422),  # invalid result
        ([{"name": "operation", "part": [{"name": "path", "valueString": "Task.status"}]}], 400),  # no type
        ([operation("replace", "Task.status")], 400),  # no value
        ([operation("delete", "Task.note.where(")], 400),
        ([], 400),
    ],
)
async def test_bad_fhirpath_patch_stores_nothing(
    client: httpx.AsyncClient, operations: list[dict[str, Any]], status: int
) -> None:
    task_id = await new_task(client)
    response = await client.patch(f"/fhir/Task/{task_id}", json=fhirpath_patch(*operations), headers=FHIR_JSON_HEADERS)
    assert response.status_code == status, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    assert (await current(client, task_id))["meta"]["versionId"] == "1"


async def test_if_match_unknown_deleted_and_media_type(client: httpx.AsyncClient) -> None:
    task_id = await new_task(client)
    patch = [{"op": "replace", "path": "/status", "value": "accepted"}]
    stale = await client.patch(f"/fhir/Task/{task_id}", json=patch, headers={**JSON_PATCH, "If-Match": 'W/"7"'})
    assert stale.status_code == 412
    ok = await client.patch(f"/fhir/Task/{task_id}", json=patch, headers={**JSON_PATCH, "If-Match": 'W/"1"'})
    assert ok.status_code == 200
    assert (await client.patch("/fhir/Task/nope", json=patch, headers=JSON_PATCH)).status_code == 404
    await client.delete(f"/fhir/Task/{task_id}")
    assert (await client.patch(f"/fhir/Task/{task_id}", json=patch, headers=JSON_PATCH)).status_code == 410
    other = await new_task(client)
    wrong = await client.patch(f"/fhir/Task/{other}", content=b"status=x", headers={"Content-Type": "text/plain"})
    assert wrong.status_code == 415


async def test_conditional_patch(client: httpx.AsyncClient) -> None:
    first = await new_task(client, identifier=[{"system": "urn:task", "value": "a"}])
    await new_task(client, identifier=[{"system": "urn:task", "value": "b"}])
    await new_task(client, identifier=[{"system": "urn:task", "value": "b"}])
    patch = [{"op": "replace", "path": "/status", "value": "accepted"}]
    response = await client.patch("/fhir/Task?identifier=urn:task|a", json=patch, headers=JSON_PATCH)
    assert response.status_code == 200
    assert response.json()["id"] == first
    assert (await client.patch("/fhir/Task?identifier=urn:task|b", json=patch, headers=JSON_PATCH)).status_code == 412
    assert (await client.patch("/fhir/Task?identifier=urn:task|c", json=patch, headers=JSON_PATCH)).status_code == 404


async def test_concurrent_patches_lose_no_update(client: httpx.AsyncClient) -> None:
    """Without If-Match every patch lands (re-applied to the newer version); with it, one per version wins."""
    task_id = await new_task(client, note=[{"text": "seed"}])  # an empty array is not FHIR JSON
    writers = 8

    async def add_note(n: int, headers: dict[str, str]) -> int:
        patch = [{"op": "add", "path": "/note/-", "value": {"text": f"note {n}"}}]
        response = await client.patch(f"/fhir/Task/{task_id}", json=patch, headers={**JSON_PATCH, **headers})
        return response.status_code

    statuses = await asyncio.gather(*(add_note(n, {}) for n in range(writers)))
    assert statuses == [200] * writers
    body = await current(client, task_id)
    assert sorted(n["text"] for n in body["note"]) == sorted([*(f"note {n}" for n in range(writers)), "seed"])
    assert body["meta"]["versionId"] == str(1 + writers)

    version = body["meta"]["versionId"]
    statuses = await asyncio.gather(*(add_note(100 + n, {"If-Match": f'W/"{version}"'}) for n in range(writers)))
    assert sorted(statuses) == [200] + [412] * (writers - 1)
    assert len((await current(client, task_id))["note"]) == writers + 2


async def test_fhirpath_patch_of_a_choice_element_changes_its_datatype(client: httpx.AsyncClient) -> None:
    """``Observation.value`` names ``value[x]``: adding or replacing it stores the value under its datatype
    (fhirpatch.html), and insert on a single element is 422."""
    body = {"resourceType": "Observation", "status": "final", "code": {"text": "weight"}}
    created = await client.post("/fhir/Observation", json=body, headers={"Content-Type": "application/fhir+json"})
    url = f"/fhir/Observation/{created.json()['id']}"
    headers = {"Content-Type": "application/fhir+json"}
    add = fhirpath_patch(
        operation("add", "Observation", name={"valueString": "value"}, value={"valueQuantity": {"value": 70}})
    )
    added = await client.patch(url, json=add, headers=headers)
    assert added.status_code == 200, added.text
    assert added.json()["valueQuantity"] == {"value": 70}
    replace = fhirpath_patch(operation("replace", "Observation.value", value={"valueString": "heavy"}))
    replaced = await client.patch(url, json=replace, headers=headers)
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["valueString"] == "heavy" and "valueQuantity" not in replaced.json()
    insert = fhirpath_patch(
        operation("insert", "Observation.status", index={"valueInteger": 0}, value={"valueCode": "final"})
    )
    refused = await client.patch(url, json=insert, headers=headers)
    assert refused.status_code == 422
    assert "'Observation.status' is a single element, not a list" in refused.json()["issue"][0]["diagnostics"]
