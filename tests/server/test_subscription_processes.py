"""Subscriptions delivered by real ``fhir-server serve`` processes to a real HTTP endpoint: a crash
between commit and delivery loses nothing and repeats nothing, two processes share one outbox
without delivering an event twice or out of order, and a websocket client bound to one process is
pinged for writes made through another (PostgreSQL NOTIFY); with authorization on, a websocket binds
by access token or by a binding token."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.postgres_cluster import free_port
from tests.server.process import BIN, FHIR, RunningServer, start_server, stop_server

SECRET = "subscription test secret"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
TASK_ASSIGNED = "http://care-plan-repository.org/SubscriptionTopic/task-assigned"

pytestmark = pytest.mark.server


@dataclass
class Endpoint:
    """A rest-hook receiver on the loopback interface, recording each notification's X-Event-Id."""

    port: int
    received: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> None:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with endpoint.lock:
                    endpoint.received.append(self.headers["X-Event-Id"])
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def wait_for(self, count: int, seconds: float = 60) -> list[str]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.05)
        raise AssertionError(f"{len(self.received)} of {count} notifications arrived")


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    receiver = Endpoint(free_port())
    yield receiver
    receiver.stop()


def subscribe(server: RunningServer, url: str, criteria: str = "Task?owner=Practitioner/p1") -> str:
    body = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "process test",
        "criteria": criteria,
        "channel": {"type": "rest-hook", "endpoint": url},
    }
    response = httpx.post(f"{server.base}/fhir/Subscription", json=body, headers=FHIR)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def create_task(server: RunningServer, owner: str = "Practitioner/p1") -> str:
    body = {"resourceType": "Task", "status": "requested", "intent": "order", "owner": {"reference": owner}}
    response = httpx.post(f"{server.base}/fhir/Task", json=body, headers=FHIR)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


FAST = {"FHIR_SUBSCRIPTION_LEASE_SECONDS": "2", "FHIR_SUBSCRIPTION_TIMEOUT_SECONDS": "1"}


def test_a_crash_after_commit_loses_no_notification_and_repeats_none(
    database_url: str, tmp_path: Path, endpoint: Endpoint
) -> None:
    first = start_server(database_url, tmp_path / "first.log", settings=FAST)
    try:
        subscription_id = subscribe(first, endpoint.url)
        create_task(first)  # committed; the endpoint is not listening yet, so it cannot be delivered
        first.process.kill()  # SIGKILL: no shutdown of any kind
        first.process.wait(timeout=10)
    finally:
        stop_server(first)
    endpoint.start()
    second = start_server(database_url, tmp_path / "second.log", migrate=False, settings=FAST)
    try:
        assert endpoint.wait_for(1) == [f"{subscription_id}/1"]
        create_task(second)
        assert endpoint.wait_for(2) == [f"{subscription_id}/1", f"{subscription_id}/2"]
        time.sleep(1.5)  # a repeat would come within the poll
        assert endpoint.received == [f"{subscription_id}/1", f"{subscription_id}/2"]
    finally:
        stop_server(second)


def test_two_processes_deliver_500_events_once_each_in_order(
    backend: str, database_url: str, tmp_path: Path, endpoint: Endpoint
) -> None:
    if backend != "postgresql":
        pytest.skip("several server processes share one database on PostgreSQL")
    endpoint.start()
    servers = [start_server(database_url, tmp_path / f"server{n}.log", migrate=n == 0) for n in range(2)]
    try:
        ids = [subscribe(servers[n % 2], endpoint.url) for n in range(5)]
        time.sleep(0.5)  # each process announces its Subscriptions to the other (NOTIFY) after the commit
        for n in range(100):  # each write matches all five subscriptions: 500 events
            create_task(servers[n % 2])
        received = endpoint.wait_for(500, seconds=120)
        time.sleep(1.5)
        assert len(endpoint.received) == 500, "an event was delivered twice"
        for subscription_id in ids:
            mine = [e for e in received if e.startswith(f"{subscription_id}/")]
            assert mine == [f"{subscription_id}/{n}" for n in range(1, 101)]
        logs = [server.log() for server in servers]
        assert all("delivering Subscription" not in log for log in logs)
    finally:
        for server in servers:
            stop_server(server)


