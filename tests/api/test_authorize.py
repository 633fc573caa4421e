"""SMART App Launch: the authorization code flow with PKCE, through the real pages.

hl7.org/fhir/smart-app-launch/app-launch.html: the app sends the user to ``/smart/authorize``; the
user signs in, picks a patient (a practitioner with ``launch/patient``), allows the scopes; the app
redeems the code with its PKCE verifier for an access token (with ``patient``, an ``id_token`` for
``openid fhirUser`` and a ``refresh_token`` for ``offline_access``). The forms are driven the way a
browser without JavaScript would: hidden fields and labelled controls, cookies kept by the client.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
from collections.abc import AsyncIterator
from functools import cache
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from joserfc import jwt
from joserfc.jwk import KeySet

from app.config import Settings
from app.main import create_app
from app.smart.clients import Client, User, add_client, add_user, new_client, new_user
from tests.conftest import FHIR_JSON_HEADERS, TEST_BASE_URL

REDIRECT = "http://app.example/callback"
PASSWORD = "a long enough password"
SCOPE = "launch/patient openid fhirUser offline_access patient/*.rs"


@cache
def registrations() -> tuple[tuple[Client, ...], tuple[User, ...]]:
    """The clients and users of every test, their secrets hashed once (argon2 takes ~0.3 s a hash)."""
    clients = (
        new_client("app", "public", SCOPE + " launch", [REDIRECT]),
        new_client("other", "public", SCOPE, ["http://other.example/cb"]),
        new_client("ehr", "confidential-symmetric", "system/*.cruds", secret="ehr secret 1"),
    )
    users = (new_user("drosei", PASSWORD, "Practitioner/dr"), new_user("maria", PASSWORD, "Patient/p2"))
    return clients, users


@pytest.fixture
async def server(database_url: str) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    application = create_app(Settings(database_url=database_url, base_url=TEST_BASE_URL, log_level="warning"))
    async with application.router.lifespan_context(application):
        db = application.state.auth.db
        async with db.write() as conn:
            clients, users = registrations()
            for client in clients:
                await add_client(conn, client)
            for user in users:
                await add_user(conn, user)
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            token = (
                await http.post(
                    "/smart/token",
                    data={"grant_type": "client_credentials", "scope": "system/*.cruds"},
                    auth=("ehr", "ehr secret 1"),
                )
            ).json()["access_token"]
            admin = {**FHIR_JSON_HEADERS, "Authorization": f"Bearer {token}"}
            for resource in (
                {"resourceType": "Patient", "id": "p1", "name": [{"given": ["Peter", "James"], "family": "Chalmers"}],
                 "birthDate": "1974-12-25"},
                {"resourceType": "Patient", "id": "p2", "name": [{"given": ["Maria"], "family": "Rivera"}]},
                {"resourceType": "Encounter", "id": "e1", "status": "in-progress",
                 "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
                 "subject": {"reference": "Patient/p1"}},
                {"resourceType": "CarePlan", "id": "c1", "status": "active", "intent": "plan",
                 "subject": {"reference": "Patient/p1"}},
                {"resourceType": "CarePlan", "id": "c2", "status": "active", "intent": "plan",
                 "subject": {"reference": "Patient/p2"}},
            ):  # fmt: skip
                url = f"/fhir/{resource['resourceType']}/{resource['id']}"
                assert (await http.put(url, json=resource, headers=admin)).status_code == 201
            application.state.admin_headers = admin
            yield application, http


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize_url(challenge: str, **overrides: str) -> str:
    params = {
        "response_type": "code",
        "client_id": "app",
        "redirect_uri": REDIRECT,
        "scope": SCOPE,
        "state": "st-123",
        "aud": TEST_BASE_URL,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    params.update(overrides)
    return "/smart/authorize?" + urlencode({k: v for k, v in params.items() if v != ""})


def hidden(page: str, name: str) -> str:
    found = re.search(rf'<input type="hidden" name="{name}" value="([^"]*)"', page)
    assert found, page
    return html.unescape(found.group(1))


def labelled(page: str, label_text: str) -> str:
    """The ``id`` of the control whose ``<label for=...>`` says ``label_text``."""
    found = re.search(rf'<label for="([^"]+)">{re.escape(label_text)}', page)
    assert found, (label_text, page)
    return found.group(1)


async def sign_in(http: httpx.AsyncClient, page: str, username: str, password: str = PASSWORD) -> httpx.Response:
    assert labelled(page, "Username") == "username" and labelled(page, "Password") == "password"
    assert ">Sign in</button>" in page
    form = {"ticket": hidden(page, "ticket"), "username": username, "password": password}
    return await http.post("/smart/authorize/login", data=form)


async def code_for(http: httpx.AsyncClient, challenge: str, username: str = "drosei", **overrides: str) -> str:
    login = await http.get(authorize_url(challenge, **overrides))
    assert login.status_code == 200, login.text
    page = (await sign_in(http, login.text, username)).text
    if "Choose a patient" in page:
        radio = labelled(page, "Peter James Chalmers")
        value = re.search(rf'id="{radio}" name="patient" value="([^"]+)"', page)
        assert value and ">Continue</button>" in page
        page = (await http.post("/smart/authorize/patient", data={"ticket": hidden(page, "ticket"),
                                                                 "patient": value.group(1)})).text  # fmt: skip
    assert "Allow access?" in page, page
    allowed = await http.post("/smart/authorize/consent", data={"ticket": hidden(page, "ticket"), "decision": "allow"})
    assert allowed.status_code == 302, allowed.text
    query = parse_qs(urlsplit(allowed.headers["location"]).query)
    assert query["state"] == [overrides.get("state", "st-123")]
    return query["code"][0]


async def redeem(http: httpx.AsyncClient, code: str, verifier: str, client_id: str = "app") -> httpx.Response:
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
            "code_verifier": verifier, "client_id": client_id}  # fmt: skip
    return await http.post("/smart/token", data=data)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_standalone_launch_by_a_practitioner(server: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, http = server
    verifier, challenge = pkce()
    code = await code_for(http, challenge)
    response = await redeem(http, code, verifier)
    body = response.json()
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store", body
    assert body["patient"] == "p1" and body["scope"] == SCOPE and body["token_type"] == "Bearer"
    assert 0 < body["expires_in"] <= 3600 and body["refresh_token"]
    keys = KeySet.import_key_set((await http.get("/smart/jwks")).json())
    identity = jwt.decode(body["id_token"], keys, algorithms=["RS256"]).claims
    assert identity["fhirUser"] == f"{TEST_BASE_URL}/Practitioner/dr" and identity["aud"] == "app"
    assert identity["iss"] == "http://testserver/smart" and identity["sub"] == "drosei"
    token = bearer(body["access_token"])
    assert (await http.get("/fhir/CarePlan/c1", headers=token)).json()["id"] == "c1"
    assert (await http.get("/fhir/CarePlan/c2", headers=token)).status_code == 404
    plans = (await http.get("/fhir/CarePlan", headers=token)).json()
    assert [e["resource"]["id"] for e in plans["entry"]] == ["c1"]


async def test_a_patient_user_gets_their_own_record_without_a_picker(
    server: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, http = server
    verifier, challenge = pkce()
    login = await http.get(authorize_url(challenge))
    page = (await sign_in(http, login.text, "maria")).text
    assert "Choose a patient" not in page and "Allow access?" in page
    for scope in SCOPE.split():
        assert f"<code>{scope}</code>" in page  # every requested scope, verbatim
    allowed = await http.post("/smart/authorize/consent", data={"ticket": hidden(page, "ticket"), "decision": "allow"})
    code = parse_qs(urlsplit(allowed.headers["location"]).query)["code"][0]
    body = (await redeem(http, code, verifier)).json()
    assert body["patient"] == "p2"
    plans = (await http.get("/fhir/CarePlan", headers=bearer(body["access_token"]))).json()
    assert [e["resource"]["id"] for e in plans["entry"]] == ["c2"]


async def test_ehr_launch_carries_patient_and_encounter(server: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, http = server
    admin = app.state.admin_headers
    created = await http.post(
        "/smart/launch", json={"patient": "Patient/p1", "encounter": "Encounter/e1"}, headers=admin
    )
    assert created.status_code == 201, created.text
    launch = created.json()["launch"]
    verifier, challenge = pkce()
    code = await code_for(http, challenge, launch=launch, scope="launch openid fhirUser patient/*.rs")
    body = (await redeem(http, code, verifier)).json()
    assert body["patient"] == "p1" and body["encounter"] == "e1" and body["need_patient_banner"] is False
    assert "refresh_token" not in body  # no offline_access asked
    unknown = await http.post("/smart/launch", json={"patient": "Patient/nobody"}, headers=admin)
    assert unknown.status_code == 400
    assert (await http.post("/smart/launch", json={"patient": "Patient/p1"})).status_code == 401


async def test_standalone_launch_with_an_encounter_picker(server: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, http = server
    async with app.state.auth.db.write() as conn:
        await add_client(conn, new_client("ward", "public", "launch/patient launch/encounter patient/*.rs", [REDIRECT]))
    verifier, challenge = pkce()
    scope = "launch/patient launch/encounter patient/*.rs"
    login = await http.get(authorize_url(challenge, client_id="ward", scope=scope))
    page = (await sign_in(http, login.text, "drosei")).text
    radio = labelled(page, "Peter James Chalmers")
    value = re.search(rf'id="{radio}" name="patient" value="([^"]+)"', page)
    assert value is not None
    page = (await http.post("/smart/authorize/patient", data={"ticket": hidden(page, "ticket"),
                                                             "patient": value.group(1)})).text  # fmt: skip
    assert "Choose an encounter" in page and labelled(page, "IMP (in-progress)")
    forged = await http.post("/smart/authorize/encounter", data={"ticket": hidden(page, "ticket"), "encounter": "e9"})
    assert forged.status_code == 400  # not one of the patient's encounters
    page = (await http.post("/smart/authorize/encounter", data={"ticket": hidden(page, "ticket"),
                                                               "encounter": "e1"})).text  # fmt: skip
    allowed = await http.post("/smart/authorize/consent", data={"ticket": hidden(page, "ticket"), "decision": "allow"})
    code = parse_qs(urlsplit(allowed.headers["location"]).query)["code"][0]
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
            "code_verifier": verifier, "client_id": "ward"}  # fmt: skip
    body = (await http.post("/smart/token", data=data)).json()
    assert body["patient"] == "p1" and body["encounter"] == "e1"


async def test_unknown_client_or_redirect_uri_get_an_error_page_never_a_redirect(
    server: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, http = server
    _, challenge = pkce()
    for url in (
        authorize_url(challenge, client_id="nobody"),
        authorize_url(challenge, redirect_uri="http://evil.example/cb"),
        authorize_url(challenge, redirect_uri=REDIRECT + "/"),
        authorize_url(challenge, redirect_uri=""),
    ):
        response = await http.get(url)
        assert response.status_code == 400 and "location" not in response.headers, url
        assert response.headers["content-type"].startswith("text/html")
        assert "evil.example" not in response.text


@pytest.mark.parametrize(
    "overrides",
    [
        {"code_challenge_method": "plain"},
        {"code_challenge_method": ""},
        {"code_challenge": ""},
        {"aud": "http://elsewhere.example/fhir"},
        {"response_type": "token"},
        {"launch": "not-a-launch"},
    ],
)
async def test_other_bad_requests_go_back_with_an_error_and_no_code(
    server: tuple[FastAPI, httpx.AsyncClient], overrides: dict[str, str]
) -> None:
    _, http = server
    _, challenge = pkce()
    response = await http.get(authorize_url(challenge, **overrides))
    assert response.status_code == 302
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert response.headers["location"].startswith(REDIRECT + "?")
    assert query["error"][0] in ("invalid_request", "unsupported_response_type") and query["state"] == ["st-123"]
    assert "code" not in query


async def test_the_authorization_request_may_be_posted(server: tuple[FastAPI, httpx.AsyncClient]) -> None:
    """SMART's authorize-post: the same parameters as a form body."""
    _, http = server
    _, challenge = pkce()
    fields = parse_qs(urlsplit(authorize_url(challenge)).query)
    response = await http.post("/smart/authorize", data={name: values[0] for name, values in fields.items()})
    assert response.status_code == 200 and labelled(response.text, "Username") == "username"


