"""``fhir-server client|user|keys``: register the authorization server's clients and users, rotate keys.

Each command prints exactly one JSON object on stdout (logs go to stderr) and exits 0, or prints an
error on stderr and exits 2. It works on the database of ``FHIR_DATABASE_URL`` while servers run:
clients and users are read from the database on every authorization, and a rotated key reaches every
server process at its next poll (``FHIR_AUTH_REVOCATION_POLL_SECONDS``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from app.config import Settings
from app.smart.clients import (
    CLIENT_TYPES,
    RegistrationError,
    add_client,
    add_user,
    list_clients,
    list_users,
    new_client,
    new_user,
    remove_client,
    remove_user,
)
from app.smart.keys import rotate_keys
from app.storage.database import Database


def add_parsers(sub: Any) -> None:
    """The ``client``, ``user`` and ``keys`` commands of ``fhir-server``."""
    client = sub.add_parser("client", help="register, list or remove SMART clients").add_subparsers(
        dest="action", required=True
    )
    add = client.add_parser("add", help="register a client; prints it as JSON")
    add.add_argument("--client-id", required=True)
    add.add_argument("--type", required=True, choices=CLIENT_TYPES)
    add.add_argument("--secret", help="confidential-symmetric only: the client secret (client_secret_basic)")
    add.add_argument("--jwks-file", help="confidential-asymmetric: a JWKS JSON file of the client's public keys")
    add.add_argument("--jwks-url", help="confidential-asymmetric: where the client publishes its JWKS")
    add.add_argument("--redirect-uri", action="append", default=[], help="a registered redirect URI (repeatable)")
    add.add_argument("--scope", required=True, help="space-separated scopes the client may be granted")
    client.add_parser("list", help="list registered clients as JSON")
    remove = client.add_parser("remove", help="remove a client")
    remove.add_argument("--client-id", required=True)

    user = sub.add_parser("user", help="register, list or remove users who sign in").add_subparsers(
        dest="action", required=True
    )
    add_user_parser = user.add_parser("add", help="register a user; prints it as JSON")
    add_user_parser.add_argument("--username", required=True)
    add_user_parser.add_argument("--password", required=True)
    add_user_parser.add_argument("--fhir-user", required=True, help="Practitioner/ID, Patient/ID or RelatedPerson/ID")
    user.add_parser("list", help="list users as JSON")
    remove_user_parser = user.add_parser("remove", help="remove a user")
    remove_user_parser.add_argument("--username", required=True)

    keys = sub.add_parser("keys", help="the token-signing keys").add_subparsers(dest="action", required=True)
    keys.add_parser("rotate", help="retire the signing key and add a new one (the old one verifies until expiry)")


async def _client_command(db: Database, args: argparse.Namespace) -> dict[str, Any]:
    if args.action == "add":
        jwks = None
        if args.jwks_file is not None:
            try:
                jwks = json.loads(Path(args.jwks_file).read_text())
            except (OSError, ValueError) as error:
                raise RegistrationError(f"cannot read the JWKS file: {error}") from None
            if not isinstance(jwks, dict):
                raise RegistrationError("the JWKS file must hold a JSON object")
        client = new_client(args.client_id, args.type, args.scope, args.redirect_uri, args.secret, jwks, args.jwks_url)
        async with db.write() as conn:
            await add_client(conn, client)
        return client.public_view()
    if args.action == "list":
        async with db.read() as conn:
            return {"clients": [client.public_view() for client in await list_clients(conn)]}
    async with db.write() as conn:
        if not await remove_client(conn, args.client_id):
            raise RegistrationError(f"no client '{args.client_id}' is registered")
    return {"removed": args.client_id}


async def _user_command(db: Database, args: argparse.Namespace) -> dict[str, Any]:
    if args.action == "add":
        user = new_user(args.username, args.password, args.fhir_user)
        async with db.write() as conn:
            await add_user(conn, user)
        return {"username": user.username, "fhir_user": user.fhir_user}
    if args.action == "list":
        async with db.read() as conn:
            return {"users": [{"username": u.username, "fhir_user": u.fhir_user} for u in await list_users(conn)]}
    async with db.write() as conn:
        if not await remove_user(conn, args.username):
            raise RegistrationError(f"no user '{args.username}' is registered")
    return {"removed": args.username}


async def _keys_command(db: Database, args: argparse.Namespace) -> dict[str, Any]:
    async with db.write() as conn:
        return {"kid": await rotate_keys(conn)}


COMMANDS: dict[str, Callable[[Database, argparse.Namespace], Awaitable[dict[str, Any]]]] = {
    "client": _client_command,
    "user": _user_command,
    "keys": _keys_command,
}


def run(settings: Settings, args: argparse.Namespace) -> None:
    """Run one admin command; its JSON on stdout, or its error on stderr and exit status 2."""

    async def go() -> dict[str, Any]:
        db = Database.from_url(settings.database_url, pool_size=1)
        try:
            return await COMMANDS[args.command](db, args)
        finally:
            await db.dispose()

    try:
        result = asyncio.run(go())
    except RegistrationError as error:
        print(f"fhir-server {args.command} {args.action}: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(json.dumps(result))
