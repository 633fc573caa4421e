"""A transaction entry that loses a race to a concurrent update, both backends.

A PUT or PATCH entry without ``ifMatch`` behaves as the single interaction
does (hl7.org/fhir/R4/http.html#update, #concurrency): when another request
commits a version between the entry's read and its write, the entry is
applied to that newer version. With ``ifMatch`` the entry fails with 412.

The concurrent update here holds its write transaction open until the
Bundle is waiting for it, so the race is lost every time, not by chance.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import column, func, select, table

from app.interactions.context import FhirContext
from app.interactions.update import update_in
from app.storage.gate import OPEN
from tests.conftest import FHIR_JSON_HEADERS


def task(task_id: str, description: str) -> dict[str, Any]:
    return {"resourceType": "Task", "id": task_id, "status": "requested", "intent": "order", "description": description}


def put_entry(task_id: str, if_match: str | None) -> dict[str, Any]:
    request = {"method": "PUT", "url": f"Task/{task_id}"} | ({"ifMatch": if_match} if if_match else {})
    return {"resource": task(task_id, "from the transaction"), "request": request}


def patch_entry(task_id: str, if_match: str | None) -> dict[str, Any]:
    document = [{"op": "replace", "path": "/status", "value": "accepted"}]
    binary = {
        "resourceType": "Binary",
        "contentType": "application/json-patch+json",
        "data": base64.b64encode(orjson.dumps(document)).decode(),
    }
    request = {"method": "PATCH", "url": f"Task/{task_id}"} | ({"ifMatch": if_match} if if_match else {})
    return {"resource": binary, "request": request}


async def until_waiting_for_a_lock(ctx: FhirContext) -> None:
    """Until some transaction waits for a row lock (PostgreSQL); SQLite queues writers in-process."""
    if ctx.db.dialect != "postgresql":
        await asyncio.sleep(0.2)
        return
    locks = table("pg_locks", column("granted"))
    waiting = select(func.count()).select_from(locks).where(locks.c.granted.is_(False))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        async with ctx.db.read() as conn:
            if (await conn.execute(waiting)).scalar():
                return
        await asyncio.sleep(0.02)
    pytest.fail("the transaction never waited for the concurrent update")


@pytest.fixture
async def task_id(client: httpx.AsyncClient) -> AsyncIterator[str]:
    body = {"resourceType": "Task", "status": "requested", "intent": "order", "description": "first"}
    created = await client.post("/fhir/Task", json=body, headers=FHIR_JSON_HEADERS)
    assert created.status_code == 201, created.text
    yield created.json()["id"]


async def race(app: FastAPI, client: httpx.AsyncClient, entry: dict[str, Any]) -> httpx.Response:
    """Post a one-entry transaction while a concurrent update of its resource is in flight."""
    ctx: FhirContext = app.state.fhir.current
    task_id = entry["request"]["url"].split("/")[1]
    body = task(task_id, "from the concurrent update")
    rows = ctx.index_rows("Task", task_id, body)
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}
    async with ctx.db.write() as conn:
        assert await update_in(ctx, conn, "Task", task_id, body, rows, None, gate=OPEN) is not None
        posted = asyncio.create_task(client.post("/fhir", json=bundle, headers=FHIR_JSON_HEADERS))
        await until_waiting_for_a_lock(ctx)
    return await asyncio.wait_for(posted, timeout=30)


async def versions(client: httpx.AsyncClient, task_id: str) -> list[str]:
    history = (await client.get(f"/fhir/Task/{task_id}/_history")).json()
    return [e["resource"]["meta"]["versionId"] for e in history["entry"]]


@pytest.mark.parametrize("make_entry", [put_entry, patch_entry], ids=["PUT", "PATCH"])
async def test_an_entry_without_if_match_is_applied_to_the_winners_version(
    app: FastAPI, client: httpx.AsyncClient, task_id: str, make_entry: Any
) -> None:
    response = await race(app, client, make_entry(task_id, None))
    assert response.status_code == 200, response.text
    assert response.json()["entry"][0]["response"]["etag"] == 'W/"3"'
    assert await versions(client, task_id) == ["3", "2", "1"]
    current = (await client.get(f"/fhir/Task/{task_id}")).json()
    if make_entry is put_entry:
        assert current["description"] == "from the transaction"
    else:  # the patch was applied to the concurrent update's version
        assert (current["description"], current["status"]) == ("from the concurrent update", "accepted")


@pytest.mark.parametrize("make_entry", [put_entry, patch_entry], ids=["PUT", "PATCH"])
async def test_an_entry_with_if_match_of_the_replaced_version_fails_with_412(
    app: FastAPI, client: httpx.AsyncClient, task_id: str, make_entry: Any
) -> None:
    response = await race(app, client, make_entry(task_id, 'W/"1"'))
    assert response.status_code == 412, response.text
    assert await versions(client, task_id) == ["2", "1"]
