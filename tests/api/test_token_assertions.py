"""SMART Backend Services: client credentials with ``private_key_jwt`` (RS384 and ES384).

hl7.org/fhir/smart-app-launch/client-confidential-asymmetric.html: the client signs a JWT with a key
of its registered JWKS (a document, or a URL the server fetches); ``iss`` = ``sub`` = client id,
``aud`` = the token endpoint, ``exp`` at most five minutes ahead, a ``jti`` never used before. Every
problem with the assertion is ``invalid_client``. The JWKS URL is served through
``httpx.MockTransport``: the network seam, not the server's logic, is what is replaced.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from app.config import Settings
from app.main import create_app
from app.smart.clients import add_client, new_client
from app.smart.jwks import JwksCache
from tests.conftest import TEST_BASE_URL

TOKEN_URL = "http://testserver/smart/token"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
RSA = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"}, private=True)
EC = ECKey.generate_key("P-384", parameters={"kid": "ec-1"}, private=True)
OTHER = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"}, private=True)  # same kid, not registered


def public_jwks(*keys: Any) -> dict[str, Any]:
    return {"keys": [key.as_dict(private=False) for key in keys]}


@pytest.fixture
async def secured(database_url: str) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    application = create_app(Settings(database_url=database_url, base_url=TEST_BASE_URL, log_level="warning"))
    async with application.router.lifespan_context(application):
        async with application.state.auth.db.write() as conn:
            await add_client(
                conn, new_client("bulk", "confidential-asymmetric", "system/*.rs", jwks=public_jwks(RSA, EC))
            )
            await add_client(
                conn,
                new_client("remote", "confidential-asymmetric", "system/*.rs", jwks_url="https://app.example/jwks"),
            )
        served = {"jwks": public_jwks(EC)}

        def handler(request: httpx.Request) -> httpx.Response:
            assert str(request.url) == "https://app.example/jwks"
            return httpx.Response(200, json=served["jwks"])

        mock = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        application.state.auth.jwks = JwksCache(mock, ttl=300, min_refresh=0)
        application.state.served_jwks = served
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield application, http
        await mock.aclose()


def assertion(key: Any, alg: str, client_id: str = "bulk", **overrides: Any) -> str:
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": TOKEN_URL, "exp": now + 240, "jti": uuid.uuid4().hex}
    claims.update(overrides)
    claims = {name: value for name, value in claims.items() if value is not None}
    return jwt.encode({"alg": alg, "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=[alg])


def form(signed: str, scope: str = "system/*.rs") -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": signed,
    }


@pytest.mark.parametrize(("key", "alg"), [(RSA, "RS384"), (EC, "ES384")])
async def test_a_signed_assertion_gets_a_token_that_reads(
    secured: tuple[FastAPI, httpx.AsyncClient], key: Any, alg: str
) -> None:
    _, http = secured
    response = await http.post("/smart/token", data=form(assertion(key, alg)))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["scope"] == "system/*.rs" and body["token_type"] == "Bearer"
    search = await http.get("/fhir/CarePlan", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert search.status_code == 200 and search.json()["type"] == "searchset"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: assertion(RSA, "RS384", aud="http://testserver/other"), "aud"),
        (lambda: assertion(RSA, "RS384", exp=int(time.time()) - 120), "expired"),
        (lambda: assertion(RSA, "RS384", exp=int(time.time()) + 900), "five minutes"),
        (lambda: assertion(RSA, "RS384", jti=None), "jti"),
        (lambda: assertion(RSA, "RS384", sub="someone-else"), "iss and sub"),
        (lambda: assertion(OTHER, "RS384"), "signature"),
        (lambda: assertion(RSA, "RS256"), "RS384"),
        (lambda: "not.a.jwt", "compact JWS"),
        (lambda: assertion(RSA, "RS384", client_id="nobody"), "unknown client"),
    ],
)
async def test_a_bad_assertion_is_invalid_client(
    secured: tuple[FastAPI, httpx.AsyncClient], make: Any, reason: str
) -> None:
    _, http = secured
    response = await http.post("/smart/token", data=form(make()))
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_client"
    assert reason in response.json()["error_description"]


async def test_a_replayed_assertion_is_refused(secured: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, http = secured
    signed = assertion(EC, "ES384")
    assert (await http.post("/smart/token", data=form(signed))).status_code == 200
    again = await http.post("/smart/token", data=form(signed))
    assert again.status_code == 401 and "used before" in again.json()["error_description"]


async def test_keys_from_a_jwks_url_are_fetched_and_refetched_on_rotation(
    secured: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, http = secured
    ok = await http.post("/smart/token", data=form(assertion(EC, "ES384", client_id="remote")))
    assert ok.status_code == 200, ok.text
    rotated = RSAKey.generate_key(2048, parameters={"kid": "rsa-2"}, private=True)
    app.state.served_jwks["jwks"] = public_jwks(rotated)  # the client publishes a new key
    after = await http.post("/smart/token", data=form(assertion(rotated, "RS384", client_id="remote")))
    assert after.status_code == 200, after.text
    unknown = await http.post("/smart/token", data=form(assertion(RSA, "RS384", client_id="remote")))
    assert unknown.status_code == 401 and "kid" in unknown.json()["error_description"]


async def test_an_assertion_client_cannot_use_a_secret(secured: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, http = secured
    data = {"grant_type": "client_credentials", "scope": "system/*.rs"}
    response = await http.post("/smart/token", data=data, auth=("bulk", "guessed secret"))
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"


def test_the_http_client_finds_its_async_library_without_a_failing_import() -> None:
    """httpcore asks sniffio which async library runs at every request it sends; were sniffio missing,
    every JWKS fetch of a ``private_key_jwt`` client (``app.smart.jwks``, the server's httpx client)
    would pay a failed import (a search of sys.path) twice."""
    import sniffio  # a declared dependency (pyproject.toml)

    async def which() -> str:
        return sniffio.current_async_library()

    assert asyncio.run(which()) == "asyncio"