def test_a_websocket_client_on_one_process_is_pinged_for_writes_through_another(
    backend: str, database_url: str, tmp_path: Path
) -> None:
    if backend != "postgresql":
        pytest.skip("several server processes share one database on PostgreSQL")
    bound, writer = (start_server(database_url, tmp_path / f"ws{n}.log", migrate=n == 0) for n in range(2))
    try:
        body = {
            "resourceType": "Subscription",
            "status": "requested",
            "reason": "websocket test",
            "criteria": "Task?owner=Practitioner/p1",
            "channel": {"type": "websocket"},
        }
        subscription_id = httpx.post(f"{writer.base}/fhir/Subscription", json=body, headers=FHIR).json()["id"]

        async def listen() -> list[str]:
            url = bound.base.replace("http://", "ws://") + "/fhir/websocket"
            async with websockets.connect(url) as socket:
                await socket.send(f"bind {subscription_id}")
                messages = [str(await asyncio.wait_for(socket.recv(), timeout=10))]
                await asyncio.to_thread(create_task, writer)
                await asyncio.to_thread(create_task, writer, "Practitioner/p2")  # does not match
                await asyncio.to_thread(create_task, writer)
                for _ in range(2):
                    messages.append(str(await asyncio.wait_for(socket.recv(), timeout=10)))
                return messages

        assert asyncio.run(listen()) == [f"bound {subscription_id}"] + [f"ping {subscription_id}"] * 2
    finally:
        stop_server(bound)
        stop_server(writer)


