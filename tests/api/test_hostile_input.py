"""Unchecked input gets a 4xx OperationOutcome without Python internals, never a 500; HTTP edges behave."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import FHIR_JSON_HEADERS

INTERNALS = ("<class", "Traceback", "recursion depth", "object has no attribute", "NoneType")


def outcome(response: httpx.Response, status: int) -> str:
    """The diagnostics of a refusal with ``status``; asserts they reveal nothing of Python."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    text = " ".join(issue.get("diagnostics", "") for issue in body["issue"])
    assert not any(marker in text for marker in INTERNALS), text
    return text


async def new_patient(client: httpx.AsyncClient) -> str:
    response = await client.post(
        "/fhir/Patient", json={"resourceType": "Patient", "active": True}, headers=FHIR_JSON_HEADERS
    )
    assert response.status_code == 201
    return str(response.json()["id"])


async def test_unicode_digits_are_not_numbers(client: httpx.AsyncClient) -> None:
    pid = await new_patient(client)
    outcome(await client.get("/fhir/Patient?_count=²"), 400)
    outcome(await client.get("/fhir/Patient?_count=٣"), 400)
    outcome(await client.get("/fhir/_history?_count=²"), 400)
    outcome(await client.get(f"/fhir/Patient/{pid}/_history/²"), 404)
    body = {"resourceType": "Patient", "id": pid, "active": False}
    outcome(
        await client.put(f"/fhir/Patient/{pid}", json=body, headers={**FHIR_JSON_HEADERS, "If-Match": "W/²".encode()}),
        400,
    )
    outcome(await client.get(f"/fhir/Patient/{pid}", headers={"If-None-Match": 'W/"¹"'.encode()}), 400)
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": f"Patient/{pid}/_history/²"}},
            {"request": {"method": "GET", "url": f"Patient/{pid}", "ifNoneMatch": 'W/"²"'}},
        ],
    }
    response = await client.post("/fhir", json=bundle, headers=FHIR_JSON_HEADERS)
    assert [e["response"]["status"] for e in response.json()["entry"]] == ["404 Not Found", "400 Bad Request"]


async def test_huge_numbers_are_refused(client: httpx.AsyncClient) -> None:
    digits = "9" * 5000
    for value in (digits, f"1{digits}.5", "1e999999999"):
        raw = (
            '{"resourceType":"Observation","status":"final","code":{"text":"x"},'
            f'"valueQuantity":{{"value":{value}}}}}'
        )
        outcome(await client.post("/fhir/Observation", content=raw.encode(), headers=FHIR_JSON_HEADERS), 400)
    raw = f'{{"resourceType":"Observation","status":"final","code":{{"text":"x"}},"valueInteger":{digits}}}'
    outcome(await client.post("/fhir/Observation", content=raw.encode(), headers=FHIR_JSON_HEADERS), 400)
    outcome(await client.get(f"/fhir/Observation?value-quantity={digits}"), 400)
    outcome(await client.get("/fhir/RiskAssessment?probability=1e999999999"), 400)
    outcome(await client.get("/fhir/RiskAssessment?probability=gt1e-999999999"), 400)
    outcome(await client.get("/fhir/RiskAssessment?probability=1_000"), 400)
    assert (await client.get("/fhir/RiskAssessment?probability=0.5")).status_code == 200


async def test_deep_nesting_is_refused_in_words(client: httpx.AsyncClient) -> None:
    raw = b'{"resourceType":"Patient","extension":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    text = outcome(await client.post("/fhir/Patient", content=raw, headers=FHIR_JSON_HEADERS), 400)
    assert "nested too deeply" in text


async def test_http_dates_with_unknown_zone_and_fhir_instants(client: httpx.AsyncClient) -> None:
    pid = await new_patient(client)
    response = await client.get(
        f"/fhir/Patient/{pid}", headers={"If-Modified-Since": "Mon, 30 Nov 2099 15:14:02 -0000"}
    )
    assert response.status_code == 304
    response = await client.get(
        f"/fhir/Patient/{pid}", headers={"If-Modified-Since": "Mon, 30 Nov 2009 15:14:02 -0000"}
    )
    assert response.status_code == 200
    entries = [
        {"request": {"method": "GET", "url": f"Patient/{pid}", "ifModifiedSince": "2099-01-01T00:00:00Z"}},
        {"request": {"method": "GET", "url": f"Patient/{pid}", "ifModifiedSince": "2001-01-01T00:00:00+14:00"}},
        {"request": {"method": "GET", "url": f"Patient/{pid}", "ifModifiedSince": "Mon, 30 Nov 2099 15:14:02 -0000"}},
        {"request": {"method": "GET", "url": f"Patient/{pid}", "ifModifiedSince": "yesterday"}},
    ]
    response = await client.post(
        "/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": entries}, headers=FHIR_JSON_HEADERS
    )
    statuses = [e["response"]["status"] for e in response.json()["entry"]]
    assert statuses == ["304 Not Modified", "200 OK", "304 Not Modified", "400 Bad Request"]


