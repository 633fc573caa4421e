"""Events numbered inside a write's transaction: each active subscription's next number, one event row
each, by statements built once per number of subscriptions (compiled SQL per dialect, and run on both
backends)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import FastAPI
from sqlalchemy import insert, select
from sqlalchemy.dialects import postgresql, sqlite

from app.interactions.context import ContextHolder
from app.storage.repository import StoredVersion
from app.storage.writes import Change
from app.subscriptions.numbering import BOUND_ONE_BY_ONE, _numbering, append_events
from app.subscriptions.tables import subscription_events, subscription_state


def test_the_rows_are_locked_in_the_order_of_their_ids_with_the_ids_bound() -> None:
    sql = " ".join(str(_numbering(2).compile(dialect=postgresql.dialect())).split())
    assert sql.startswith(
        "UPDATE subscription_state SET "
        "events_assigned=(subscription_state.events_assigned + %(events_assigned_1)s::BIGINT)"
    )
    assert "subscription_state.subscription_id IN (%(s0)s::VARCHAR, %(s1)s::VARCHAR)" in sql
    assert "ORDER BY subscription_state.subscription_id FOR UPDATE" in sql
    assert sql.endswith("RETURNING subscription_state.subscription_id, subscription_state.events_assigned")
    spread = " ".join(str(_numbering(0).compile(dialect=sqlite.dialect())).split())
    assert "subscription_state.subscription_id IN (__[POSTCOMPILE_ids])" in spread
    assert "FOR UPDATE" not in spread  # SQLite has one writer


def test_each_number_of_subscriptions_has_one_statement_built_once() -> None:
    assert _numbering(1) is _numbering(1)
    assert _numbering(1) is not _numbering(2)


async def _number(app: FastAPI, subscription_ids: list[str], version: int) -> None:
    holder: ContextHolder = app.state.fhir
    stored = StoredVersion("Task", "t1", version, datetime.now(UTC), False, b"{}", "PUT")
    async with holder.current.db.write() as conn:
        await append_events(conn, subscription_ids, Change(None, stored, {}))


async def test_each_active_subscription_gets_its_next_number_and_an_event(app: FastAPI) -> None:
    holder: ContextHolder = app.state.fhir
    many = [f"s{n:02d}" for n in range(BOUND_ONE_BY_ONE + 3)]  # more than are bound one by one
    state = [
        {"subscription_id": sid, "active": sid != "s01", "events_assigned": 4, "delivered_through": 4, "attempts": 0}
        for sid in many
    ]
    async with holder.current.db.write() as conn:
        await conn.execute(insert(subscription_state), state)
    await _number(app, ["s02", "s00", "s01"], 1)  # bound one by one; s01 is not active
    await _number(app, many, 2)  # spread at execution
    e = subscription_events.c
    async with holder.current.db.read() as conn:
        events = (
            await conn.execute(
                select(e.subscription_id, e.event_number, e.version_id).order_by(e.version_id, e.subscription_id)
            )
        ).all()
    first = [("s00", 5, 1), ("s02", 5, 1)]
    second = [(sid, 6 if sid in ("s00", "s02") else 5, 2) for sid in many if sid != "s01"]
    assert [tuple(row) for row in events] == first + second
