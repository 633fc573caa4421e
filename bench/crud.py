"""CRUD throughput of the real server over HTTP, with two floors measured in the same run.

    python -m bench.crud --clients 16 --requests 4000 --backends sqlite,postgresql

For each backend it starts ``fhir-server serve`` (one uvicorn worker, uvloop,
httptools) on a fresh database and drives creates, reads and updates of
~2 KB CarePlans from N concurrent keep-alive connections. In the same run it
measures:

* the HTTP floor: an empty FastAPI route served by the same uvicorn settings;
* the database floor: raw asyncpg INSERTs of the same JSON bodies into a
  one-table schema over N connections, on the same PostgreSQL cluster.

Every figure is also printed as a ratio to those floors, since the machine is
shared and noisy. PostgreSQL runs durable (fsync on) in a throw-away cluster.

``--auth both`` runs each backend twice on fresh databases, authorization off
and on (every request carrying the bearer token of a backend client registered
with ``fhir-server client add``), ``--pairs`` times in alternating order, and
prints auth on / auth off per phase: the cost of checking tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import orjson

from bench.data import care_plan
from bench.http_client import Connection
from tests.postgres_cluster import Cluster, free_port, start_cluster

BIN = Path(sys.executable).parent


@dataclass
class PhaseResult:
    name: str
    count: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000


Job = tuple[str, str, bytes]


async def run_phase(
    name: str, port: int, clients: int, jobs: list[Job], expect: int, headers: dict[str, str] | None = None
) -> tuple[PhaseResult, list[bytes]]:
    latencies: list[float] = []
    locations: list[bytes] = []
    connections = [await Connection.open("127.0.0.1", port) for _ in range(clients)]

    async def worker(conn: Connection, share: list[Job]) -> None:
        for method, path, body in share:
            started = time.perf_counter()
            status, answered, _ = await conn.request(method, path, body, headers)
            latencies.append(time.perf_counter() - started)
            if status != expect:
                raise RuntimeError(f"{name}: {method} {path} gave {status}, expected {expect}")
            if "location" in answered:
                locations.append(answered["location"].encode())

    started = time.perf_counter()
    await asyncio.gather(*(worker(c, jobs[i::clients]) for i, c in enumerate(connections)))
    elapsed = time.perf_counter() - started
    for conn in connections:
        await conn.close()
    return PhaseResult(name, len(jobs), elapsed, latencies), locations


def bodies(count: int) -> list[bytes]:
    rng = random.Random(42)
    return [orjson.dumps(care_plan(i, rng)) for i in range(count)]


async def crud_phases(
    port: int, clients: int, payloads: list[bytes], headers: dict[str, str] | None = None
) -> list[PhaseResult]:
    create, locations = await run_phase(
        "create", port, clients, [("POST", "/fhir/CarePlan", body) for body in payloads], 201, headers
    )
    ids = [loc.decode().split("/CarePlan/")[1].split("/")[0] for loc in locations] or ["x"] * len(payloads)
    rng = random.Random(7)
    read, _ = await run_phase(
        "read", port, clients, [("GET", f"/fhir/CarePlan/{rng.choice(ids)}", b"") for _ in payloads], 200, headers
    )
    updates = []
    for rid, body in zip(ids, payloads, strict=False):
        resource = orjson.loads(body)
        resource["id"] = rid
        resource["status"] = "active"
        updates.append(("PUT", f"/fhir/CarePlan/{rid}", orjson.dumps(resource)))
    update, _ = await run_phase("update", port, clients, updates, 200, headers)
    return [create, read, update]


@contextmanager
def serve(command: list[str], env: dict[str, str], port: int) -> Iterator[None]:
    log = tempfile.TemporaryFile()  # noqa: SIM115 -- lives as long as the server process
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"server exited: {log.read().decode(errors='replace')[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.2)
        try:
            yield
        except Exception:
            log.seek(0)
            print(f"server log (end):\n{log.read().decode(errors='replace')[-4000:]}", file=sys.stderr)
            raise
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def uvicorn_command(app: str, port: int) -> list[str]:
    return [
        str(BIN / "uvicorn"),
        app,
        "--factory",
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]


async def database_floor(url: str, clients: int, payloads: list[bytes]) -> PhaseResult:
    dsn = url.replace("postgresql+asyncpg", "postgresql")
    setup = await asyncpg.connect(dsn)
    await setup.execute("DROP TABLE IF EXISTS floor_resources")
    await setup.execute(
        "CREATE TABLE floor_resources (resource_type text, id text, body bytea, PRIMARY KEY (resource_type, id))"
    )
    await setup.close()
    pool = await asyncpg.create_pool(dsn, min_size=clients, max_size=clients)
    latencies: list[float] = []

    async def worker(share: list[tuple[int, bytes]]) -> None:
        async with pool.acquire() as conn:
            for index, body in share:
                started = time.perf_counter()
                await conn.execute("INSERT INTO floor_resources VALUES ('CarePlan', $1, $2)", f"id-{index}", body)
                latencies.append(time.perf_counter() - started)

    items = list(enumerate(payloads))
    started = time.perf_counter()
    await asyncio.gather(*(worker(items[i::clients]) for i in range(clients)))
    elapsed = time.perf_counter() - started
    await pool.close()
    return PhaseResult("raw insert", len(payloads), elapsed, latencies)


def server_env(database_url: str, port: int) -> dict[str, str]:
    """The benchmarked server's settings: authorization off, so the figures compare with earlier runs."""
    return {
        **os.environ,
        "FHIR_DATABASE_URL": database_url,
        "FHIR_PORT": str(port),
        "FHIR_LOG_LEVEL": "warning",
        "FHIR_AUTH": "off",
    }


