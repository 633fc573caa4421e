"""The one-statement record of a batch delivered whole (PostgreSQL): what it stores, and that it moves
nothing for a dispatcher whose lease was taken over, as the transaction it replaces; and the statements
of that transaction (SQLite, failures), built once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update
from sqlalchemy.dialects import sqlite

from app.interactions.context import ContextHolder, utc_now
from app.subscriptions.records import EVENTS_DELIVERED, FAILED, DeliveredBatch, moved_in_transaction, record_delivered
from app.subscriptions.tables import subscription_attempts, subscription_events, subscription_state
from tests.subscriptions.conftest import post, subscribe, task

S = subscription_state.c


@pytest.fixture
def holder(app: FastAPI) -> ContextHolder:
    held: ContextHolder = app.state.fhir
    if not held.current.db.modifying_ctes:
        pytest.skip("SQLite records a batch in a transaction (tests/subscriptions/test_rest_hook.py)")
    return held


async def _leased(holder: ContextHolder, subscription_id: str, owner: str) -> None:
    async with holder.current.db.write() as conn:
        await conn.execute(
            update(subscription_state)
            .where(S.subscription_id == subscription_id)
            .values(lease_owner=owner, lease_until=utc_now() + timedelta(minutes=1))
        )


async def _state(holder: ContextHolder, subscription_id: str) -> Any:
    async with holder.current.db.read() as conn:
        return (await conn.execute(select(subscription_state).where(S.subscription_id == subscription_id))).one()


def _batch(subscription_id: str, owner: str, through: int, attempts: list[tuple[int, str, int]]) -> DeliveredBatch:
    now = utc_now()
    return DeliveredBatch(subscription_id, owner, 0, through, attempts, False, now, now + timedelta(minutes=1), None)


async def test_a_whole_batch_moves_the_state_stamps_the_events_and_gives_the_lease_back(
    client: httpx.AsyncClient, holder: ContextHolder
) -> None:
    subscription_id = await subscribe(client, "Task?owner=Practitioner/p1")
    for _ in range(2):
        await post(client, task())
    await _leased(holder, subscription_id, "me")
    batch = _batch(subscription_id, "me", 2, [(1, "HTTP 200", 12), (2, "HTTP 204", 9)])
    async with holder.current.db.statement_write() as conn:
        assert await record_delivered(conn, batch) == (True, True)
    state = await _state(holder, subscription_id)
    assert (state.delivered_through, state.lease_owner, state.attempts) == (2, None, 0)
    async with holder.current.db.read() as conn:
        a, e = subscription_attempts.c, subscription_events.c
        tried = (await conn.execute(select(a.event_number, a.delivered, a.detail, a.milliseconds))).all()
        stamped = (await conn.execute(select(e.event_number, e.delivered).order_by(e.event_number))).all()
    assert sorted(tried) == [(1, True, "HTTP 200", 12), (2, True, "HTTP 204", 9)]
    assert [(number, when == batch.now) for number, when in stamped] == [(1, True), (2, True)]


async def test_the_lease_is_kept_when_events_came_meanwhile(client: httpx.AsyncClient, holder: ContextHolder) -> None:
    subscription_id = await subscribe(client, "Task?owner=Practitioner/p1")
    for _ in range(3):
        await post(client, task())
    await _leased(holder, subscription_id, "me")
    async with holder.current.db.statement_write() as conn:  # only the first two were sent
        assert await record_delivered(
            conn, _batch(subscription_id, "me", 2, [(1, "HTTP 200", 1), (2, "HTTP 200", 1)])
        ) == (
            True,
            False,
        )
    state = await _state(holder, subscription_id)
    assert (state.delivered_through, state.lease_owner) == (2, "me")


async def test_a_dispatcher_that_lost_its_lease_moves_nothing(client: httpx.AsyncClient, holder: ContextHolder) -> None:
    subscription_id = await subscribe(client, "Task?owner=Practitioner/p1")
    await post(client, task())
    await _leased(holder, subscription_id, "another")
    async with holder.current.db.statement_write() as conn:
        assert await record_delivered(conn, _batch(subscription_id, "me", 1, [(1, "HTTP 200", 3)])) == (False, False)
    state = await _state(holder, subscription_id)
    assert (state.delivered_through, state.lease_owner) == (0, "another")
    async with holder.current.db.read() as conn:
        e = subscription_events.c
        assert (await conn.execute(select(e.delivered))).scalars().all() == [None]  # not stamped
        attempts = (await conn.execute(select(subscription_attempts.c.detail))).scalars().all()
    assert attempts == ["HTTP 200"]  # the attempt happened, and is on record, as in the transaction


def test_the_transactions_statements_are_built_once_with_every_value_bound() -> None:
    """The record a transaction makes (SQLite; failures): built once per shape, so a record costs the
    statements' execution, not their construction, and nothing of a batch is written into the SQL."""
    assert moved_in_transaction(True, False, True, True) is moved_in_transaction(True, False, True, True)
    moved = " ".join(str(moved_in_transaction(True, False, True, True).compile(dialect=sqlite.dialect())).split())
    assert moved.startswith("UPDATE subscription_state SET delivered_through=?,")
    assert "heartbeat_at=?" in moved
    assert "lease_owner=CASE WHEN (subscription_state.events_assigned <= ?" in moved
    assert moved.endswith(
        "WHERE subscription_state.subscription_id = ? AND subscription_state.lease_owner = ? "
        "AND subscription_state.delivered_through = ? RETURNING lease_owner"
    )
    stamped = " ".join(str(EVENTS_DELIVERED.compile(dialect=sqlite.dialect())).split())
    assert stamped == (
        "UPDATE subscription_events SET delivered=? WHERE subscription_events.subscription_id = ? "
        "AND subscription_events.event_number > ? AND subscription_events.event_number <= ?"
    )
    failed = " ".join(str(FAILED.compile(dialect=sqlite.dialect())).split())
    assert failed == (
        "UPDATE subscription_state SET attempts=?, retry_at=?, failing_since=?, last_error=?, lease_owner=NULL, "
        "lease_until=NULL WHERE subscription_state.subscription_id = ? AND subscription_state.lease_owner = ?"
    )
