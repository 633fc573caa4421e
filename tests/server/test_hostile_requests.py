"""No single hostile request freezes the server: ``/health`` stays fast while each one is in flight.

The server runs one worker, so one event loop answers everyone: a request that
holds that loop for a second (a large body parsed or validated on it, a patch
that doubles a document, a backtracking regular expression, a job that never
yields, a response built in one piece) stalls every other client for that
second. Each test runs one hostile request against the real ``fhir-server
serve`` process while a second client, on its own connection, calls
``GET /health`` every ~20 ms, and asserts the worst latency it saw, the
hostile request's own answer and a log without tracebacks or 500s. The
tests share one server per backend (a start builds every resource model,
seconds each time); each reads only its own part of the log, and none
depends on what the others stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from tests.conftest import BACKENDS, truncate
from tests.server.process import RunningServer, start_server, stop_server

pytestmark = [pytest.mark.server, pytest.mark.alone]

FHIR = {"Content-Type": "application/fhir+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
WORST_HEALTH_SECONDS = 0.5
POLL_INTERVAL = 0.02
MAX_BODY_BYTES = 10 * 1024 * 1024  # FHIR_MAX_BODY_BYTES default
MAX_BUNDLE_RESPONSE_RESOURCES = 10_000  # FHIR_MAX_BUNDLE_RESPONSE_RESOURCES default
T = TypeVar("T")


@pytest.fixture(scope="module", params=BACKENDS)
def shared_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One real server per backend for the module, on a database of its own."""
    directory = tmp_path_factory.mktemp("hostile")
    if request.param == "sqlite":
        database = directory / "fhir.sqlite"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), database)
        url = f"sqlite+aiosqlite:///{database}"
    else:
        url = request.getfixturevalue("postgres_template")
        asyncio.run(truncate(url))
    running = start_server(url, directory / "server.log")
    yield running
    stop_server(running)


@pytest.fixture
def backend(shared_server: RunningServer, request: pytest.FixtureRequest) -> str:
    return str(request.node.callspec.params["shared_server"])


@pytest.fixture
def server(shared_server: RunningServer) -> RunningServer:
    return shared_server.from_here()


@dataclass
class Probe:
    """What the /health poller saw while the hostile request ran."""

    latencies: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    hostile_seconds: float = 0.0

    @property
    def worst(self) -> float:
        return max(self.latencies)

    def report(self, backend: str, case: str, answer: str) -> None:
        print(
            f"\n[{backend}] {case}: {answer} in {self.hostile_seconds:.3f} s; worst /health "
            f"{self.worst * 1000:.1f} ms over {len(self.latencies)} polls"
        )

    def assert_health_stayed_fast(self) -> None:
        assert self.latencies, "the poller never completed a /health request"
        assert set(self.statuses) == {200}, self.statuses
        assert self.worst < WORST_HEALTH_SECONDS, (
            f"/health took {self.worst:.3f} s while the hostile request was in flight "
            f"(slowest five: {sorted(self.latencies)[-5:]})"
        )


async def probed(server: RunningServer, hostile: Awaitable[T]) -> tuple[T, Probe]:
    """Run ``hostile`` while a separate client (its own connection pool) polls ``/health``.

    The poller's connection is opened before the hostile request starts, so its
    latencies measure the server, not a TCP handshake.
    """
    probe = Probe()
    done = asyncio.Event()
    async with httpx.AsyncClient(base_url=server.base, timeout=60) as poller:
        assert (await poller.get("/health")).status_code == 200

        async def poll() -> None:
            while not done.is_set():
                started = time.perf_counter()
                response = await poller.get("/health")
                probe.latencies.append(time.perf_counter() - started)
                probe.statuses.append(response.status_code)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), POLL_INTERVAL)

        polling = asyncio.create_task(poll())
        await asyncio.sleep(POLL_INTERVAL)
        started = time.perf_counter()
        try:
            result = await hostile
        finally:
            probe.hostile_seconds = time.perf_counter() - started
            done.set()
            await polling
    return result, probe


def hostile_client(server: RunningServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.base, timeout=120)


async def assert_clean_log(server: RunningServer) -> None:
    """Neither a traceback nor a 500 in the log: a hostile request is the client's error, not the server's."""
    await asyncio.sleep(0.3)
    log = server.log()
    assert "Traceback" not in log, log[-4000:]
    failures = [line for line in log.splitlines() if line.startswith('{"event":"request"') and '"status":500' in line]
    assert not failures, failures


