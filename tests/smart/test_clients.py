"""Registered clients and users of the authorization server: the registration rules and the stored rows.

SMART's client profiles (hl7.org/fhir/smart-app-launch/app-launch.html,
client-confidential-asymmetric.html) fix what each client type must and
must not have: a public app has no credential, a symmetric one exactly a
secret, an asymmetric one exactly one of a JWKS or a JWKS URL. A client
registered against those rules would authenticate in a way the token
endpoint does not expect, so each refusal is pinned here, along with the
secret hashing (never stored or shown in the clear) and the round trip
through the database on both backends, which every authorization reads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.smart.clients import (
    Client,
    RegistrationError,
    User,
    add_client,
    add_user,
    find_client,
    find_user,
    hash_secret,
    list_clients,
    list_users,
    new_client,
    new_user,
    remove_client,
    remove_user,
    verify_secret,
)
from app.storage.database import Database

SECRET = "correct horse battery"
JWKS = {"keys": [{"kty": "RSA", "kid": "k1", "n": "sXch", "e": "AQAB"}]}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"client_id": ""}, "client id must be 1 to 255 characters without spaces"),
        ({"client_id": "my app"}, "client id must be 1 to 255 characters without spaces"),
        ({"client_id": "a" * 256}, "client id must be 1 to 255 characters without spaces"),
        ({"client_type": "confidential"}, "client type must be one of public, confidential-symmetric"),
        ({"secret": SECRET}, "a secret is required for, and only allowed with, confidential-symmetric clients"),
        ({"client_type": "confidential-symmetric"}, "a secret is required for, and only allowed with"),
        ({"client_type": "confidential-symmetric", "secret": "1234567"}, "at least 8 characters"),
        ({"client_type": "confidential-asymmetric", "secret": SECRET, "jwks": JWKS}, "a secret is required for"),
        ({"client_type": "confidential-asymmetric"}, "exactly one of a JWKS or a JWKS URL is required"),
        (
            {"client_type": "confidential-asymmetric", "jwks": JWKS, "jwks_url": "https://app.example/jwks"},
            "exactly one of a JWKS or a JWKS URL is required",
        ),
        ({"jwks": JWKS}, "exactly one of a JWKS or a JWKS URL is required"),
        ({"jwks_url": "https://app.example/jwks"}, "exactly one of a JWKS or a JWKS URL is required"),
        (
            {"client_type": "confidential-symmetric", "secret": SECRET, "jwks_url": "https://app.example/jwks"},
            "exactly one of a JWKS or a JWKS URL is required",
        ),
        ({"client_type": "confidential-asymmetric", "jwks": {"keys": []}}, "non-empty 'keys' list"),
        ({"client_type": "confidential-asymmetric", "jwks": {"kty": "RSA"}}, "non-empty 'keys' list"),
        ({"client_type": "confidential-asymmetric", "jwks_url": "ftp://app.example/jwks"}, "must be an http(s) URL"),
        ({"redirect_uris": ["/callback"]}, "redirect URI '/callback' must be an absolute http(s) URL"),
        ({"redirect_uris": ["https://app.example/cb#x"]}, "must be an absolute http(s) URL without a fragment"),
        ({"redirect_uris": ["https://app.example/cb", "myapp://cb"]}, "redirect URI 'myapp://cb' must be"),
        ({"scope": ""}, "a client needs at least one scope"),
        ({"scope": "   "}, "a client needs at least one scope"),
        ({"scope": "openid patient/CarePlan.sr"}, "'patient/CarePlan.sr': permissions must be read, write, *"),
        ({"scope": "patient/carePlan.rs"}, "'patient/carePlan.rs' is not a SMART scope"),
    ],
)
def test_new_client_refuses_what_its_type_does_not_allow(arguments: dict[str, Any], message: str) -> None:
    values: dict[str, Any] = {
        "client_id": "app",
        "client_type": "public",
        "scope": "openid patient/CarePlan.rs",
        "redirect_uris": ["https://app.example/cb"],
        **arguments,
    }
    with pytest.raises(RegistrationError) as refused:
        new_client(**values)
    assert message in str(refused.value)


def test_new_client_accepts_each_type_with_its_credential() -> None:
    public = new_client("web", "public", "openid launch/patient patient/*.rs", ["https://app.example/cb"])
    assert public == Client("web", "public", ("openid", "launch/patient", "patient/*.rs"), ("https://app.example/cb",))
    symmetric = new_client("ehr", "confidential-symmetric", "system/*.rs", secret=SECRET)
    assert symmetric.secret_hash is not None and symmetric.jwks is None and symmetric.jwks_url is None
    with_jwks = new_client("svc", "confidential-asymmetric", "system/Task.cruds", jwks=JWKS)
    assert with_jwks.jwks == JWKS and with_jwks.secret_hash is None
    with_url = new_client("svc2", "confidential-asymmetric", "system/Task.cruds", jwks_url="https://svc.example/jwks")
    assert with_url.jwks_url == "https://svc.example/jwks" and with_url.jwks is None


def test_a_secret_is_stored_hashed_and_verified_against_its_hash() -> None:
    client = new_client("ehr", "confidential-symmetric", "system/*.rs", secret=SECRET)
    assert client.secret_hash is not None
    assert SECRET not in client.secret_hash
    assert client.secret_hash.startswith("$argon2id$")
    assert verify_secret(client.secret_hash, SECRET)
    assert not verify_secret(client.secret_hash, SECRET + "!")
    assert not verify_secret(client.secret_hash, "")
    assert not verify_secret(None, SECRET)
    assert not verify_secret("not a hash", SECRET)
    assert hash_secret(SECRET) != hash_secret(SECRET)  # salted: two hashes of one secret differ
    assert verify_secret(hash_secret(SECRET), SECRET)


def test_the_public_view_never_shows_the_secret() -> None:
    client = new_client("ehr", "confidential-symmetric", "system/*.rs openid", secret=SECRET)
    assert client.public_view() == {
        "client_id": "ehr",
        "type": "confidential-symmetric",
        "redirect_uris": [],
        "scope": "system/*.rs openid",
    }
    remote = new_client("svc", "confidential-asymmetric", "system/Task.rs", jwks_url="https://svc.example/jwks")
    assert remote.public_view()["jwks_url"] == "https://svc.example/jwks"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"username": ""}, "username must be 1 to 255 characters without spaces"),
        ({"username": "dr osei"}, "username must be 1 to 255 characters without spaces"),
        ({"username": "u" * 256}, "username must be 1 to 255 characters without spaces"),
        ({"password": "1234567"}, "a password must have at least 8 characters"),
        ({"fhir_user": "Organization/1"}, "fhir user must be Practitioner/ID, Patient/ID or RelatedPerson/ID"),
        ({"fhir_user": "Practitioner"}, "fhir user must be"),
        ({"fhir_user": "Practitioner/"}, "fhir user must be"),
        ({"fhir_user": "Practitioner/1/_history/2"}, "fhir user must be"),
        ({"fhir_user": "https://other.example/fhir/Practitioner/1"}, "fhir user must be"),
    ],
)
def test_new_user_refuses_bad_registrations(arguments: dict[str, Any], message: str) -> None:
    values = {"username": "osei", "password": SECRET, "fhir_user": "Practitioner/dr", **arguments}
    with pytest.raises(RegistrationError) as refused:
        new_user(**values)
    assert message in str(refused.value)


def test_new_user_hashes_the_password() -> None:
    for fhir_user in ("Practitioner/dr", "Patient/p1", "RelatedPerson/rp"):
        user = new_user("osei", SECRET, fhir_user)
        assert user.username == "osei" and user.fhir_user == fhir_user
        assert SECRET not in user.password_hash
        assert verify_secret(user.password_hash, SECRET) and not verify_secret(user.password_hash, "wrong password")


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database.from_url(database_url)
    yield database
    await database.dispose()


async def test_clients_round_trip_through_the_database(db: Database) -> None:
    web = new_client("web", "public", "openid patient/CarePlan.rs", ["https://app.example/cb", "http://localhost/cb"])
    ehr = new_client("ehr", "confidential-symmetric", "system/*.rs", secret=SECRET)
    svc = new_client("svc", "confidential-asymmetric", "system/Task.cruds", jwks=JWKS)
    async with db.write() as conn:
        for client in (web, ehr, svc):
            await add_client(conn, client)
    async with db.read() as conn:
        assert await find_client(conn, "web") == web
        found = await find_client(conn, "ehr")
        assert found == ehr and found is not None and verify_secret(found.secret_hash, SECRET)
        assert await find_client(conn, "svc") == svc
        assert await find_client(conn, "nobody") is None
        assert await list_clients(conn) == [ehr, svc, web]  # by client id
    async with db.write() as conn:
        assert await remove_client(conn, "ehr") is True
        assert await remove_client(conn, "ehr") is False
    async with db.read() as conn:
        assert await find_client(conn, "ehr") is None
        assert [client.client_id for client in await list_clients(conn)] == ["svc", "web"]


async def test_a_duplicate_client_id_is_refused_and_the_first_kept(db: Database) -> None:
    async with db.write() as conn:
        await add_client(conn, new_client("web", "public", "patient/CarePlan.rs", ["https://a.example/cb"]))
    with pytest.raises(RegistrationError) as refused:
        async with db.write() as conn:
            await add_client(conn, new_client("web", "confidential-symmetric", "system/*.cruds", secret=SECRET))
    assert str(refused.value) == "a client 'web' is already registered"
    async with db.read() as conn:
        kept = await find_client(conn, "web")
    assert kept is not None and kept.client_type == "public" and kept.scope == ("patient/CarePlan.rs",)
    async with db.write() as conn:  # the database is usable after the refusal
        await add_client(conn, new_client("other", "public", "openid"))
    async with db.read() as conn:
        assert [client.client_id for client in await list_clients(conn)] == ["other", "web"]


async def test_users_round_trip_through_the_database(db: Database) -> None:
    osei = new_user("osei", SECRET, "Practitioner/dr")
    rivera = new_user("rivera", "another password", "Patient/p1")
    async with db.write() as conn:
        await add_user(conn, rivera)
        await add_user(conn, osei)
    async with db.read() as conn:
        found = await find_user(conn, "osei")
        assert found == osei and found is not None and verify_secret(found.password_hash, SECRET)
        assert await find_user(conn, "nobody") is None
        # listing never reads the password hashes
        assert await list_users(conn) == [User("osei", "Practitioner/dr"), User("rivera", "Patient/p1")]
    with pytest.raises(RegistrationError) as refused:
        async with db.write() as conn:
            await add_user(conn, new_user("osei", "yet another one", "Practitioner/other"))
    assert str(refused.value) == "a user 'osei' is already registered"
    async with db.write() as conn:
        assert await remove_user(conn, "osei") is True
        assert await remove_user(conn, "osei") is False
    async with db.read() as conn:
        assert await find_user(conn, "osei") is None
        assert await list_users(conn) == [User("rivera", "Patient/p1")]