def test_with_authorization_on_a_websocket_binds_by_access_token_or_binding_token(
    database_url: str, tmp_path: Path
) -> None:
    """A bad access token is refused at the handshake; without one, only ``bind-with-token`` works, with
    a token from ``$get-ws-binding-token``; the topic's notification Bundles then arrive as text."""
    server = start_server(database_url, tmp_path / "auth.log", auth=True)
    env = {**os.environ, "FHIR_DATABASE_URL": database_url}
    try:
        register = ["client", "add", "--client-id", "hooks", "--type", "confidential-symmetric", "--secret", SECRET,
                    "--scope", "system/*.cruds"]  # fmt: skip
        done = subprocess.run([str(BIN / "fhir-server"), *register], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        answer = httpx.post(
            f"{server.base}/smart/token",
            data={"grant_type": "client_credentials", "scope": "system/*.cruds"},
            auth=("hooks", SECRET),
        )
        bearer = {**FHIR, "Authorization": f"Bearer {answer.json()['access_token']}"}
        body = {
            "resourceType": "Subscription",
            "status": "requested",
            "reason": "websocket test",
            "criteria": TASK_ASSIGNED,
            "_criteria": {
                "extension": [
                    {"url": f"{BACKPORT}backport-filter-criteria", "valueString": "Task?owner=Practitioner/p1"}
                ]
            },
            "channel": {
                "type": "websocket",
                "payload": "application/fhir+json",
                "_payload": {"extension": [{"url": f"{BACKPORT}backport-payload-content", "valueCode": "id-only"}]},
            },
        }
        created = httpx.post(f"{server.base}/fhir/Subscription", json=body, headers=bearer)
        assert created.status_code == 201, created.text
        subscription_id = created.json()["id"]
        issued = httpx.post(f"{server.base}/fhir/Subscription/{subscription_id}/$get-ws-binding-token", headers=bearer)
        values = {p["name"]: next(v for k, v in p.items() if k != "name") for p in issued.json()["parameter"]}
        url = values["websocket-url"]
        assert url == server.base.replace("http://", "ws://") + "/fhir/websocket"

        async def refused() -> None:
            async with websockets.connect(url, additional_headers={"Authorization": "Bearer not-a-token"}):
                pass

        with pytest.raises(websockets.InvalidStatus) as refusal:
            asyncio.run(refused())
        assert refusal.value.response.status_code == 403

        async def listen() -> list[str]:
            async with websockets.connect(url) as socket:
                await socket.send(f"bind {subscription_id}")
                messages = [str(await asyncio.wait_for(socket.recv(), timeout=10))]
                await socket.send(f"bind-with-token {values['token']}")
                messages.append(str(await asyncio.wait_for(socket.recv(), timeout=10)))
                task = {"resourceType": "Task", "status": "requested", "intent": "order",
                        "owner": {"reference": "Practitioner/p1"}}  # fmt: skip
                written = await asyncio.to_thread(httpx.post, f"{server.base}/fhir/Task", json=task, headers=bearer)
                assert written.status_code == 201
                messages.append(str(await asyncio.wait_for(socket.recv(), timeout=10)))
                messages.append(written.json()["id"])
                return messages

        refusal_text, handshake, notification, task_id = asyncio.run(listen())
        assert refusal_text.startswith("error bind needs an access token")
        assert json.loads(handshake)["entry"][0]["resource"]["parameter"][3] == {
            "name": "type",
            "valueCode": "handshake",
        }
        bundle = json.loads(notification)
        assert bundle["type"] == "history"
        assert bundle["entry"][1]["fullUrl"] == f"{server.base}/fhir/Task/{task_id}"
        assert values["token"] not in server.log()
    finally:
        stop_server(server)


def delivery_processes(parent: int) -> list[int]:
    """The ``fhir-server deliver`` children of a process (from /proc)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
            command = (status.parent / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile
            continue
        if fields.get("PPid", "").strip() == str(parent) and command[-2:] == [b"deliver", b""]:
            found.append(int(status.parent.name))
    return found


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGKILL"])
def test_serve_runs_a_delivery_process_on_postgresql_that_ends_with_it(
    backend: str, database_url: str, tmp_path: Path, stop: str
) -> None:
    server = start_server(database_url, tmp_path / "serve.log")
    try:
        children = delivery_processes(server.process.pid)
        assert len(children) == (1 if backend == "postgresql" else 0)
    finally:
        if stop == "SIGKILL":
            server.process.kill()
            server.process.wait()
        stop_server(server)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in children):
        time.sleep(0.1)
    assert not [pid for pid in children if Path(f"/proc/{pid}/status").exists() and "zombie" not in
                Path(f"/proc/{pid}/status").read_text()]  # fmt: skip


def test_a_delivery_process_that_dies_is_replaced_and_delivers_what_waited(
    backend: str, database_url: str, tmp_path: Path
) -> None:
    if backend != "postgresql":
        pytest.skip("the delivery process runs beside the server on PostgreSQL")
    endpoint = Endpoint(free_port())
    endpoint.start()
    server = start_server(database_url, tmp_path / "replaced.log")
    try:
        (first,) = delivery_processes(server.process.pid)
        os.kill(first, signal.SIGKILL)
        body = {
            "resourceType": "Subscription",
            "status": "requested",
            "reason": "replacement test",
            "criteria": "Task?owner=Practitioner/p1",
            "channel": {"type": "rest-hook", "endpoint": endpoint.url},
        }
        subscription_id = httpx.post(f"{server.base}/fhir/Subscription", json=body, headers=FHIR).json()["id"]
        create_task(server)  # stored while no delivery process runs
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not endpoint.received:
            time.sleep(0.1)
        assert endpoint.received == [f"{subscription_id}/1"]
        (second,) = delivery_processes(server.process.pid)
        assert second != first
        assert "the Subscription delivery process ended" in server.log()
    finally:
        stop_server(server)
        endpoint.stop()
