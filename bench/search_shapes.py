"""What one five-match search costs PostgreSQL in each plan shape, and which shapes could halve it.

    python -m bench.search_shapes [--patients 400] [--rounds 4]

``CarePlan?subject=Patient/X&status=active`` (five matches among seven
plans per patient, as ``bench.wrk`` loads them) is compiled by the server's
own search compiler (which reads the row's ``subject_ref`` and
``status_code`` columns: ``app.search.row_columns``) and compared with
hand-written alternatives on the same data: the joins of the two index
tables the server ran before those columns (``IN`` and ``EXISTS`` forms),
the reference condition alone, the status as a filter on an array of token
keys stored on the resource row, a GIN index over reference keys on the
row, and one B-tree on ``subject`` and ``status`` columns of the row (the
layout Medplum uses: a table per resource type, a column per search
parameter). The alternatives' extra columns exist only in this benchmark's
throw-away database. Each statement is prepared
once on one connection and run 2,000 times over the patients after a
warm-up, so PostgreSQL plans it generically as the server's connections
do; the figure is that backend's CPU per execution from /proc, best of
``--rounds``. ``SELECT 1`` and a read by primary key give the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from app.main import served_resource_types
from app.search.compiler import compile_search
from app.search.registry import load_registry
from app.search.request import parse_search
from app.storage.asyncpg_sql import compile_for_asyncpg
from bench.crud import BIN, run_phase, serve, server_env
from bench.wrk import care_plans, process_cpu
from tests.postgres_cluster import free_port, start_cluster

INDEX_TABLES_FORM = """SELECT anon_1.id, anon_1.body FROM (SELECT resources.id, resources.body FROM resources
WHERE resources.resource_type = $1 AND resources.deleted IS false
AND resources.id IN (SELECT idx_reference.resource_id FROM idx_reference WHERE idx_reference.param_hash = $2
  AND idx_reference.resource_type = $1 AND idx_reference.target_type = 'Patient'
  AND idx_reference.target_id = $3 COLLATE "C")
AND resources.id IN (SELECT idx_token.resource_id FROM idx_token WHERE idx_token.param_hash = $4
  AND idx_token.resource_type = $1 AND idx_token.code = 'active' COLLATE "C")) AS anon_1
ORDER BY anon_1.id LIMIT 51"""
EXISTS_FORM = """SELECT resources.id, resources.body FROM resources
WHERE resources.resource_type = $1 AND resources.deleted IS false
AND EXISTS (SELECT 1 FROM idx_reference WHERE idx_reference.resource_id = resources.id
  AND idx_reference.param_hash = $2 AND idx_reference.resource_type = $1
  AND idx_reference.target_type = 'Patient' AND idx_reference.target_id = $3 COLLATE "C")
AND EXISTS (SELECT 1 FROM idx_token WHERE idx_token.resource_id = resources.id
  AND idx_token.param_hash = $4 AND idx_token.resource_type = $1 AND idx_token.code = 'active' COLLATE "C")
ORDER BY resources.id LIMIT 51"""
# live CarePlans whose subject is the patient $3 (through the parameter hashed $2)
_BY_REFERENCE = """SELECT resources.id, resources.body FROM resources
WHERE resources.resource_type = $1 AND resources.deleted IS false
AND resources.id IN (SELECT idx_reference.resource_id FROM idx_reference
  WHERE idx_reference.param_hash = $2 AND idx_reference.resource_type = $1
  AND idx_reference.target_type = 'Patient' AND idx_reference.target_id = $3 COLLATE "C")"""
_FIRST_PAGE = "\nORDER BY resources.id LIMIT 51"
REFERENCE_ONLY = _BY_REFERENCE + _FIRST_PAGE
TOKEN_KEYS_FILTER = _BY_REFERENCE + "\nAND resources.bench_token_keys @> ARRAY[$4::text]" + _FIRST_PAGE
GIN_REFERENCES = """SELECT resources.id, resources.body FROM resources
WHERE resources.resource_type = $1 AND resources.deleted IS false
AND resources.bench_reference_keys @> ARRAY[$2::text] AND resources.bench_token_keys @> ARRAY[$3::text]
ORDER BY resources.id LIMIT 51"""
COLUMNS = """SELECT resources.id, resources.body FROM resources
WHERE resources.resource_type = $1 AND resources.deleted IS false
AND resources.bench_subject = $2 AND resources.bench_status = $3
ORDER BY resources.id LIMIT 51"""

# the extra columns of the alternatives, filled from the index tables the server wrote
LAYOUTS = [
    "ALTER TABLE resources ADD COLUMN bench_token_keys text[], ADD COLUMN bench_reference_keys text[], "
    "ADD COLUMN bench_subject text, ADD COLUMN bench_status text",
    """UPDATE resources r SET
    bench_token_keys = ARRAY(SELECT t.param_hash::text || '|' || t.code FROM idx_token t
        WHERE t.resource_type = r.resource_type AND t.resource_id = r.id),
    bench_reference_keys = ARRAY(SELECT x.param_hash::text || '|' || x.target_type || '/' || x.target_id
        FROM idx_reference x WHERE x.resource_type = r.resource_type AND x.resource_id = r.id),
    bench_subject = (SELECT x.target_type || '/' || x.target_id FROM idx_reference x
        WHERE x.resource_type = r.resource_type AND x.resource_id = r.id AND x.param_hash = $1 LIMIT 1),
    bench_status = (SELECT t.code FROM idx_token t
        WHERE t.resource_type = r.resource_type AND t.resource_id = r.id AND t.param_hash = $2 LIMIT 1)""",
    "CREATE INDEX bench_reference_keys ON resources USING gin (bench_reference_keys) WITH (fastupdate = off)",
    "CREATE INDEX bench_subject ON resources (resource_type, bench_subject)",
]

Run = Callable[[int], Awaitable[Any]]


def server_search(patients: int) -> tuple[str, list[list[object]]]:
    """The server's SQL for the search, and its arguments for each patient."""
    registry = load_registry(served_resource_types())
    sql = ""
    arguments = []
    for index in range(patients):
        pairs = [("subject", f"Patient/w{index}"), ("status", "active")]
        compiled = compile_for_asyncpg(compile_search(parse_search("CarePlan", pairs, registry, 50, 1000), None, 51))
        sql = compiled.sql
        arguments.append(compiled.arguments({}))
    return sql, arguments


