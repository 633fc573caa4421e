"""Access tokens: signed JWTs any server process can verify, with a per-process cache and revocations.

An access token is a JWT signed with the server's key (``app.smart.keys``) carrying what the FHIR
API needs to decide every request without a database read: the client, the granted scope, the
launch context (``patient``, ``encounter``), the user (``fhirUser``), its own id (``jti``) and the
id of the grant it came from (``grant``: revoking a grant, as a reused authorization code does,
revokes every token issued from it). Verifying a signature costs about 50 us, so a verified token
is cached by the SHA-256 of its text until it expires.

Revocation (RFC 7009) writes the token's ``jti`` or grant id to ``smart_revocations``; every
process polls that table every ``FHIR_AUTH_REVOCATION_POLL_SECONDS`` (default 2 s), so a revoked
token is refused by all processes within a few seconds.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError

from app.smart.keys import SIGNING_ALGORITHM, SigningKeys, current_kids, load_keys
from app.smart.tables import revocations
from app.storage.database import Database

CACHE_LIMIT = 10_000


class InvalidToken(Exception):
    """A bearer token that is malformed, wrongly signed, expired, revoked or not meant for this server."""


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """What a verified access token says."""

    client_id: str
    scope: str
    jti: str
    grant: str
    expires: int  # seconds since the epoch
    issued: int
    patient: str | None = None
    encounter: str | None = None
    fhir_user: str | None = None  # a relative reference: Practitioner/123

    def to_claims(self, issuer: str, audience: str) -> dict[str, Any]:
        claims: dict[str, Any] = {
            "use": "access",  # never mistaken for the server's other signed tokens (tickets, launches)
            "iss": issuer,
            "aud": audience,
            "sub": self.fhir_user or self.client_id,
            "client_id": self.client_id,
            "scope": self.scope,
            "jti": self.jti,
            "grant": self.grant,
            "iat": self.issued,
            "exp": self.expires,
        }
        for name, value in (("patient", self.patient), ("encounter", self.encounter), ("fhirUser", self.fhir_user)):
            if value is not None:
                claims[name] = value
        return claims


def new_token_id() -> str:
    return secrets.token_urlsafe(18)


def token_hash(token: str) -> str:
    """How a token is named in caches and logs: never the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()


def sign(claims: dict[str, Any], keys: SigningKeys) -> str:
    header = {"alg": SIGNING_ALGORITHM, "kid": keys.signer.kid, "typ": "JWT"}
    return jwt.encode(header, claims, keys.signer, algorithms=[SIGNING_ALGORITHM])


def issue_access_token(
    keys: SigningKeys,
    issuer: str,
    audience: str,
    client_id: str,
    scope: str,
    lifetime: int,
    grant: str | None = None,
    patient: str | None = None,
    encounter: str | None = None,
    fhir_user: str | None = None,
) -> tuple[str, AccessClaims]:
    now = int(time.time())
    jti = new_token_id()
    claims = AccessClaims(client_id, scope, jti, grant or jti, now + lifetime, now, patient, encounter, fhir_user)
    return sign(claims.to_claims(issuer, audience), keys), claims