def assert_outcome(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text[:2000]
    outcome: dict[str, Any] = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"] and outcome["issue"][0]["severity"] in ("error", "fatal")
    return outcome


async def create(client: httpx.AsyncClient, resource: dict[str, Any]) -> str:
    """The id of the created resource."""
    response = await client.post(f"/fhir/{resource['resourceType']}", content=orjson.dumps(resource), headers=FHIR)
    assert response.status_code == 201, response.text[:2000]
    return str(response.json()["id"])


async def stored_count(client: httpx.AsyncClient) -> int:
    """How many current resources of every type the server holds (a system search's total)."""
    response = await client.get("/fhir?_summary=count")
    assert response.status_code == 200, response.text[:2000]
    return int(response.json()["total"])


async def load_patients(client: httpx.AsyncClient, count: int, per_bundle: int = 1000) -> None:
    """``count`` Patients through transaction Bundles: thousands of single creates would take minutes."""
    for start in range(0, count, per_bundle):
        entries = [
            {
                "resource": {"resourceType": "Patient", "name": [{"family": f"Load{n}", "given": ["Hostile"]}]},
                "request": {"method": "POST", "url": "Patient"},
            }
            for n in range(start, min(count, start + per_bundle))
        ]
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        response = await client.post("/fhir", content=orjson.dumps(bundle), headers=FHIR)
        assert response.status_code == 200, response.text[:2000]


async def test_a_million_empty_objects_are_refused_by_the_array_limit(server: RunningServer, backend: str) -> None:
    body = b'{"resourceType":"Patient","name":[' + b",".join([b"{}"] * 1_000_000) + b"]}"
    assert len(body) < MAX_BODY_BYTES
    async with hostile_client(server) as client:
        response, probe = await probed(server, client.post("/fhir/Patient", content=body, headers=FHIR))
    probe.report(backend, f"1,000,000 empty names ({len(body):,} bytes)", f"{response.status_code}")
    outcome = assert_outcome(response, 400)
    assert "10000" in orjson.dumps(outcome["issue"]).decode().replace(",", ""), outcome
    probe.assert_health_stayed_fast()
    await assert_clean_log(server)


async def test_a_valid_nine_megabyte_patient_does_not_hold_up_other_clients(
    server: RunningServer, backend: str
) -> None:
    """Within every limit, so it is stored; parsing, validating and indexing it must all leave the loop free."""
    names = [
        {"text": f"name {n} " + "x" * 800, "family": f"Family{n}", "given": [f"Given{n}", "Second", "Third"]}
        for n in range(10_000)
    ]
    body = orjson.dumps({"resourceType": "Patient", "name": names})
    assert 8 * 1024 * 1024 < len(body) < MAX_BODY_BYTES
    async with hostile_client(server) as client:
        response, probe = await probed(server, client.post("/fhir/Patient", content=body, headers=FHIR))
        probe.report(backend, f"valid Patient of {len(body):,} bytes", f"{response.status_code}")
        assert response.status_code == 201, response.text[:2000]
        stored = await client.get(f"/fhir/Patient/{response.json()['id']}")
        assert len(stored.json()["name"]) == 10_000
        # (the module's other tests measure their own requests, not ones that meet this Patient)
        assert (await client.delete(f"/fhir/Patient/{response.json()['id']}")).status_code in (200, 204)
    probe.assert_health_stayed_fast()
    await assert_clean_log(server)


def doubling_patch(copies: int) -> list[dict[str, str]]:
    """A JSON Patch whose every ``copy`` doubles the document.

    The first copy gives the first extension a nested ``extension`` array holding
    itself; every later copy appends the whole first extension to that array, so
    the extension (and the document) is twice as big after each operation.
    """
    nest = {"op": "copy", "from": "/extension", "path": "/extension/0/extension"}
    double = {"op": "copy", "from": "/extension/0", "path": "/extension/0/extension/-"}
    return [nest] + [double] * (copies - 1)


async def test_a_self_doubling_json_patch_is_refused_before_it_passes_the_body_limit(
    server: RunningServer, backend: str
) -> None:
    patient = {"resourceType": "Patient", "extension": [{"url": "http://x", "valueString": "aaaaaaaaaa"}]}
    patch = orjson.dumps(doubling_patch(18))
    async with hostile_client(server) as client:
        pid = await create(client, patient)
        url = f"/fhir/Patient/{pid}"
        response, probe = await probed(server, client.patch(url, content=patch, headers=JSON_PATCH))
        probe.report(backend, f"JSON Patch of 18 self-copies ({len(patch)} bytes)", f"{response.status_code}")
        assert_outcome(response, 422)
        assert probe.hostile_seconds < 5, f"the refusal took {probe.hostile_seconds:.2f} s"
        current = (await client.get(url)).json()
        assert current["meta"]["versionId"] == "1"
        assert current["extension"] == patient["extension"]
        history = (await client.get(f"{url}/_history")).json()
        assert len(history["entry"]) == 1
    probe.assert_health_stayed_fast()
    await assert_clean_log(server)


REDOS = "^(a+)+$"
REDOS_FAMILY = "a" * 28 + "!"


async def test_a_backtracking_regex_in_a_fhirpath_patch_path_answers_at_once(
    server: RunningServer, backend: str
) -> None:
    patch = {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "operation",
                "part": [
                    {"name": "type", "valueCode": "delete"},
                    {"name": "path", "valueString": f"Patient.name.where(family.matches('{REDOS}'))"},
                ],
            }
        ],
    }
    async with hostile_client(server) as client:
        pid = await create(client, {"resourceType": "Patient", "name": [{"family": REDOS_FAMILY}]})
        patching = client.patch(f"/fhir/Patient/{pid}", content=orjson.dumps(patch), headers=FHIR)
        response, probe = await probed(server, patching)
        probe.report(backend, "FHIRPath Patch with matches('^(a+)+$')", f"{response.status_code}")
        assert response.status_code in (200, 400, 422), response.text[:2000]
        if response.status_code == 200:
            assert response.json()["name"] == [{"family": REDOS_FAMILY}]  # the pattern does not match
        else:
            assert_outcome(response, response.status_code)
        assert probe.hostile_seconds < WORST_HEALTH_SECONDS
    probe.assert_health_stayed_fast()
    await assert_clean_log(server)


