"""Who is calling: the bearer token of a request, turned into the ``Caller`` every interaction gets.

With ``FHIR_AUTH=on`` (the default) every FHIR interaction needs ``Authorization: Bearer <token>``
with an access token this server issued (``app.smart``); only ``GET [base]/metadata``,
``GET [base]/.well-known/smart-configuration``, the authorization server's own endpoints and
``/health`` are open. A missing token is 401 with ``WWW-Authenticate: Bearer``; a token sent but
malformed, expired, wrongly signed or revoked adds ``error="invalid_token"`` (RFC 6750 section 3).
The token's scopes become the caller's permissions (parsed once per distinct token content) and
its ``patient`` the compartment that ``patient/`` scopes confine to.

Tokens are never logged: a log line names a token by the first 12 hex digits of its SHA-256.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from dataclasses import dataclass
from functools import cache, lru_cache
from urllib.parse import urljoin

import httpx

from app.config import Settings
from app.errors import Unauthorized
from app.interactions.request_context import UNRESTRICTED, Caller
from app.smart.clients import FHIR_ID
from app.smart.external import TrustedIssuer, unverified_issuer, verify_external
from app.smart.jwks import JwksCache
from app.smart.keys import ensure_signing_key
from app.smart.scopes import ScopeError, parse_permissions
from app.smart.tokens import AccessClaims, InvalidToken, TokenVerifier, token_hash
from app.storage.database import Database

LOG = logging.getLogger("fhir.auth")
IDLE_POLL_SECONDS = 60.0


@lru_cache(maxsize=4096)
def caller_of(client_id: str, scope: str, patient: str | None, fhir_user: str | None) -> Caller:
    """The caller a token's claims describe; cached, so each distinct grant's scopes are parsed once."""
    try:
        permissions = parse_permissions(scope)
    except ScopeError as error:
        raise Unauthorized(f"the token carries a malformed scope: {error}", "invalid_token") from None
    if patient is not None and not FHIR_ID.fullmatch(patient):
        raise Unauthorized("the token's patient is not a FHIR id", "invalid_token")
    compartment = ("Patient", patient) if patient else None
    return Caller.with_token(client_id, permissions, compartment, fhir_user)


@cache
def trust_store() -> ssl.SSLContext:
    """The TLS context of the server's outgoing HTTPS (external issuers' JWKS, clients' JWKS URLs): the
    system's certificate authorities, loaded once per process (about 60 ms each time otherwise)."""
    return httpx.create_ssl_context()


@dataclass
class Authenticator:
    """The per-process authorization state: settings, token verifier, client JWKS cache."""

    settings: Settings
    db: Database
    verifier: TokenVerifier
    jwks: JwksCache
    http: httpx.AsyncClient
    trusted: dict[str, TrustedIssuer]

    @classmethod
    def build(cls, settings: Settings, db: Database) -> Authenticator:
        http = httpx.AsyncClient(headers={"User-Agent": "care-plan-repository"}, verify=trust_store())
        lifetime = max(settings.auth_token_seconds, settings.auth_backend_token_seconds)
        verifier = TokenVerifier(issuer(settings), settings.public_base_url, lifetime)
        return cls(settings, db, verifier, JwksCache(http), http, trusted_issuers(settings))

    @property
    def enforced(self) -> bool:
        return self.settings.auth_enforced

    async def start(self) -> None:
        """Make sure a signing key exists (first start), then load keys and revocations."""
        async with self.db.write() as conn:
            await ensure_signing_key(conn)
        await self.verifier.refresh(self.db)

    async def poll(self) -> None:
        """Keep keys and revocations current: every process refuses a revoked token within one interval.
        With authorization off no token is checked, so a minute between polls is enough for the keys the
        token endpoint signs with (each poll costs a few percent of a create's time on SQLite)."""
        interval = self.settings.auth_revocation_poll_seconds
        if not self.enforced:
            interval = max(interval, IDLE_POLL_SECONDS)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.verifier.refresh(self.db)
            except Exception:  # the database may be briefly unreachable; the next poll tries again
                LOG.warning("could not refresh signing keys and revocations", exc_info=True)

    async def claims(self, token: str) -> AccessClaims:
        """A token's claims: this server's own, or a trusted external issuer's (``app.smart.external``)."""
        cached = self.verifier.cached(token)
        if cached is None:
            trusted = self.trusted.get(unverified_issuer(token) or "")
            if trusted is not None:
                cached = await verify_external(token, trusted, self.jwks.fetch, time.time())
                self.verifier.remember(token, cached)
            else:
                return self.verifier.verify(token)
        self.verifier.check_revoked(cached)
        return cached

    async def close(self) -> None:
        await self.http.aclose()

    async def caller(self, authorization: str | None) -> Caller:
        """The caller of a request with this ``Authorization`` header (``UNRESTRICTED`` when auth is off)."""
        if not self.enforced:
            return UNRESTRICTED
        if not authorization:
            raise Unauthorized("this server requires an access token: Authorization: Bearer <token>")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("the Authorization header must be 'Bearer <access token>'", "invalid_token")
        try:
            claims = await self.claims(token)
        except InvalidToken as error:
            LOG.info("refused token %s: %s", token_hash(token)[:12], error)
            raise Unauthorized(str(error), "invalid_token") from None
        return caller_of(claims.client_id, claims.scope, claims.patient, claims.fhir_user)


def trusted_issuers(settings: Settings) -> dict[str, TrustedIssuer]:
    return {
        entry.issuer: TrustedIssuer(entry.issuer, entry.jwks_url, entry.audience)
        for entry in settings.auth_trusted_issuers
    }


def issuer(settings: Settings) -> str:
    """The authorization server's issuer URL: ``http://h:p/fhir`` gives ``http://h:p/smart``."""
    return urljoin(settings.public_base_url + "/", "../smart")
