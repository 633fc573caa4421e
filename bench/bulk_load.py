"""Load a generated population through the server's own bulk create path.

Each batch of patients is prepared by ``app.interactions.bulk.prepare_create``
(stamp, id, search-index rows: the same code a POST runs) and stored by
``store_creates`` in one transaction. Generated resources are known valid
(``tests/bench/test_population.py`` validates a sample), so schema validation
is skipped here; everything else is what a create does.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Iterable
from typing import Any

from app.interactions.bulk import PreparedCreate, prepare_create, store_creates
from app.interactions.context import FhirContext, utc_now
from app.interactions.stamping import stamp
from app.main import build_context, served_resource_types
from app.storage.database import Database
from app.storage.gate import OPEN
from app.storage.repository import StoredVersion
from app.storage.row_keys import NO_KEYS
from bench.population import Population


async def load_records(
    database_url: str, batches: Iterable[list[dict[str, Any]]], index: bool = True, validate: bool = False
) -> tuple[int, float]:
    """Store every batch in its own transaction: (resources, seconds spent preparing and storing them).

    ``index=False`` is the baseline: no extraction and no index rows;
    ``validate=True`` validates every resource as a create does. The time
    excludes start-up (imports, registry), which is not per-resource work.
    """
    database = Database.from_url(database_url, pool_size=1)
    ctx = build_context(database, served_resource_types())
    stored, seconds = 0, 0.0
    try:
        for batch in batches:
            started = time.perf_counter()
            prepared = [
                prepare_create(ctx, r["resourceType"], r, resource_id=r["id"], validate=validate)
                if index
                else _unindexed(ctx, r, validate)
                for r in batch
            ]
            async with database.write() as conn:
                await store_creates(ctx, conn, prepared, OPEN)
            seconds += time.perf_counter() - started
            stored += len(prepared)
    finally:
        await database.dispose()
    return stored, seconds


def _unindexed(ctx: FhirContext, body: dict[str, Any], validate: bool) -> PreparedCreate:
    """The baseline: what a create stores without extracting or storing search-index rows."""
    if validate:
        ctx.validator.validate(body["resourceType"], body)
    now = utc_now()
    stamped = stamp(body, body["id"], 1, now)
    return PreparedCreate(StoredVersion(body["resourceType"], body["id"], 1, now, False, stamped, "POST"), {}, NO_KEYS)


def _patient_batches(population: Population, start: int, stop: int, size: int) -> Iterable[list[dict[str, Any]]]:
    for first in range(start, stop, size):
        yield [r for index in range(first, min(first + size, stop)) for r in population.patient_record(index)]


def _load_share(args: tuple[str, Population, int, int, int, bool, bool]) -> tuple[int, float]:
    database_url, population, start, stop, size, index, validate = args
    batches = _patient_batches(population, start, stop, size)
    return asyncio.run(load_records(database_url, batches, index, validate))


def load_population(
    database_url: str,
    population: Population,
    jobs: int = 2,
    batch_patients: int = 50,
    index: bool = True,
    validate: bool = False,
) -> tuple[int, float, float]:
    """(resources stored, wall seconds, resources/s of the processes' own work summed over the processes).

    Shared resources first, then patients split over ``jobs`` processes. The
    wall time includes process start-up; the summed rate does not.
    """
    started = time.perf_counter()
    shared = list(population.shared())
    stored, _ = asyncio.run(
        load_records(database_url, [shared[i : i + 1000] for i in range(0, len(shared), 1000)], index, validate)
    )
    step = -(-population.patients // jobs)
    shares = [
        (database_url, population, start, min(start + step, population.patients), batch_patients, index, validate)
        for start in range(0, population.patients, step)
    ]
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        results = pool.map(_load_share, shares)
    stored += sum(count for count, _ in results)
    work_rate = sum(count / seconds for count, seconds in results if seconds)
    return stored, time.perf_counter() - started, work_rate
