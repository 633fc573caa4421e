"""CPU of the search interaction, in-process: what one search costs the server beside HTTP.

    python -m bench.profile_search --patients 100 --rounds 5

Loads ``--patients`` x 7 active CarePlans through the create interaction, on
SQLite and on a throw-away durable PostgreSQL cluster, then runs
``CarePlan?subject=Patient/X&status=active`` (seven matches) through
``app.interactions.search.search`` 1,000 times per round, one after the other,
and reports the process's CPU time per search: the least and the median of
the rounds. Under HTTP load on two shared cores the same work costs more
(``bench.wrk``'s search phase); in-process the figure moves little from run
to run, so a change to the search path can be compared at two commits.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time

from app.interactions.create import create
from app.interactions.request_context import RequestContext
from app.interactions.search import search
from app.main import build_context
from app.search.request import parse_search
from app.storage.database import Database
from app.storage.migrate import upgrade
from bench.data import care_plan
from tests.postgres_cluster import start_cluster

SEARCHES_PER_ROUND = 1_000


async def search_cpu_us(url: str, patients: int, rounds: int) -> tuple[float, float]:
    """(least, median) CPU microseconds per search over ``rounds`` rounds."""
    db = Database.from_url(url, sqlite_inline=url.startswith("sqlite"))  # as one server process runs it
    ctx = build_context(db)
    rng = random.Random(1)
    for index in range(patients * 7):
        body = care_plan(index, rng)
        body["subject"] = {"reference": f"Patient/p{index % patients}"}
        body["status"] = "active"
        await create(ctx, RequestContext(), "CarePlan", body)
    requests = [
        parse_search("CarePlan", [("subject", f"Patient/p{i}"), ("status", "active")], ctx.registry, 20, 100)
        for i in range(patients)
    ]
    for request in requests:  # statements compiled and prepared, caches filled
        await search(ctx, RequestContext(), request)
    per_round = []
    for _ in range(rounds):
        started = time.process_time()
        for i in range(SEARCHES_PER_ROUND):
            page = await search(ctx, RequestContext(), requests[i % patients])
            assert len(page.matches) == 7
        per_round.append((time.process_time() - started) / SEARCHES_PER_ROUND * 1e6)
    await db.dispose()
    return min(per_round), statistics.median(per_round)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"# search interaction, {args.patients * 7:,} CarePlans, {args.rounds} rounds of {SEARCHES_PER_ROUND:,}")
    print("| backend | CPU us per search, least | median |")
    print("|---|---|---|")
    sqlite_url = f"sqlite+aiosqlite:///{tempfile.mkdtemp(prefix='fhir-profile-')}/search.sqlite"
    upgrade(sqlite_url)
    least, median = asyncio.run(search_cpu_us(sqlite_url, args.patients, args.rounds))
    print(f"| SQLite | {least:.0f} | {median:.0f} |")
    cluster = start_cluster(durable=True)
    try:
        upgrade(cluster.url("postgres"))
        least, median = asyncio.run(search_cpu_us(cluster.url("postgres"), args.patients, args.rounds))
        print(f"| PostgreSQL | {least:.0f} | {median:.0f} |")
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
