"""Black-box tests against the real ``fhir-server serve`` process over HTTP."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.server.process import BIN, FHIR, RunningServer, start_server, stop_server

pytestmark = pytest.mark.server


@pytest.fixture
async def http(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(base_url=server.base, timeout=30, limits=limits) as client:
        yield client


async def test_readiness_metadata_and_request_id(server: RunningServer, http: httpx.AsyncClient) -> None:
    ready = await http.get("/health/ready")
    assert ready.json() == {"status": "ok", "database": "ok"}
    response = await http.get("/fhir/metadata", headers={"X-Request-Id": "trace-abc-123"})
    assert response.json()["resourceType"] == "CapabilityStatement"
    assert response.json()["implementation"]["url"] == f"{server.base}/fhir"
    assert response.headers["x-request-id"] == "trace-abc-123"
    await asyncio.sleep(0.2)
    lines = [orjson.loads(line) for line in server.log().splitlines() if line.startswith('{"event":"request"')]
    logged = [line for line in lines if line["request_id"] == "trace-abc-123"]
    assert logged and logged[0]["path"] == "/fhir/metadata" and logged[0]["status"] == 200
    assert logged[0]["method"] == "GET" and logged[0]["duration_ms"] >= 0


async def test_a_burst_of_new_connections_is_served_each_its_own_answer(server: RunningServer) -> None:
    """Forty connections opened at once, each with its own request id (the server accepts every
    waiting connection in one turn of its loop: ``app.serving_loop``)."""

    async def one(n: int) -> tuple[int, str, str]:
        reader, writer = await asyncio.open_connection("127.0.0.1", int(server.base.rsplit(":", 1)[1]))
        writer.write(
            f"GET /fhir/metadata HTTP/1.1\r\nHost: x\r\nX-Request-Id: burst-{n}\r\nConnection: close\r\n\r\n".encode()
        )
        answer = await reader.read()
        writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().lower().split("\r\n")[1:] if ": " in line)
        return int(head.split()[1]), headers["x-request-id"], orjson.loads(body)["resourceType"]

    answers = await asyncio.gather(*(one(n) for n in range(40)))
    assert answers == [(200, f"burst-{n}", "CapabilityStatement") for n in range(40)]


async def test_create_read_update_history_over_http(server: RunningServer, http: httpx.AsyncClient) -> None:
    plan = {"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": {"reference": "Patient/p1"}}
    created = await http.post("/fhir/CarePlan", json=plan, headers=FHIR)
    assert created.status_code == 201
    location = created.headers["location"]
    assert location.startswith(f"{server.base}/fhir/CarePlan/")
    pid = created.json()["id"]
    updated = await http.put(
        f"/fhir/CarePlan/{pid}", json={**plan, "id": pid, "status": "completed"}, headers={**FHIR, "If-Match": 'W/"1"'}
    )
    assert updated.status_code == 200
    history = (await http.get(f"/fhir/CarePlan/{pid}/_history")).json()
    assert [e["resource"]["status"] for e in history.get("entry", [])] == ["completed", "active"]


async def test_twenty_clients_racing_if_match_updates(http: httpx.AsyncClient) -> None:
    task = {"resourceType": "Task", "status": "requested", "intent": "order"}
    tid = (await http.post("/fhir/Task", json=task, headers=FHIR)).json()["id"]
    rounds = 5
    for round_number in range(1, rounds + 1):

        async def attempt(client_number: int, expected: int = round_number) -> int:
            body = {**task, "id": tid, "description": f"round {expected} client {client_number}"}
            response = await http.put(f"/fhir/Task/{tid}", json=body, headers={**FHIR, "If-Match": f'W/"{expected}"'})
            assert response.status_code in (200, 412), response.text
            return response.status_code

        statuses = await asyncio.gather(*(attempt(n) for n in range(20)))
        assert statuses.count(200) == 1, statuses
        assert statuses.count(412) == 19
    history = (await http.get(f"/fhir/Task/{tid}/_history")).json()["entry"]
    assert [int(e["resource"]["meta"]["versionId"]) for e in history] == list(range(rounds + 1, 0, -1))
    current = (await http.get(f"/fhir/Task/{tid}")).json()
    assert current["meta"]["versionId"] == str(rounds + 1)


async def test_sigterm_finishes_in_flight_request(server: RunningServer) -> None:
    payload = orjson.dumps({"resourceType": "Patient", "name": [{"family": "Slow"}]})

    async def slow_body() -> AsyncIterator[bytes]:
        for index in range(0, len(payload), 8):
            yield payload[index : index + 8]
            await asyncio.sleep(0.1)

    async with httpx.AsyncClient(base_url=server.base, timeout=30) as client:
        request = asyncio.create_task(client.post("/fhir/Patient", content=slow_body(), headers=FHIR))
        await asyncio.sleep(0.5)
        server.process.send_signal(signal.SIGTERM)
        response = await request
    assert response.status_code == 201
    assert response.json()["name"][0]["family"] == "Slow"
    # uvicorn re-raises the signal after its graceful shutdown, as a clean exit on SIGTERM
    assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)
    assert "Finished server process" in server.log()
    assert "Traceback" not in server.log()


async def test_serve_on_an_unmigrated_database_migrates_first(database_url: str, backend: str, tmp_path: Path) -> None:
    """``fhir-server serve`` brings the schema up to date itself instead of failing on a missing table."""
    if backend == "sqlite":
        database_url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.sqlite'}"
    else:  # an empty database next to the test one
        from sqlalchemy import text
        from sqlalchemy.ext.asyncio import create_async_engine

        admin = create_async_engine(database_url, isolation_level="AUTOCOMMIT")
        async with admin.connect() as conn:
            await conn.execute(text('DROP DATABASE IF EXISTS "fhir_fresh"'))
            await conn.execute(text('CREATE DATABASE "fhir_fresh"'))
        await admin.dispose()
        database_url = database_url.rsplit("/", 1)[0] + "/fhir_fresh"
    running = start_server(database_url, tmp_path / "fresh.log", migrate=False)
    try:
        async with httpx.AsyncClient(base_url=running.base, timeout=30) as client:
            created = await client.post("/fhir/Patient", json={"resourceType": "Patient", "active": True}, headers=FHIR)
            assert created.status_code == 201, created.text
        assert "Traceback" not in running.log()
    finally:
        stop_server(running)


def test_an_unreachable_database_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "FHIR_DATABASE_URL": "postgresql+asyncpg://fhir:s3cret@127.0.0.1:1/none"}
    result = subprocess.run([str(BIN / "fhir-server"), "migrate"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "cannot migrate the database postgresql+asyncpg://fhir:***@127.0.0.1:1/none" in output
    assert "s3cret" not in output
    assert "Traceback" not in output