def issue_id_token(
    keys: SigningKeys,
    issuer: str,
    client_id: str,
    subject: str,
    fhir_user_url: str,
    lifetime: int,
    nonce: str | None = None,
) -> str:
    """The OpenID Connect id_token of ``openid fhirUser`` (app-launch.html#scopes-for-requesting-identity-data):
    RS256, ``aud`` the client, ``fhirUser`` the absolute URL of the user's FHIR resource."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": client_id,
        "iat": now,
        "exp": now + lifetime,
        "auth_time": now,
        "fhirUser": fhir_user_url,
    }
    if nonce is not None:
        claims["nonce"] = nonce
    return sign(claims, keys)


def _string(claims: dict[str, Any], name: str, required: bool = True) -> str | None:
    value = claims.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidToken(f"the token's '{name}' claim is missing or not a string")
    return value


def verify_access_token(token: str, keys: SigningKeys, issuer: str, audience: str, now: float) -> AccessClaims:
    """The claims of ``token`` if this server signed it for ``audience`` and it has not expired."""
    try:
        decoded = jwt.decode(token, keys.verifiers, algorithms=[SIGNING_ALGORITHM])
    except (JoseError, ValueError) as error:
        raise InvalidToken("the token is malformed or its signature does not verify") from error
    claims = decoded.claims
    if claims.get("use") != "access":
        raise InvalidToken("the token is not an access token")
    if claims.get("iss") != issuer:
        raise InvalidToken("the token was issued by another server")
    aud = claims.get("aud")
    if aud != audience and not (isinstance(aud, list) and audience in aud):
        raise InvalidToken("the token is meant for another server")
    expires, issued = claims.get("exp"), claims.get("iat")
    if not isinstance(expires, int) or not isinstance(issued, int):
        raise InvalidToken("the token has no valid exp or iat")
    if expires <= now:
        raise InvalidToken("the token has expired")
    return AccessClaims(
        client_id=str(_string(claims, "client_id")),
        scope=str(_string(claims, "scope")),
        jti=str(_string(claims, "jti")),
        grant=str(_string(claims, "grant")),
        expires=expires,
        issued=issued,
        patient=_string(claims, "patient", required=False),
        encounter=_string(claims, "encounter", required=False),
        fhir_user=_string(claims, "fhirUser", required=False),
    )


class TokenVerifier:
    """Verifies access tokens in one server process: the keys and revocations it last polled, and the
    tokens it already verified (by hash, until they expire)."""

    def __init__(self, issuer: str, audience: str, token_lifetime: int) -> None:
        self.issuer = issuer
        self.audience = audience
        self.token_lifetime = timedelta(seconds=token_lifetime)
        self.keys: SigningKeys | None = None
        self.revoked: dict[str, float] = {}  # token or grant id -> when its tokens are dead anyway
        self._revoked_since: datetime | None = None
        self._verified: dict[str, AccessClaims] = {}

    def verify(self, token: str) -> AccessClaims:
        """The claims of a live, unrevoked token this server issued; ``InvalidToken`` otherwise."""
        claims = self.cached(token)
        if claims is None:
            if self.keys is None:
                raise InvalidToken("the server's signing keys are not loaded yet")
            claims = verify_access_token(token, self.keys, self.issuer, self.audience, time.time())
            self.remember(token, claims)
        self.check_revoked(claims)
        return claims

    def cached(self, token: str) -> AccessClaims | None:
        """The claims of a token verified before and not expired since."""
        digest = token_hash(token)
        claims = self._verified.get(digest)
        if claims is not None and claims.expires <= time.time():
            del self._verified[digest]
            return None
        return claims

    def remember(self, token: str, claims: AccessClaims) -> None:
        self._remember(token_hash(token), claims, time.time())

    def check_revoked(self, claims: AccessClaims) -> None:
        if claims.jti in self.revoked or claims.grant in self.revoked:
            raise InvalidToken("the token was revoked")

    def mark_revoked(self, token_id: str, expires: float) -> None:
        """Refuse a token or grant in this process at once (other processes: at their next poll)."""
        self.revoked[token_id] = max(expires, self.revoked.get(token_id, 0.0))

    def _remember(self, digest: str, claims: AccessClaims, now: float) -> None:
        if len(self._verified) >= CACHE_LIMIT:
            for key in [key for key, value in self._verified.items() if value.expires <= now]:
                del self._verified[key]
            if len(self._verified) >= CACHE_LIMIT:  # all live: forget the oldest half (verified again if used)
                for key in list(self._verified)[: CACHE_LIMIT // 2]:
                    del self._verified[key]
        self._verified[digest] = claims

    async def refresh(self, db: Database) -> None:
        """Load the keys when they changed, and the revocations recorded since the last poll."""
        async with db.read() as conn:
            kids = await current_kids(conn, self.token_lifetime)
            if self.keys is None or kids != self.keys.kids:
                self.keys = await load_keys(conn, self.token_lifetime)
            since = self._revoked_since
            query = select(revocations.c.token_id, revocations.c.revoked, revocations.c.expires)
            if since is not None:  # a little overlap: a revocation committed late is still seen
                query = query.where(revocations.c.revoked >= since - timedelta(seconds=30))
            else:
                query = query.where(revocations.c.expires > datetime.now(UTC))
            rows = list(await conn.execute(query))
        now = time.time()
        for key in [key for key, expires in self.revoked.items() if expires < now]:
            del self.revoked[key]
        for row in rows:
            self.mark_revoked(row.token_id, epoch(row.expires))
        newest = max((row.revoked for row in rows), default=None)
        if newest is not None and (since is None or newest > since):
            self._revoked_since = newest
        elif since is None:
            self._revoked_since = datetime.now(UTC)


async def revoke(db: Database, token_id: str, expires: datetime) -> None:
    """Record a revoked token or grant id; every process refuses it after its next poll. Revoking
    what is already revoked (even by a concurrent request) changes nothing."""
    now = datetime.now(UTC)
    try:
        async with db.write() as conn:
            found = await conn.execute(select(revocations.c.token_id).where(revocations.c.token_id == token_id))
            if found.first() is None:
                await conn.execute(insert(revocations).values(token_id=token_id, revoked=now, expires=expires))
    except IntegrityError:  # a concurrent revocation of the same id committed first
        pass
    async with db.write() as conn:  # forget revocations of tokens that are dead anyway
        await conn.execute(delete(revocations).where(revocations.c.expires < now - timedelta(days=1)))


def epoch(moment: datetime) -> float:
    return moment.astimezone(UTC).timestamp()
