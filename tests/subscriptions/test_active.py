"""The view of active Subscriptions each process keeps (``app.subscriptions.active``), on SQLite and
PostgreSQL: its poll, the safety net for a Subscription written through another process, reads what
changed since the previous poll, not every Subscription written near the newest one."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from app.interactions.context import ContextHolder
from app.storage.tables import resources
from app.subscriptions.active import POLL_OVERLAP, ActiveSubscriptions
from app.subscriptions.service import Subscriptions
from tests.subscriptions.conftest import subscribe


class Clock:
    """The time the view believes it is, moved by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def newest_stamp(holder: ContextHolder) -> datetime:
    r = resources.c
    async with holder.current.db.read() as conn:
        stamp = (
            await conn.execute(select(func.max(r.last_updated)).where(r.resource_type == "Subscription"))
        ).scalar_one()
    assert isinstance(stamp, datetime)
    return stamp


async def test_a_poll_reads_what_changed_since_the_previous_one(client: httpx.AsyncClient, app: FastAPI) -> None:
    holder: ContextHolder = app.state.fhir
    for n in range(3):
        await subscribe(client, f"Task?owner=Practitioner/nurse-{n}")
    written = await newest_stamp(holder)
    moment = timedelta(milliseconds=1)
    clock = Clock(written + moment)
    # another process's view: it learns of Subscriptions only by loading and polling
    view = ActiveSubscriptions(holder, app.state.subscriptions.active.rules, clock=clock)
    async with holder.current.db.read() as conn:
        await view.load(conn)
        clock.now = written + POLL_OVERLAP + moment
        assert await view.poll(conn) == 3  # written just before the load began: read again, within the overlap
        assert await view.poll(conn) == 0  # the previous poll began more than the overlap after them

    # a Subscription written through another process, whose announcement this view missed
    newest_id = await subscribe(client, "Task?owner=Practitioner/nurse-9")
    assert view.definition(newest_id, 1) is None
    async with holder.current.db.read() as conn:
        assert await view.poll(conn) == 1
    assert view.definition(newest_id, 1) is not None


async def test_the_servers_own_view_keeps_every_subscription_after_polls(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    subscriptions: Subscriptions = app.state.subscriptions
    ids = [await subscribe(client, f"Task?owner=Practitioner/nurse-{n}") for n in range(2)]
    holder: ContextHolder = app.state.fhir
    async with holder.current.db.read() as conn:
        await subscriptions.active.refresh(conn)
        for _ in range(3):
            await subscriptions.active.poll(conn)
    assert all(subscriptions.active.definition(i, 1) is not None for i in ids)
