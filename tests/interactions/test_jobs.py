"""``$reindex`` at type and system level as a background job (hl7.org/fhir/R4/async.html).

Kick-off answers 202 with the polling location; polling answers 202 with
``X-Progress`` until the job ends, then 200 with the result (or 500 with an
OperationOutcome); DELETE cancels. Jobs live in the database: a job whose
process died is resumed from its cursor by the next process to start.
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import insert, select

from app.config import Settings
from app.interactions.bulk import prepare_create, store_creates
from app.interactions.context import utc_now
from app.interactions.jobs import JobRunner
from app.interactions.reindex_job import REINDEX
from app.main import create_app
from app.storage.gate import OPEN
from app.storage.jobs import beat, jobs
from tests.conftest import FHIR_JSON_HEADERS, TEST_BASE_URL
from tests.examples import load
from tests.search.loading import put_all

TITLE_PARAMETER = {
    "resourceType": "SearchParameter",
    "url": "http://example.org/fhir/SearchParameter/careplan-title-jobs",
    "name": "CarePlanTitle",
    "status": "active",
    "description": "Search care plans by title",
    "code": "title",
    "base": ["CarePlan"],
    "type": "string",
    "expression": "CarePlan.title",
}


async def completed(client: httpx.AsyncClient, kickoff: httpx.Response, timeout: float = 60) -> httpx.Response:
    """Follow an async kick-off response: poll its ``Content-Location`` until it stops answering 202."""
    assert kickoff.status_code == 202, kickoff.text
    url = kickoff.headers["content-location"]
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(url)
        if response.status_code != 202:
            return response
        assert time.monotonic() < deadline, f"job still running: {response.headers.get('x-progress')}"
        await asyncio.sleep(0.01)


def counts_of(parameters: dict[str, Any]) -> tuple[int, dict[str, int]]:
    total = parameters["parameter"][0]
    assert total["name"] == "count"
    per_type = {p["part"][0]["valueCode"]: p["part"][1]["valueInteger"] for p in parameters["parameter"][1:]}
    return total["valueInteger"], per_type


def plan(resource_id: str, title: str) -> dict[str, Any]:
    return {
        "resourceType": "CarePlan",
        "id": resource_id,
        "status": "active",
        "intent": "plan",
        "title": title,
        "subject": {"reference": "Patient/p1"},
    }


async def titled_ids(client: httpx.AsyncClient, title: str) -> list[str]:
    bundle = (await client.get(f"/fhir/CarePlan?title={title}&_count=1000")).json()
    return sorted(e["resource"]["id"] for e in bundle.get("entry", []))


async def plans_then_parameter(client: httpx.AsyncClient, count: int) -> list[str]:
    """``count`` care plans stored before the title parameter exists, so only a reindex indexes them."""
    ids = [f"cp-{n:03d}" for n in range(count)]
    await put_all(client, (plan(i, "Heart failure plan") for i in ids))
    response = await client.post("/fhir/SearchParameter", json=TITLE_PARAMETER, headers=FHIR_JSON_HEADERS)
    assert response.status_code == 201, response.text
    assert await titled_ids(client, "heart") == []
    return ids


async def seed(app: FastAPI, bodies: list[dict[str, Any]], copies: int) -> int:
    """Store ``copies`` of each body in one transaction (bulk path); the number stored."""
    ctx = app.state.fhir.current
    prepared = [prepare_create(ctx, b["resourceType"], dict(b), validate=False) for _ in range(copies) for b in bodies]
    async with ctx.db.write() as conn:
        await store_creates(ctx, conn, prepared, OPEN)
    return len(prepared)


def small_batches(app: FastAPI, batch_size: int) -> JobRunner:
    """Make the app's jobs run in batches of at most ``batch_size``, so they stay observable mid-way."""
    runner: JobRunner = app.state.jobs
    runner.batch_size = batch_size
    return runner


async def insert_job(app: FastAPI, **values: Any) -> None:
    """A job row written directly, as another (possibly dead) process would have left it."""
    now = utc_now()
    row = {"kind": REINDEX, "status": "accepted", "parameters": '{"type": "CarePlan"}', "created": now, "updated": now}
    async with app.state.fhir.current.db.write() as conn:
        await conn.execute(insert(jobs).values({**row, **values}))


async def stored_job(app: FastAPI, job_id: str) -> dict[str, Any]:
    async with app.state.fhir.current.db.read() as conn:
        row = (await conn.execute(select(jobs).where(jobs.c.id == job_id))).one()
    return dict(row._mapping)


