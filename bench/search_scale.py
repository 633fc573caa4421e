"""Search at scale: a million care-coordination resources on PostgreSQL, query latency and plans.

    python -m bench.search_scale --patients 50000          # ~1,000,000 resources, durable throw-away cluster
    python -m bench.search_scale --database-url URL --skip-load   # re-query an already loaded database

Steps: load the population (``bench.population``) through the server's bulk
create path (same stamping and index extraction as a POST) in ``--jobs``
processes; ``VACUUM ANALYZE``; measure the bulk path with and without
search indexing on a small side database in the same run (the cost of
indexing); start ``fhir-server serve`` on the loaded database and time each
query from one keep-alive client (``--samples`` different patients or
practitioners per query, after a warm-up); walk ``Task?_lastUpdated=gt..``
page by page to the end; print each query's PostgreSQL plan (``EXPLAIN
ANALYZE`` of the SQL the server compiles for it) and whether any big table
is read by a sequential scan.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import asyncpg
import httpx

from app.main import build_context, served_resource_types
from app.search.compiler import compile_search
from app.search.request import parse_search
from app.storage.database import Database
from bench.bulk_load import load_population
from bench.crud import BIN, serve, server_env
from bench.population import COMMON_FAMILIES, Population
from tests.postgres_cluster import free_port, start_cluster

QueryMaker = Callable[[random.Random], str]


@dataclass
class Timing:
    name: str
    example: str
    latencies: list[float]
    matches: list[int]

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000


def single_patient_queries(population: Population) -> dict[str, QueryMaker]:
    def patient(rng: random.Random) -> int:
        return rng.randrange(population.patients)

    def rare_family(rng: random.Random) -> str:
        while True:
            family = population.family_of(patient(rng))
            if family not in COMMON_FAMILIES:
                return family

    return {
        "CarePlan?patient=X&status=active": lambda rng: f"CarePlan?patient=Patient/pat-{patient(rng)}&status=active",
        "Task?owner=Y&status=requested&_sort=-_lastUpdated": lambda rng: (
            f"Task?owner=Practitioner/prac-{rng.randrange(population.practitioners)}"
            "&status=requested&_sort=-_lastUpdated"
        ),
        "ServiceRequest?patient=X&_revinclude=Task:based-on": lambda rng: (
            f"ServiceRequest?patient=Patient/pat-{patient(rng)}&_revinclude=Task:based-on"
        ),
        "CarePlan?subject.name=(rare family)": lambda rng: f"CarePlan?subject.name={rare_family(rng)}",
        "Patient?identifier=MRN": lambda rng: (
            f"Patient?identifier=urn:oid:2.16.840.1.113883.19.5|MRN{patient(rng):08d}"
        ),
    }


def population_queries() -> dict[str, QueryMaker]:
    return {
        "Patient?name=smi": lambda rng: "Patient?name=smi",
        "Patient?_has:Task:patient:status=requested": lambda rng: "Patient?_has:Task:patient:status=requested",
        "Task?owner=(busiest)&status=requested&_sort=-_lastUpdated": lambda rng: (
            "Task?owner=Practitioner/prac-0&status=requested&_sort=-_lastUpdated"
        ),
    }


async def time_queries(
    port: int, queries: dict[str, QueryMaker], samples: int, seed: int = 11
) -> tuple[list[Timing], dict[str, str]]:
    rng = random.Random(seed)
    timings, examples = [], {}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/fhir", timeout=120) as client:
        for name, make in queries.items():
            for _ in range(3):  # warm-up
                (await client.get(make(rng))).raise_for_status()
            latencies, matches = [], []
            for _ in range(samples):
                query = make(rng)
                started = time.perf_counter()
                response = await client.get(query)
                latencies.append(time.perf_counter() - started)
                response.raise_for_status()
                entries = response.json().get("entry", [])
                matches.append(sum(1 for e in entries if e["search"]["mode"] == "match"))
            examples[name] = query
            timings.append(Timing(name, query, latencies, matches))
    return timings, examples


async def walk_pages(port: int, query: str) -> tuple[int, int, list[float]]:
    """(pages, resources, per-page latencies) following ``next`` to the end."""
    pages = resources = 0
    latencies: list[float] = []
    url: str | None = f"http://127.0.0.1:{port}/fhir/{query}"
    async with httpx.AsyncClient(timeout=120) as client:
        while url:
            started = time.perf_counter()
            response = await client.get(url)
            latencies.append(time.perf_counter() - started)
            response.raise_for_status()
            bundle = response.json()
            pages += 1
            resources += len(bundle.get("entry", []))
            url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
            if url:  # links carry the public base URL; talk to this server
                url = f"http://127.0.0.1:{port}" + urlsplit(url).path + "?" + urlsplit(url).query
    return pages, resources, latencies


async def explain(database_url: str, queries: dict[str, str]) -> dict[str, list[str]]:
    """Plan nodes (type, relation/index) of the SQL the server runs for each query, from EXPLAIN ANALYZE."""
    database = Database.from_url(database_url, pool_size=1)
    ctx = build_context(database, served_resource_types())
    plans: dict[str, list[str]] = {}
    try:
        async with database.read() as conn:
            for name, query in queries.items():
                resource_type, _, query_string = query.partition("?")
                request = parse_search(resource_type, parse_qsl(query_string), ctx.registry, 50, 1000)
                compiled = compile_search(request, None, request.count + 1).compile(dialect=conn.dialect)
                params = compiled.construct_params()
                positional = tuple(params[key] for key in compiled.positiontup or ())
                result = await conn.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {compiled}", positional)
                plan = result.scalar_one()
                plan = plan[0] if isinstance(plan, list) else json.loads(plan)[0]
                nodes: list[str] = []
                _walk_plan(plan["Plan"], nodes)
                plans[name] = [f"execution {plan['Execution Time']:.1f} ms", *nodes]
    finally:
        await database.dispose()
    return plans


def _walk_plan(node: dict[str, Any], out: list[str]) -> None:
    kind = node["Node Type"]
    if "Scan" in kind:
        target = node.get("Index Name") or node.get("Relation Name") or ""
        out.append(f"{kind} {target} (rows {node.get('Actual Rows')}x{node.get('Actual Loops')})")
    for child in node.get("Plans", []):
        _walk_plan(child, out)


async def create_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url.replace("postgresql+asyncpg", "postgresql"))
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()


async def vacuum_analyze(database_url: str) -> None:
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    await conn.execute("VACUUM ANALYZE")
    await conn.close()


def migrate(database_url: str) -> None:
    env = server_env(database_url, 0)
    subprocess.run([str(BIN / "fhir-server"), "migrate"], env=env, check=True, capture_output=True)


def indexing_cost(admin_url: str, base_url: str, patients: int, jobs: int, validate: bool) -> tuple[float, float]:
    """(resources/s with indexing, without) of the bulk path on fresh side databases."""
    rates = []
    for index in (True, False):
        name = f"indexing_{'on' if index else 'off'}"
        asyncio.run(create_database(admin_url, name))
        url = base_url.rsplit("/", 1)[0] + f"/{name}"
        migrate(url)
        population = Population(patients, practitioners=200, seed=3)
        _, _, rate = load_population(url, population, jobs, index=index, validate=validate)
        rates.append(rate)
    return rates[0], rates[1]


def report_timings(timings: list[Timing]) -> None:
    print(f"{'query':58} {'p50 ms':>8} {'p95 ms':>8} {'matches/page (median)':>22}")
    for t in timings:
        print(f"{t.name:58} {t.percentile(0.5):8.1f} {t.percentile(0.95):8.1f} {statistics.median(t.matches):22.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=50_000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--database-url", help="an existing PostgreSQL database (default: a throw-away cluster)")
    parser.add_argument("--skip-load", action="store_true", help="the database is already loaded")
    parser.add_argument("--cost-only", action="store_true", help="only the with/without indexing comparison")
    parser.add_argument("--cost-patients", type=int, default=2_500, help="patients for the indexing-cost comparison")
    args = parser.parse_args()
    population = Population(args.patients)
    cluster = None
    if args.database_url:
        database_url = args.database_url
        admin_url = database_url.rsplit("/", 1)[0] + "/postgres"
    else:
        cluster = start_cluster(durable=True)
        admin_url = cluster.admin_url
        database_url = cluster.url("scale")
        asyncio.run(create_database(admin_url, "scale"))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    try:
        if not args.skip_load:
            migrate(database_url)
            stored, seconds, _ = load_population(database_url, population, args.jobs)
            print(
                f"loaded {stored:,} resources in {seconds:.0f} s: "
                f"{stored / seconds:,.0f} resources/s ({args.jobs} jobs)"
            )
            asyncio.run(vacuum_analyze(database_url))
        for validate in (True, False):
            with_index, without_index = indexing_cost(admin_url, database_url, args.cost_patients, args.jobs, validate)
            print(
                f"bulk path {'with' if validate else 'without'} validation, {args.cost_patients * 20:,} resources: "
                f"{with_index:,.0f}/s with search indexing, {without_index:,.0f}/s without "
                f"(indexing costs {1 - with_index / without_index:.0%})"
            )
        if args.cost_only:
            return
        port = free_port()
        env = server_env(database_url, port)
        with serve([str(BIN / "fhir-server"), "serve"], env, port):
            timings, examples = asyncio.run(
                time_queries(port, {**single_patient_queries(population), **population_queries()}, args.samples)
            )
            report_timings(timings)
            since = (datetime.now(UTC) - timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
            walk_start = asyncio.run(_newest_task_times(database_url, 15_000))
            walk_query = f"Task?_lastUpdated=gt{walk_start or since}&_count=100"
            pages, walked, page_latencies = asyncio.run(walk_pages(port, walk_query))
            ordered = sorted(page_latencies)
            print(
                f"{walk_query}: {pages} pages, {walked:,} resources, per page p50 "
                f"{ordered[len(ordered) // 2] * 1000:.1f} ms p95 {ordered[int(len(ordered) * 0.95)] * 1000:.1f} ms, "
                f"total {sum(page_latencies):.1f} s"
            )
        examples["Task?_lastUpdated=gt..&_count=100"] = walk_query
        for name, nodes in asyncio.run(explain(database_url, examples)).items():
            seq = [n for n in nodes if n.startswith("Seq Scan")]
            print(f"\n{name}: {examples[name]}\n  " + "\n  ".join(nodes) + ("\n  SEQUENTIAL SCAN" if seq else ""))
    finally:
        if cluster is not None:
            cluster.stop()


async def _newest_task_times(database_url: str, count: int) -> str | None:
    """The lastUpdated just before the newest ``count`` Tasks: the walk then visits about that many."""
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    tasks = await conn.fetchval("SELECT count(*) FROM resources WHERE resource_type = 'Task'")
    value = await conn.fetchval(
        "SELECT last_updated FROM resources WHERE resource_type = 'Task' ORDER BY last_updated DESC OFFSET $1 LIMIT 1",
        min(count, max(tasks - 1, 0)),
    )
    await conn.close()
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if value else None


if __name__ == "__main__":
    main()