async def test_a_backtracking_regex_in_a_search_parameter_answers_at_once(server: RunningServer, backend: str) -> None:
    search_parameter = {
        "resourceType": "SearchParameter",
        "url": "http://example.org/sp/redos",
        "name": "redos",
        "status": "active",
        "description": "family names made only of the letter a",
        "code": "redos",
        "base": ["Patient"],
        "type": "string",
        "expression": f"Patient.name.family.where(matches('{REDOS}'))",
    }
    patient = {"resourceType": "Patient", "name": [{"family": REDOS_FAMILY}]}

    async def define_then_create(client: httpx.AsyncClient) -> tuple[httpx.Response, float, httpx.Response, float]:
        started = time.perf_counter()
        defined = await client.post("/fhir/SearchParameter", content=orjson.dumps(search_parameter), headers=FHIR)
        middle = time.perf_counter()
        created = await client.post("/fhir/Patient", content=orjson.dumps(patient), headers=FHIR)
        return defined, middle - started, created, time.perf_counter() - middle

    async with hostile_client(server) as client:
        (defined, define_seconds, created, create_seconds), probe = await probed(server, define_then_create(client))
    probe.report(
        backend,
        "SearchParameter with matches('^(a+)+$'), then a Patient",
        f"{defined.status_code} in {define_seconds:.3f} s, {created.status_code} in {create_seconds:.3f} s",
    )
    assert defined.status_code == 201, defined.text[:2000]
    assert created.status_code == 201, created.text[:2000]
    async with hostile_client(server) as client:  # the other tests' Patients are not indexed by it
        removed = await client.delete(f"/fhir/SearchParameter/{defined.json()['id']}")
        assert removed.status_code in (200, 204), removed.text[:2000]
    assert define_seconds < WORST_HEALTH_SECONDS
    assert create_seconds < WORST_HEALTH_SECONDS
    probe.assert_health_stayed_fast()
    await assert_clean_log(server)


