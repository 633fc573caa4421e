"""The token endpoint's grants and client authentication (RFC 6749, SMART App Launch 2.x).

Client authentication (RFC 6749 section 2.3, hl7.org/fhir/smart-app-launch/client-authentication):

- ``client_secret_basic``: HTTP Basic with the URL-encoded client id and secret, checked against
  the argon2 hash (``app.smart.clients``);
- ``private_key_jwt`` (client-confidential-asymmetric.html): ``client_assertion_type`` is
  ``urn:ietf:params:oauth:client-assertion-type:jwt-bearer`` and ``client_assertion`` a JWS signed
  RS384 or ES384 with a key of the client's JWKS (header ``kid``), with ``iss`` = ``sub`` = the
  client id, ``aud`` = this token endpoint, ``exp`` in the future and at most five minutes ahead,
  and a ``jti`` never used before (kept in ``smart_used_assertions`` until it expires);
- public clients send ``client_id`` alone.

Any problem with the client's credentials is ``invalid_client`` (401); a grant it may not use or a
scope it was not registered for is ``unauthorized_client`` or ``invalid_scope`` (400). Signature
checks are joserfc's; this module decides only what SMART and OAuth require of the claims.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import orjson
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import extract_compact
from sqlalchemy import delete, insert
from sqlalchemy.exc import IntegrityError

from app.smart.clients import Client, find_client, storable, verify_secret
from app.smart.scopes import covered_by
from app.smart.tables import used_assertions
from app.storage.database import Database

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGORITHMS = ["RS384", "ES384"]
MAX_ASSERTION_SECONDS = 300  # exp at most five minutes ahead (client-confidential-asymmetric.html)
CLOCK_SKEW_SECONDS = 30

JwksFetcher = Callable[[str, bool], Awaitable[dict[str, Any]]]
"""Fetch (url, refresh) -> a client's JWKS from its registered URL; ``refresh`` skips any cache."""