BENCH_SECRET = "bench client secret"


async def bench_backend(
    database_url: str, clients: int, payloads: list[bytes], auth: bool = False
) -> list[PhaseResult]:
    port = free_port()
    env = server_env(database_url, port)
    if auth:  # a token that outlives the run; verified once, then taken from the cache
        env |= {"FHIR_AUTH": "on", "FHIR_AUTH_BACKEND_TOKEN_SECONDS": "3600"}
    subprocess.run([str(BIN / "fhir-server"), "migrate"], env=env, check=True, capture_output=True)
    headers = None
    if auth:
        register = ["client", "add", "--client-id", "bench", "--type", "confidential-symmetric", "--secret",
                    BENCH_SECRET, "--scope", "system/*.cruds"]  # fmt: skip
        subprocess.run([str(BIN / "fhir-server"), *register], env=env, check=True, capture_output=True)
    with serve([str(BIN / "fhir-server"), "serve"], env, port):
        if auth:
            answer = httpx.post(
                f"http://127.0.0.1:{port}/smart/token",
                data={"grant_type": "client_credentials", "scope": "system/*.cruds"},
                auth=("bench", BENCH_SECRET),
            )
            headers = {"Authorization": f"Bearer {answer.json()['access_token']}"}
        return await crud_phases(port, clients, payloads, headers)


def report(
    title: str, results: list[PhaseResult], floors: dict[str, PhaseResult], db_floor: PhaseResult | None
) -> None:
    print(f"\n### {title}")
    print("| phase | requests | req/s | p50 ms | p95 ms | / HTTP floor | / DB floor |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        http_ratio = r.rate / floors[r.name].rate if r.name in floors else float("nan")
        db_ratio = f"{r.rate / db_floor.rate:.2f}" if db_floor and r.name != "read" else "-"
        print(
            f"| {r.name} | {r.count} | {r.rate:,.0f} | {r.percentile(0.5):.1f} | {r.percentile(0.95):.1f} "
            f"| {http_ratio:.2f} | {db_ratio} |"
        )


async def main_async(args: argparse.Namespace) -> None:
    payloads = bodies(args.requests)
    print(
        f"# CRUD benchmark {time.strftime('%Y-%m-%d %H:%M')} on {platform.node()}: {os.cpu_count()} cores, "
        f"{args.clients} clients, {args.requests} CarePlans of ~{sum(map(len, payloads)) // len(payloads)} bytes"
    )
    port = free_port()
    with serve(uvicorn_command("bench.empty_app:create_app", port), dict(os.environ), port):
        floor_results = await crud_phases(port, args.clients, payloads)
    floors = {r.name: r for r in floor_results}
    report("HTTP floor (empty FastAPI route, same uvicorn settings)", floor_results, floors, None)
    backends = args.backends.split(",")
    db_floor = None
    cluster = None
    try:
        if "postgresql" in backends:
            cluster = start_cluster(durable=True)
            admin = await asyncpg.connect(cluster.admin_url.replace("postgresql+asyncpg", "postgresql"))
            await admin.execute("CREATE DATABASE bench_floor")
            await admin.close()
            db_floor = await database_floor(cluster.url("bench_floor"), args.clients, payloads)
            print(f"\n### Database floor (raw asyncpg INSERT, {args.clients} connections)")
            print(
                f"{db_floor.rate:,.0f} rows/s, p50 {db_floor.percentile(0.5):.1f} ms, "
                f"p95 {db_floor.percentile(0.95):.1f} ms"
            )
        for backend in backends:
            if args.auth != "both":
                url = await fresh_database(backend, cluster, "bench_fhir")
                results = await bench_backend(url, args.clients, payloads, args.auth == "on")
                title = f"fhir-server on {backend}" + (" (auth on)" if args.auth == "on" else "")
                report(title, results, floors, db_floor if backend == "postgresql" else None)
                continue
            ratios: dict[str, list[float]] = {}
            for pair in range(args.pairs):
                runs: dict[bool, list[PhaseResult]] = {}
                for auth in (False, True) if pair % 2 == 0 else (True, False):
                    url = await fresh_database(backend, cluster, f"bench_fhir_{pair}_{'on' if auth else 'off'}")
                    runs[auth] = await bench_backend(url, args.clients, payloads, auth)
                    title = f"fhir-server on {backend}, pair {pair + 1}, auth {'on' if auth else 'off'}"
                    report(title, runs[auth], floors, db_floor if backend == "postgresql" else None)
                for off, on in zip(runs[False], runs[True], strict=True):
                    ratios.setdefault(off.name, []).append(on.rate / off.rate)
            print(f"\n### {backend}: auth on / auth off, per pair")
            for name, values in ratios.items():
                shown = ", ".join(f"{value:.2f}" for value in values)
                print(f"{name}: {shown} (mean {sum(values) / len(values):.2f})")
    finally:
        if cluster is not None:
            cluster.stop()


async def fresh_database(backend: str, cluster: Cluster | None, name: str) -> str:
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tempfile.mkdtemp(prefix='fhir-bench-')}/fhir.sqlite"
    assert cluster is not None
    admin = await asyncpg.connect(cluster.admin_url.replace("postgresql+asyncpg", "postgresql"))
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    return cluster.url(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--auth", choices=["off", "on", "both"], default="off", help="authorization of the server")
    parser.add_argument("--pairs", type=int, default=2, help="with --auth both: off/on pairs per backend")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