async def test_entry_fields_of_the_wrong_json_type_fail_only_their_entry(client: httpx.AsyncClient) -> None:
    pid = await new_patient(client)
    good = {"resource": {"resourceType": "Patient", "active": True}, "request": {"method": "POST", "url": "Patient"}}
    entries: list[dict[str, Any]] = [
        good,
        {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient", "ifNoneExist": 123}},
        {
            "resource": {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": 5},
            "request": {"method": "PATCH", "url": f"Patient/{pid}"},
        },
        {"request": {"method": "GET", "url": 7}},
        {"request": {"method": "GET", "url": "Patient", "ifMatch": ["1"]}},
        {"fullUrl": 3, "resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
        good,
    ]
    response = await client.post(
        "/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": entries}, headers=FHIR_JSON_HEADERS
    )
    assert response.status_code == 200, response.text
    statuses = [e["response"]["status"] for e in response.json()["entry"]]
    assert statuses == ["201 Created"] + ["400 Bad Request"] * 5 + ["201 Created"]
    for entry in response.json()["entry"][1:6]:
        text = " ".join(i["diagnostics"] for i in entry["response"]["outcome"]["issue"])
        assert not any(marker in text for marker in INTERNALS), text
    as_transaction = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    outcome(await client.post("/fhir", json=as_transaction, headers=FHIR_JSON_HEADERS), 400)
    outcome(
        await client.post(
            "/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": 5}, headers=FHIR_JSON_HEADERS
        ),
        400,
    )
    outcome(
        await client.post("/fhir", json={"resourceType": "Bundle", "type": ["batch"]}, headers=FHIR_JSON_HEADERS), 400
    )


@pytest.mark.parametrize(
    "document",
    [
        {"resourceType": "Parameters", "parameter": 5},
        {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": 5}]},
        {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [5]}]},
        {
            "resourceType": "Parameters",
            "parameter": [{"name": "operation", "part": [{"name": "type", "valueCode": {"a": 1}}]}],
        },
        {"resourceType": "Parameters", "parameter": [{"name": 5}]},
        {"resourceType": "Parameters"},
    ],
)
async def test_malformed_fhirpath_patch_documents_are_400(client: httpx.AsyncClient, document: dict[str, Any]) -> None:
    pid = await new_patient(client)
    outcome(await client.patch(f"/fhir/Patient/{pid}", json=document, headers=FHIR_JSON_HEADERS), 400)
    assert (await client.get(f"/fhir/Patient/{pid}")).json()["meta"]["versionId"] == "1"


