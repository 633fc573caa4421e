"""``$validate`` (resource-operation-validate.html): the checks of a write, nothing stored."""

from __future__ import annotations

import httpx

from tests.conftest import FHIR_JSON_HEADERS

TASK = {"resourceType": "Task", "status": "requested", "intent": "order"}


async def stored(client: httpx.AsyncClient) -> int:
    return int((await client.get("/fhir/Task?_summary=count")).json()["total"])


async def test_a_valid_resource_is_200_and_not_stored(client: httpx.AsyncClient) -> None:
    response = await client.post("/fhir/Task/$validate", json=TASK, headers=FHIR_JSON_HEADERS)
    assert response.status_code == 200, response.text
    issue = response.json()["issue"][0]
    assert (issue["severity"], issue["code"]) == ("information", "informational")
    assert await stored(client) == 0


async def test_an_invalid_resource_is_400_naming_the_elements(client: httpx.AsyncClient) -> None:
    for body, path in (
        ({**TASK, "status": "bogus"}, "Task.status"),
        ({**TASK, "priority": None}, "Task.priority"),
        ({**TASK, "note": []}, "Task.note"),
        ({"resourceType": "Task", "intent": "order"}, "Task.status"),
    ):
        response = await client.post("/fhir/Task/$validate", json=body, headers=FHIR_JSON_HEADERS)
        assert response.status_code == 400, response.text
        expressions = [e for issue in response.json()["issue"] for e in issue.get("expression", [])]
        assert path in expressions, response.text
    assert await stored(client) == 0


async def test_parameters_form_and_modes(client: httpx.AsyncClient) -> None:
    created = await client.put("/fhir/Task/t1", json={**TASK, "id": "t1"}, headers=FHIR_JSON_HEADERS)
    assert created.status_code == 201

    def parameters(resource: dict | None, mode: str) -> dict:
        items: list[dict] = [{"name": "mode", "valueCode": mode}]
        if resource is not None:
            items.append({"name": "resource", "resource": resource})
        return {"resourceType": "Parameters", "parameter": items}

    update = parameters({**TASK, "id": "t1", "status": "accepted"}, "update")
    assert (await client.post("/fhir/Task/t1/$validate", json=update, headers=FHIR_JSON_HEADERS)).status_code == 200
    wrong_id = parameters({**TASK, "id": "t2"}, "update")
    assert (await client.post("/fhir/Task/t1/$validate", json=wrong_id, headers=FHIR_JSON_HEADERS)).status_code == 400
    delete = parameters(None, "delete")
    assert (await client.post("/fhir/Task/t1/$validate", json=delete, headers=FHIR_JSON_HEADERS)).status_code == 200
    assert (await client.post("/fhir/Task/nope/$validate", json=delete, headers=FHIR_JSON_HEADERS)).status_code == 404
    bad_mode = parameters(TASK, "destroy")
    assert (await client.post("/fhir/Task/$validate", json=bad_mode, headers=FHIR_JSON_HEADERS)).status_code == 400
    wrong_type = await client.post("/fhir/Task/$validate", json={"resourceType": "Patient"}, headers=FHIR_JSON_HEADERS)
    assert wrong_type.status_code == 400
    assert (await client.get("/fhir/Task/t1")).json()["status"] == "requested"
    assert (await client.get("/fhir/Task/t1")).json()["meta"]["versionId"] == "1"
