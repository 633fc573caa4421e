"""The dispatcher's statements, built once, as each dialect compiles them (no database): the lease is
taken in one statement that skips rows another dispatcher holds, and leaves out those this one delivers;
and their plans on both backends."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from sqlalchemy import Select, Update, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from app.interactions.context import ContextHolder
from app.subscriptions.delivery_statements import BATCH, CLAIM, DUE, RELEASE_IF_DONE, STATE_AND_EVENTS
from app.subscriptions.tables import subscription_events, subscription_state


def test_the_claim_locks_what_it_takes_and_skips_what_another_dispatcher_holds() -> None:
    sql = " ".join(str(CLAIM.compile(dialect=postgresql.dialect())).split())
    assert sql.startswith("UPDATE subscription_state SET lease_owner=%(holder)s")
    assert "FOR UPDATE SKIP LOCKED" in sql
    assert "subscription_state.subscription_id NOT IN (__[POSTCOMPILE_running])" in sql
    assert "LIMIT %(room)s" in sql
    assert "RETURNING subscription_state.subscription_id" in sql


def test_what_is_due_is_read_without_a_lock_on_both_backends() -> None:
    for dialect in (postgresql.dialect(), sqlite.dialect()):
        sql = " ".join(str(DUE.compile(dialect=dialect)).split())
        assert "FOR UPDATE" not in sql
        assert "subscription_state.delivered_through < subscription_state.events_assigned" in sql


def test_a_lease_is_given_back_when_done_only_if_nothing_waits() -> None:
    sql = " ".join(str(RELEASE_IF_DONE.compile(dialect=sqlite.dialect())).split())
    assert "subscription_state.delivered_through >= subscription_state.events_assigned" in sql
    assert "subscription_state.lease_owner = ?" in sql


async def test_a_round_reads_the_subscriptions_with_something_to_send_from_their_own_index(app: FastAPI) -> None:
    """Among a thousand idle subscriptions, the due read (and the claim built on it) finds the two with
    events waiting through the partial index of pending ones, not by reading every row: a round costs
    what is pending, not what is subscribed (PostgreSQL's generic plan, as a prepared statement gets
    after five runs, and SQLite's plan)."""
    holder: ContextHolder = app.state.fhir
    db = holder.current.db
    idle = {"active": True, "events_assigned": 3, "delivered_through": 3, "attempts": 0}
    rows = [{"subscription_id": f"idle-{n:04}", **idle} for n in range(1000)]
    rows += [{"subscription_id": f"due-{n}", **idle, "events_assigned": 4} for n in range(2)]
    rows.append({"subscription_id": "off", **idle, "active": False, "events_assigned": 9})
    now = datetime.now(UTC)
    async with db.write() as conn:
        await conn.execute(insert(subscription_state), rows)
        await conn.exec_driver_sql("ANALYZE subscription_state" if db.dialect == "postgresql" else "ANALYZE")
    async with db.read() as conn:
        due = [row[0] for row in await conn.execute(DUE, {"now": now, "room": 64})]
        assert due == ["due-0", "due-1"]
        plan = await _plan(conn, DUE, {"now": now, "room": 64})
        claim = {"now": now, "room": 64, "running": ["x"], "holder": "h", "lease_end": now}
        claim_plan = await _plan(conn, CLAIM, claim)
    assert "ix_subscription_state_pending" in plan, plan
    assert "ix_subscription_state_pending" in claim_plan, claim_plan


async def test_the_state_and_the_next_events_of_a_subscription_come_in_one_read(app: FastAPI) -> None:
    """One statement gives a subscription's state, its Subscription's current version and the next
    ``BATCH`` events after those delivered, in order; a subscription with nothing waiting gives its state
    alone, and one without a Subscription resource its state with no version."""
    holder: ContextHolder = app.state.fhir
    now = datetime.now(UTC)
    state = {"active": True, "attempts": 0}
    events = [
        {"subscription_id": "busy", "event_number": n, "resource_type": "Task", "resource_id": f"t{n}",
         "version_id": 1, "deleted": n == 4, "occurred": now}
        for n in range(1, 2 + BATCH + 5)
    ]  # fmt: skip
    async with holder.current.db.write() as conn:
        await conn.execute(
            insert(subscription_state),
            [
                {"subscription_id": "busy", "events_assigned": len(events), "delivered_through": 2, **state},
                {"subscription_id": "idle", "events_assigned": 0, "delivered_through": 0, **state},
            ],
        )
        await conn.execute(insert(subscription_events), events)
    async with holder.current.db.read() as conn:
        busy = (await conn.execute(STATE_AND_EVENTS, {"sid": "busy"})).all()
        idle = (await conn.execute(STATE_AND_EVENTS, {"sid": "idle"})).all()
    assert [row.event_number for row in busy] == list(range(3, 3 + BATCH))
    assert {(row.delivered_through, row.events_assigned, row.subscription_version) for row in busy} == {
        (2, len(events), None)
    }
    assert (busy[1].event_type, busy[1].event_resource_id, busy[1].event_deleted) == ("Task", "t4", True)
    assert busy[0].event_occurred == now
    assert [(row.subscription_id, row.event_number) for row in idle] == [("idle", None)]


async def _plan(conn: AsyncConnection, statement: Select[Any] | Update, values: dict[str, object]) -> str:
    """The plan of ``statement`` on ``conn``'s backend: on PostgreSQL the generic one, in a transaction
    of its own that is rolled back."""
    expanded = statement.compile(dialect=conn.dialect).construct_expanded_state(values)  # type: ignore[attr-defined]
    ordered = list(expanded.positional_parameters)
    raw = (await conn.get_raw_connection()).driver_connection
    assert raw is not None
    if conn.dialect.name == "postgresql":
        transaction = raw.transaction()
        await transaction.start()
        try:
            await raw.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            return "\n".join(row[0] for row in await raw.fetch("EXPLAIN " + expanded.statement, *ordered))
        finally:
            await transaction.rollback()
    arguments = tuple(value.isoformat() if isinstance(value, datetime) else value for value in ordered)
    result = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + expanded.statement, arguments)
    return "\n".join(str(row[-1]) for row in result)
