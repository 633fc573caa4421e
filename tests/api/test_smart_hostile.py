"""Hostile input to the authorization server: every malformed request gets a clear refusal, never a 500.

Token, revocation and introspection endpoints answer RFC 6749 section 5.2 JSON; the pages answer an
HTML error page; the FHIR API and the launch endpoint answer an OperationOutcome with 401.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from app.config import Settings
from app.main import create_app
from tests.conftest import TEST_BASE_URL

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
ASSERTION = "grant_type=client_credentials&client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@pytest.fixture
async def http(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    application = create_app(Settings(database_url=database_url, base_url=TEST_BASE_URL, log_level="warning"))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "says"),
    [
        ("POST", "/smart/token", b"\xff\xfe\x00", FORM, 400, "invalid_request"),
        ("POST", "/smart/token", b'{"grant_type": "client_credentials"}', {"Content-Type": "application/json"},
         400, "invalid_request"),
        ("POST", "/smart/token", b"grant_type=client_credentials&grant_type=password", FORM, 400, "more than once"),
        ("POST", "/smart/token", f"{ASSERTION}&client_assertion=a.b.c".encode(), FORM, 401, "invalid_client"),
        ("POST", "/smart/token", b"grant_type=authorization_code&code=x&client_id=nobody", FORM, 401, "unknown client"),
        ("POST", "/smart/token", b"grant_type=client_credentials", {**FORM, "Authorization": "Basic !!!"}, 401,
         "invalid_client"),
        ("POST", "/smart/token", b"x" * 70_000, FORM, 400, "too large"),
        ("GET", "/smart/authorize", b"", {}, 400, "not registered"),
        ("GET", "/smart/authorize?client_id=%00&redirect_uri=%ff", b"", {}, 400, "not registered"),
        ("POST", "/smart/authorize/login", b"ticket=abc&username=x&password=y", FORM, 400, "not valid"),
        ("POST", "/smart/authorize/consent", b"\xff", FORM, 400, "not valid"),
        ("POST", "/smart/launch", b"not json", {"Authorization": "Bearer x"}, 401, "login"),
        ("POST", "/smart/authorize/patient", b"ticket=x&patient=%00", FORM, 400, "not valid"),
        ("POST", "/smart/revoke", b"token=x", FORM, 401, "invalid_client"),
        ("POST", "/smart/introspect", b"token=x", {**FORM, "Authorization": "Basic eDp5"}, 401, "invalid_client"),
        ("GET", "/fhir/CarePlan", b"", {"Authorization": "Bearer eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0."}, 401, "login"),
        ("GET", "/fhir/CarePlan", b"", {"Authorization": "Bearer " + "a" * 10_000}, 401, "login"),
    ],
)  # fmt: skip
async def test_malformed_requests_are_refused_clearly(
    http: httpx.AsyncClient, method: str, path: str, body: bytes, headers: dict[str, str], status: int, says: str
) -> None:
    response = await http.request(method, path, content=body, headers=headers)
    assert response.status_code == status, response.text
    assert says in response.text
    assert "Traceback" not in response.text and "sqlalchemy" not in response.text.lower()


async def test_a_launch_for_an_impossible_id_is_refused(database_url: str) -> None:
    """The launch endpoint looks up the patient it is given: an id with a NUL is not a FHIR id."""
    settings = Settings(database_url=database_url, base_url=TEST_BASE_URL, log_level="warning", auth="off")
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            response = await client.post("/smart/launch", json={"patient": "Patient/a\u0000b"})
    assert response.status_code == 400 and "not known" in response.text


@pytest.mark.parametrize(
    "fields",
    [
        {"client_id": "a\x00b"},
        {"scope": "system/*.rs launch\x00"},
        {"redirect_uris": ["http://app.example/cb\x00"]},
    ],
)
def test_registration_refuses_text_the_database_cannot_hold(fields: dict[str, object]) -> None:
    from app.smart.clients import RegistrationError, new_client

    values: dict[str, object] = {"client_id": "app", "client_type": "public", "scope": "system/*.rs", **fields}
    with pytest.raises(RegistrationError):
        new_client(**values)  # type: ignore[arg-type]
