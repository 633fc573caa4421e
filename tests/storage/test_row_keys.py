"""The subject and status every current row carries (``app.storage.row_keys``): set by every write
path, cleared by a deletion, rebuilt by ``$reindex``, and filled by the migration that adds them,
on both backends."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from alembic import command
from app.interactions.bulk import prepare_create, store_creates
from app.main import build_context
from app.storage.database import Database
from app.storage.gate import OPEN
from app.storage.migrate import alembic_config, upgrade
from app.storage.tables import resources
from tests.conftest import FHIR_JSON_HEADERS, _admin, _with_database

R = resources.c


def plan(subject: dict[str, Any], status: str = "active") -> dict[str, Any]:
    return {"resourceType": "CarePlan", "status": status, "intent": "plan", "subject": subject}


async def row_keys(database_url: str, resource_type: str, rid: str) -> tuple[str | None, str | None]:
    database = Database.from_url(database_url)
    try:
        async with database.read() as conn:
            statement = select(R.subject_ref, R.status_code).where(R.resource_type == resource_type, R.id == rid)
            row = (await conn.execute(statement)).one()
            return row[0], row[1]
    finally:
        await database.dispose()


async def created_id(response: httpx.Response) -> str:
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_create_update_patch_and_delete_keep_the_row_keys_current(
    client: httpx.AsyncClient, database_url: str
) -> None:
    rid = await created_id(
        await client.post("/fhir/CarePlan", json=plan({"reference": "Patient/p1"}), headers=FHIR_JSON_HEADERS)
    )
    assert await row_keys(database_url, "CarePlan", rid) == ("Patient/p1", "active")

    moved = {**plan({"reference": "Patient/p2"}, "on-hold"), "id": rid}
    assert (await client.put(f"/fhir/CarePlan/{rid}", json=moved, headers=FHIR_JSON_HEADERS)).status_code == 200
    assert await row_keys(database_url, "CarePlan", rid) == ("Patient/p2", "on-hold")

    patch = [{"op": "replace", "path": "/status", "value": "completed"}]
    response = await client.patch(
        f"/fhir/CarePlan/{rid}", json=patch, headers={"Content-Type": "application/json-patch+json"}
    )
    assert response.status_code == 200, response.text
    assert await row_keys(database_url, "CarePlan", rid) == ("Patient/p2", "completed")
    found = (await client.get("/fhir/CarePlan?patient=p2&status=completed")).json()
    assert [e["resource"]["id"] for e in found.get("entry", [])] == [rid]

    assert (await client.delete(f"/fhir/CarePlan/{rid}")).status_code in (200, 204)
    assert await row_keys(database_url, "CarePlan", rid) == (None, None)
    assert "entry" not in (await client.get("/fhir/CarePlan?patient=p2")).json()


async def test_transaction_entries_carry_row_keys(client: httpx.AsyncClient, database_url: str) -> None:
    task = {"resourceType": "Task", "status": "requested", "intent": "order", "for": {"reference": "Patient/p3"}}
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:5d4f1c0e-0000-4000-8000-000000000001",
                "resource": task,
                "request": {"method": "POST", "url": "Task"},
            },
            {"resource": {**task, "id": "fixed"}, "request": {"method": "PUT", "url": "Task/fixed"}},
        ],
    }
    response = await client.post("/fhir", json=bundle, headers=FHIR_JSON_HEADERS)
    assert response.status_code == 200, response.text
    posted = response.json()["entry"][0]["response"]["location"].split("/")[1]
    assert await row_keys(database_url, "Task", posted) == ("Patient/p3", "requested")
    assert await row_keys(database_url, "Task", "fixed") == ("Patient/p3", "requested")
    found = (await client.get("/fhir/Task?patient=Patient/p3&status=requested")).json()
    assert sorted(e["resource"]["id"] for e in found["entry"]) == sorted([posted, "fixed"])


async def test_a_subject_without_a_local_reference_leaves_the_column_empty(
    client: httpx.AsyncClient, database_url: str
) -> None:
    by_identifier = plan({"type": "Patient", "identifier": {"system": "urn:mrn", "value": "123"}})
    rid = await created_id(await client.post("/fhir/CarePlan", json=by_identifier, headers=FHIR_JSON_HEADERS))
    assert await row_keys(database_url, "CarePlan", rid) == (None, "active")
    found = (await client.get("/fhir/CarePlan?subject:identifier=urn:mrn|123&status=active")).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [rid]  # the index rows still answer it


async def test_reindex_rebuilds_the_row_keys(client: httpx.AsyncClient, database_url: str) -> None:
    rid = await created_id(
        await client.post("/fhir/CarePlan", json=plan({"reference": "Patient/p4"}), headers=FHIR_JSON_HEADERS)
    )
    database = Database.from_url(database_url)
    try:
        async with database.write() as conn:
            await conn.execute(update(resources).values(subject_ref=None, status_code=None))
    finally:
        await database.dispose()
    assert "entry" not in (await client.get("/fhir/CarePlan?patient=p4")).json()
    assert (await client.post(f"/fhir/CarePlan/{rid}/$reindex")).status_code == 200
    assert await row_keys(database_url, "CarePlan", rid) == ("Patient/p4", "active")


@pytest.fixture
async def fresh_database(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A migrated database of its own (the migration test moves its schema down and up)."""
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'migrated.sqlite'}"
        await asyncio.to_thread(upgrade, url)
        yield url
        return
    admin: str = request.getfixturevalue("postgres_server")
    name = f"fhir_migration_{uuid.uuid4().hex[:8]}"
    await _admin(admin, f'CREATE DATABASE "{name}"')
    url = _with_database(admin, name)
    await asyncio.to_thread(upgrade, url)
    yield url
    await _admin(admin, f'DROP DATABASE "{name}" WITH (FORCE)')


