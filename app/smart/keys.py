"""The server's token-signing keys: generated on first start, kept in the database, rotatable.

Access tokens and id_tokens are JWTs signed RS256 (hl7.org/fhir/smart-app-launch/app-launch.html,
"id_token ... RS256") with the newest active key. Every server process loads the same keys from
``smart_signing_keys``, so a token signed by one process verifies in all without shared memory.
``fhir-server keys rotate`` retires the active key and adds a new one: new tokens get the new key,
while the retired key still verifies (and is still published at ``jwks_uri``) until every token it
signed has expired. The key material is JOSE (RFC 7517) handled by joserfc, never hand-written.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from joserfc.jwk import KeySet, RSAKey
from sqlalchemy import insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.smart.tables import signing_keys

SIGNING_ALGORITHM = "RS256"


@dataclass(frozen=True, slots=True)
class SigningKeys:
    """The key that signs new tokens and every key that still verifies."""

    signer: RSAKey
    verifiers: KeySet
    kids: frozenset[str]

    def jwks(self) -> dict[str, Any]:
        """The public JWKS served at ``jwks_uri``."""
        return {"keys": [key.as_dict(private=False) for key in self.verifiers.keys]}


def generate_key() -> RSAKey:
    kid = secrets.token_urlsafe(12)
    return RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": SIGNING_ALGORITHM}, private=True)


async def add_key(conn: AsyncConnection, key: RSAKey, now: datetime) -> None:
    await conn.execute(
        insert(signing_keys).values(
            kid=key.kid, private_jwk=orjson.dumps(key.as_dict(private=True)).decode(), created=now, retired=None
        )
    )


async def ensure_signing_key(conn: AsyncConnection) -> None:
    """Add a key when none is active (first start). Two processes starting at once may each add one:
    both verify, and the newer signs."""
    active = await conn.execute(select(signing_keys.c.kid).where(signing_keys.c.retired.is_(None)).limit(1))
    if active.first() is None:
        await add_key(conn, generate_key(), datetime.now(UTC))


async def rotate_keys(conn: AsyncConnection, now: datetime | None = None) -> str:
    """Retire every active key and add a new one; returns the new key's id."""
    now = now or datetime.now(UTC)
    await conn.execute(update(signing_keys).where(signing_keys.c.retired.is_(None)).values(retired=now))
    key = generate_key()
    await add_key(conn, key, now)
    return str(key.kid)


def _live(token_lifetime: timedelta, now: datetime) -> Any:
    return or_(signing_keys.c.retired.is_(None), signing_keys.c.retired > now - token_lifetime)


async def current_kids(conn: AsyncConnection, token_lifetime: timedelta) -> frozenset[str]:
    """The ids of the keys that sign or still verify: a cheap check of whether to load them again."""
    rows = await conn.execute(select(signing_keys.c.kid).where(_live(token_lifetime, datetime.now(UTC))))
    return frozenset(row.kid for row in rows)


async def load_keys(conn: AsyncConnection, token_lifetime: timedelta, now: datetime | None = None) -> SigningKeys:
    """The active keys, plus the keys retired less than ``token_lifetime`` ago (their tokens still live)."""
    now = now or datetime.now(UTC)
    rows = await conn.execute(
        select(signing_keys.c.private_jwk, signing_keys.c.created, signing_keys.c.retired)
        .where(_live(token_lifetime, now))
        .order_by(signing_keys.c.created)
    )
    loaded = [(RSAKey.import_key(orjson.loads(row.private_jwk)), row.retired) for row in rows]
    active = [key for key, retired in loaded if retired is None]
    if not active:
        raise LookupError("no active signing key: run the server once, or 'fhir-server keys rotate'")
    public: list[Any] = [RSAKey.import_key(key.as_dict(private=False)) for key, _ in loaded]
    return SigningKeys(active[-1], KeySet(public), frozenset(str(key.kid) for key, _ in loaded))
