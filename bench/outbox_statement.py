"""What the Subscriptions outbox adds to one create's statement, on one PostgreSQL connection.

    python -m bench.outbox_statement [--creates 2000] [--rounds 3] [--chained 10]

A create on PostgreSQL is one statement (``app.storage.single_statement``);
when active Subscriptions watch the type, the outbox adds CTEs to it
(``app.subscriptions.settled``): the numbering of the subscriptions memory
matched, and for each subscription with chained criteria a numbering on the
condition that the chain's stored targets match. This runs the same ~2 KB
CarePlan creates (``bench.data.care_plan``) as the server builds them, in
three forms, ``--rounds`` times in turn on one connection of a durable
throw-away cluster holding 1,000 subscription state rows:

* ``plain``: no part (no subscription watches CarePlan);
* ``matched``: one subscription matched in memory (numbered, an event row);
* ``chained``: ``--chained`` subscriptions ``CarePlan?subject.family=nobody-N``
  whose chains the statement judges, none matching (the benchmark's
  ``bench.subscriptions`` mix has ten).

It reports, per create, the backend's CPU (from /proc) and this process's
(index rows, the statement's values and arguments, the driver): the cost of
the outbox's SQL alone, apart from HTTP, the event loop under load and the
delivery of notifications, which ``bench.subscriptions`` measures together.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg
import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from app.interactions.context import FhirContext
from app.main import build_context
from app.search.memory import ClauseCheck
from app.search.request import parse_search
from app.storage.database import Database
from app.storage.index_tables import IndexRows
from app.storage.migrate import upgrade
from app.storage.repository import StoredVersion
from app.storage.single_statement import StatementPart, create_in_one_statement
from app.subscriptions.definition import SubscriptionDefinition
from app.subscriptions.settled import events_part
from bench.data import care_plan
from tests.postgres_cluster import start_cluster

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def backend_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def part_maker(ctx: FhirContext, form: str, chained: int) -> Callable[[StoredVersion, IndexRows], list[StatementPart]]:
    undecided = []
    for n in range(chained):
        request = parse_search("CarePlan", [("subject.family", f"nobody-{n}")], ctx.registry, 1, 1)
        checks = tuple(ClauseCheck.of(clause) for clause in request.clauses)
        name = f"chained-{n:03d}"
        definition = SubscriptionDefinition(name, "active", request, "rest-hook", "", False, (), None, checks)
        undecided.append((definition, request.clauses))

    def parts(stored: StoredVersion, rows: IndexRows) -> list[StatementPart]:
        if form == "plain":
            return []
        matched, judged = (["s0500"], []) if form == "matched" else ([], undecided)
        part = events_part(stored, rows, matched, judged, lambda _: None)
        assert part is not None
        return [part]

    return parts


async def run_form(
    ctx: FhirContext, conn: AsyncConnection, pid: int, form: str, args: argparse.Namespace, start: int
) -> tuple[float, float]:
    """Backend and client CPU microseconds per create of ``args.creates`` creates in ``form``, each
    stored by the write gate's single statement (``create_in_one_statement``) on ``conn``."""
    rng = random.Random(start)
    parts = part_maker(ctx, form, args.chained)
    backend_before, client_before = backend_cpu(pid), time.process_time()
    for index in range(start, start + args.creates):
        body = care_plan(index, rng)
        body["id"] = f"bench-{index}"
        stored = StoredVersion("CarePlan", body["id"], 1, datetime.now(UTC), False, orjson.dumps(body), "POST")
        rows = ctx.index_rows("CarePlan", body["id"], body)
        await create_in_one_statement(conn, stored, rows, parts(stored, rows), ctx.row_keys("CarePlan", rows))
    backend = (backend_cpu(pid) - backend_before) * 1e6 / args.creates
    client = (time.process_time() - client_before) * 1e6 / args.creates
    return backend, client


async def main_async(args: argparse.Namespace) -> None:
    cluster = start_cluster(durable=True)
    try:
        url = cluster.url("postgres")
        await asyncio.to_thread(upgrade, url)
        database = Database.from_url(url)
        ctx = build_context(database)
        admin = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{cluster.port}/postgres")
        states = [(f"s{n:04d}",) for n in range(1000)] + [(f"chained-{n:03d}",) for n in range(args.chained)]
        await admin.executemany(
            "INSERT INTO subscription_state (subscription_id, active, events_assigned, delivered_through, attempts) "
            "VALUES ($1, true, 0, 0, 0)",
            states,
        )
        await admin.execute("ANALYZE")
        await admin.close()
        forms = ("plain", "matched", "chained")
        measured: dict[str, list[tuple[float, float]]] = {form: [] for form in forms}
        async with database.single_statement() as conn:  # one connection: one backend to read from /proc
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None
            pid = await driver.fetchval("SELECT pg_backend_pid()")
            warm_up = argparse.Namespace(creates=200, chained=args.chained)
            for position, form in enumerate(forms):  # statements prepared, caches filled; ids of their own
                await run_form(ctx, conn, pid, form, warm_up, 900_000 + position * warm_up.creates)
            for round_number in range(args.rounds):
                for position, form in enumerate(forms):
                    start = (round_number * len(forms) + position) * args.creates
                    measured[form].append(await run_form(ctx, conn, pid, form, args, start))
        await database.dispose()
    finally:
        cluster.stop()
    print(
        f"# Outbox statement benchmark {time.strftime('%Y-%m-%d %H:%M')} on {platform.node()}: "
        f"{os.cpu_count()} cores, {args.creates} CarePlan creates per form and round, {args.rounds} rounds, "
        f"{args.chained} chained subscriptions\n"
    )
    print("| form | backend CPU us/create per round | client CPU us/create per round |")
    print("|---|---|---|")
    for form, rounds in measured.items():
        backends = ", ".join(f"{backend:.0f}" for backend, _ in rounds)
        clients = ", ".join(f"{client:.0f}" for _, client in rounds)
        print(f"| {form} | {backends} | {clients} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--creates", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chained", type=int, default=10)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
