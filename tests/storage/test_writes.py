"""The write gate: every way a resource is written passes through ``ResourceWriter`` and its hooks.

A recording hook is installed the way Subscriptions and the workflow rules
will install theirs (``ResourceWriter.with_hooks`` in a new context); then
each write path (single, conditional, PATCH, DELETE, every transaction and
batch entry, bulk creates) must show up as exactly the changes it made, with
the previous and the new body, inside the write's own transaction. A hook
that refuses leaves nothing of the write behind.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncConnection

from app import fhirjson
from app.errors import Unprocessable
from app.interactions.bulk import prepare_create, store_creates
from app.interactions.context import ContextHolder, FhirContext
from app.storage.batch_insert import CHUNK_ROWS
from app.storage.database import Database
from app.storage.gate import OPEN
from app.storage.repository import AlreadyExists, read_current
from app.storage.writes import ABSENT, LARGE_WRITE, Change, NewVersion
from tests.conftest import FHIR_JSON_HEADERS

JSON_PATCH_HEADERS = {"Content-Type": "application/json-patch+json"}


class Recorder:
    """Notes each change as (type/id, previous version, new version, method, previous status, new status)
    and what the hook's connection sees of the row, proving it runs inside the write's transaction."""

    def __init__(self) -> None:
        self.changes: list[tuple[str, int | None, int, str, str | None, str | None]] = []
        self.seen_in_transaction: list[bool] = []
        self.refuse: str | None = None  # a resource type whose writes the hook refuses

    def concerns(self, resource_type: str) -> bool:
        return True

    def settle(self, change: Change) -> None:
        return None  # this hook reads the row: it asks for the write's transaction

    async def __call__(self, conn: AsyncConnection, change: Change) -> None:
        stored, previous = change.stored, change.previous
        if stored.resource_type == self.refuse:
            raise Unprocessable(f"the rule refuses this {stored.resource_type}")
        current = await read_current(conn, stored.resource_type, stored.id)
        self.seen_in_transaction.append(current is not None and current.version_id == stored.version_id)
        self.changes.append(
            (
                f"{stored.resource_type}/{stored.id}",
                None if previous is None else previous.version_id,
                stored.version_id,
                stored.method,
                _status(previous.body if previous is not None else None),
                _status(stored.body),
            )
        )


def _status(body: bytes | None) -> str | None:
    return None if body is None else fhirjson.loads(body).get("status")


@pytest.fixture
async def recorder(app: FastAPI) -> AsyncIterator[Recorder]:
    hook = Recorder()
    holder: ContextHolder = app.state.fhir
    ctx = holder.current
    holder.current = dataclasses.replace(ctx, writer=ctx.writer.with_hooks(hook))
    yield hook
    assert all(hook.seen_in_transaction), "a hook ran outside the write's transaction"


def task(status: str = "requested", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Task", "status": status, "intent": "order", **extra}


async def test_single_writes_each_pass_the_gate_with_previous_and_new(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    created = await client.post("/fhir/Task", json=task(), headers=FHIR_JSON_HEADERS)
    tid = created.json()["id"]
    put = await client.put(f"/fhir/Task/{tid}", json=task("accepted", id=tid), headers=FHIR_JSON_HEADERS)
    patch = [{"op": "replace", "path": "/status", "value": "in-progress"}]
    patched = await client.patch(f"/fhir/Task/{tid}", json=patch, headers=JSON_PATCH_HEADERS)
    deleted = await client.delete(f"/fhir/Task/{tid}")
    again = await client.delete(f"/fhir/Task/{tid}")  # nothing live: no write, no change
    revived = await client.put(f"/fhir/Task/{tid}", json=task("ready", id=tid), headers=FHIR_JSON_HEADERS)
    assert [r.status_code for r in (created, put, patched, deleted, again, revived)] == [201, 200, 200, 200, 200, 201]
    key = f"Task/{tid}"
    assert recorder.changes == [
        (key, None, 1, "POST", None, "requested"),
        (key, 1, 2, "PUT", "requested", "accepted"),
        (key, 2, 3, "PATCH", "accepted", "in-progress"),
        (key, 3, 4, "DELETE", "in-progress", None),
        (key, 4, 5, "PUT", None, "ready"),
    ]


async def test_conditional_writes_pass_the_gate(client: httpx.AsyncClient, recorder: Recorder) -> None:
    ident = {"identifier": [{"system": "urn:t", "value": "c1"}]}
    made = await client.post(
        "/fhir/Task", json=task(**ident), headers={**FHIR_JSON_HEADERS, "If-None-Exist": "identifier=urn:t|c1"}
    )
    found = await client.post(
        "/fhir/Task", json=task(**ident), headers={**FHIR_JSON_HEADERS, "If-None-Exist": "identifier=urn:t|c1"}
    )
    tid = made.json()["id"]
    updated = await client.put(
        "/fhir/Task?identifier=urn:t|c1", json=task("accepted", **ident), headers=FHIR_JSON_HEADERS
    )
    patch = [{"op": "replace", "path": "/status", "value": "ready"}]
    patched = await client.patch("/fhir/Task?identifier=urn:t|c1", json=patch, headers=JSON_PATCH_HEADERS)
    deleted = await client.delete("/fhir/Task?identifier=urn:t|c1")
    assert [r.status_code for r in (made, found, updated, patched)] == [201, 200, 200, 200]
    assert deleted.status_code in (200, 204)
    key = f"Task/{tid}"
    assert recorder.changes == [  # the create that found its match wrote nothing
        (key, None, 1, "POST", None, "requested"),
        (key, 1, 2, "PUT", "requested", "accepted"),
        (key, 2, 3, "PATCH", "accepted", "ready"),
        (key, 3, 4, "DELETE", "ready", None),
    ]


async def test_every_transaction_and_batch_entry_passes_the_gate(client: httpx.AsyncClient, recorder: Recorder) -> None:
    first = (await client.put("/fhir/Task/t1", json=task(id="t1"), headers=FHIR_JSON_HEADERS)).status_code
    second = (await client.put("/fhir/Task/t2", json=task(id="t2"), headers=FHIR_JSON_HEADERS)).status_code
    assert (first, second) == (201, 201)
    recorder.changes.clear()
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:new", "resource": task("draft"), "request": {"method": "POST", "url": "Task"}},
            {"resource": task("accepted", id="t1"), "request": {"method": "PUT", "url": "Task/t1"}},
            {"resource": {"resourceType": "Parameters", "parameter": [
                {"name": "operation", "part": [{"name": "type", "valueCode": "replace"},
                                               {"name": "path", "valueString": "Task.status"},
                                               {"name": "value", "valueCode": "cancelled"}]}]},
             "request": {"method": "PATCH", "url": "Task/t2"}},
            {"request": {"method": "DELETE", "url": "Task/t1-never"}},
        ],
    }  # fmt: skip
    response = await client.post("/fhir", json=bundle, headers=FHIR_JSON_HEADERS)
    assert response.status_code == 200, response.text
    new_id = response.json()["entry"][0]["response"]["location"].split("/")[1]
    assert sorted(recorder.changes) == sorted(
        [
            (f"Task/{new_id}", None, 1, "POST", None, "draft"),
            ("Task/t1", 1, 2, "PUT", "requested", "accepted"),
            ("Task/t2", 1, 2, "PATCH", "requested", "cancelled"),
        ]
    )
    recorder.changes.clear()
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "DELETE", "url": "Task/t2"}},
            {"resource": task("on-hold"), "request": {"method": "POST", "url": "Task"}},
        ],
    }
    entries = (await client.post("/fhir", json=batch, headers=FHIR_JSON_HEADERS)).json()["entry"]
    made = entries[1]["response"]["location"].split("/")[1]
    assert recorder.changes == [
        ("Task/t2", 2, 3, "DELETE", "cancelled", None),
        (f"Task/{made}", None, 1, "POST", None, "on-hold"),
    ]


async def test_bulk_creates_pass_the_gate(app: FastAPI, recorder: Recorder) -> None:
    ctx: FhirContext = app.state.fhir.current
    prepared = [prepare_create(ctx, "Task", task(), resource_id=f"bulk-{n}") for n in range(3)]
    async with ctx.db.write() as conn:
        await store_creates(ctx, conn, prepared, OPEN)
    assert recorder.changes == [(f"Task/bulk-{n}", None, 1, "POST", None, "requested") for n in range(3)]


async def test_a_refusing_hook_leaves_nothing_behind(client: httpx.AsyncClient, recorder: Recorder) -> None:
    kept = await client.put("/fhir/Task/kept", json=task(id="kept"), headers=FHIR_JSON_HEADERS)
    assert kept.status_code == 201
    recorder.refuse = "Task"
    refused = [
        await client.post("/fhir/Task", json=task(), headers=FHIR_JSON_HEADERS),
        await client.put("/fhir/Task/kept", json=task("accepted", id="kept"), headers=FHIR_JSON_HEADERS),
        await client.delete("/fhir/Task/kept"),
        await client.post(
            "/fhir",
            json={
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [
                    {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
                    {"resource": task("accepted", id="kept"), "request": {"method": "PUT", "url": "Task/kept"}},
                ],
            },
            headers=FHIR_JSON_HEADERS,
        ),
    ]
    for response in refused:
        assert response.status_code == 422, response.text
        assert "the rule refuses this Task" in response.text
    current = (await client.get("/fhir/Task/kept")).json()
    assert current["meta"]["versionId"] == "1" and current["status"] == "requested"
    assert (await client.get("/fhir/Task", params={"_summary": "count"})).json()["total"] == 1
    assert (await client.get("/fhir/Patient", params={"_summary": "count"})).json()["total"] == 0  # rolled back


async def test_a_taken_id_is_refused_for_a_create(app: FastAPI) -> None:
    ctx: FhirContext = app.state.fhir.current
    rows = ctx.index_rows("Task", "fixed", task())

    def render(number: int, when: datetime) -> bytes:
        return fhirjson.dumps({**task(), "id": "fixed"})

    new = NewVersion("Task", "fixed", render, rows, (), "POST", ctx.row_keys("Task", rows))
    assert (await ctx.writer.write(None, new, ABSENT, OPEN)) is not None
    with pytest.raises(AlreadyExists):
        await ctx.writer.write(None, new, ABSENT, OPEN)


async def test_a_version_with_thousands_of_index_rows_is_written_chunk_by_chunk(
    client: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL writes a plain create in one statement, unless the version has more index rows than a
    chunk: then the transactional path inserts them chunk by chunk (the event loop serves others in
    between), and every row is stored all the same."""
    holder: ContextHolder = app.state.fhir
    alone: list[str] = []
    original = type(holder.current.writer)._write_alone

    async def recording(writer: Any, new: NewVersion, *args: Any) -> Any:
        alone.append(new.resource_type)
        return await original(writer, new, *args)

    monkeypatch.setattr(type(holder.current.writer), "_write_alone", recording)
    small = {"resourceType": "Patient", "name": [{"family": "Small"}]}
    names = [{"family": f"Family{n}", "given": [f"Given{n}", "Second"]} for n in range(600)]
    large = {"resourceType": "Patient", "name": names}
    rows = holder.current.index_rows("Patient", "x", large)
    assert sum(len(table_rows) for table_rows in rows.values()) > CHUNK_ROWS
    for body in (small, large):
        response = await client.post("/fhir/Patient", json=body, headers=FHIR_JSON_HEADERS)
        assert response.status_code == 201, response.text
    found = await client.get("/fhir/Patient", params={"given": "Given599", "family": "Family599"})
    assert [entry["resource"]["id"] for entry in found.json()["entry"]] == [response.json()["id"]]
    one_statement = holder.current.db.dialect == "postgresql"
    assert alone == (["Patient"] if one_statement else [])  # the small one alone; SQLite: transactions


