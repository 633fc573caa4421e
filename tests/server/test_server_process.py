"""Black-box tests against the real ``fhir-server serve`` process over HTTP."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from tests.postgres_cluster import free_port

pytestmark = pytest.mark.server
FHIR = {"Content-Type": "application/fhir+json"}
BIN = Path(sys.executable).parent


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    base: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(database_url: str, log_path: Path) -> RunningServer:
    port = free_port()
    env = {**os.environ, "FHIR_DATABASE_URL": database_url, "FHIR_PORT": str(port), "FHIR_HOST": "127.0.0.1"}
    env.pop("FHIR_BASE_URL", None)
    subprocess.run([str(BIN / "fhir-server"), "migrate"], env=env, check=True, capture_output=True)
    log_file = log_path.open("wb")
    process = subprocess.Popen([str(BIN / "fhir-server"), "serve"], env=env, stdout=log_file, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early: {log_path.read_text()}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return RunningServer(process, base, log_path)
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("server did not become healthy")


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[RunningServer]:
    running = start_server(database_url, tmp_path / "server.log")
    yield running
    if running.process.poll() is None:
        running.process.send_signal(signal.SIGTERM)
        try:
            running.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            running.process.kill()


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
