"""Registered clients and users of the authorization server (``fhir-server client|user add|list|remove``).

Client types follow SMART's client profiles
(hl7.org/fhir/smart-app-launch/app-launch.html#support-for-public-and-confidential-apps):

- ``public``: no secret (a browser app); proves possession of its code with PKCE only;
- ``confidential-symmetric``: a shared secret sent with HTTP Basic (``client_secret_basic``);
- ``confidential-asymmetric``: signs a JWT with a key of its JWKS (``private_key_jwt``,
  client-confidential-asymmetric.html), registered as a JWKS document or a JWKS URL.

Secrets and passwords are stored as argon2id hashes (argon2-cffi), never in the clear, and checked
with the library's constant-time verification.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

import orjson
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, insert, select
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.smart.scopes import ScopeError, parse_scope
from app.smart.tables import clients, users

ClientType = Literal["public", "confidential-symmetric", "confidential-asymmetric"]
CLIENT_TYPES: tuple[ClientType, ...] = get_args(ClientType)
FHIR_USER_TYPES = ("Practitioner", "Patient", "RelatedPerson")
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")

_HASHER = PasswordHasher()


class RegistrationError(ValueError):
    """A client or user that cannot be registered as asked (the message says why)."""


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    client_type: ClientType
    scope: tuple[str, ...]
    redirect_uris: tuple[str, ...] = ()
    secret_hash: str | None = None
    jwks: dict[str, Any] | None = None
    jwks_url: str | None = None

    def public_view(self) -> dict[str, Any]:
        """What ``client add|list`` print: never the secret or its hash."""
        shown: dict[str, Any] = {
            "client_id": self.client_id,
            "type": self.client_type,
            "redirect_uris": list(self.redirect_uris),
            "scope": " ".join(self.scope),
        }
        if self.jwks_url:
            shown["jwks_url"] = self.jwks_url
        return shown


@dataclass(frozen=True, slots=True)
class User:
    username: str
    fhir_user: str
    password_hash: str = ""


def hash_secret(secret: str) -> str:
    return _HASHER.hash(secret)


def verify_secret(stored_hash: str | None, secret: str) -> bool:
    """Whether ``secret`` matches ``stored_hash`` (argon2's verification compares in constant time)."""
    if not stored_hash:
        return False
    try:
        return _HASHER.verify(stored_hash, secret)
    except (VerificationError, InvalidHashError):
        return False


def new_client(
    client_id: str,
    client_type: str,
    scope: str,
    redirect_uris: list[str] | tuple[str, ...] = (),
    secret: str | None = None,
    jwks: dict[str, Any] | None = None,
    jwks_url: str | None = None,
) -> Client:
    """A client checked for the rules of its type; ``RegistrationError`` says what is wrong."""
    if not storable(client_id) or any(ch.isspace() for ch in client_id):
        raise RegistrationError("client id must be 1 to 255 characters without spaces")
    texts = [scope, *redirect_uris, jwks_url or ""]
    if any(not ch.isprintable() for text in texts for ch in text if ch != " "):
        raise RegistrationError("scopes, redirect URIs and the JWKS URL must be printable text")
    if client_type not in CLIENT_TYPES:
        raise RegistrationError(f"client type must be one of {', '.join(CLIENT_TYPES)}")
    symmetric = client_type == "confidential-symmetric"
    asymmetric = client_type == "confidential-asymmetric"
    if symmetric != (secret is not None):
        raise RegistrationError("a secret is required for, and only allowed with, confidential-symmetric clients")
    if secret is not None and len(secret) < 8:
        raise RegistrationError("a client secret must have at least 8 characters")
    if asymmetric != ((jwks is not None) != (jwks_url is not None)) or (jwks is not None and jwks_url is not None):
        raise RegistrationError(
            "exactly one of a JWKS or a JWKS URL is required for, and only allowed with, confidential-asymmetric"
        )
    if jwks is not None and not (isinstance(jwks.get("keys"), list) and jwks["keys"]):
        raise RegistrationError("a JWKS must be a JSON object with a non-empty 'keys' list")
    if jwks_url is not None and not jwks_url.startswith(("https://", "http://")):
        raise RegistrationError("a JWKS URL must be an http(s) URL")
    for uri in redirect_uris:
        parts = urlsplit(uri)
        if (
            parts.scheme not in ("https", "http")
            or not parts.hostname
            or parts.fragment
            or any(ch.isspace() for ch in uri)
        ):
            raise RegistrationError(f"redirect URI '{uri[:200]}' must be an absolute http(s) URL without a fragment")
    scopes = tuple(scope.split())
    if not scopes:
        raise RegistrationError("a client needs at least one scope")
    for text in scopes:
        try:
            parse_scope(text)
        except ScopeError as error:
            raise RegistrationError(str(error)) from None
    return Client(
        client_id,
        client_type,
        scopes,
        tuple(redirect_uris),
        hash_secret(secret) if secret is not None else None,
        jwks,
        jwks_url,
    )


def _client(row: RowMapping) -> Client:
    return Client(
        row["client_id"],
        row["client_type"],
        tuple(row["scope"].split()),
        tuple(orjson.loads(row["redirect_uris"])),
        row["secret_hash"],
        orjson.loads(row["jwks"]) if row["jwks"] else None,
        row["jwks_url"],
    )


async def add_client(conn: AsyncConnection, client: Client) -> None:
    values = {
        "client_id": client.client_id,
        "client_type": client.client_type,
        "secret_hash": client.secret_hash,
        "jwks": orjson.dumps(client.jwks).decode() if client.jwks is not None else None,
        "jwks_url": client.jwks_url,
        "redirect_uris": orjson.dumps(list(client.redirect_uris)).decode(),
        "scope": " ".join(client.scope),
        "created": datetime.now(UTC),
    }
    try:
        await conn.execute(insert(clients).values(**values))
    except IntegrityError:
        raise RegistrationError(f"a client '{client.client_id}' is already registered") from None


def storable(name: str) -> bool:
    """Whether a client id or username can be one stored here: at most 255 characters, no NUL
    (which PostgreSQL text refuses), so a lookup of anything else is simply not found."""
    return 0 < len(name) <= 255 and "\x00" not in name


async def find_client(conn: AsyncConnection, client_id: str) -> Client | None:
    if not storable(client_id):
        return None
    row = (await conn.execute(select(clients).where(clients.c.client_id == client_id))).mappings().first()
    return _client(row) if row is not None else None


async def list_clients(conn: AsyncConnection) -> list[Client]:
    rows = await conn.execute(select(clients).order_by(clients.c.client_id))
    return [_client(row) for row in rows.mappings()]


async def remove_client(conn: AsyncConnection, client_id: str) -> bool:
    result = await conn.execute(delete(clients).where(clients.c.client_id == client_id))
    return bool(result.rowcount)


def new_user(username: str, password: str, fhir_user: str) -> User:
    if not storable(username) or any(ch.isspace() for ch in username):
        raise RegistrationError("username must be 1 to 255 characters without spaces")
    if len(password) < 8:
        raise RegistrationError("a password must have at least 8 characters")
    kind, _, ident = fhir_user.partition("/")
    if kind not in FHIR_USER_TYPES or not FHIR_ID.fullmatch(ident):
        raise RegistrationError(
            "fhir user must be Practitioner/ID, Patient/ID or RelatedPerson/ID with a FHIR id (datatypes.html#id)"
        )
    return User(username, fhir_user, hash_secret(password))


async def add_user(conn: AsyncConnection, user: User) -> None:
    values = {
        "username": user.username,
        "password_hash": user.password_hash,
        "fhir_user": user.fhir_user,
        "created": datetime.now(UTC),
    }
    try:
        await conn.execute(insert(users).values(**values))
    except IntegrityError:
        raise RegistrationError(f"a user '{user.username}' is already registered") from None


async def find_user(conn: AsyncConnection, username: str) -> User | None:
    if not storable(username):
        return None
    row = (await conn.execute(select(users).where(users.c.username == username))).mappings().first()
    return User(row["username"], row["fhir_user"], row["password_hash"]) if row is not None else None


async def list_users(conn: AsyncConnection) -> list[User]:
    rows = await conn.execute(select(users.c.username, users.c.fhir_user).order_by(users.c.username))
    return [User(row["username"], row["fhir_user"]) for row in rows.mappings()]


async def remove_user(conn: AsyncConnection, username: str) -> bool:
    result = await conn.execute(delete(users).where(users.c.username == username))
    return bool(result.rowcount)
