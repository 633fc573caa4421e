"""Batched creates (``app.interactions.bulk``): all stored and searchable, or nothing, on both backends.

Batches above ``COPY_MIN_ROWS`` go through COPY on PostgreSQL, so these
tests also show that COPY rows belong to the surrounding transaction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest
from sqlalchemy import func, select, text

from app.interactions.bulk import prepare_create, store_creates
from app.interactions.context import FhirContext
from app.interactions.search import find_ids
from app.main import build_context
from app.search.request import parse_search
from app.storage.batch_insert import COPY_MIN_ROWS
from app.storage.database import Database
from app.storage.gate import OPEN
from app.storage.index_tables import INDEX_TABLES
from app.storage.repository import read_current
from app.storage.tables import resource_history, resources
from bench.population import Population


@pytest.fixture
async def ctx(database_url: str) -> AsyncIterator[FhirContext]:
    database = Database.from_url(database_url)
    yield build_context(database)
    await database.dispose()


def records(patients: int) -> list[dict]:
    population = Population(patients, practitioners=5, organizations=2)
    return list(population.shared()) + [r for i in range(patients) for r in population.patient_record(i)]


async def count(ctx: FhirContext, table) -> int:  # type: ignore[no-untyped-def]
    async with ctx.db.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def test_batch_is_stored_indexed_and_searchable(ctx: FhirContext) -> None:
    bodies = records(10)
    assert len(bodies) > COPY_MIN_ROWS
    prepared = [prepare_create(ctx, b["resourceType"], b, resource_id=b["id"]) for b in bodies]
    async with ctx.db.write() as conn:
        await store_creates(ctx, conn, prepared, OPEN)
    assert await count(ctx, resources) == await count(ctx, resource_history) == len(bodies)
    async with ctx.db.read() as conn:
        stored = await read_current(conn, "Task", "pat-3-task-2")
        assert stored is not None and stored.version_id == 1
        assert orjson.loads(stored.body or b"")["meta"]["versionId"] == "1"
        request = parse_search("Task", [("patient", "Patient/pat-3")], ctx.registry, 50, 50)
        assert sorted(await find_ids(conn, request, 50)) == [f"pat-3-task-{n}" for n in range(6)]
        request = parse_search("CarePlan", [("subject.name", bodies[-20]["name"][0]["family"])], ctx.registry, 50, 50)
        assert {"pat-9-plan-0", "pat-9-plan-1"} <= set(await find_ids(conn, request, 50))
    # every index row belongs to a stored resource, none duplicated by the batch
    async with ctx.db.read() as conn:
        rows = 0
        for table in INDEX_TABLES.values():
            query = select(func.count()).select_from(table).where(table.c.resource_id == "pat-3-task-2")
            rows += (await conn.execute(query)).scalar_one()
    assert rows == len(ctx.extractor.extract("Task", next(b for b in bodies if b["id"] == "pat-3-task-2")))


async def test_failed_batch_leaves_nothing(ctx: FhirContext) -> None:
    bodies = records(10)
    prepared = [prepare_create(ctx, b["resourceType"], b, resource_id=b["id"]) for b in bodies]
    with pytest.raises(RuntimeError):
        async with ctx.db.write() as conn:
            await store_creates(ctx, conn, prepared, OPEN)
            raise RuntimeError("a later entry failed")
    assert await count(ctx, resources) == 0
    for table in INDEX_TABLES.values():
        assert await count(ctx, table) == 0


async def test_prepared_searches_use_postgresql_default_plan_caching(ctx: FhirContext) -> None:
    """Generic plans once PostgreSQL judges them no worse: planning every execution cost twice the
    database CPU of a search (BENCHMARKS.md, "Search plans")."""
    if ctx.db.dialect != "postgresql":
        pytest.skip("plan caching is a PostgreSQL setting")
    async with ctx.db.read() as conn:
        assert (await conn.execute(text("SHOW plan_cache_mode"))).scalar_one() == "auto"