async def measure(connection: asyncpg.Connection, pid: int, runs: dict[str, Run], rounds: int) -> dict[str, float]:
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(rounds):
        for name, run in runs.items():
            for index in range(50):  # past the five custom plans before a generic one
                await run(index)
            before = process_cpu(pid)
            for index in range(2000):
                await run(index)
            best[name] = min(best[name], (process_cpu(pid) - before) / 2000 * 1e6)
    return best


async def main_async(args: argparse.Namespace) -> None:
    cluster = start_cluster(durable=True)
    try:
        port = free_port()
        url = cluster.url("postgres")
        env = server_env(url, port)
        subprocess.run([str(BIN / "fhir-server"), "migrate"], env=env, check=True, capture_output=True)
        loaded = care_plans(args.patients)
        with serve([str(BIN / "fhir-server"), "serve"], env, port):
            await run_phase("load", port, 16, [("POST", "/fhir/CarePlan", body) for _, body in loaded], 201)
        sql, arguments = server_search(args.patients)
        dsn = url.replace("postgresql+asyncpg", "postgresql")
        admin = await asyncpg.connect(dsn)
        reference_hash = await admin.fetchval(  # subject's (or patient's: the same seven rows per patient)
            "SELECT param_hash FROM idx_reference WHERE target_id = 'w7' GROUP BY param_hash ORDER BY count(*) DESC "
            "LIMIT 1"
        )
        token_hash = await admin.fetchval(
            "SELECT param_hash FROM idx_token WHERE code = 'active' GROUP BY param_hash ORDER BY count(*) DESC LIMIT 1"
        )
        await admin.execute(LAYOUTS[0])
        await admin.execute(LAYOUTS[1], reference_hash, token_hash)
        for statement in LAYOUTS[2:]:
            await admin.execute(statement)
        await admin.execute("VACUUM ANALYZE")
        await admin.close()

        connection = await asyncpg.connect(dsn)
        pid = await connection.fetchval("SELECT pg_backend_pid()")
        ids = [row[0] for row in await connection.fetch("SELECT id FROM resources ORDER BY id LIMIT 400")]
        prepared = {
            name: await connection.prepare(text)
            for name, text in {
                "server": sql,
                "index tables": INDEX_TABLES_FORM,
                "exists": EXISTS_FORM,
                "reference": REFERENCE_ONLY,
                "keys": TOKEN_KEYS_FILTER,
                "gin": GIN_REFERENCES,
                "columns": COLUMNS,
                "primary key": "SELECT body FROM resources WHERE resource_type = $1 AND id = $2",
                "select 1": "SELECT 1",
            }.items()
        }
        n = args.patients
        token_key = f"{token_hash}|active"
        runs: dict[str, Run] = {
            "select 1": lambda i: prepared["select 1"].fetch(),
            "primary key": lambda i: prepared["primary key"].fetch("CarePlan", ids[i % len(ids)]),
            "server": lambda i: prepared["server"].fetch(*arguments[i % n]),
            "index tables": lambda i: prepared["index tables"].fetch(
                "CarePlan", reference_hash, f"w{i % n}", token_hash
            ),
            "exists": lambda i: prepared["exists"].fetch("CarePlan", reference_hash, f"w{i % n}", token_hash),
            "reference": lambda i: prepared["reference"].fetch("CarePlan", reference_hash, f"w{i % n}"),
            "keys": lambda i: prepared["keys"].fetch("CarePlan", reference_hash, f"w{i % n}", token_key),
            "gin": lambda i: prepared["gin"].fetch("CarePlan", f"{reference_hash}|Patient/w{i % n}", token_key),
            "columns": lambda i: prepared["columns"].fetch("CarePlan", f"Patient/w{i % n}", "active"),
        }
        for name, run in runs.items():  # every shape finds what the server's SQL finds
            found = len(await run(7))
            expected = 1 if name in ("select 1", "primary key") else 7 if name == "reference" else 5
            if found != expected:
                raise RuntimeError(f"{name}: {found} rows, expected {expected}")
        best = await measure(connection, pid, runs, args.rounds)
        await connection.close()
    finally:
        cluster.stop()
    print(
        f"# Search plan shapes {time.strftime('%Y-%m-%d %H:%M')} on {platform.node()}: {os.cpu_count()} cores, "
        f"{args.patients * 7:,} CarePlans, one connection, generic plans, best of {args.rounds} x 2,000\n"
    )
    print("| shape | PostgreSQL CPU us per execution |\n|---|---|")
    for name, micros in best.items():
        print(f"| {name} | {micros:,.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=4)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