async def test_reindex_of_ten_thousand_resources_runs_as_a_job_that_leaves_the_loop_free(
    server: RunningServer, backend: str
) -> None:
    large = {"resourceType": "Patient", "name": [{"family": f"Family{n}", "text": "x" * 500} for n in range(8_000)]}
    async with hostile_client(server) as client:
        await load_patients(client, 10_000)
        await create(client, large)  # 4 MB: parsed and extracted again by the job, off the loop
        stored = await stored_count(client)  # with what the module's other tests stored

        async def reindex_to_completion() -> tuple[httpx.Response, httpx.Response, int]:
            kickoff = await client.post("/fhir/$reindex")
            assert kickoff.status_code == 202, kickoff.text[:2000]
            status_url = urlsplit(kickoff.headers["content-location"]).path
            polls = 0
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                polls += 1
                status = await client.get(status_url)
                if status.status_code != 202:
                    return kickoff, status, polls
                await asyncio.sleep(0.2)
            raise AssertionError("the $reindex job did not finish within 120 s")

        (kickoff, final, polls), probe = await probed(server, reindex_to_completion())
    probe.report(backend, "$reindex of 10,000 Patients", f"202 then {final.status_code} after {polls} status polls")
    assert kickoff.headers["content-location"].startswith(f"{server.base}/fhir/")
    assert final.status_code == 200, final.text[:2000]
    assert final.json()["resourceType"] == "Parameters"
    assert final.json()["parameter"][0] == {"name": "count", "valueInteger": stored}
    assert stored >= 10_001
    probe.assert_health_stayed_fast()
    await assert_clean_log(server)


async def test_a_batch_of_a_hundred_large_searches_returns_a_bounded_response(
    server: RunningServer, backend: str
) -> None:
    entries = [{"request": {"method": "GET", "url": "Patient?_count=1000"}} for _ in range(100)]
    batch = orjson.dumps({"resourceType": "Bundle", "type": "batch", "entry": entries})
    async with hostile_client(server) as client:
        await load_patients(client, 2_000)
        response, probe = await probed(server, client.post("/fhir", content=batch, headers=FHIR))
    assert response.status_code == 200, response.text[:2000]
    answered = response.json()["entry"]
    resources = sum(len(e.get("resource", {}).get("entry", [])) for e in answered)
    statuses = sorted({e["response"]["status"] for e in answered})
    probe.report(
        backend,
        "batch of 100 x Patient?_count=1000",
        f"{response.status_code}, {len(response.content):,} bytes, {resources:,} resources, entry statuses {statuses}",
    )
    assert len(response.content) < 50 * 1024 * 1024
    assert resources <= MAX_BUNDLE_RESPONSE_RESOURCES
    probe.assert_health_stayed_fast()
    await assert_clean_log(server)


async def test_a_search_with_a_thousand_parameters_is_refused_at_once(server: RunningServer, backend: str) -> None:
    form = "&".join(["name=a"] * 1000)
    async with hostile_client(server) as client:
        response, probe = await probed(server, client.post("/fhir/Patient/_search", content=form, headers=FORM))
    probe.report(backend, "POST _search with 1,000 name=a", f"{response.status_code}")
    assert_outcome(response, 400)
    assert probe.hostile_seconds < WORST_HEALTH_SECONDS
    probe.assert_health_stayed_fast()
    await assert_clean_log(server)


def request_head(server: RunningServer, content_length: int) -> bytes:
    host = urlsplit(server.base).netloc
    return (
        f"POST /fhir/Patient HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/fhir+json\r\n"
        f"Content-Length: {content_length}\r\n\r\n"
    ).encode()


async def test_a_client_that_hangs_up_mid_body_is_not_a_server_error(server: RunningServer, backend: str) -> None:
    address = urlsplit(server.base)

    async def half_a_body() -> None:
        _, writer = await asyncio.open_connection(address.hostname, address.port)
        writer.write(request_head(server, 100_000) + b'{"resource')
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.close()
        await writer.wait_closed()
        await asyncio.sleep(0.5)  # the server notices the hang-up and finishes the request

    _, probe = await probed(server, half_a_body())
    logged = [line for line in server.log().splitlines() if '"path":"/fhir/Patient"' in line]
    probe.report(backend, "Content-Length 100000, 10 bytes sent, socket closed", f"logged as {logged}")
    probe.assert_health_stayed_fast()
    await assert_clean_log(server)


async def test_a_slow_loris_body_does_not_hold_up_other_clients(server: RunningServer, backend: str) -> None:
    address = urlsplit(server.base)

    async def withheld_body() -> None:
        _, writer = await asyncio.open_connection(address.hostname, address.port)
        writer.write(request_head(server, 1000))
        await writer.drain()
        await asyncio.sleep(2)
        writer.close()
        await writer.wait_closed()

    _, probe = await probed(server, withheld_body())
    probe.report(backend, "POST headers with Content-Length 1000, no body for 2 s", "held open")
    probe.assert_health_stayed_fast()
    await assert_clean_log(server)
