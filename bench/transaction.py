"""Transaction ingest against posting the same resources one by one, on the real server.

    python -m bench.transaction --bundles 20 --entries 500 --backends sqlite,postgresql

For each backend it starts ``fhir-server serve`` (one uvicorn worker: one
core of server CPU) on a fresh database and, with keep-alive connections:

* transactions: ``--bundles`` discharge Bundles of ``--entries`` entries
  (``bench/discharge.py``: urn:uuid references everywhere), ``--clients``
  at a time, ``Prefer: return=minimal``;
* one by one: the resources of ``--single-bundles`` of those Bundles POSTed
  singly in dependency order, each reference rewritten by the client to the
  id the server gave, ``--single-clients`` Bundles at a time.

On PostgreSQL it also measures the raw-insert floor of the CRUD benchmark
(asyncpg INSERTs of the same JSON bodies over the same number of
connections) and prints each rate as a ratio to it. PostgreSQL runs durable.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import tempfile
import time

import asyncpg
import orjson

from bench.crud import BIN, database_floor, serve, server_env
from bench.discharge import discharge_bundle, one_by_one, rewrite
from bench.http_client import Connection
from tests.postgres_cluster import free_port, start_cluster


async def transactions(port: int, bundles: list[bytes], clients: int) -> tuple[float, list[float]]:
    """(seconds in all, seconds per bundle)."""
    per_bundle: list[float] = []
    connections = [await Connection.open("127.0.0.1", port) for _ in range(clients)]
    headers = {"Prefer": "return=minimal"}  # Content-Type: the client adds it

    async def worker(conn: Connection, share: list[bytes]) -> None:
        for body in share:
            started = time.perf_counter()
            status, _, answer = await conn.request("POST", "/fhir", body, headers)
            per_bundle.append(time.perf_counter() - started)
            if status != 200:
                raise RuntimeError(f"transaction gave {status}: {answer[:500]!r}")

    started = time.perf_counter()
    await asyncio.gather(*(worker(c, bundles[i::clients]) for i, c in enumerate(connections)))
    elapsed = time.perf_counter() - started
    for conn in connections:
        await conn.close()
    return elapsed, per_bundle


async def singles(port: int, bundles: list[dict], clients: int) -> tuple[float, int]:
    """(seconds, resources) posting every resource alone, references rewritten client-side."""
    connections = [await Connection.open("127.0.0.1", port) for _ in range(clients)]
    headers = {"Prefer": "return=minimal"}  # Content-Type: the client adds it
    count = 0

    async def worker(conn: Connection, share: list[dict]) -> None:
        nonlocal count
        for bundle in share:
            ids: dict[str, str] = {}
            for full_url, resource in one_by_one(bundle):
                body = orjson.dumps(rewrite(resource, ids))
                status, answer_headers, answer = await conn.request(
                    "POST", f"/fhir/{resource['resourceType']}", body, headers
                )
                if status != 201:
                    raise RuntimeError(f"POST gave {status}: {answer[:300]!r}")
                location = answer_headers["location"].split("/fhir/", 1)[1]
                ids[full_url] = location.rsplit("/_history/", 1)[0]
                count += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(c, bundles[i::clients]) for i, c in enumerate(connections)))
    elapsed = time.perf_counter() - started
    for conn in connections:
        await conn.close()
    return elapsed, count


async def bench_backend(url: str, args: argparse.Namespace, floor: float | None) -> None:
    port = free_port()
    env = server_env(url, port)
    subprocess.run([str(BIN / "fhir-server"), "migrate"], env=env, check=True, capture_output=True)
    bundles = [discharge_bundle(seed, args.entries) for seed in range(args.bundles)]
    payloads = [orjson.dumps(b) for b in bundles]
    with serve([str(BIN / "fhir-server"), "serve"], env, port):
        await transactions(port, payloads[:1], 1)  # warm-up: first-use compilation of the extractor
        elapsed, per_bundle = await transactions(port, payloads[1:], args.clients)
        resources = (len(payloads) - 1) * args.entries
        single_bundles = [discharge_bundle(10_000 + seed, args.entries) for seed in range(args.single_bundles)]
        single_elapsed, single_count = await singles(port, single_bundles, args.single_clients)
    tx_rate = resources / elapsed
    single_rate = single_count / single_elapsed
    per_bundle.sort()
    print(
        f"| transactions of {args.entries} ({args.clients} clients) "
        f"| {len(per_bundle)} bundles, {resources:,} resources "
        f"| {tx_rate:,.0f} resources/s | p50 {per_bundle[len(per_bundle) // 2]:.2f} s per bundle "
        f"| {f'{tx_rate / floor:.2f}' if floor else '-'} |"
    )
    print(
        f"| one by one ({args.single_clients} clients) | {single_count:,} resources | {single_rate:,.0f} resources/s "
        f"| {1000 / single_rate:.2f} ms per resource | {f'{single_rate / floor:.2f}' if floor else '-'} |"
    )
    print(f"transaction / one-by-one throughput: {tx_rate / single_rate:.1f}x")


async def main_async(args: argparse.Namespace) -> None:
    print(
        f"# Transaction benchmark {time.strftime('%Y-%m-%d %H:%M')} on {platform.node()}: {os.cpu_count()} cores, "
        f"{args.bundles} x {args.entries}-entry discharge bundles"
    )
    cluster = None
    try:
        for backend in args.backends.split(","):
            floor = None
            if backend == "sqlite":
                url = f"sqlite+aiosqlite:///{tempfile.mkdtemp(prefix='fhir-bench-')}/fhir.sqlite"
            else:
                cluster = cluster or start_cluster(durable=True)
                admin = await asyncpg.connect(cluster.admin_url.replace("postgresql+asyncpg", "postgresql"))
                await admin.execute("CREATE DATABASE bench_tx")
                await admin.execute("CREATE DATABASE bench_tx_floor")
                await admin.close()
                url = cluster.url("bench_tx")
                bodies = [orjson.dumps(e["resource"]) for e in discharge_bundle(0, 2000)["entry"]]
                floor_result = await database_floor(cluster.url("bench_tx_floor"), 16, bodies)
                floor = floor_result.rate
                print(f"\nraw-insert floor (asyncpg INSERT, 16 connections): {floor:,.0f} rows/s")
            print(f"\n### {backend}\n| mode | data | rate | latency | / raw-insert floor |\n|---|---|---|---|---|")
            await bench_backend(url, args, floor)
    finally:
        if cluster is not None:
            cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundles", type=int, default=21)
    parser.add_argument("--entries", type=int, default=500)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--single-bundles", type=int, default=4)
    parser.add_argument("--single-clients", type=int, default=4)
    parser.add_argument("--backends", default="sqlite,postgresql")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