async def until_idle(runner: JobRunner, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while runner.tasks:
        assert time.monotonic() < deadline, "job tasks still running"
        await asyncio.sleep(0.01)


async def test_type_reindex_answers_202_with_the_polling_location(client: httpx.AsyncClient) -> None:
    ids = await plans_then_parameter(client, 3)
    kickoff = await client.post("/fhir/CarePlan/$reindex")
    assert kickoff.status_code == 202
    location = kickoff.headers["content-location"]
    assert re.fullmatch(re.escape(TEST_BASE_URL) + r"/_async/[0-9a-f]{32}", location)
    outcome = kickoff.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "information"
    assert location in outcome["issue"][0]["diagnostics"]

    done = await completed(client, kickoff)
    assert done.status_code == 200
    assert done.json()["resourceType"] == "Parameters"
    assert counts_of(done.json()) == (3, {"CarePlan": 3})
    assert await titled_ids(client, "heart") == ids
    assert (await client.get(location)).status_code == 200  # a completed job keeps answering


async def test_system_reindex_counts_every_stored_type(client: httpx.AsyncClient) -> None:
    await plans_then_parameter(client, 2)
    patient = {"resourceType": "Patient", "name": [{"family": "Okafor"}]}
    assert (await client.post("/fhir/Patient", json=patient, headers=FHIR_JSON_HEADERS)).status_code == 201
    done = await completed(client, await client.post("/fhir/$reindex"))
    assert done.status_code == 200
    assert counts_of(done.json()) == (4, {"CarePlan": 2, "Patient": 1, "SearchParameter": 1})


async def test_instance_reindex_stays_synchronous(client: httpx.AsyncClient) -> None:
    await plans_then_parameter(client, 2)
    response = await client.post("/fhir/CarePlan/cp-001/$reindex")
    assert response.status_code == 200
    assert "content-location" not in response.headers
    assert counts_of(response.json()) == (1, {"CarePlan": 1})
    assert await titled_ids(client, "heart") == ["cp-001"]


async def test_unknown_type_is_refused_before_any_job(client: httpx.AsyncClient) -> None:
    response = await client.post("/fhir/Nonsense/$reindex")
    assert response.status_code == 404
    assert "content-location" not in response.headers


async def test_polling_shows_progress_while_running(app: FastAPI, client: httpx.AsyncClient) -> None:
    await plans_then_parameter(client, 60)
    small_batches(app, 3)
    kickoff = await client.post("/fhir/CarePlan/$reindex")
    url = kickoff.headers["content-location"]
    progress = []
    while (response := await client.get(url)).status_code == 202:
        assert response.json()["issue"][0]["severity"] == "information"
        assert response.headers["retry-after"] == "1"
        progress.append(response.headers["x-progress"])
        # a client waits between polls: in process, on inline SQLite, a GET need not suspend at all,
        # and polling without a pause would keep the job from ever running
        await asyncio.sleep(0)
    assert response.status_code == 200
    assert counts_of(response.json()) == (60, {"CarePlan": 60})
    running = [p for p in progress if re.fullmatch(r"CarePlan: \d+ of ~60 resources", p)]
    assert running, progress
    done = [int(p.split()[1]) for p in running]
    assert done == sorted(done) and all(0 < n <= 60 for n in done)


async def test_delete_cancels_and_the_location_is_gone(app: FastAPI, client: httpx.AsyncClient) -> None:
    await plans_then_parameter(client, 200)
    runner = small_batches(app, 1)
    kickoff = await client.post("/fhir/CarePlan/$reindex")
    url = kickoff.headers["content-location"]
    job_id = url.rsplit("/", 1)[1]

    cancelled = await client.delete(url)
    assert cancelled.status_code == 202
    assert cancelled.json()["issue"][0]["severity"] == "information"
    gone = await client.get(url)
    assert gone.status_code == 404
    assert gone.json()["resourceType"] == "OperationOutcome"
    assert "cancelled" in gone.json()["issue"][0]["diagnostics"]
    assert (await client.delete(url)).status_code == 404

    await until_idle(runner)  # the task noticed at its next checkpoint and stopped
    row = await stored_job(app, job_id)
    assert row["status"] == "cancelled" and row["owner"] is None
    assert len(await titled_ids(client, "heart")) < 200


async def test_unknown_job_is_404(client: httpx.AsyncClient) -> None:
    for url in ("/fhir/_async/0123456789abcdef", "/fhir/_async/" + "x" * 100):
        for response in (await client.get(url), await client.delete(url)):
            assert response.status_code == 404
            outcome = response.json()
            assert outcome["resourceType"] == "OperationOutcome"
            assert "job" in outcome["issue"][0]["diagnostics"]


async def test_failed_job_answers_500_with_an_outcome(app: FastAPI, client: httpx.AsyncClient) -> None:
    await insert_job(app, id="bad-type", parameters='{"type": "NotAType"}')
    await insert_job(app, id="bad-kind", kind="export", parameters="{}")
    runner = app.state.jobs
    assert sorted(await runner.resume_stale()) == ["bad-kind", "bad-type"]
    await until_idle(runner)
    for job_id, message in (("bad-type", "Unknown resource type 'NotAType'"), ("bad-kind", "kind 'export'")):
        response = await client.get(f"/fhir/_async/{job_id}")
        assert response.status_code == 500
        issue = response.json()["issue"][0]
        assert issue["severity"] == "error" and issue["code"] == "exception"
        assert message in issue["diagnostics"]
        assert "Traceback" not in response.text and "Error" not in issue["diagnostics"]


async def test_a_dead_owners_job_is_resumed_from_its_cursor(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings
) -> None:
    ids = await plans_then_parameter(client, 10)
    an_hour_ago = utc_now() - timedelta(hours=1)
    await insert_job(
        app,
        id="orphan",
        status="running",
        progress="CarePlan: 4 of ~10 resources",
        cursor_type="CarePlan",
        cursor_id=ids[3],
        result='{"CarePlan": 4}',
        owner="a-process-that-died",
        heartbeat=an_hour_ago,
    )
    await insert_job(app, id="alive", status="running", owner="a-live-process", heartbeat=utc_now())

    restarted = create_app(settings)
    async with restarted.router.lifespan_context(restarted):
        transport = httpx.ASGITransport(app=restarted)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as other:
            done = await completed(other, httpx.Response(202, headers={"content-location": "/fhir/_async/orphan"}))
            assert done.status_code == 200
            assert counts_of(done.json()) == (10, {"CarePlan": 10})
            live = await other.get("/fhir/_async/alive")
            assert live.status_code == 202  # its owner still beats: not taken over
    # only the resources after the cursor were reindexed: the job went on, it did not start again
    assert await titled_ids(client, "heart") == ids[4:]
    assert (await stored_job(app, "alive"))["owner"] == "a-live-process"


async def test_exactly_one_process_claims_an_abandoned_job(app: FastAPI, settings: Settings) -> None:
    await insert_job(app, id="abandoned")
    other = create_app(settings)
    try:
        first, second = await asyncio.gather(app.state.jobs.resume_stale(), other.state.jobs.resume_stale())
        assert sorted(first + second) == ["abandoned"]
        await until_idle(app.state.jobs)
        await until_idle(other.state.jobs)
        assert (await stored_job(app, "abandoned"))["status"] == "completed"
    finally:
        await other.state.jobs.close()
        await other.state.fhir.current.db.dispose()


async def test_heartbeats_keep_only_the_owners_running_jobs(app: FastAPI) -> None:
    an_hour_ago = utc_now() - timedelta(hours=1)
    await insert_job(app, id="mine", status="running", owner="this-process", heartbeat=an_hour_ago)
    await insert_job(app, id="theirs", status="running", owner="a-process-that-died", heartbeat=an_hour_ago)
    async with app.state.fhir.current.db.write() as conn:
        assert await beat(conn, "this-process", ["mine", "theirs"], utc_now()) == 1
    assert (await stored_job(app, "mine"))["heartbeat"] > an_hour_ago
    assert await app.state.jobs.resume_stale() == ["theirs"]
    await until_idle(app.state.jobs)
    assert (await stored_job(app, "mine"))["owner"] == "this-process"


async def test_shutdown_leaves_the_job_resumable(app: FastAPI, client: httpx.AsyncClient, settings: Settings) -> None:
    ids = await plans_then_parameter(client, 150)
    first = create_app(settings)
    async with first.router.lifespan_context(first):
        small_batches(first, 1)
        transport = httpx.ASGITransport(app=first)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            kickoff = await http.post("/fhir/CarePlan/$reindex")
            url = kickoff.headers["content-location"]
            job_id = url.rsplit("/", 1)[1]
            while not (await http.get(url)).headers["x-progress"].startswith("CarePlan"):
                await asyncio.sleep(0.001)
    row = await stored_job(app, job_id)
    assert row["status"] == "running" and row["owner"] is None  # released, not finished
    assert 0 < orjson.loads(row["result"])["CarePlan"] < 150
    second = create_app(settings)
    async with second.router.lifespan_context(second):
        transport = httpx.ASGITransport(app=second)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            done = await completed(http, kickoff)
            assert done.status_code == 200
            assert counts_of(done.json()) == (150, {"CarePlan": 150})
    assert await titled_ids(client, "heart") == ids


@pytest.mark.alone
async def test_health_answers_while_a_system_reindex_runs(app: FastAPI, client: httpx.AsyncClient) -> None:
    bodies = [load("careplan-example.json"), load("patient-example.json"), load("careplan-example-f201-renal.json")]
    for body in bodies:
        body.pop("id", None)
    stored = await seed(app, bodies, 1000)
    latencies: list[float] = []

    async def check_health() -> None:
        """A health check falls due every 10 ms; how late is each answered (a busy event loop delays it)?"""
        while True:
            due = time.perf_counter() + 0.01
            await asyncio.sleep(0.01)
            assert (await client.get("/health")).status_code == 200
            latencies.append(time.perf_counter() - due)

    kickoff = await client.post("/fhir/$reindex")
    checker = asyncio.create_task(check_health())
    try:
        done = await completed(client, kickoff)
    finally:
        checker.cancel()
    assert counts_of(done.json()) == (stored, {"CarePlan": 2000, "Patient": 1000})
    assert len(latencies) >= 10, latencies
    assert max(latencies) < 0.5, max(latencies)