async def test_deny_returns_access_denied(server: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, http = server
    _, challenge = pkce()
    login = await http.get(authorize_url(challenge))
    page = (await sign_in(http, login.text, "maria")).text
    assert ">Allow</button>" in page and ">Deny</button>" in page
    denied = await http.post("/smart/authorize/consent", data={"ticket": hidden(page, "ticket"), "decision": "deny"})
    query = parse_qs(urlsplit(denied.headers["location"]).query)
    assert query == {"error": ["access_denied"], "state": ["st-123"]}


async def test_a_code_is_single_use_and_its_reuse_revokes_its_tokens(
    server: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, http = server
    verifier, challenge = pkce()
    code = await code_for(http, challenge)
    first = (await redeem(http, code, verifier)).json()
    assert (await http.get("/fhir/CarePlan/c1", headers=bearer(first["access_token"]))).status_code == 200
    again = await redeem(http, code, verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert (await http.get("/fhir/CarePlan/c1", headers=bearer(first["access_token"]))).status_code == 401
    refreshed = await http.post(
        "/smart/token",
        data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"], "client_id": "app"},
    )
    assert refreshed.status_code == 200  # a new access token from a revoked grant...
    revoked = bearer(refreshed.json()["access_token"])
    assert (await http.get("/fhir/CarePlan/c1", headers=revoked)).status_code == 401  # ...is revoked as well


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"code_verifier": "x" * 43}, "code_verifier"),
        ({"code_verifier": ""}, "code_verifier"),
        ({"redirect_uri": "http://app.example/other"}, "redirect_uri"),
        ({"client_id": "other"}, "another client"),
    ],
)
async def test_a_code_needs_its_verifier_redirect_uri_and_client(
    server: tuple[FastAPI, httpx.AsyncClient], change: dict[str, str], error: str
) -> None:
    _, http = server
    verifier, challenge = pkce()
    code = await code_for(http, challenge)
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
            "code_verifier": verifier, "client_id": "app", **change}  # fmt: skip
    response = await http.post("/smart/token", data={k: v for k, v in data.items() if v})
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"
    assert error in response.json()["error_description"]


