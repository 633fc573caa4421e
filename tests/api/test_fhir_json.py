"""FHIR JSON rules on every write and in every answer; decimals read back exactly as written (json.html)."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import FHIR_JSON_HEADERS

JSON_PATCH = {"Content-Type": "application/json-patch+json"}
SCRIPT_DIV = '<div xmlns="http://www.w3.org/1999/xhtml"><p onclick="steal()">hi</p><script>x()</script></div>'

# (raw JSON of a Patient, the element the OperationOutcome must name)
BAD_PATIENTS: list[tuple[str, str]] = [
    ('{"resourceType":"Patient","gender":null}', "Patient.gender"),
    ('{"resourceType":"Patient","name":[{"family":"A","given":[null]}]}', "Patient.name[0].given[0]"),
    ('{"resourceType":"Patient","name":[]}', "Patient.name"),
    ('{"resourceType":"Patient","name":[{}]}', "Patient.name[0]"),
    ('{"resourceType":"Patient","maritalStatus":{}}', "Patient.maritalStatus"),
    ('{"resourceType":"Patient","active":"yes"}', "Patient.active"),
    ('{"resourceType":"Patient","active":1}', "Patient.active"),
    ('{"resourceType":"Patient","multipleBirthInteger":"3"}', "Patient.multipleBirthInteger"),
    ('{"resourceType":"Patient","name":[{"family":42}]}', "Patient.name[0].family"),
    ('{"resourceType":"Patient","name":[{"family":""}]}', "Patient.name[0].family"),
    ('{"resourceType":"Patient","extension":[{"url":"","valueString":"x"}]}', "Patient.extension[0].url"),
    ('{"resourceType":"Patient","name":[{"family":"A\\u0000B"}]}', "Patient.name[0].family"),
    ('{"resourceType":"Patient","name":[{"family":"A\\u001bB"}]}', "Patient.name[0].family"),
    (
        orjson.dumps({"resourceType": "Patient", "text": {"status": "generated", "div": SCRIPT_DIV}}).decode(),
        "Patient.text.div",
    ),
    (
        orjson.dumps(
            {
                "resourceType": "Patient",
                "text": {
                    "status": "generated",
                    "div": '<div xmlns="http://www.w3.org/1999/xhtml"><a href=" JavaScript:x()">a</a></div>',
                },
            }
        ).decode(),
        "Patient.text.div",
    ),
]


def expressions(response: httpx.Response) -> list[str]:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    return [e for issue in body["issue"] for e in issue.get("expression", [])]


async def stored_count(client: httpx.AsyncClient) -> int:
    return int((await client.get("/fhir/Patient?_summary=count")).json()["total"])


@pytest.mark.parametrize(("raw", "path"), BAD_PATIENTS)
async def test_create_and_update_refuse_what_fhir_json_forbids(client: httpx.AsyncClient, raw: str, path: str) -> None:
    created = await client.post("/fhir/Patient", content=raw.encode(), headers=FHIR_JSON_HEADERS)
    assert created.status_code == 400, created.text
    assert path in expressions(created)
    with_id = orjson.dumps({**orjson.loads(raw), "id": "p1"})
    updated = await client.put("/fhir/Patient/p1", content=with_id, headers=FHIR_JSON_HEADERS)
    assert updated.status_code == 400, updated.text
    assert path in expressions(updated)
    assert await stored_count(client) == 0


@pytest.mark.parametrize(("raw", "path"), BAD_PATIENTS[:8])
async def test_transaction_and_batch_entries_refuse_it_too(client: httpx.AsyncClient, raw: str, path: str) -> None:
    bad = orjson.loads(raw)
    good = {"resourceType": "Patient", "name": [{"family": "Good"}]}
    entries = [
        {"resource": good, "request": {"method": "POST", "url": "Patient"}},
        {"resource": bad, "request": {"method": "POST", "url": "Patient"}},
    ]
    response = await client.post(
        "/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": entries}, headers=FHIR_JSON_HEADERS
    )
    assert response.status_code == 400, response.text
    assert f"Bundle.entry[1].resource.{path}" in expressions(response)
    assert await stored_count(client) == 0
    response = await client.post(
        "/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": entries}, headers=FHIR_JSON_HEADERS
    )
    assert response.status_code == 200
    statuses = [e["response"]["status"] for e in response.json()["entry"]]
    assert statuses == ["201 Created", "400 Bad Request"]
    assert await stored_count(client) == 1


async def test_duplicate_keys_are_refused(client: httpx.AsyncClient) -> None:
    raw = b'{"resourceType":"Patient","gender":"male","gender":"female"}'
    response = await client.post("/fhir/Patient", content=raw, headers=FHIR_JSON_HEADERS)
    assert response.status_code == 400
    assert "'gender' appears twice" in response.json()["issue"][0]["diagnostics"]
    raw = b'{"resourceType":"Bundle","type":"transaction","type":"batch"}'
    assert (await client.post("/fhir", content=raw, headers=FHIR_JSON_HEADERS)).status_code == 400
    assert await stored_count(client) == 0


async def test_patch_results_follow_the_rules(client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/fhir/Patient", json={"resourceType": "Patient", "active": True}, headers=FHIR_JSON_HEADERS
    )
    pid = created.json()["id"]
    control = await client.patch(
        f"/fhir/Patient/{pid}",
        content=b'[{"op":"add","path":"/name","value":[{"family":"A\\u0007"}]}]',
        headers=JSON_PATCH,
    )
    assert control.status_code == 400  # refused as the patch document is read
    assert "control characters" in control.json()["issue"][0]["diagnostics"]
    for patch in (
        [{"op": "add", "path": "/gender", "value": None}],
        [{"op": "add", "path": "/name", "value": []}],
        [{"op": "replace", "path": "/active", "value": "yes"}],
    ):
        response = await client.patch(f"/fhir/Patient/{pid}", json=patch, headers=JSON_PATCH)
        assert response.status_code == 400, (patch, response.text)  # not FHIR JSON; other invalid results: 422
        assert expressions(response)
    current = (await client.get(f"/fhir/Patient/{pid}")).json()
    assert current["meta"]["versionId"] == "1"
    assert current["active"] is True


# --- decimals (json.html: "the number of decimal places SHALL be preserved") --------------------------

DECIMALS = ("1.10", "100.000", "12345678901234567.89", "0.000100", "-3.0")


def observation(value: str) -> bytes:
    return (
        '{"resourceType":"Observation","status":"final","code":{"text":"weight"},'
        f'"valueQuantity":{{"value":{value},"unit":"kg","system":"http://unitsofmeasure.org","code":"kg"}}}}'
    ).encode()


def value_text(raw: bytes) -> str:
    """The literal text of the first valueQuantity.value in a response body."""
    marker = b'"valueQuantity":{"value":'
    start = raw.index(marker) + len(marker)
    end = min(i for i in (raw.find(b",", start), raw.find(b"}", start)) if i > 0)
    return raw[start:end].decode()


@pytest.mark.parametrize("value", DECIMALS)
async def test_decimals_read_back_exactly(client: httpx.AsyncClient, value: str) -> None:
    created = await client.post("/fhir/Observation", content=observation(value), headers=FHIR_JSON_HEADERS)
    assert created.status_code == 201, created.text
    assert value_text(created.content) == value
    oid = created.json()["id"]
    for url in (
        f"/fhir/Observation/{oid}",
        f"/fhir/Observation/{oid}/_history/1",
        f"/fhir/Observation/{oid}/_history",
        "/fhir/Observation?code:text=weight",
        f"/fhir/Observation?_id={oid}&_summary=data",
        "/fhir/_history",
    ):
        response = await client.get(url)
        assert value_text(response.content) == value, url
    pretty = await client.get(f"/fhir/Observation/{oid}?_pretty=true")
    assert f'"value": {value},' in pretty.text


async def test_number_search_uses_the_written_precision(client: httpx.AsyncClient) -> None:
    for value in ("1.10", "100.000"):
        await client.post("/fhir/Observation", content=observation(value), headers=FHIR_JSON_HEADERS)

    async def found(query: str) -> int:
        return len((await client.get(f"/fhir/Observation?{query}")).json().get("entry", []))

    assert await found("value-quantity=1.1") == 1  # [1.05, 1.15) holds 1.10
    assert await found("value-quantity=1.100") == 1
    assert await found("value-quantity=1.101") == 0
    assert await found("value-quantity=100") == 1
    assert await found("value-quantity=gt99.9999") == 1


async def test_decimals_survive_transactions_and_patch(client: httpx.AsyncClient) -> None:
    entry = {
        "resource": orjson.loads(observation("1.0")),  # parsed here only to build the Bundle text below
        "request": {"method": "POST", "url": "Observation"},
    }
    bundle = orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": [entry]})
    bundle = bundle.replace(b'"value":1.0', b'"value":2.50')
    response = await client.post(
        "/fhir", content=bundle, headers={**FHIR_JSON_HEADERS, "Prefer": "return=representation"}
    )
    assert response.status_code == 200, response.text
    assert value_text(response.content) == "2.50"
    oid = response.json()["entry"][0]["response"]["location"].split("/")[1]

    patch = b'[{"op": "add", "path": "/valueQuantity/comparator", "value": "<"}]'
    patched = await client.patch(f"/fhir/Observation/{oid}", content=patch, headers=JSON_PATCH)
    assert patched.status_code == 200, patched.text
    assert value_text(patched.content) == "2.50"

    patch = b'[{"op": "replace", "path": "/valueQuantity/value", "value": 3.140}]'
    patched = await client.patch(f"/fhir/Observation/{oid}", content=patch, headers=JSON_PATCH)
    assert value_text(patched.content) == "3.140"

    fhirpath_patch = (
        b'{"resourceType":"Parameters","parameter":[{"name":"operation","part":['
        b'{"name":"type","valueCode":"replace"},{"name":"path","valueString":"Observation.valueQuantity.value"},'
        b'{"name":"value","valueDecimal":7.000}]}]}'
    )
    patched = await client.patch(f"/fhir/Observation/{oid}", content=fhirpath_patch, headers=FHIR_JSON_HEADERS)
    assert patched.status_code == 200, patched.text
    assert value_text(patched.content) == "7.000"
    assert value_text((await client.get(f"/fhir/Observation/{oid}")).content) == "7.000"

    binary = base64.b64encode(b'[{"op": "replace", "path": "/valueQuantity/value", "value": 8.10}]').decode()
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {
                "resource": {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": binary},
                "request": {"method": "PATCH", "url": f"Observation/{oid}"},
            }
        ],
    }
    response = await client.post("/fhir", json=batch, headers={**FHIR_JSON_HEADERS, "Prefer": "return=representation"})
    assert response.status_code == 200, response.text
    assert value_text((await client.get(f"/fhir/Observation/{oid}")).content) == "8.10"


async def test_empty_results_have_no_empty_arrays(client: httpx.AsyncClient) -> None:
    """The server's own answers obey json.html too (every answer is also checked by the test client)."""
    searchset = (await client.get("/fhir/CarePlan?status=active")).json()
    assert "entry" not in searchset
    assert searchset["type"] == "searchset"
    history = (await client.get("/fhir/_history")).json()
    assert "entry" not in history
    empty: dict[str, Any] = {"resourceType": "Bundle", "type": "batch"}
    response = (await client.post("/fhir", json=empty, headers=FHIR_JSON_HEADERS)).json()
    assert response["type"] == "batch-response"
    assert "entry" not in response
