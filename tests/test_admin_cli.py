"""``fhir-server client|user|keys``: the installed command, run as an operator runs it, on both backends.

Each command must print exactly one JSON object on stdout (scripts parse
it) and exit 0, or print its error on stderr, nothing on stdout, and exit 2;
it must never print a client secret or a hash; and it works on the database
named by ``FHIR_DATABASE_URL``, which the tests then read directly to check
that what was printed is what was stored. Each command start costs about a
second, so the tests group the steps of one lifecycle.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import RSAKey
from sqlalchemy import select

from app.smart.clients import find_client, find_user, list_clients, verify_secret
from app.smart.keys import ensure_signing_key, load_keys
from app.smart.tables import signing_keys
from app.storage.database import Database

COMMAND = str(Path(sys.executable).parent / "fhir-server")
ROOT = Path(__file__).resolve().parents[1]
SECRET = "s3cret-for-the-ehr"


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict[str, Any]:
        assert self.code == 0, self.stderr
        assert self.stdout.endswith("\n") and self.stdout.count("\n") == 1, self.stdout  # one line, one object
        parsed = json.loads(self.stdout)
        assert isinstance(parsed, dict)
        return parsed


def fhir_server(database_url: str, *args: str) -> Run:
    env = {**os.environ, "FHIR_DATABASE_URL": database_url, "FHIR_LOG_LEVEL": "warning"}
    done = subprocess.run([COMMAND, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    return Run(done.returncode, done.stdout, done.stderr)


def refused(run: Run, message: str) -> None:
    assert run.code == 2, run
    assert run.stdout == ""
    assert run.stderr.strip().splitlines()[-1] == message


async def test_client_add_list_and_remove(database_url: str) -> None:
    web = fhir_server(
        database_url,
        *("client", "add", "--client-id", "web", "--type", "public", "--scope", "openid launch/patient patient/*.rs"),
        *("--redirect-uri", "https://app.example/cb", "--redirect-uri", "http://localhost:8080/cb"),
    )
    assert web.json == {
        "client_id": "web",
        "type": "public",
        "redirect_uris": ["https://app.example/cb", "http://localhost:8080/cb"],
        "scope": "openid launch/patient patient/*.rs",
    }
    ehr = fhir_server(
        database_url,
        *("client", "add", "--client-id", "ehr", "--type", "confidential-symmetric", "--secret", SECRET),
        *("--scope", "system/*.rs system/Task.cud"),
    )
    assert ehr.json == {
        "client_id": "ehr",
        "type": "confidential-symmetric",
        "redirect_uris": [],
        "scope": "system/*.rs system/Task.cud",
    }
    assert SECRET not in ehr.stdout + ehr.stderr and "argon2" not in ehr.stdout + ehr.stderr

    duplicate = fhir_server(
        database_url, "client", "add", "--client-id", "web", "--type", "public", "--scope", "user/*.cruds"
    )
    refused(duplicate, "fhir-server client add: a client 'web' is already registered")

    listed = fhir_server(database_url, "client", "list").json
    assert listed == {"clients": [ehr.json, web.json]}  # by client id, never a secret

    db = Database.from_url(database_url)
    try:
        async with db.read() as conn:
            stored = await find_client(conn, "ehr")
            kept = await find_client(conn, "web")
        assert stored is not None and verify_secret(stored.secret_hash, SECRET)
        assert kept is not None and kept.scope == ("openid", "launch/patient", "patient/*.rs")  # not the duplicate's

        assert fhir_server(database_url, "client", "remove", "--client-id", "web").json == {"removed": "web"}
        async with db.read() as conn:
            assert [client.client_id for client in await list_clients(conn)] == ["ehr"]
        again = fhir_server(database_url, "client", "remove", "--client-id", "web")
        refused(again, "fhir-server client remove: no client 'web' is registered")
    finally:
        await db.dispose()


async def test_client_add_asymmetric_from_a_jwks_file(database_url: str, tmp_path: Path) -> None:
    public = RSAKey.generate_key(2048, private=True).as_dict(private=False)
    jwks = {"keys": [{**public, "kid": "svc-key-1", "alg": "RS384"}]}
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(jwks))
    added = fhir_server(
        database_url,
        *("client", "add", "--client-id", "svc", "--type", "confidential-asymmetric"),
        *("--jwks-file", str(jwks_file), "--scope", "system/Task.cruds"),
    )
    assert added.json == {
        "client_id": "svc",
        "type": "confidential-asymmetric",
        "redirect_uris": [],
        "scope": "system/Task.cruds",
    }

    both = fhir_server(
        database_url,
        *("client", "add", "--client-id", "svc2", "--type", "confidential-asymmetric", "--jwks-file", str(jwks_file)),
        *("--jwks-url", "https://svc.example/jwks", "--scope", "system/Task.rs"),
    )
    refused(
        both,
        "fhir-server client add: exactly one of a JWKS or a JWKS URL is required for, and only allowed with, "
        "confidential-asymmetric",
    )

    db = Database.from_url(database_url)
    try:
        async with db.read() as conn:
            stored = await find_client(conn, "svc")
            assert [client.client_id for client in await list_clients(conn)] == ["svc"]
    finally:
        await db.dispose()
    assert stored is not None and stored.jwks == jwks and stored.jwks_url is None and stored.secret_hash is None


async def test_user_add_list_and_remove(database_url: str) -> None:
    password = "a long enough password"
    added = fhir_server(
        database_url, "user", "add", "--username", "osei", "--password", password, "--fhir-user", "Practitioner/dr"
    )
    assert added.json == {"username": "osei", "fhir_user": "Practitioner/dr"}
    assert password not in added.stdout + added.stderr

    db = Database.from_url(database_url)
    try:
        async with db.read() as conn:
            stored = await find_user(conn, "osei")
        assert stored is not None and verify_secret(stored.password_hash, password)

        assert fhir_server(database_url, "user", "list").json == {
            "users": [{"username": "osei", "fhir_user": "Practitioner/dr"}]
        }
        assert fhir_server(database_url, "user", "remove", "--username", "osei").json == {"removed": "osei"}
        async with db.read() as conn:
            assert await find_user(conn, "osei") is None
    finally:
        await db.dispose()


async def test_keys_rotate_prints_the_new_kid_and_leaves_it_the_only_active_key(database_url: str) -> None:
    db = Database.from_url(database_url)
    try:
        async with db.write() as conn:
            await ensure_signing_key(conn)
        async with db.read() as conn:
            first = (await conn.execute(select(signing_keys.c.kid))).scalar_one()

        rotated = fhir_server(database_url, "keys", "rotate").json
        assert set(rotated) == {"kid"} and isinstance(rotated["kid"], str) and rotated["kid"] != first

        async with db.read() as conn:
            rows = {row.kid: row.retired for row in await conn.execute(select(signing_keys))}
            loaded = await load_keys(conn, timedelta(hours=1))
    finally:
        await db.dispose()
    assert set(rows) == {first, rotated["kid"]}
    assert [kid for kid, retired in rows.items() if retired is None] == [rotated["kid"]]
    assert loaded.signer.kid == rotated["kid"]  # new tokens get the new key; the old one still verifies
    assert loaded.kids == frozenset({first, rotated["kid"]})


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_an_unknown_client_type_is_an_argument_error(database_url: str) -> None:
    run = fhir_server(database_url, "client", "add", "--client-id", "x", "--type", "confidential", "--scope", "openid")
    assert run.code == 2 and run.stdout == ""
    assert "invalid choice: 'confidential'" in run.stderr