def cursor(values: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")


@pytest.mark.parametrize(
    "values",
    [
        [{"t": "2020-01-01T00:00:00"}, "abc"],
        [{"n": "1e999999999"}, "abc"],
        [{"n": "NaN"}, "abc"],
        ["a\u0000b", "abc"],
        [[1, 2], "abc"],
        [1e308, "abc"],
        [True, "abc"],
        ["x" * 5000, "abc"],
        [{"x": 1}, "abc"],
    ],
)
async def test_crafted_page_cursors_are_400(client: httpx.AsyncClient, values: list[Any]) -> None:
    await new_patient(client)
    token = cursor(values)
    outcome(await client.get(f"/fhir/Patient?_sort=birthdate&_page={token}"), 400)
    outcome(await client.get(f"/fhir/Patient?_sort=_lastUpdated&_page={token}"), 400)
    outcome(await client.get(f"/fhir/Patient?_page={token}"), 400)
    outcome(await client.get(f"/fhir?_type=Patient&_page={token}"), 400)
    outcome(await client.get(f"/fhir/_history?_page={cursor([*values, 'Patient', 1])}"), 400)
    outcome(
        await client.get(f"/fhir/_history?_page={cursor([{'t': '2020-01-01T00:00:00+00:00'}, 'Patient', 'x', 2**40])}"),
        400,
    )
    outcome(await client.get("/fhir/Patient?_page=%%%%"), 400)


async def test_head_works_wherever_get_does(client: httpx.AsyncClient) -> None:
    pid = await new_patient(client)
    for url in (
        f"/fhir/Patient/{pid}",
        f"/fhir/Patient/{pid}/_history/1",
        "/fhir/Patient",
        "/fhir/metadata",
        "/fhir/_history",
        "/health",
    ):
        get = await client.get(url)
        head = await client.head(url)
        assert head.status_code == get.status_code == 200, url
        assert head.content == b""
        assert head.headers["content-type"] == get.headers["content-type"]
    head = await client.head(f"/fhir/Patient/{pid}")
    assert head.headers["etag"] == 'W/"1"'


async def test_405_lists_every_method_of_the_path(client: httpx.AsyncClient) -> None:
    pid = await new_patient(client)
    response = await client.delete(f"/fhir/Patient/{pid}/_history/1")
    outcome(response, 405)
    assert response.headers["allow"] == "GET, HEAD"
    response = await client.put("/health")
    outcome(response, 405)
    assert response.headers["allow"] == "GET, HEAD"
    response = await client.get("/fhir/$reindex")
    outcome(response, 405)
    assert response.headers["allow"] == "POST"


async def test_unknown_operations_are_named(client: httpx.AsyncClient) -> None:
    pid = await new_patient(client)
    text = outcome(await client.get(f"/fhir/Patient/{pid}/$everything"), 400)
    assert "$everything is not supported" in text
    assert "Unknown resource type" not in text
    assert "$everything" in outcome(await client.post("/fhir/Patient/$everything"), 400)
    assert "$export" in outcome(await client.get("/fhir/$export"), 400)


async def test_summary_count_and_count_zero_give_only_the_total(client: httpx.AsyncClient) -> None:
    await new_patient(client)
    await new_patient(client)
    for url in (
        "/fhir?_type=Patient&_summary=count",
        "/fhir?_summary=count",
        "/fhir/Patient?_count=0",
        "/fhir?_count=0",
    ):
        bundle = (await client.get(url)).json()
        assert bundle["total"] == 2, url
        assert "entry" not in bundle, url


async def test_overlong_urls_get_an_outcome(client: httpx.AsyncClient) -> None:
    text = outcome(await client.get("/fhir/Patient?name=" + "a" * 9000), 414)
    assert "_search" in text


async def test_nul_in_search_values_and_conditions(client: httpx.AsyncClient) -> None:
    outcome(await client.get("/fhir/Patient?name=a%00b"), 400)
    outcome(await client.get("/fhir/Patient?family%00=a"), 400)
    headers = {**FHIR_JSON_HEADERS, "If-None-Exist": "identifier=a%00b"}
    outcome(await client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=headers), 400)
    outcome(
        await client.put("/fhir/Patient?identifier=a%00b", json={"resourceType": "Patient"}, headers=FHIR_JSON_HEADERS),
        400,
    )
    assert int((await client.get("/fhir/Patient?_summary=count")).json()["total"]) == 0


@pytest.mark.parametrize("character", ["a", "\u00e9", "\U0001f600"])
async def test_very_long_identifiers_are_stored_and_searchable(client: httpx.AsyncClient, character: str) -> None:
    system = "https://example.org/" + character * 3000
    value = character * 4000
    patient = {"resourceType": "Patient", "identifier": [{"system": system, "value": value}]}
    created = await client.post("/fhir/Patient", json=patient, headers=FHIR_JSON_HEADERS)
    assert created.status_code == 201, created.text
    other = {"resourceType": "Patient", "identifier": [{"system": system, "value": value[:-1] + "b"}]}
    assert (await client.post("/fhir/Patient", json=other, headers=FHIR_JSON_HEADERS)).status_code == 201
    response = await client.post("/fhir/Patient/_search", data={"identifier": f"{system}|{value}"})
    assert [e["resource"]["id"] for e in response.json()["entry"]] == [created.json()["id"]]
    reference = {
        "resourceType": "Task",
        "status": "draft",
        "intent": "order",
        "for": {"identifier": {"system": system, "value": value}},
    }
    assert (await client.post("/fhir/Task", json=reference, headers=FHIR_JSON_HEADERS)).status_code == 201
    response = await client.post("/fhir/Task/_search", data={"subject:identifier": f"{system}|{value}"})
    assert len(response.json()["entry"]) == 1