async def test_the_migration_fills_the_columns_of_resources_already_stored(fresh_database: str) -> None:
    database = Database.from_url(fresh_database)
    ctx = build_context(database)
    bodies = [
        ("CarePlan", "c1", plan({"reference": "Patient/p1"})),
        ("CarePlan", "c2", plan({"reference": "Group/g1"}, "draft")),
        ("AllergyIntolerance", "a1", {"resourceType": "AllergyIntolerance", "patient": {"reference": "Patient/p1"}}),
        ("Patient", "p1", {"resourceType": "Patient"}),
    ]
    async with database.write() as conn:
        await store_creates(ctx, conn, [prepare_create(ctx, t, b, resource_id=i) for t, i, b in bodies], OPEN)
    await database.dispose()
    config = alembic_config(fresh_database)
    await asyncio.to_thread(command.downgrade, config, "0008")
    await asyncio.to_thread(command.upgrade, config, "head")
    assert await row_keys(fresh_database, "CarePlan", "c1") == ("Patient/p1", "active")
    assert await row_keys(fresh_database, "CarePlan", "c2") == ("Group/g1", "draft")
    assert await row_keys(fresh_database, "AllergyIntolerance", "a1") == ("Patient/p1", None)
    assert await row_keys(fresh_database, "Patient", "p1") == (None, None)


async def test_a_very_long_multibyte_subject_id_is_stored_and_found(
    client: httpx.AsyncClient, database_url: str
) -> None:
    """A reference's id is not limited like a resource id: one of 3,000 four-byte characters is kept
    as the index keeps it (a prefix and a hash: app.storage.index_tables.indexed_text) and still found."""
    long_id = "\U0001d7d8" * 3000
    body = plan({"reference": f"Patient/{long_id}"})
    rid = await created_id(await client.post("/fhir/CarePlan", json=body, headers=FHIR_JSON_HEADERS))
    subject, status = await row_keys(database_url, "CarePlan", rid)
    assert subject is not None and subject.startswith("Patient/\U0001d7d8") and len(subject.encode()) < 600
    assert status == "active"
    # 12 KB of query: too long for a URL (414), so searched by POST [type]/_search
    found = await client.post("/fhir/CarePlan/_search", data={"subject": f"Patient/{long_id}", "status": "active"})
    assert [e["resource"]["id"] for e in found.json()["entry"]] == [rid]
    other = await client.post("/fhir/CarePlan/_search", data={"subject": f"Patient/{long_id}x"})
    assert other.status_code == 200 and "entry" not in other.json()


async def test_an_absolute_subject_url_is_on_the_row_and_found_either_way(
    client: httpx.AsyncClient, database_url: str
) -> None:
    body = plan({"reference": "https://other.example/fhir/Patient/p9"})
    rid = await created_id(await client.post("/fhir/CarePlan", json=body, headers=FHIR_JSON_HEADERS))
    assert await row_keys(database_url, "CarePlan", rid) == ("Patient/p9", "active")
    for value in ("Patient/p9", "https://other.example/fhir/Patient/p9"):
        found = (await client.get("/fhir/CarePlan", params={"subject": value})).json()
        assert [e["resource"]["id"] for e in found["entry"]] == [rid], value
