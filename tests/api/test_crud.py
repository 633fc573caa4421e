"""create, read, vread, update, delete and their headers (hl7.org/fhir/R4/http.html)."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import FHIR_JSON_HEADERS, TEST_BASE_URL
from tests.examples import all_care_coordination_examples, load

PATIENT = {"resourceType": "Patient", "name": [{"family": "Chalmers", "given": ["Peter"]}]}


async def create(client: httpx.AsyncClient, resource: dict, **headers: str) -> httpx.Response:
    return await client.post(
        f"/fhir/{resource['resourceType']}", json=resource, headers={**FHIR_JSON_HEADERS, **headers}
    )


@pytest.mark.parametrize(
    ("name", "example"), all_care_coordination_examples(), ids=lambda v: v if isinstance(v, str) else ""
)
async def test_every_official_care_coordination_example_round_trips(
    client: httpx.AsyncClient, name: str, example: dict
) -> None:
    created = await create(client, example)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["id"] != example.get("id")  # the server assigns ids on create
    read = await client.get(f"/fhir/{example['resourceType']}/{body['id']}")
    assert read.status_code == 200
    stored = read.json()
    assert stored == body
    expected = {k: v for k, v in example.items() if k not in ("id", "meta")}
    assert {k: v for k, v in stored.items() if k not in ("id", "meta")} == expected
    assert stored["meta"]["versionId"] == "1"


async def test_create_sets_location_etag_last_modified(client: httpx.AsyncClient) -> None:
    response = await create(client, PATIENT)
    assert response.status_code == 201
    body = response.json()
    assert response.headers["location"] == f"{TEST_BASE_URL}/Patient/{body['id']}/_history/1"
    assert response.headers["etag"] == 'W/"1"'
    assert response.headers["last-modified"].endswith("GMT")
    assert response.headers["content-type"] == "application/fhir+json; charset=utf-8"
    assert body["meta"]["lastUpdated"].endswith("Z")


async def test_create_ignores_client_id_and_keeps_client_meta(client: httpx.AsyncClient) -> None:
    resource = {**PATIENT, "id": "chosen", "meta": {"tag": [{"system": "urn:t", "code": "x"}], "versionId": "9"}}
    body = (await create(client, resource)).json()
    assert body["id"] != "chosen"
    assert body["meta"]["tag"] == [{"system": "urn:t", "code": "x"}]
    assert body["meta"]["versionId"] == "1"


async def test_update_creates_new_version_and_vread_sees_each(client: httpx.AsyncClient) -> None:
    body = (await create(client, PATIENT)).json()
    rid = body["id"]
    changed = {**PATIENT, "id": rid, "active": True}
    response = await client.put(f"/fhir/Patient/{rid}", json=changed, headers=FHIR_JSON_HEADERS)
    assert response.status_code == 200
    assert response.headers["etag"] == 'W/"2"'
    assert response.json()["active"] is True
    v1 = await client.get(f"/fhir/Patient/{rid}/_history/1")
    v2 = await client.get(f"/fhir/Patient/{rid}/_history/2")
    assert "active" not in v1.json()
    assert v2.json()["active"] is True
    assert v1.headers["etag"] == 'W/"1"'
    assert (await client.get(f"/fhir/Patient/{rid}/_history/3")).status_code == 404


async def test_update_as_create_with_client_chosen_id(client: httpx.AsyncClient) -> None:
    resource = {**PATIENT, "id": "pat-chosen-1"}
    response = await client.put("/fhir/Patient/pat-chosen-1", json=resource, headers=FHIR_JSON_HEADERS)
    assert response.status_code == 201
    assert response.headers["location"].endswith("/Patient/pat-chosen-1/_history/1")
    assert (await client.get("/fhir/Patient/pat-chosen-1")).json()["id"] == "pat-chosen-1"


async def test_if_match_mismatch_is_412_and_match_succeeds(client: httpx.AsyncClient) -> None:
    rid = (await create(client, PATIENT)).json()["id"]
    resource = {**PATIENT, "id": rid}
    stale = await client.put(f"/fhir/Patient/{rid}", json=resource, headers={**FHIR_JSON_HEADERS, "If-Match": 'W/"7"'})
    assert stale.status_code == 412
    assert stale.json()["issue"][0]["code"] == "conflict"
    fresh = await client.put(f"/fhir/Patient/{rid}", json=resource, headers={**FHIR_JSON_HEADERS, "If-Match": 'W/"1"'})
    assert fresh.status_code == 200
    assert fresh.headers["etag"] == 'W/"2"'


async def test_delete_makes_tombstone_then_read_is_410(client: httpx.AsyncClient) -> None:
    rid = (await create(client, PATIENT)).json()["id"]
    deleted = await client.delete(f"/fhir/Patient/{rid}")
    assert deleted.status_code == 200
    assert deleted.json()["resourceType"] == "OperationOutcome"
    assert deleted.headers["etag"] == 'W/"2"'
    gone = await client.get(f"/fhir/Patient/{rid}")
    assert gone.status_code == 410
    assert gone.json()["issue"][0]["code"] == "deleted"
    assert (await client.get(f"/fhir/Patient/{rid}/_history/2")).status_code == 410
    assert (await client.get(f"/fhir/Patient/{rid}/_history/1")).status_code == 200
    again = await client.delete(f"/fhir/Patient/{rid}", headers={"Prefer": "return=minimal"})
    assert again.status_code == 204
    history = (await client.get(f"/fhir/Patient/{rid}/_history")).json()
    assert [e["request"]["method"] for e in history.get("entry", [])] == ["DELETE", "POST"]


async def test_update_after_delete_resurrects_with_next_version(client: httpx.AsyncClient) -> None:
    rid = (await create(client, PATIENT)).json()["id"]
    await client.delete(f"/fhir/Patient/{rid}")
    response = await client.put(f"/fhir/Patient/{rid}", json={**PATIENT, "id": rid}, headers=FHIR_JSON_HEADERS)
    assert response.status_code == 201
    assert response.json()["meta"]["versionId"] == "3"


async def test_read_conditional_headers_give_304(client: httpx.AsyncClient) -> None:
    created = await create(client, PATIENT)
    rid = created.json()["id"]
    not_modified = await client.get(f"/fhir/Patient/{rid}", headers={"If-None-Match": 'W/"1"'})
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert (await client.get(f"/fhir/Patient/{rid}", headers={"If-None-Match": 'W/"0"'})).status_code == 200
    since = created.headers["last-modified"]
    assert (await client.get(f"/fhir/Patient/{rid}", headers={"If-Modified-Since": since})).status_code == 304
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert (await client.get(f"/fhir/Patient/{rid}", headers={"If-Modified-Since": old})).status_code == 200


@pytest.mark.parametrize(
    ("prefer", "status", "kind"),
    [
        ("return=minimal", 201, None),
        ("return=representation", 201, "Patient"),
        ("return=OperationOutcome", 201, "OperationOutcome"),
    ],
)
async def test_prefer_return(client: httpx.AsyncClient, prefer: str, status: int, kind: str | None) -> None:
    response = await create(client, PATIENT, Prefer=prefer)
    assert response.status_code == status
    assert response.headers["location"]
    if kind is None:
        assert response.content == b""
    else:
        assert response.json()["resourceType"] == kind


async def test_conditional_create_by_identifier(client: httpx.AsyncClient) -> None:
    patient = {**PATIENT, "identifier": [{"system": "urn:mrn", "value": "123"}]}
    first = await create(client, patient, **{"If-None-Exist": "identifier=urn:mrn|123"})
    assert first.status_code == 201
    second = await create(client, patient, **{"If-None-Exist": "identifier=urn:mrn|123"})
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    by_code_only = await create(client, patient, **{"If-None-Exist": "identifier=123"})
    assert by_code_only.json()["id"] == first.json()["id"]
    with_type_prefix = await create(client, patient, **{"If-None-Exist": "Patient?identifier=urn:mrn|123"})
    assert with_type_prefix.json()["id"] == first.json()["id"]
    other_system = await create(client, patient, **{"If-None-Exist": "identifier=urn:other|123"})
    assert other_system.status_code == 201
    many = await create(client, patient, **{"If-None-Exist": "identifier=123"})
    assert many.status_code == 412
    assert many.json()["issue"][0]["code"] == "multiple-matches"


async def test_conditional_create_by_id_and_unknown_criteria(client: httpx.AsyncClient) -> None:
    rid = (await create(client, PATIENT)).json()["id"]
    matched = await create(client, PATIENT, **{"If-None-Exist": f"_id={rid}"})
    assert matched.status_code == 200
    assert matched.json()["id"] == rid
    unknown = await create(client, PATIENT, **{"If-None-Exist": "colour=blue"})
    assert unknown.status_code == 400  # an ignored criterion would widen the match
    assert "colour" in unknown.json()["issue"][0]["diagnostics"]


async def test_pretty_and_format_negotiation(client: httpx.AsyncClient) -> None:
    rid = (await create(client, PATIENT)).json()["id"]
    pretty = await client.get(f"/fhir/Patient/{rid}?_pretty=true")
    assert pretty.text.startswith('{\n  "resourceType": "Patient"')
    as_json = await client.get(f"/fhir/Patient/{rid}", headers={"Accept": "application/json"})
    assert as_json.headers["content-type"].startswith("application/json")
    assert (await client.get(f"/fhir/Patient/{rid}?_format=json")).status_code == 200
    assert (await client.get(f"/fhir/Patient/{rid}?_format=xml")).status_code == 406
    xml_only = await client.get(f"/fhir/Patient/{rid}", headers={"Accept": "application/fhir+xml"})
    assert xml_only.status_code == 406
    assert xml_only.json()["resourceType"] == "OperationOutcome"
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    assert (await client.get(f"/fhir/Patient/{rid}", headers={"Accept": browser})).status_code == 200


async def test_official_patient_example_with_client_id_via_put(client: httpx.AsyncClient) -> None:
    patient = load("patient-example.json")
    response = await client.put(f"/fhir/Patient/{patient['id']}", json=patient, headers=FHIR_JSON_HEADERS)
    assert response.status_code == 201
    assert (await client.get(f"/fhir/Patient/{patient['id']}")).json()["name"] == patient["name"]
