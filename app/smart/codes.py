"""Authorization codes and refresh tokens: single-use, stored as hashes, tied to one grant.

hl7.org/fhir/smart-app-launch/app-launch.html and RFC 6749 section 4.1: a code is short-lived,
bound to its client and redirect URI, redeemed once with the PKCE verifier (RFC 7636, S256 only).
A second redemption is ``invalid_grant`` and revokes every token issued from the first
(RFC 6749 section 4.1.2: "the authorization server ... SHOULD revoke ... all tokens previously
issued based on that authorization code"). Refresh tokens rotate: each use returns a new one and
the used one is refused from then on; presenting a used one again revokes the whole grant, since
one of the two holders is not the client. Only the SHA-256 of a code or refresh token is stored.
"""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from sqlalchemy import delete, insert, select, update

from app.smart.grants import OAuthError
from app.smart.scopes import covered_by
from app.smart.tables import codes, refresh_tokens
from app.smart.tokens import new_token_id, revoke, token_hash
from app.storage.database import Database

CODE_SECONDS = 60
REFRESH_DAYS = 30
_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")


class GrantRevoked(OAuthError):
    """A code or refresh token presented twice: ``invalid_grant``, and the grant is revoked."""

    def __init__(self, description: str, grant_id: str) -> None:
        super().__init__("invalid_grant", description)
        self.grant_id = grant_id


@dataclass(frozen=True, slots=True)
class GrantContext:
    """What a grant carries besides its scope: the launch context and the signed-in user."""

    patient: str | None = None
    encounter: str | None = None
    fhir_user: str | None = None
    username: str | None = None
    nonce: str | None = None

    def dumps(self) -> str:
        return orjson.dumps(asdict(self)).decode()

    @classmethod
    def loads(cls, text: str) -> GrantContext:
        data: dict[str, Any] = orjson.loads(text)
        return cls(**{name: data.get(name) for name in ("patient", "encounter", "fhir_user", "username", "nonce")})


@dataclass(frozen=True, slots=True)
class Grant:
    """A redeemed code or refresh token: what the new tokens may carry."""

    grant_id: str
    client_id: str
    scope: str  # of the access token to issue
    context: GrantContext
    refresh_scope: str = ""  # of a new refresh token: the grant's own (RFC 6749 section 6)

    @property
    def lasting_scope(self) -> str:
        return self.refresh_scope or self.scope


def valid_verifier(verifier: str) -> bool:
    return bool(_VERIFIER.match(verifier))


async def issue_code(
    db: Database, client_id: str, redirect_uri: str, scope: str, code_challenge: str, context: GrantContext
) -> str:
    code = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    async with db.write() as conn:
        await conn.execute(delete(codes).where(codes.c.expires < now - timedelta(days=1)))
        await conn.execute(
            insert(codes).values(
                code_hash=token_hash(code),
                client_id=client_id,
                redirect_uri=redirect_uri,
                scope=scope,
                code_challenge=code_challenge,
                grant_id=new_token_id(),
                context=context.dumps(),
                expires=now + timedelta(seconds=CODE_SECONDS),
                used=None,
            )
        )
    return code


async def redeem_code(
    db: Database, code: str, client_id: str, redirect_uri: str | None, verifier: str | None, token_lifetime: int
) -> Grant:
    """The grant of a code presented by its client with its redirect URI and PKCE verifier."""
    now = datetime.now(UTC)
    async with db.write() as conn:
        row = (await conn.execute(select(codes).where(codes.c.code_hash == token_hash(code)))).mappings().first()
        if row is None or row["client_id"] != client_id:
            raise OAuthError("invalid_grant", "the code is unknown or was issued to another client")
        if row["used"] is not None:
            await conn.execute(update(codes).where(codes.c.code_hash == row["code_hash"]).values(expires=now))
            replayed = True
        else:
            replayed = False
            await conn.execute(update(codes).where(codes.c.code_hash == row["code_hash"]).values(used=now))
    if replayed:  # outside the transaction above, which must commit first
        await revoke(db, row["grant_id"], now + timedelta(seconds=token_lifetime) + timedelta(days=REFRESH_DAYS))
        raise GrantRevoked("the code was used before; the tokens issued from it are revoked", row["grant_id"])
    if row["expires"] <= now:
        raise OAuthError("invalid_grant", "the code has expired")
    if redirect_uri != row["redirect_uri"]:
        raise OAuthError("invalid_grant", "redirect_uri differs from the authorization request's")
    if verifier is None or not valid_verifier(verifier):
        raise OAuthError("invalid_grant", "code_verifier is missing or malformed (RFC 7636 4.1)")
    if not hmac.compare_digest(create_s256_code_challenge(verifier), row["code_challenge"]):
        raise OAuthError("invalid_grant", "code_verifier does not match the code challenge")
    return Grant(row["grant_id"], client_id, row["scope"], GrantContext.loads(row["context"]))