class OAuthError(Exception):
    """An error response of the token, revocation or introspection endpoint (RFC 6749 section 5.2)."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


def invalid_client(description: str) -> OAuthError:
    return OAuthError("invalid_client", description, 401)


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    """How the client identified itself on this request."""

    client_id: str
    secret: str | None = None
    assertion: str | None = None


def credentials_of(form: Mapping[str, str], authorization: str | None) -> ClientCredentials:
    """The client's credentials from HTTP Basic, a client assertion, or a bare ``client_id``."""
    if authorization and authorization[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise invalid_client("the Basic credentials are not base64 of 'client_id:secret'") from None
        client_id, colon, secret = decoded.partition(":")
        if not colon:
            raise invalid_client("the Basic credentials are not 'client_id:secret'")
        return ClientCredentials(unquote(client_id), secret=unquote(secret))
    assertion = form.get("client_assertion")
    if assertion is not None:
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise invalid_client(f"client_assertion_type must be {ASSERTION_TYPE}")
        issuer = _unverified_claims(assertion).get("iss")
        if not isinstance(issuer, str) or not issuer:
            raise invalid_client("the client assertion has no 'iss'")
        if form.get("client_id") not in (None, issuer):
            raise invalid_client("client_id differs from the assertion's issuer")
        return ClientCredentials(issuer, assertion=assertion)
    named = form.get("client_id")
    if not named:
        raise invalid_client("the client did not identify itself (HTTP Basic, client_assertion or client_id)")
    return ClientCredentials(named)


def _unverified_claims(assertion: str) -> dict[str, Any]:
    try:
        claims = orjson.loads(extract_compact(assertion.encode()).payload)
    except (JoseError, ValueError, orjson.JSONDecodeError):
        raise invalid_client("the client assertion is not a compact JWS") from None
    if not isinstance(claims, dict):
        raise invalid_client("the client assertion's payload is not a JSON object")
    return claims


async def authenticate_client(
    db: Database, credentials: ClientCredentials, token_endpoint: str, fetch_jwks: JwksFetcher
) -> Client:
    """The registered client, once its credentials are proved for its type. The argon2 check of a
    secret (tens of milliseconds of CPU, on purpose) runs in a worker thread."""
    async with db.read() as conn:
        client = await find_client(conn, credentials.client_id)
    if client is None:
        raise invalid_client("unknown client")
    if client.client_type == "confidential-symmetric":
        secret = credentials.secret
        if secret is None or not await asyncio.to_thread(verify_secret, client.secret_hash, secret):
            raise invalid_client("the client secret does not match")
    elif client.client_type == "confidential-asymmetric":
        if credentials.assertion is None:
            raise invalid_client("this client authenticates with private_key_jwt")
        await _check_assertion(db, client, credentials.assertion, token_endpoint, fetch_jwks)
    elif credentials.secret is not None or credentials.assertion is not None:
        raise invalid_client("a public client has no credentials")
    return client


async def _client_keys(client: Client, fetch_jwks: JwksFetcher, kid: Any, refresh: bool) -> KeySet:
    jwks = client.jwks
    if client.jwks_url is not None:
        try:
            jwks = await fetch_jwks(client.jwks_url, refresh)
        except Exception:  # any network or format failure of the client's JWKS URL
            raise invalid_client("the client's JWKS URL could not be fetched") from None
    if not jwks:
        raise invalid_client("the client has no keys")
    usable = [key for key in jwks.get("keys", []) if isinstance(key, dict) and key.get("kty") in ("RSA", "EC")]
    try:
        keys = KeySet.import_key_set({"keys": usable})
    except (JoseError, ValueError, TypeError):
        raise invalid_client("the client's JWKS holds no usable key") from None
    if not any(key.kid == kid for key in keys.keys):
        if client.jwks_url is not None and not refresh:
            return await _client_keys(client, fetch_jwks, kid, refresh=True)  # the client may have rotated
        raise invalid_client("no key of the client's JWKS has the assertion's kid")
    return keys


async def _check_assertion(
    db: Database, client: Client, assertion: str, token_endpoint: str, fetch_jwks: JwksFetcher
) -> None:
    try:
        header = extract_compact(assertion.encode()).headers()
    except (JoseError, ValueError):
        raise invalid_client("the client assertion is not a compact JWS") from None
    if header.get("alg") not in ASSERTION_ALGORITHMS:
        raise invalid_client(f"the client assertion must be signed with one of {', '.join(ASSERTION_ALGORITHMS)}")
    if not header.get("kid"):
        raise invalid_client("the client assertion's header has no kid")
    keys = await _client_keys(client, fetch_jwks, header["kid"], refresh=False)
    try:
        claims = jwt.decode(assertion, keys, algorithms=ASSERTION_ALGORITHMS).claims
    except (JoseError, ValueError):
        raise invalid_client("the client assertion's signature does not verify") from None
    now = time.time()
    if claims.get("iss") != client.client_id or claims.get("sub") != client.client_id:
        raise invalid_client("the client assertion's iss and sub must both be the client id")
    audience = claims.get("aud")
    if audience != token_endpoint and not (isinstance(audience, list) and token_endpoint in audience):
        raise invalid_client(f"the client assertion's aud must be the token endpoint {token_endpoint}")
    expires = claims.get("exp")
    if not isinstance(expires, int | float) or isinstance(expires, bool) or expires <= now - CLOCK_SKEW_SECONDS:
        raise invalid_client("the client assertion has expired or has no exp")
    if expires > now + MAX_ASSERTION_SECONDS + CLOCK_SKEW_SECONDS:
        raise invalid_client("the client assertion's exp is more than five minutes ahead")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not storable(jti):
        raise invalid_client("the client assertion has no jti")
    await _remember_jti(db, client.client_id, jti, datetime.fromtimestamp(float(expires), UTC))


async def _remember_jti(db: Database, client_id: str, jti: str, expires: datetime) -> None:
    """Record an assertion's jti until it expires; one recorded before is a replay."""
    try:
        async with db.write() as conn:
            await conn.execute(delete(used_assertions).where(used_assertions.c.expires < datetime.now(UTC)))
            await conn.execute(insert(used_assertions).values(client_id=client_id, jti=jti, expires=expires))
    except IntegrityError:
        raise invalid_client("the client assertion's jti was used before") from None


def granted_scope(requested: str | None, client: Client) -> str:
    """The requested scopes the client is registered for (SMART: requested ∩ registered); none left
    is ``invalid_scope``."""
    if not requested or not requested.strip():
        raise OAuthError("invalid_scope", "scope is required")
    kept = [scope for scope in dict.fromkeys(requested.split()) if covered_by(scope, client.scope)]
    if not kept:
        raise OAuthError("invalid_scope", "none of the requested scopes is registered for this client")
    return " ".join(kept)


def backend_scope(requested: str | None, client: Client) -> str:
    """Client credentials grant only ``system/`` scopes (hl7.org/fhir/smart-app-launch/backend-services.html)."""
    granted = granted_scope(requested, client)
    kept = [scope for scope in granted.split() if scope.startswith("system/")]
    if not kept:
        raise OAuthError("invalid_scope", "the client credentials grant gives system/ scopes only")
    return " ".join(kept)