async def test_refresh_tokens_rotate_and_never_widen(server: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, http = server
    verifier, challenge = pkce()
    first = (await redeem(http, await code_for(http, challenge), verifier)).json()

    async def refresh(token: str, client_id: str = "app", scope: str | None = None) -> httpx.Response:
        data = {"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id}
        if scope is not None:
            data["scope"] = scope
        return await http.post("/smart/token", data=data)

    wider = await refresh(first["refresh_token"], scope=SCOPE + " patient/*.cruds")
    assert wider.status_code == 400 and wider.json()["error"] == "invalid_scope"
    stolen = await refresh(first["refresh_token"], client_id="other")
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"
    narrower = await refresh(first["refresh_token"], scope="patient/CarePlan.rs offline_access")
    body = narrower.json()
    assert narrower.status_code == 200 and body["scope"] == "patient/CarePlan.rs offline_access"
    assert body["patient"] == "p1" and body["refresh_token"] != first["refresh_token"]
    wide_again = await refresh(body["refresh_token"])  # the new refresh token keeps the grant's scope
    assert wide_again.status_code == 200 and wide_again.json()["scope"] == SCOPE
    reused = await refresh(first["refresh_token"])
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    assert (await refresh(wide_again.json()["refresh_token"])).status_code == 400  # reuse ended the grant


async def test_a_form_without_the_csrf_cookie_is_refused(server: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, http = server
    _, challenge = pkce()
    login = await http.get(authorize_url(challenge))
    assert "smart_csrf" in login.headers["set-cookie"] and "HttpOnly" in login.headers["set-cookie"]
    assert "samesite=lax" in login.headers["set-cookie"].lower()
    form = {"ticket": hidden(login.text, "ticket"), "username": "drosei", "password": PASSWORD}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as elsewhere:
        response = await elsewhere.post("/smart/authorize/login", data=form)
    assert response.status_code == 400 and "not sent from this server" in response.text
    forged = await http.post("/smart/authorize/login", data={**form, "ticket": form["ticket"][:-3] + "abc"})
    assert forged.status_code == 400


async def test_sign_in_failures_are_limited(server: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, http = server
    _, challenge = pkce()
    page = (await http.get(authorize_url(challenge))).text
    for _ in range(5):
        wrong = await sign_in(http, page, "drosei", "not the password")
        assert wrong.status_code == 401 and "not right" in wrong.text and labelled(wrong.text, "Username")
        page = wrong.text
    limited = await sign_in(http, page, "drosei")
    assert limited.status_code == 429 and "Too many" in limited.text


async def test_sign_in_failures_are_limited_per_address_across_usernames(
    server: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, http = server
    _, challenge = pkce()
    page = (await http.get(authorize_url(challenge))).text
    for number in range(5):  # five different usernames guessed from one address
        page = (await sign_in(http, page, f"guess{number}", "not the password")).text
    limited = await sign_in(http, page, "maria")
    assert limited.status_code == 429


async def test_the_csrf_cookie_is_secure_behind_https(database_url: str) -> None:
    settings = Settings(database_url=database_url, base_url="https://fhir.example/fhir", log_level="warning")
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        async with application.state.auth.db.write() as conn:
            await add_client(conn, new_client("app", "public", SCOPE, [REDIRECT]))
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="https://fhir.example") as http:
            _, challenge = pkce()
            login = await http.get(authorize_url(challenge, aud="https://fhir.example/fhir"))
    cookie = login.headers["set-cookie"]
    assert login.status_code == 200 and "Secure" in cookie and "HttpOnly" in cookie


async def test_state_comes_back_exactly_and_is_never_rendered(server: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, http = server
    verifier, challenge = pkce()
    state = '"><script>alert(1)</script>&x=1'
    login = await http.get(authorize_url(challenge, state=state))
    assert "<script>" not in login.text and state not in login.text
    code = await code_for(http, challenge, state=state)
    assert (await redeem(http, code, verifier)).status_code == 200


def test_discovery_lists_the_code_flow(settings: Settings) -> None:
    from app.api.smart_routes import smart_configuration_document

    document: dict[str, Any] = smart_configuration_document(settings)
    assert document["authorization_endpoint"] == "http://testserver/smart/authorize"
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert {"authorization_code", "client_credentials", "refresh_token"} <= set(document["grant_types_supported"])
    assert {"launch-ehr", "launch-standalone", "client-public", "context-standalone-patient",
            "context-standalone-encounter", "authorize-post",
            "sso-openid-connect", "permission-offline", "permission-v2"} <= set(document["capabilities"])  # fmt: skip
