"""Authorization on (the default): every FHIR route needs a token, and the token's scopes decide.

The app runs as shipped (``FHIR_AUTH=on``). Tokens come from the server's own token endpoint
(client credentials, SMART Backend Services) or, for the patient-scoped cases the launch flows will
issue, are signed here with the server's own key, so the whole path runs: header -> verification
-> caller -> read and write gates (hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html).
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from app.api.auth import issuer
from app.config import Settings
from app.main import create_app
from app.smart.clients import add_client, new_client
from app.smart.tokens import issue_access_token
from tests.conftest import FHIR_JSON_HEADERS, TEST_BASE_URL

SECRET = "correct horse battery"


@pytest.fixture
def auth_settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, base_url=TEST_BASE_URL, log_level="warning")


@pytest.fixture
async def secured(auth_settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    application = create_app(auth_settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield application, http


async def register(app: FastAPI, client_id: str, scope: str, client_type: str = "confidential-symmetric") -> None:
    secret = SECRET if client_type == "confidential-symmetric" else None
    async with app.state.auth.db.write() as conn:
        await add_client(conn, new_client(client_id, client_type, scope, secret=secret))


async def backend_token(http: httpx.AsyncClient, client_id: str, scope: str) -> str:
    response = await http.post(
        "/smart/token", data={"grant_type": "client_credentials", "scope": scope}, auth=(client_id, SECRET)
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def signed_token(app: FastAPI, scope: str, patient: str | None = None, lifetime: int = 300) -> str:
    """A token as the launch flows issue it (a patient context), signed with the server's key."""
    settings: Settings = app.state.settings
    keys = app.state.auth.verifier.keys
    token, _ = issue_access_token(
        keys, issuer(settings), settings.public_base_url, "patient-app", scope, lifetime, patient=patient
    )
    return token


def example_path(path: str) -> str:
    values = {"resource_type": "CarePlan", "resource_id": "x1", "version_id": "1", "compartment_type": "Patient",
              "compartment_id": "p1", "job_id": "j1", "operation": "everything"}  # fmt: skip
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: values.get(m.group(1), "x"), path)


