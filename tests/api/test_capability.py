"""The CapabilityStatement tells the truth: everything it lists works."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.capabilitystatement import CapabilityStatement

from app.config import Settings
from tests.conftest import FHIR_JSON_HEADERS, TEST_BASE_URL
from tests.examples import CARE_COORDINATION_TYPES, first_example

Check = Callable[[httpx.AsyncClient, str, dict[str, Any]], Awaitable[None]]


async def _create(client: httpx.AsyncClient, resource_type: str, example: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(f"/fhir/{resource_type}", json=example, headers=FHIR_JSON_HEADERS)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def check_create(client: httpx.AsyncClient, resource_type: str, example: dict[str, Any]) -> None:
    body = await _create(client, resource_type, example)
    assert body["resourceType"] == resource_type


async def check_read(client: httpx.AsyncClient, resource_type: str, example: dict[str, Any]) -> None:
    body = await _create(client, resource_type, example)
    assert (await client.get(f"/fhir/{resource_type}/{body['id']}")).json() == body


async def check_vread(client: httpx.AsyncClient, resource_type: str, example: dict[str, Any]) -> None:
    body = await _create(client, resource_type, example)
    assert (await client.get(f"/fhir/{resource_type}/{body['id']}/_history/1")).json() == body


async def check_update(client: httpx.AsyncClient, resource_type: str, example: dict[str, Any]) -> None:
    body = await _create(client, resource_type, example)
    changed = {**body, "language": "en"}
    response = await client.put(f"/fhir/{resource_type}/{body['id']}", json=changed, headers=FHIR_JSON_HEADERS)
    assert response.status_code == 200
    assert response.json()["language"] == "en"
    assert response.json()["meta"]["versionId"] == "2"


async def check_delete(client: httpx.AsyncClient, resource_type: str, example: dict[str, Any]) -> None:
    body = await _create(client, resource_type, example)
    assert (await client.delete(f"/fhir/{resource_type}/{body['id']}")).status_code == 200
    assert (await client.get(f"/fhir/{resource_type}/{body['id']}")).status_code == 410


async def check_patch(client: httpx.AsyncClient, resource_type: str, example: dict[str, Any]) -> None:
    body = await _create(client, resource_type, example)
    patch = [{"op": "add", "path": "/language", "value": "en"}]
    headers = {"Content-Type": "application/json-patch+json"}
    response = await client.patch(f"/fhir/{resource_type}/{body['id']}", json=patch, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["language"] == "en"
    assert response.json()["meta"]["versionId"] == "2"


async def check_history_instance(client: httpx.AsyncClient, resource_type: str, example: dict[str, Any]) -> None:
    body = await _create(client, resource_type, example)
    bundle = (await client.get(f"/fhir/{resource_type}/{body['id']}/_history")).json()
    assert [e["resource"]["id"] for e in bundle.get("entry", [])] == [body["id"]]


async def check_history_type(client: httpx.AsyncClient, resource_type: str, example: dict[str, Any]) -> None:
    body = await _create(client, resource_type, example)
    bundle = (await client.get(f"/fhir/{resource_type}/_history")).json()
    assert body["id"] in [e["resource"]["id"] for e in bundle.get("entry", [])]


async def check_search_type(client: httpx.AsyncClient, resource_type: str, example: dict[str, Any]) -> None:
    body = await _create(client, resource_type, example)
    bundle = (await client.get(f"/fhir/{resource_type}?_id={body['id']}")).json()
    assert bundle["type"] == "searchset"
    assert [e["resource"]["id"] for e in bundle.get("entry", [])] == [body["id"]]
    posted = await client.post(f"/fhir/{resource_type}/_search", data={"_id": body["id"]})
    assert [e["resource"]["id"] for e in posted.json().get("entry", [])] == [body["id"]]


CHECKS: dict[str, Check] = {
    "patch": check_patch,
    "create": check_create,
    "read": check_read,
    "vread": check_vread,
    "update": check_update,
    "delete": check_delete,
    "history-instance": check_history_instance,
    "history-type": check_history_type,
    "search-type": check_search_type,
}


async def test_metadata_is_a_valid_r4_capability_statement(client: httpx.AsyncClient) -> None:
    response = await client.get("/fhir/metadata")
    assert response.status_code == 200
    statement = response.json()
    CapabilityStatement.model_validate(statement)
    assert statement["fhirVersion"] == "4.0.1"
    assert statement["implementation"]["url"] == TEST_BASE_URL
    assert "application/fhir+json" in statement["format"]
    types = {r["type"] for r in statement["rest"][0]["resource"]}
    assert set(CARE_COORDINATION_TYPES) <= types
    assert {"Patient", "Practitioner", "Organization", "Encounter", "Condition"} <= types
    assert [i["code"] for i in statement["rest"][0]["interaction"]] == [
        "transaction",
        "batch",
        "history-system",
        "search-system",
    ]
    assert statement["rest"][0]["operation"] == [
        {"name": "reindex", "definition": "urn:care-plan-repository:OperationDefinition:reindex"},
        {"name": "validate", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"},
    ]
    assert statement["patchFormat"] == ["application/json-patch+json", "application/fhir+json"]


async def test_limits_are_published(client: httpx.AsyncClient, settings: Settings) -> None:
    """The limits a client can run into: in words and as a machine-readable extension, from the settings."""
    rest = (await client.get("/fhir/metadata")).json()["rest"][0]
    limits = {e["url"]: e["valueInteger"] for e in rest["extension"][0]["extension"]}
    assert limits["maxBundleEntries"] == settings.max_bundle_entries
    assert limits["maxBodyBytes"] == settings.max_body_bytes
    assert limits["maxBundleResponseResources"] == settings.max_bundle_response_resources
    assert limits["maxArrayItems"] == settings.max_array_items
    assert limits["searchMaxParameters"] == 30
    assert f"at most {settings.max_bundle_entries} entries per transaction or batch Bundle" in rest["documentation"]
    assert "chains of at most 3 links" in rest["documentation"]


@pytest.mark.parametrize("resource_type", CARE_COORDINATION_TYPES)
async def test_every_listed_interaction_works(client: httpx.AsyncClient, resource_type: str) -> None:
    statement = (await client.get("/fhir/metadata")).json()
    entry = next(r for r in statement["rest"][0]["resource"] if r["type"] == resource_type)
    codes = [i["code"] for i in entry["interaction"]]
    assert codes, "no interactions listed"
    unknown = set(codes) - set(CHECKS)
    assert not unknown, f"the statement lists interactions with no check: {unknown}"
    example = first_example(resource_type)
    for code in codes:
        await CHECKS[code](client, resource_type, example)
    assert entry["versioning"] == "versioned-update"
    if entry["updateCreate"]:
        put = await client.put(
            f"/fhir/{resource_type}/chosen-{resource_type.lower()}",
            json={**example, "id": f"chosen-{resource_type.lower()}"},
            headers=FHIR_JSON_HEADERS,
        )
        assert put.status_code == 201
    if entry["conditionalCreate"]:
        marked = {**example, "identifier": [{"system": "urn:capability-test", "value": resource_type}]}
        headers = {**FHIR_JSON_HEADERS, "If-None-Exist": f"identifier=urn:capability-test|{resource_type}"}
        first = await client.post(f"/fhir/{resource_type}", json=marked, headers=headers)
        second = await client.post(f"/fhir/{resource_type}", json=marked, headers=headers)
        assert (first.status_code, second.status_code) == (201, 200)
        assert first.json()["id"] == second.json()["id"]
    marker = f"identifier=urn:capability-test|{resource_type}"
    if entry["conditionalUpdate"]:
        changed = {
            **{k: v for k, v in example.items() if k != "id"},
            "identifier": [{"system": "urn:capability-test", "value": resource_type}],
            "language": "fr",
        }
        put = await client.put(f"/fhir/{resource_type}?{marker}", json=changed, headers=FHIR_JSON_HEADERS)
        assert put.status_code == 200, put.text
        assert put.json()["language"] == "fr"
    if entry["conditionalDelete"] in ("single", "multiple"):
        assert (await client.delete(f"/fhir/{resource_type}?{marker}")).status_code == 200
        assert "entry" not in (await client.get(f"/fhir/{resource_type}?{marker}")).json()


async def test_system_history_listed_and_works(client: httpx.AsyncClient) -> None:
    await _create(client, "Task", first_example("Task"))
    bundle = (await client.get("/fhir/_history")).json()
    assert bundle["type"] == "history"
    assert len(bundle["entry"]) == 1


async def test_metadata_pretty(client: httpx.AsyncClient) -> None:
    response = await client.get("/fhir/metadata?_pretty=true")
    assert response.text.startswith('{\n  "resourceType": "CapabilityStatement"')
