"""Signing keys and access tokens, on both backends: what one process signs, every process verifies.

The keys live in ``smart_signing_keys`` and revocations in
``smart_revocations`` so that any number of server processes agree without
shared memory (app.smart.keys, app.smart.tokens). Each test plays the part
of separate processes by using separate ``TokenVerifier`` objects that see
only the database: a key is created once, a token verifies with the claims
it was issued with and is refused for any other server, issuer, time or
byte; a rotated key keeps verifying its tokens while new tokens get the new
key; and a revocation written by one process is refused by another after
its next poll.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from sqlalchemy import func, select

from app.smart.keys import SigningKeys, current_kids, ensure_signing_key, load_keys, rotate_keys
from app.smart.tables import revocations, signing_keys
from app.smart.tokens import (
    AccessClaims,
    InvalidToken,
    TokenVerifier,
    issue_access_token,
    revoke,
    verify_access_token,
)
from app.storage.database import Database

ISSUER = "http://testserver/smart"
AUDIENCE = "http://testserver/fhir"
LIFETIME = 3600


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database.from_url(database_url)
    yield database
    await database.dispose()


@pytest.fixture
async def keys(db: Database) -> SigningKeys:
    async with db.write() as conn:
        await ensure_signing_key(conn)
    async with db.read() as conn:
        return await load_keys(conn, timedelta(seconds=LIFETIME))


def header(token: str) -> dict[str, Any]:
    first = token.split(".")[0]
    return dict(json.loads(base64.urlsafe_b64decode(first + "=" * (-len(first) % 4))))


def payload(token: str) -> dict[str, Any]:
    second = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(second + "=" * (-len(second) % 4))))


def encode(part: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()


def issue(keys: SigningKeys, **extra: Any) -> tuple[str, AccessClaims]:
    values: dict[str, Any] = {"scope": "launch/patient patient/CarePlan.rs", "lifetime": LIFETIME, **extra}
    return issue_access_token(keys, ISSUER, AUDIENCE, "app", **values)


async def stored_keys(db: Database) -> list[tuple[str, datetime | None]]:
    async with db.read() as conn:
        rows = await conn.execute(select(signing_keys.c.kid, signing_keys.c.retired).order_by(signing_keys.c.created))
        return [(row.kid, row.retired) for row in rows]


async def verifier_of(db: Database, lifetime: int = LIFETIME) -> TokenVerifier:
    """A verifier as a fresh server process has it after its first poll."""
    verifier = TokenVerifier(ISSUER, AUDIENCE, lifetime)
    await verifier.refresh(db)
    return verifier


async def test_ensure_signing_key_adds_one_active_key_once(db: Database) -> None:
    assert await stored_keys(db) == []
    async with db.read() as conn:
        with pytest.raises(LookupError):
            await load_keys(conn, timedelta(seconds=LIFETIME))
    for _ in range(3):
        async with db.write() as conn:
            await ensure_signing_key(conn)
    stored = await stored_keys(db)
    assert len(stored) == 1 and stored[0][1] is None
    kid = stored[0][0]
    async with db.read() as conn:
        assert await current_kids(conn, timedelta(seconds=LIFETIME)) == frozenset({kid})
        loaded = await load_keys(conn, timedelta(seconds=LIFETIME))
    assert loaded.signer.kid == kid and loaded.kids == frozenset({kid})
    published = loaded.jwks()["keys"]
    assert [key["kid"] for key in published] == [kid]
    assert published[0]["kty"] == "RSA" and published[0]["alg"] == "RS256" and published[0]["use"] == "sig"
    assert "d" not in published[0] and "p" not in published[0]  # the public part only


async def test_a_token_verifies_and_yields_its_claims(keys: SigningKeys) -> None:
    token, issued = issue(keys, patient="p1", encounter="e1", fhir_user="Practitioner/dr")
    assert header(token) == {"alg": "RS256", "kid": keys.signer.kid, "typ": "JWT"}
    claims = verify_access_token(token, keys, ISSUER, AUDIENCE, time.time())
    assert claims == issued
    assert (claims.client_id, claims.scope, claims.patient) == ("app", "launch/patient patient/CarePlan.rs", "p1")
    assert (claims.encounter, claims.fhir_user) == ("e1", "Practitioner/dr")
    assert claims.grant == claims.jti  # a token issued outside a grant is its own grant
    assert claims.expires - claims.issued == LIFETIME
    assert payload(token)["sub"] == "Practitioner/dr"


async def test_a_token_without_launch_context_has_none(keys: SigningKeys) -> None:
    token, _ = issue(keys, scope="system/*.rs", grant="g1")
    claims = verify_access_token(token, keys, ISSUER, AUDIENCE, time.time())
    assert (claims.patient, claims.encounter, claims.fhir_user, claims.grant) == (None, None, None, "g1")
    assert payload(token)["sub"] == "app"


async def test_a_token_for_another_server_or_issuer_is_refused(keys: SigningKeys) -> None:
    token, _ = issue(keys)
    with pytest.raises(InvalidToken, match="meant for another server"):
        verify_access_token(token, keys, ISSUER, "http://other.example/fhir", time.time())
    with pytest.raises(InvalidToken, match="issued by another server"):
        verify_access_token(token, keys, "http://other.example/smart", AUDIENCE, time.time())
    other_audience, _ = issue_access_token(keys, ISSUER, "http://other.example/fhir", "app", "openid", LIFETIME)
    with pytest.raises(InvalidToken, match="meant for another server"):
        verify_access_token(other_audience, keys, ISSUER, AUDIENCE, time.time())


async def test_an_expired_token_is_refused(keys: SigningKeys) -> None:
    token, claims = issue(keys, lifetime=60)
    assert verify_access_token(token, keys, ISSUER, AUDIENCE, claims.expires - 1) == claims
    with pytest.raises(InvalidToken, match="expired"):
        verify_access_token(token, keys, ISSUER, AUDIENCE, claims.expires)
    past, _ = issue(keys, lifetime=-1)
    with pytest.raises(InvalidToken, match="expired"):
        verify_access_token(past, keys, ISSUER, AUDIENCE, time.time())


async def test_a_tampered_or_foreign_token_is_refused(keys: SigningKeys) -> None:
    token, _ = issue(keys, patient="p1")
    head, body, signature = token.split(".")
    widened = encode({**payload(token), "patient": "p2", "scope": "user/*.cruds"})
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    foreign_key = RSAKey.generate_key(2048, parameters={"kid": str(keys.signer.kid)}, private=True)
    forged = jwt.encode(header(token), payload(token), foreign_key, algorithms=["RS256"])
    unsigned = f"{encode({'alg': 'none', 'typ': 'JWT'})}.{body}."
    # the classic confusion: HS256 keyed with the server's public key, which anyone can fetch
    confused = f"{encode({'alg': 'HS256', 'kid': keys.signer.kid, 'typ': 'JWT'})}.{body}"
    mac = hmac.new(keys.signer.as_pem(private=False), confused.encode(), hashlib.sha256).digest()
    symmetric = f"{confused}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    for bad in (f"{head}.{widened}.{signature}", f"{head}.{body}.{flipped}", forged, unsigned, symmetric, "", "a.b.c"):
        with pytest.raises(InvalidToken, match="malformed or its signature does not verify"):
            verify_access_token(bad, keys, ISSUER, AUDIENCE, time.time())


async def test_a_verifier_refuses_tokens_until_it_has_polled_the_keys(db: Database, keys: SigningKeys) -> None:
    token, issued = issue(keys)
    verifier = TokenVerifier(ISSUER, AUDIENCE, LIFETIME)
    with pytest.raises(InvalidToken, match="not loaded"):
        verifier.verify(token)
    await verifier.refresh(db)
    assert verifier.verify(token) == issued
    assert verifier.verify(token) == issued  # from the cache, same claims


async def test_after_rotation_old_tokens_verify_and_new_tokens_use_the_new_key(db: Database, keys: SigningKeys) -> None:
    old_kid = str(keys.signer.kid)
    before, before_claims = issue(keys, patient="p1")
    running = await verifier_of(db)  # a process that polled before the rotation and never saw the token
    async with db.write() as conn:
        new_kid = await rotate_keys(conn)
    assert new_kid != old_kid
    stored = dict(await stored_keys(db))
    assert stored[new_kid] is None and stored[old_kid] is not None  # the old key is retired, not deleted

    await running.refresh(db)
    started = await verifier_of(db)  # a process started after the rotation
    for verifier in (running, started):
        assert verifier.keys is not None
        assert verifier.keys.kids == frozenset({old_kid, new_kid})
        assert verifier.keys.signer.kid == new_kid
        assert verifier.verify(before) == before_claims  # the retired key still verifies
        assert {key["kid"] for key in verifier.keys.jwks()["keys"]} == {old_kid, new_kid}

    assert started.keys is not None
    after, after_claims = issue(started.keys)
    assert header(after)["kid"] == new_kid
    assert running.verify(after) == after_claims
    # the key retired in this rotation no longer signs: nothing issued now carries it
    assert header(issue(started.keys)[0])["kid"] != old_kid


async def test_a_key_retired_longer_than_a_token_lives_no_longer_verifies(db: Database, keys: SigningKeys) -> None:
    token, _ = issue(keys)
    async with db.write() as conn:
        new_kid = await rotate_keys(conn, now=datetime.now(UTC) - timedelta(seconds=LIFETIME + 60))
    verifier = await verifier_of(db)
    assert verifier.keys is not None and verifier.keys.kids == frozenset({new_kid})
    with pytest.raises(InvalidToken, match="signature does not verify"):
        verifier.verify(token)


async def test_a_revocation_recorded_by_one_process_is_refused_by_others_after_their_poll(
    db: Database, keys: SigningKeys
) -> None:
    token, claims = issue(keys)
    other, other_claims = issue(keys)
    running = await verifier_of(db)
    assert running.verify(token) == claims  # verified and cached before the revocation

    await revoke(db, claims.jti, datetime.fromtimestamp(claims.expires, UTC))
    await revoke(db, claims.jti, datetime.fromtimestamp(claims.expires, UTC))  # twice is harmless
    assert running.verify(token) == claims  # not polled yet
    await running.refresh(db)
    with pytest.raises(InvalidToken, match="revoked"):
        running.verify(token)
    assert running.verify(other) == other_claims  # only that token

    started = await verifier_of(db)  # a process started after the revocation sees it on its first poll
    with pytest.raises(InvalidToken, match="revoked"):
        started.verify(token)
    assert started.verify(other) == other_claims


async def test_revoking_a_grant_revokes_every_token_issued_from_it(db: Database, keys: SigningKeys) -> None:
    first, _ = issue(keys, grant="grant-1")
    second, _ = issue(keys, grant="grant-1")
    unrelated, unrelated_claims = issue(keys, grant="grant-2")
    verifier = await verifier_of(db)
    verifier.verify(first)
    await revoke(db, "grant-1", datetime.now(UTC) + timedelta(seconds=LIFETIME))
    await verifier.refresh(db)
    for token in (first, second):
        with pytest.raises(InvalidToken, match="revoked"):
            verifier.verify(token)
    assert verifier.verify(unrelated) == unrelated_claims


async def test_revoke_forgets_revocations_of_tokens_dead_for_a_day(db: Database) -> None:
    await revoke(db, "long-dead", datetime.now(UTC) - timedelta(days=2))
    await revoke(db, "live", datetime.now(UTC) + timedelta(hours=1))
    async with db.read() as conn:
        remaining = {row.token_id for row in await conn.execute(select(revocations.c.token_id))}
        count = (await conn.execute(select(func.count()).select_from(revocations))).scalar_one()
    assert remaining == {"live"} and count == 1