async def test_every_fhir_route_but_metadata_and_discovery_needs_a_token(
    secured: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, http = secured
    open_paths = {"/fhir/metadata", "/fhir/.well-known/smart-configuration"}
    checked = 0
    for route in app.routes:
        if not isinstance(route, APIRoute) or not route.path.startswith("/fhir") or route.path in open_paths:
            continue
        for method in sorted(route.methods):
            response = await http.request(method, example_path(route.path), json={"resourceType": "CarePlan"})
            assert response.status_code == 401, (method, route.path, response.text)
            assert response.headers["www-authenticate"] == 'Bearer realm="fhir"'
            if method != "HEAD":
                assert response.json()["issue"][0]["code"] == "login"
            checked += 1
    assert checked > 30
    for path in open_paths:
        assert (await http.get(path)).status_code == 200
    assert (await http.get("/health")).json() == {"status": "ok"}
    assert (await http.get("/health/ready")).json() == {"status": "ok", "database": "ok"}


async def test_a_bad_token_is_invalid_token_and_never_echoed(secured: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, http = secured
    good = signed_token(app, "system/*.cruds")
    for header in (f"Bearer {good[:-4]}AAAA", "Bearer not-a-jwt", "Basic dXNlcjpwYXNz", "Bearer "):
        response = await http.get("/fhir/CarePlan", headers={"Authorization": header})
        assert response.status_code == 401, header
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith('Bearer realm="fhir", error="invalid_token"'), challenge
        assert good[:20] not in response.text and good[:20] not in challenge
    expired = signed_token(app, "system/*.cruds", lifetime=-10)
    response = await http.get("/fhir/CarePlan", headers=bearer(expired))
    assert response.status_code == 401 and "expired" in response.headers["www-authenticate"]


async def test_client_credentials_with_a_secret_gives_a_working_token(
    secured: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, http = secured
    await register(app, "ehr", "system/*.cruds")
    response = await http.post(
        "/smart/token", data={"grant_type": "client_credentials", "scope": "system/*.cruds"}, auth=("ehr", SECRET)
    )
    body = response.json()
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    assert body["token_type"] == "Bearer" and body["scope"] == "system/*.cruds" and body["expires_in"] == 300
    created = await http.post(
        "/fhir/Patient", json={"resourceType": "Patient"}, headers={**FHIR_JSON_HEADERS, **bearer(body["access_token"])}
    )
    assert created.status_code == 201 and created.json()["resourceType"] == "Patient"


@pytest.mark.parametrize(
    ("data", "basic", "status", "error"),
    [
        (
            {"grant_type": "client_credentials", "scope": "system/*.cruds"},
            ("ehr", "wrong secret"),
            401,
            "invalid_client",
        ),
        ({"grant_type": "client_credentials", "scope": "system/*.cruds"}, ("nobody", SECRET), 401, "invalid_client"),
        ({"grant_type": "client_credentials", "scope": "system/Patient.rs"}, ("ehr", SECRET), 400, "invalid_scope"),
        ({"grant_type": "client_credentials", "scope": "patient/*.rs"}, ("ehr", SECRET), 400, "invalid_scope"),
        ({"grant_type": "client_credentials"}, ("ehr", SECRET), 400, "invalid_scope"),
        ({"grant_type": "password", "scope": "system/*.cruds"}, ("ehr", SECRET), 400, "unsupported_grant_type"),
        ({"grant_type": "client_credentials", "scope": "system/CarePlan.rs"}, None, 401, "invalid_client"),
    ],
)
async def test_token_requests_that_are_refused(
    secured: tuple[FastAPI, httpx.AsyncClient],
    data: dict[str, str],
    basic: tuple[str, str] | None,
    status: int,
    error: str,
) -> None:
    app, http = secured
    await register(app, "ehr", "system/CarePlan.rs patient/*.rs")
    response = await http.post("/smart/token", data=data, auth=basic)
    assert response.status_code == status, response.text
    assert response.json()["error"] == error and response.headers["cache-control"] == "no-store"
    assert "access_token" not in response.json()


async def test_a_public_client_cannot_use_client_credentials(secured: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, http = secured
    await register(app, "spa", "system/*.rs", client_type="public")
    data = {"grant_type": "client_credentials", "scope": "system/*.rs", "client_id": "spa"}
    response = await http.post("/smart/token", data=data)
    assert response.status_code == 400 and response.json()["error"] == "unauthorized_client"


async def test_scopes_decide_each_interaction(secured: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, http = secured
    await register(app, "admin", "system/*.cruds")
    await register(app, "reader", "system/CarePlan.rs system/Patient.r")
    admin = bearer(await backend_token(http, "admin", "system/*.cruds"))
    reader = bearer(await backend_token(http, "reader", "system/CarePlan.rs system/Patient.r"))
    plan = {"resourceType": "CarePlan", "id": "c1", "status": "active", "intent": "plan",
            "subject": {"reference": "Patient/p1"}}  # fmt: skip
    patient = {"resourceType": "Patient", "id": "p1"}
    for resource in (patient, plan):
        url = f"/fhir/{resource['resourceType']}/{resource['id']}"
        assert (await http.put(url, json=resource, headers={**FHIR_JSON_HEADERS, **admin})).status_code == 201
    assert (await http.get("/fhir/CarePlan/c1", headers=reader)).json()["id"] == "c1"
    assert (await http.get("/fhir/Patient/p1", headers=reader)).json()["id"] == "p1"
    searched = await http.get("/fhir/CarePlan?status=active", headers=reader)
    assert [e["resource"]["id"] for e in searched.json()["entry"]] == ["c1"]
    refused = [
        await http.get("/fhir/Patient?_id=p1", headers=reader),  # Patient.r: read, not search
        await http.post("/fhir/CarePlan", json=plan, headers={**FHIR_JSON_HEADERS, **reader}),
        await http.put("/fhir/CarePlan/c1", json=plan, headers={**FHIR_JSON_HEADERS, **reader}),
        await http.delete("/fhir/CarePlan/c1", headers=reader),
        await http.patch(
            "/fhir/CarePlan/c1", json=[], headers={**reader, "Content-Type": "application/json-patch+json"}
        ),
        await http.get("/fhir/Task/t1", headers=reader),
        await http.get("/fhir/Patient/_history", headers=reader),
        await http.post("/fhir/$reindex", headers=reader),
    ]
    for response in refused:
        assert response.status_code == 403, (response.request.method, response.request.url, response.text)
        assert response.json()["issue"][0]["code"] == "forbidden"
    # system search and history return only the types the token may read
    everything = await http.get("/fhir/_history", headers=reader)
    assert {e["resource"]["resourceType"] for e in everything.json()["entry"]} == {"CarePlan", "Patient"}
    assert (await http.get("/fhir/CarePlan/c1", headers=admin)).json()["id"] == "c1"


async def test_bundle_entries_are_checked_one_by_one(secured: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, http = secured
    await register(app, "writer", "system/CarePlan.cruds")
    writer = {**FHIR_JSON_HEADERS, **bearer(await backend_token(http, "writer", "system/CarePlan.cruds"))}
    plan = {"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": {"reference": "Patient/p1"}}
    entries = [
        {"resource": plan, "request": {"method": "POST", "url": "CarePlan"}},
        {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
    ]
    batch = await http.post("/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": entries}, headers=writer)
    assert [e["response"]["status"][:3] for e in batch.json()["entry"]] == ["201", "403"]
    transaction = await http.post(
        "/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": entries}, headers=writer
    )
    assert transaction.status_code == 403
    assert "Bundle.entry[1]" in transaction.json()["issue"][0]["diagnostics"]
    plans = await http.get("/fhir/CarePlan?_summary=count", headers=writer)
    assert plans.json()["total"] == 1  # the batch's plan; the refused transaction stored nothing


async def test_patient_scopes_reach_only_the_launch_patients_compartment(
    secured: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, http = secured
    admin = {**FHIR_JSON_HEADERS, **bearer(signed_token(app, "system/*.cruds"))}
    seed: list[dict[str, Any]] = [
        {"resourceType": "Patient", "id": "p1"},
        {"resourceType": "Patient", "id": "p2"},
        {"resourceType": "CarePlan", "id": "c1", "status": "active", "intent": "plan",
         "subject": {"reference": "Patient/p1"}},
        {"resourceType": "CarePlan", "id": "c2", "status": "active", "intent": "plan",
         "subject": {"reference": "Patient/p2"}},
        {"resourceType": "Task", "id": "t1", "status": "requested", "intent": "order",
         "for": {"reference": "Patient/p1"}},
        {"resourceType": "Task", "id": "t2", "status": "requested", "intent": "order",
         "for": {"reference": "Patient/p2"}},
    ]  # fmt: skip
    for resource in seed:
        url = f"/fhir/{resource['resourceType']}/{resource['id']}"
        assert (await http.put(url, json=resource, headers=admin)).status_code == 201
    app_headers = {**FHIR_JSON_HEADERS, **bearer(signed_token(app, "patient/CarePlan.cruds patient/Task.rs", "p1"))}
    assert (await http.get("/fhir/CarePlan/c1", headers=app_headers)).status_code == 200
    assert (await http.get("/fhir/CarePlan/c2", headers=app_headers)).status_code == 404
    assert (await http.get("/fhir/Task/t1", headers=app_headers)).status_code == 200  # Task.for
    assert (await http.get("/fhir/Task/t2", headers=app_headers)).status_code == 404
    plans = await http.get("/fhir/CarePlan?_total=accurate", headers=app_headers)
    assert [e["resource"]["id"] for e in plans.json()["entry"]] == ["c1"] and plans.json()["total"] == 1
    tasks = await http.get("/fhir/Task?status=requested", headers=app_headers)
    assert [e["resource"]["id"] for e in tasks.json()["entry"]] == ["t1"]
    assert (await http.get("/fhir/Patient/p1", headers=app_headers)).status_code == 403  # no Patient scope
    mine = {"resourceType": "CarePlan", "status": "draft", "intent": "plan", "subject": {"reference": "Patient/p1"}}
    theirs = {**mine, "subject": {"reference": "Patient/p2"}}
    assert (await http.post("/fhir/CarePlan", json=mine, headers=app_headers)).status_code == 201
    refused = await http.post("/fhir/CarePlan", json=theirs, headers=app_headers)
    assert refused.status_code == 403 and "outside the compartment" in refused.json()["issue"][0]["diagnostics"]
    moved = {**seed[2], "subject": {"reference": "Patient/p2"}}
    assert (await http.put("/fhir/CarePlan/c1", json=moved, headers=app_headers)).status_code == 403
    assert (await http.delete("/fhir/CarePlan/c2", headers=app_headers)).status_code == 404
    everyone = await http.get("/fhir/CarePlan?_summary=count", headers=admin)
    assert everyone.json()["total"] == 3  # c1, c2 and the one created; c2 untouched
    no_context = bearer(signed_token(app, "patient/CarePlan.rs"))  # patient scopes without a patient
    assert (await http.get("/fhir/CarePlan/c1", headers=no_context)).status_code == 404


async def test_revoked_tokens_are_refused(secured: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, http = secured
    await register(app, "ehr", "system/*.rs")
    token = await backend_token(http, "ehr", "system/*.rs")
    assert (await http.get("/fhir/CarePlan", headers=bearer(token))).status_code == 200
    response = await http.post("/smart/revoke", data={"token": token}, auth=("ehr", SECRET))
    assert response.status_code == 200
    refused = await http.get("/fhir/CarePlan", headers=bearer(token))
    assert refused.status_code == 401 and "revoked" in refused.headers["www-authenticate"]
    unknown = await http.post("/smart/revoke", data={"token": "nonsense"}, auth=("ehr", SECRET))
    assert unknown.status_code == 200  # RFC 7009 2.2: unknown tokens too


async def test_introspection_needs_a_confidential_client(secured: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, http = secured
    await register(app, "ehr", "system/*.rs")
    token = await backend_token(http, "ehr", "system/*.rs")
    active = await http.post("/smart/introspect", data={"token": token}, auth=("ehr", SECRET))
    body = active.json()
    assert body["active"] is True and body["scope"] == "system/*.rs" and body["client_id"] == "ehr"
    assert body["exp"] > time.time()
    inactive = await http.post("/smart/introspect", data={"token": token + "x"}, auth=("ehr", SECRET))
    assert inactive.json() == {"active": False}
    anonymous = await http.post("/smart/introspect", data={"token": token, "client_id": "ehr"})
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "invalid_client"


async def test_discovery_tells_what_works(secured: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, http = secured
    response = await http.get("/fhir/.well-known/smart-configuration")
    body = response.json()
    assert response.headers["content-type"] == "application/json"
    assert body["token_endpoint"] == "http://testserver/smart/token"
    assert body["jwks_uri"] == "http://testserver/smart/jwks"
    assert body["issuer"] == "http://testserver/smart"
    assert set(body["grant_types_supported"]) == {"authorization_code", "client_credentials", "refresh_token"}
    assert body["authorization_endpoint"] == "http://testserver/smart/authorize"
    assert {"private_key_jwt", "client_secret_basic"} <= set(body["token_endpoint_auth_methods_supported"])
    assert {"RS384", "ES384"} <= set(body["token_endpoint_auth_signing_alg_values_supported"])
    keys = (await http.get("/smart/jwks")).json()["keys"]
    assert keys and all("d" not in key and key["kty"] == "RSA" for key in keys)  # public parts only


async def test_the_capability_statement_names_the_authorization_server(
    secured: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, http = secured
    security = (await http.get("/fhir/metadata")).json()["rest"][0]["security"]
    assert security["cors"] is True
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    uris = {e["url"]: e["valueUri"] for e in security["extension"][0]["extension"]}
    assert security["extension"][0]["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    discovery = (await http.get("/fhir/.well-known/smart-configuration")).json()
    assert uris == {
        "authorize": discovery["authorization_endpoint"],
        "token": discovery["token_endpoint"],
        "revoke": discovery["revocation_endpoint"],
        "introspect": discovery["introspection_endpoint"],
    }
    assert "Task.for" in security["description"]


async def test_cors_preflight_needs_no_token(secured: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, http = secured
    headers = {
        "Origin": "http://127.0.0.1:9999",
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    }
    response = await http.options("/fhir/CarePlan", headers=headers)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] in ("*", "http://127.0.0.1:9999")
    assert "authorization" in response.headers["access-control-allow-headers"].lower()
    refused = await http.get("/fhir/CarePlan", headers={"Origin": "http://127.0.0.1:9999"})
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == "*"


async def test_auth_off_is_loud(settings: Settings) -> None:
    """``FHIR_AUTH=off`` (the FHIR behaviour tests' setting) opens the API and says so in /health."""
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            health = (await http.get("/health")).json()
            assert health["auth"] == "off" and "open to anyone" in health["warning"]
            security = (await http.get("/fhir/metadata")).json()["rest"][0]["security"]
            assert "service" not in security and "FHIR_AUTH=off" in security["description"]
            assert (await http.get("/fhir/CarePlan")).status_code == 200