async def test_writes_that_store_or_replace_megabytes_leave_the_event_loop(
    client: httpx.AsyncClient, app: FastAPI, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write whose body, index rows or replaced body weigh more than ``LARGE_WRITE`` runs the rest
    of its transaction through ``Database.run_off_loop`` (on a single server process SQLite's calls
    otherwise run on the event loop: a 9 MB Patient's insert and commit held every other client for
    most of a second); a small one does not. On PostgreSQL a plain write with few index rows is one
    statement, whose driver already waits off the loop, and never asks."""
    asked: list[str] = []
    original = Database.run_off_loop

    async def recording(conn: AsyncConnection) -> None:
        asked.append("asked")
        await original(conn)

    monkeypatch.setattr(Database, "run_off_loop", staticmethod(recording))

    async def asks(method: str, url: str, body: dict[str, Any] | None = None) -> bool:
        before = len(asked)
        response = await client.request(method, url, json=body, headers=FHIR_JSON_HEADERS)
        assert response.status_code in (200, 201, 204), response.text[:500]
        return len(asked) > before

    text = "x" * (LARGE_WRITE + 1)
    big = {
        "resourceType": "Patient",
        "text": {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{text}</div>'},
    }
    many_rows = {"resourceType": "Patient", "name": [{"family": f"F{n}", "given": [f"G{n}"]} for n in range(3000)]}
    small = {"resourceType": "Patient", "name": [{"family": "Small"}]}
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": big, "request": {"method": "POST", "url": "Patient"}}],
    }
    inline = backend == "sqlite"
    assert await asks("PUT", "/fhir/Patient/small", {**small, "id": "small"}) is False
    assert await asks("PUT", "/fhir/Patient/big", {**big, "id": "big"}) is inline
    assert await asks("PUT", "/fhir/Patient/big", {**small, "id": "big"}) is inline  # replaces the large body
    assert await asks("PUT", "/fhir/Patient/big", {**big, "id": "big"}) is inline
    assert await asks("DELETE", "/fhir/Patient/big") is inline  # removes it
    assert await asks("POST", "/fhir/Patient", many_rows) is True  # too many rows for one statement
    assert await asks("POST", "/fhir", bundle) is True  # a transaction's own connection, either backend
    assert await asks("PUT", "/fhir/Patient/small", {**small, "id": "small", "active": True}) is False
    found = await client.get("/fhir/Patient", params={"family": "F2999", "_summary": "count"})
    assert found.json()["total"] == 1
