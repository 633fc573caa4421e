"""Every failure is an OperationOutcome with the right status, and nothing is stored."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.main import create_app
from tests.conftest import FHIR_JSON_HEADERS

PATIENT = {"resourceType": "Patient", "name": [{"family": "Doe"}]}


def issue(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert response.headers["content-type"].startswith("application/fhir+json")
    first: dict[str, Any] = body["issue"][0]
    assert first["severity"] == "error"
    return first


async def assert_nothing_stored(client: httpx.AsyncClient) -> None:
    history = (await client.get("/fhir/_history")).json()
    assert history.get("entry", []) == []


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/fhir/Patient", content=b'{"resourceType": "Patient",', headers=FHIR_JSON_HEADERS)
    assert response.status_code == 400
    assert "not valid JSON" in issue(response)["diagnostics"]
    await assert_nothing_stored(client)


@pytest.mark.parametrize("payload", [b"[]", b'"x"', b"", b'{"name": []}'])
async def test_non_resource_bodies_are_400(client: httpx.AsyncClient, payload: bytes) -> None:
    response = await client.post("/fhir/Patient", content=payload, headers=FHIR_JSON_HEADERS)
    assert response.status_code == 400
    issue(response)


async def test_required_binding_violation_names_the_element(client: httpx.AsyncClient) -> None:
    task = {"resourceType": "Task", "status": "bogus", "intent": "order"}
    response = await client.post("/fhir/Task", json=task, headers=FHIR_JSON_HEADERS)
    assert response.status_code == 400
    first = issue(response)
    assert first["expression"] == ["Task.status"]
    assert "bogus" in first["diagnostics"]
    plan = {"resourceType": "CarePlan", "status": "active", "intent": "wish", "subject": {"reference": "Patient/1"}}
    response = await client.post("/fhir/CarePlan", json=plan, headers=FHIR_JSON_HEADERS)
    assert response.status_code == 400
    assert issue(response)["expression"] == ["CarePlan.intent"]
    await assert_nothing_stored(client)


async def test_structural_error_names_the_nested_element(client: httpx.AsyncClient) -> None:
    plan = {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": "Patient/1"},
        "activity": [{"detail": {"status": "scheduled", "scheduledPeriod": {"start": "not-a-date"}}}],
    }
    response = await client.post("/fhir/CarePlan", json=plan, headers=FHIR_JSON_HEADERS)
    assert response.status_code == 400
    assert issue(response)["expression"] == ["CarePlan.activity[0].detail.scheduledPeriod.start"]


async def test_unknown_element_and_missing_required_element(client: httpx.AsyncClient) -> None:
    response = await client.post("/fhir/Patient", json={**PATIENT, "colour": "blue"}, headers=FHIR_JSON_HEADERS)
    assert response.status_code == 400
    assert issue(response)["expression"] == ["Patient.colour"]
    response = await client.post(
        "/fhir/Task", json={"resourceType": "Task", "status": "draft"}, headers=FHIR_JSON_HEADERS
    )
    assert response.status_code == 400
    assert "Task.intent" in issue(response)["expression"][0]


async def test_resource_type_must_match_url(client: httpx.AsyncClient) -> None:
    response = await client.post("/fhir/Observation", json=PATIENT, headers=FHIR_JSON_HEADERS)
    assert response.status_code == 400
    assert "does not match" in issue(response)["diagnostics"]
    await assert_nothing_stored(client)


async def test_update_id_must_match_url(client: httpx.AsyncClient) -> None:
    response = await client.put("/fhir/Patient/a1", json={**PATIENT, "id": "b2"}, headers=FHIR_JSON_HEADERS)
    assert response.status_code == 400
    assert issue(response)["expression"] == ["id"]
    response = await client.put("/fhir/Patient/a1", json=PATIENT, headers=FHIR_JSON_HEADERS)
    assert response.status_code == 400
    bad_id = await client.put("/fhir/Patient/a_b", json={**PATIENT, "id": "a_b"}, headers=FHIR_JSON_HEADERS)
    assert bad_id.status_code == 400
    await assert_nothing_stored(client)


async def test_unknown_resource_type_is_404(client: httpx.AsyncClient) -> None:
    assert issue(await client.get("/fhir/Spaceship/1"))["code"] == "not-found"
    response = await client.post("/fhir/Spaceship", json={"resourceType": "Spaceship"}, headers=FHIR_JSON_HEADERS)
    assert response.status_code == 404
    assert (await client.get("/fhir/Patient/nope")).status_code == 404
    assert (await client.get("/fhir/Patient/nope/_history")).status_code == 404


async def test_unsupported_media_type_is_415(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/fhir/Patient", content=b"<Patient/>", headers={"Content-Type": "application/fhir+xml"}
    )
    assert response.status_code == 415
    response = await client.post("/fhir/Patient", data={"a": "b"})
    assert response.status_code == 415
    issue(response)
    await assert_nothing_stored(client)


async def test_unsupported_method_is_405(client: httpx.AsyncClient) -> None:
    response = await client.request("PATCH", "/fhir/Patient/1/_history/1", json={})
    assert response.status_code == 405
    assert "PATCH" in issue(response)["diagnostics"]
    response = await client.post("/fhir/Patient/1", json=PATIENT, headers=FHIR_JSON_HEADERS)
    assert response.status_code == 405


async def test_bad_if_match_header_is_400(client: httpx.AsyncClient) -> None:
    response = await client.put(
        "/fhir/Patient/x1", json={**PATIENT, "id": "x1"}, headers={**FHIR_JSON_HEADERS, "If-Match": "banana"}
    )
    assert response.status_code == 400
    assert issue(response)["expression"] == ["If-Match"]


async def test_bad_history_parameters_are_400(client: httpx.AsyncClient) -> None:
    assert issue(await client.get("/fhir/_history?_since=yesterday"))["expression"] == ["_since"]
    assert (await client.get("/fhir/_history?_count=-1")).status_code == 400
    assert (await client.get("/fhir/_history?_page=garbage")).status_code == 400


@pytest.fixture
async def small_limit_client(database_url: str) -> Any:
    app: FastAPI = create_app(Settings(database_url=database_url, max_body_bytes=200, log_level="warning", auth="off"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as http:
        yield http
    await app.state.fhir.current.db.dispose()


async def test_body_over_limit_is_413_without_storing(small_limit_client: httpx.AsyncClient) -> None:
    big = {**PATIENT, "name": [{"family": "x" * 500}]}
    response = await small_limit_client.post("/fhir/Patient", json=big, headers=FHIR_JSON_HEADERS)
    assert response.status_code == 413
    assert issue(response)["code"] == "too-long"

    async def chunks() -> Any:  # no Content-Length: counted while streaming
        for _ in range(50):
            yield b" " * 20

    streamed = await small_limit_client.post("/fhir/Patient", content=chunks(), headers=FHIR_JSON_HEADERS)
    assert streamed.status_code == 413
    await assert_nothing_stored(small_limit_client)


async def test_unexpected_errors_are_500_outcomes_without_traces(app: FastAPI, client: httpx.AsyncClient) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internal detail")

    app.state.fhir.current.db.ping = broken
    ready = await client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json() == {"status": "unavailable", "database": "unreachable"}  # the reason is logged, not shown

    original = app.state.fhir.current.validator.validate

    def exploding(*args: Any) -> None:
        raise RuntimeError("secret internal detail")

    app.state.fhir.current.validator.validate = exploding
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        response = await http.post("/fhir/Patient", json=PATIENT, headers=FHIR_JSON_HEADERS)
    app.state.fhir.current.validator.validate = original
    assert response.status_code == 500
    first = response.json()["issue"][0]
    assert first["code"] == "exception"
    assert "secret" not in response.text
    assert "Traceback" not in response.text
    assert response.headers["x-request-id"] in first["diagnostics"]


@pytest.mark.parametrize(
    ("method", "path", "headers", "body"),
    [
        ("GET", "/fhir/Patient/x/_history/99999999999999999999", {}, None),
        ("PUT", "/fhir/Patient/x", {"If-Match": 'W/"99999999999999999999"'}, b'{"resourceType":"Patient","id":"x"}'),
        ("GET", "/fhir/Patient/" + "a" * 300, {}, None),
        ("GET", "/fhir/_history?_count=99999999999999999999", {}, None),
        ("POST", "/fhir/Patient", {"If-None-Exist": "identifier="}, b'{"resourceType":"Patient"}'),
        ("POST", "/fhir/Patient", {}, b'{"resourceType":"Patient","name":"not-a-list"}'),
        ("POST", "/fhir/Patient", {}, b'{"resourceType":"Patient","id":{"nested":true}}'),
        ("POST", "/fhir/Patient", {}, b'{"resourceType":"Patient","contained":[{"resourceType":"Nope"}]}'),
        ("POST", "/fhir/Patient", {}, b'{"resourceType":"Patient","birthDate":"2020-02-30"}'),
        ("POST", "/fhir/Patient", {}, b'{"resourceType":"Patient"' + b',"x":[' * 200 + b"]" * 200 + b"}"),
        ("POST", "/fhir/Patient", {}, b'{"resourceType":"Patient","name":[{"family":"\\u0000"}]}'),
        ("GET", "/fhir/Patient/%00", {}, None),
    ],
)
async def test_odd_requests_never_give_500(
    client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str], body: bytes | None
) -> None:
    response = await client.request(method, path, content=body, headers={**FHIR_JSON_HEADERS, **headers})
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.json()["resourceType"] == "OperationOutcome"


async def test_control_characters_in_strings_are_400_naming_the_element(client: httpx.AsyncClient) -> None:
    body = b'{"resourceType":"Patient","name":[{"family":"Ab\\u0001c"}]}'
    response = await client.post("/fhir/Patient", content=body, headers=FHIR_JSON_HEADERS)
    assert response.status_code == 400
    assert issue(response)["expression"] == ["Patient.name[0].family"]
    fine = b'{"resourceType":"Patient","name":[{"family":"Tab\\there"}]}'
    assert (await client.post("/fhir/Patient", content=fine, headers=FHIR_JSON_HEADERS)).status_code == 201
