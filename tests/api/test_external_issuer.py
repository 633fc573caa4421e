"""Tokens of a trusted external authorization server (``FHIR_AUTH_TRUSTED_ISSUERS``), an EHR's own.

The issuer's JWKS is served by a real local HTTP server, which the app fetches with its own HTTP
client; its tokens' scopes and ``patient`` claim are enforced as this server's own are.
"""

from __future__ import annotations

import functools
import http.server
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from joserfc import jwt
from joserfc.jwk import RSAKey

from app.config import Settings, TrustedIssuerSetting
from app.main import create_app
from tests.conftest import FHIR_JSON_HEADERS, TEST_BASE_URL
from tests.postgres_cluster import free_port

ISSUER = "https://ehr.example/oauth"


class JwksHandler(http.server.BaseHTTPRequestHandler):
    def __init__(self, served: dict[str, Any], *args: Any) -> None:
        self.served = served
        super().__init__(*args)

    def do_GET(self) -> None:
        body = json.dumps(self.served["jwks"]).encode()
        self.served["fetches"] += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, dict[str, Any]]]:
    key = RSAKey.generate_key(2048, parameters={"kid": "ehr-1"}, private=True)
    served: dict[str, Any] = {"jwks": {"keys": [key.as_dict(private=False)]}, "key": key, "fetches": 0}
    port = free_port()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(JwksHandler, served))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{port}/jwks", served
    httpd.shutdown()


@pytest.fixture
async def secured(
    database_url: str, jwks_server: tuple[str, dict[str, Any]]
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    url, _ = jwks_server
    trusted = [TrustedIssuerSetting(issuer=ISSUER, jwks_url=url, audience=TEST_BASE_URL)]
    settings = Settings(database_url=database_url, base_url=TEST_BASE_URL, log_level="warning",
                        auth_trusted_issuers=trusted)  # fmt: skip
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield application, http


def ehr_token(key: RSAKey, scope: str | None, **claims: Any) -> dict[str, str]:
    body: dict[str, Any] = {"iss": ISSUER, "aud": TEST_BASE_URL, "sub": "ehr-app", "client_id": "ehr-app",
                            "scope": scope, "exp": int(time.time()) + 300, "iat": int(time.time())}  # fmt: skip
    body.update(claims)
    body = {name: value for name, value in body.items() if value is not None}
    token = jwt.encode({"alg": "RS256", "kid": key.kid}, body, key)
    return {**FHIR_JSON_HEADERS, "Authorization": f"Bearer {token}"}


async def test_an_external_token_is_enforced_like_our_own(
    secured: tuple[FastAPI, httpx.AsyncClient], jwks_server: tuple[str, dict[str, Any]]
) -> None:
    _, http = secured
    _, served = jwks_server
    key = served["key"]
    admin = ehr_token(key, "system/*.cruds")
    for resource in (
        {"resourceType": "Patient", "id": "p1"},
        {"resourceType": "CarePlan", "id": "c1", "status": "active", "intent": "plan",
         "subject": {"reference": "Patient/p1"}},
        {"resourceType": "CarePlan", "id": "c2", "status": "active", "intent": "plan",
         "subject": {"reference": "Patient/p2"}},
    ):  # fmt: skip
        url = f"/fhir/{resource['resourceType']}/{resource['id']}"
        assert (await http.put(url, json=resource, headers=admin)).status_code == 201
    patient_app = ehr_token(key, "patient/CarePlan.rs", patient="p1")
    plans = (await http.get("/fhir/CarePlan", headers=patient_app)).json()
    assert [e["resource"]["id"] for e in plans["entry"]] == ["c1"]
    assert (await http.get("/fhir/CarePlan/c2", headers=patient_app)).status_code == 404
    assert (await http.get("/fhir/Patient/p1", headers=patient_app)).status_code == 403
    assert served["fetches"] == 1  # the JWKS is cached


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"aud": "http://elsewhere.example/fhir"}, "another server"),
        ({"exp": int(time.time()) - 10}, "expired"),
        ({"iss": "https://unknown.example"}, "signature"),
        ({"scope": None}, "no scope"),
        ({"patient": "p1\u0000"}, "not a FHIR id"),
    ],
)
async def test_bad_external_tokens_are_refused(
    secured: tuple[FastAPI, httpx.AsyncClient], jwks_server: tuple[str, dict[str, Any]], claims: dict[str, Any],
    reason: str,
) -> None:  # fmt: skip
    _, http = secured
    _, served = jwks_server
    others = {name: value for name, value in claims.items() if name != "scope"}
    headers = ehr_token(served["key"], claims.get("scope", "system/*.rs"), **others)
    response = await http.get("/fhir/CarePlan", headers=headers)
    assert response.status_code == 401
    assert reason in response.headers["www-authenticate"], response.headers["www-authenticate"]


async def test_a_rotated_issuer_key_is_fetched_again(
    secured: tuple[FastAPI, httpx.AsyncClient], jwks_server: tuple[str, dict[str, Any]]
) -> None:
    _, http = secured
    _, served = jwks_server
    assert (await http.get("/fhir/CarePlan", headers=ehr_token(served["key"], "system/*.rs"))).status_code == 200
    rotated = RSAKey.generate_key(2048, parameters={"kid": "ehr-2"}, private=True)
    served["jwks"] = {"keys": [rotated.as_dict(private=False)]}
    app, _ = secured
    app.state.auth.jwks.min_refresh = 0  # no wait between refetches in a test
    assert (await http.get("/fhir/CarePlan", headers=ehr_token(rotated, "system/*.rs"))).status_code == 200
    forged = RSAKey.generate_key(2048, parameters={"kid": "ehr-2"}, private=True)
    assert (await http.get("/fhir/CarePlan", headers=ehr_token(forged, "system/*.rs"))).status_code == 401
