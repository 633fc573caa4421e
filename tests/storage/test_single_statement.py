"""A create as one PostgreSQL statement writes exactly what the transactional path writes, or nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import ColumnElement, String, bindparam, exists, func, select
from sqlalchemy.sql.selectable import CTE

from app.interactions.context import FhirContext, utc_now
from app.interactions.create import create
from app.interactions.request_context import RequestContext
from app.interactions.stamping import stamp
from app.main import build_context
from app.storage.database import Database
from app.storage.index_tables import INDEX_TABLES
from app.storage.repository import AlreadyExists, StoredVersion, read_current
from app.storage.single_statement import (
    NotOneStatement,
    StatementPart,
    create_in_one_statement,
    create_statement,
    replace_in_one_statement,
)
from app.storage.tables import resource_history, resources

PLAN = {
    "resourceType": "CarePlan",
    "status": "active",
    "intent": "plan",
    "title": "Heart failure",
    "subject": {"reference": "Patient/p1", "identifier": {"system": "urn:mrn", "value": "9"}},
    "period": {"start": "2026-01-01"},
    "activity": [{"detail": {"status": "scheduled", "dailyAmount": {"value": 40, "unit": "mg"}}}],
}


@pytest.fixture
async def ctx(database_url: str) -> AsyncIterator[FhirContext]:
    if not database_url.startswith("postgresql"):
        pytest.skip("a PostgreSQL statement; SQLite creates run in a transaction (tests/api/test_crud.py)")
    database = Database.from_url(database_url)
    yield build_context(database)
    await database.dispose()


async def index_row_count(ctx: FhirContext, resource_id: str) -> int:
    total = 0
    async with ctx.db.read() as conn:
        for table in INDEX_TABLES.values():
            query = select(func.count()).select_from(table).where(table.c.resource_id == resource_id)
            total += (await conn.execute(query)).scalar_one()
    return total


async def test_create_writes_current_history_and_every_index_row(ctx: FhirContext) -> None:
    result = await create(ctx, RequestContext(), "CarePlan", dict(PLAN))
    rid = result.stored.id
    async with ctx.db.read() as conn:
        stored = await read_current(conn, "CarePlan", rid)
        history = (await conn.execute(select(func.count()).where(resource_history.c.id == rid))).scalar_one()
    assert stored is not None and stored.body == result.stored.body and stored.version_id == 1
    assert history == 1
    rows = ctx.index_rows("CarePlan", rid, PLAN)
    assert {"token", "reference", "date"} <= set(rows)
    assert await index_row_count(ctx, rid) == sum(len(r) for r in rows.values())


async def test_taken_id_writes_nothing(ctx: FhirContext) -> None:
    now = utc_now()
    version = StoredVersion("CarePlan", "fixed-id", 1, now, False, stamp(PLAN, "fixed-id", 1, now), "POST")
    rows = ctx.index_rows("CarePlan", "fixed-id", PLAN)
    async with ctx.db.single_statement() as conn:
        await create_in_one_statement(conn, version, rows, (), ctx.row_keys("CarePlan", rows))
    async with ctx.db.single_statement() as conn:
        with pytest.raises(AlreadyExists):
            await create_in_one_statement(conn, version, rows, (), ctx.row_keys("CarePlan", rows))
    assert await index_row_count(ctx, "fixed-id") == sum(len(r) for r in rows.values())
    async with ctx.db.read() as conn:
        assert (await conn.execute(select(func.count()).where(resource_history.c.id == "fixed-id"))).scalar_one() == 1


async def test_resource_without_index_rows(ctx: FhirContext) -> None:
    assert "unnest" not in create_statement(()).sql
    result = await create(ctx, RequestContext(), "Basic", {"resourceType": "Basic", "code": {"text": "note"}})
    async with ctx.db.read() as conn:
        assert await read_current(conn, "Basic", result.stored.id) is not None


async def test_update_replaces_index_rows_and_compares_the_version(ctx: FhirContext) -> None:
    created = await create(ctx, RequestContext(), "CarePlan", dict(PLAN))
    rid = created.stored.id
    changed = {**PLAN, "id": rid, "status": "completed", "subject": {"reference": "Patient/p2"}}
    now = utc_now()
    version = StoredVersion("CarePlan", rid, 2, now, False, stamp(changed, rid, 2, now), "PUT")
    rows = ctx.index_rows("CarePlan", rid, changed)
    tables = ctx.extractor.tables_for("CarePlan")
    async with ctx.db.single_statement() as conn:
        assert not await replace_in_one_statement(
            conn, 7, version, rows, tables, (), ctx.row_keys("CarePlan", rows)
        )  # stale: nothing written
        assert await index_row_count(ctx, rid) == sum(len(r) for r in ctx.index_rows("CarePlan", rid, PLAN).values())
        assert await replace_in_one_statement(conn, 1, version, rows, tables, (), ctx.row_keys("CarePlan", rows))
    assert await index_row_count(ctx, rid) == sum(len(r) for r in rows.values())
    token = INDEX_TABLES["token"].c
    async with ctx.db.read() as conn:
        codes = {row[0] for row in await conn.execute(select(token.code).where(token.resource_id == rid))}
        stored = await read_current(conn, "CarePlan", rid)
        history = (await conn.execute(select(func.count()).where(resource_history.c.id == rid))).scalar_one()
    assert "completed" in codes and "active" not in codes
    assert stored is not None and stored.version_id == 2 and history == 2


def test_integers_bound_in_a_part_are_written_into_the_sql_and_strings_stay_parameters() -> None:
    """A part's integer constants (a parameter hash, a counter's step) are not sent with each write;
    a negative one is parenthesised (``- -5`` never becomes a ``--`` comment); strings stay ``$n``."""
    table = INDEX_TABLES["string"]

    def build(cur: CTE) -> list[CTE]:
        counted = (
            select(func.count())
            .select_from(table)
            .where(
                table.c.param_hash == -4569586023388075431,
                table.c.value_norm == "it's; DROP TABLE resources --",
                exists(select(cur.c.version_id)),
            )
            .cte("counted")
        )
        return [select(counted.c[0] + 7).cte("stepped"), counted]

    part = StatementPart(("test", "inline"), build, {})
    compiled = create_statement((), [part])
    assert "param_hash = (-4569586023388075431)" in compiled.sql
    assert " + 7" in compiled.sql
    assert "DROP" not in compiled.sql
    assert "it's; DROP TABLE resources --" in compiled.defaults.values()
    assert -4569586023388075431 not in compiled.defaults.values()


def veto_part(marker: str) -> StatementPart:
    """A part adding nothing, whose veto holds when a resource with the id ``marker`` is stored."""

    def veto() -> ColumnElement[bool]:
        return exists(select(resources.c.id).where(resources.c.id == bindparam("test.marker", type_=String())))

    return StatementPart(("test", "veto"), lambda cur: (), {"test.marker": marker}, None, veto)


async def test_a_part_whose_veto_holds_stops_the_write_which_then_takes_a_transaction(ctx: FhirContext) -> None:
    """``StatementPart.veto``: when its condition holds the statement writes nothing (no current,
    history or index row) and the writer is told to take a transaction; when it does not, the write is
    stored as usual and the part's count is 0."""
    marker = (await create(ctx, RequestContext(), "CarePlan", dict(PLAN))).stored.id
    now = utc_now()
    for resource_id, label, stored in (("vetoed", marker, False), ("allowed", "no-such-id", True)):
        version = StoredVersion("CarePlan", resource_id, 1, now, False, stamp(PLAN, resource_id, 1, now), "POST")
        rows = ctx.index_rows("CarePlan", resource_id, PLAN)
        counts: list[int] = []
        part = veto_part(label)
        part = StatementPart(part.shape, part.build, part.values, counts.append, part.veto)
        async with ctx.db.single_statement() as conn:
            if stored:
                await create_in_one_statement(conn, version, rows, [part], ctx.row_keys("CarePlan", rows))
                assert counts == [0]
            else:
                with pytest.raises(NotOneStatement):
                    await create_in_one_statement(conn, version, rows, [part], ctx.row_keys("CarePlan", rows))
                assert counts == []
        async with ctx.db.read() as conn:
            assert (await read_current(conn, "CarePlan", resource_id) is not None) is stored
            history = select(func.count()).where(resource_history.c.id == resource_id)
            assert (await conn.execute(history)).scalar_one() == (1 if stored else 0)
        assert await index_row_count(ctx, resource_id) == (sum(len(r) for r in rows.values()) if stored else 0)


async def test_an_update_whose_veto_holds_keeps_the_current_version(ctx: FhirContext) -> None:
    created = await create(ctx, RequestContext(), "CarePlan", dict(PLAN))
    rid = created.stored.id
    changed = {**PLAN, "id": rid, "status": "completed"}
    now = utc_now()
    version = StoredVersion("CarePlan", rid, 2, now, False, stamp(changed, rid, 2, now), "PUT")
    rows = ctx.index_rows("CarePlan", rid, changed)
    tables = ctx.extractor.tables_for("CarePlan")
    keys = ctx.row_keys("CarePlan", rows)
    async with ctx.db.single_statement() as conn:
        with pytest.raises(NotOneStatement):
            await replace_in_one_statement(conn, 1, version, rows, tables, [veto_part(rid)], keys)
        async with ctx.db.read() as reader:
            current = await read_current(reader, "CarePlan", rid)
        assert current is not None and current.version_id == 1
        assert await replace_in_one_statement(conn, 1, version, rows, tables, [veto_part("no-such-id")], keys)
    async with ctx.db.read() as conn:
        current = await read_current(conn, "CarePlan", rid)
    assert current is not None and current.version_id == 2