async def issue_refresh_token(db: Database, grant: Grant, scope: str) -> str:
    token = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    async with db.write() as conn:
        await conn.execute(delete(refresh_tokens).where(refresh_tokens.c.expires < now))
        await conn.execute(
            insert(refresh_tokens).values(
                token_hash=token_hash(token),
                grant_id=grant.grant_id,
                client_id=grant.client_id,
                scope=scope,
                context=grant.context.dumps(),
                expires=now + timedelta(days=REFRESH_DAYS),
                used=None,
            )
        )
    return token


def narrowed_scope(granted: str, requested: str | None) -> str:
    """The scope of a refresh: the grant's, or a requested one within it (RFC 6749 section 6)."""
    if not requested or not requested.strip():
        return granted
    wider = [text for text in requested.split() if not covered_by(text, granted.split())]
    if wider:
        raise OAuthError("invalid_scope", f"the refresh asks for more than was granted: {' '.join(wider)}")
    return " ".join(dict.fromkeys(requested.split()))


async def redeem_refresh_token(
    db: Database, token: str, client_id: str, token_lifetime: int, requested: str | None = None
) -> Grant:
    """The grant a refresh token continues, with its scope narrowed to ``requested``; the token is
    used up (rotation). A refused request (another client, a wider scope) leaves it unused."""
    now = datetime.now(UTC)
    async with db.write() as conn:
        row = (
            (await conn.execute(select(refresh_tokens).where(refresh_tokens.c.token_hash == token_hash(token))))
            .mappings()
            .first()
        )
        if row is None or row["client_id"] != client_id:
            raise OAuthError("invalid_grant", "the refresh token is unknown or belongs to another client")
        fresh = row["used"] is None and row["expires"] > now
        scope = narrowed_scope(row["scope"], requested) if fresh else row["scope"]
        if fresh:
            await conn.execute(
                update(refresh_tokens).where(refresh_tokens.c.token_hash == row["token_hash"]).values(used=now)
            )
    if row["used"] is not None:
        await revoke(db, row["grant_id"], now + timedelta(seconds=token_lifetime) + timedelta(days=REFRESH_DAYS))
        async with db.write() as conn:
            await conn.execute(
                update(refresh_tokens).where(refresh_tokens.c.grant_id == row["grant_id"]).values(used=now)
            )
        raise GrantRevoked("the refresh token was used before; its grant is revoked", row["grant_id"])
    if not fresh:
        raise OAuthError("invalid_grant", "the refresh token has expired")
    return Grant(row["grant_id"], client_id, scope, GrantContext.loads(row["context"]), row["scope"])


async def grant_revoked(db: Database, grant_id: str) -> None:
    """End a grant: its refresh tokens are used up (revocation of a refresh token, RFC 7009)."""
    async with db.write() as conn:
        await conn.execute(
            update(refresh_tokens).where(refresh_tokens.c.grant_id == grant_id).values(used=datetime.now(UTC))
        )


async def find_refresh_grant(db: Database, token: str) -> tuple[str, str, datetime] | None:
    """(grant id, client id, expiry) of a refresh token, for revocation."""
    async with db.read() as conn:
        row = (
            await conn.execute(
                select(refresh_tokens.c.grant_id, refresh_tokens.c.client_id, refresh_tokens.c.expires).where(
                    refresh_tokens.c.token_hash == token_hash(token)
                )
            )
        ).first()
    return (row.grant_id, row.client_id, row.expires) if row is not None else None
