"""The Subscriptions machinery of a process: only a process that delivers listens for wake-ups, so the
workers beside a delivery process are not woken by every write that stored events (PostgreSQL)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from fastapi import FastAPI

from app.interactions.context import ContextHolder
from app.main import SUBSCRIPTION_WAKE_CHANNEL, WAKE
from app.subscriptions.service import Subscriptions


@pytest.mark.parametrize("deliver", [False, True])
async def test_only_a_process_that_delivers_listens_for_wake_ups(
    app: FastAPI, deliver: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder: ContextHolder = app.state.fhir
    if holder.current.db.dialect != "postgresql":
        pytest.skip("SQLite has one server process, whose dispatcher is woken in process")
    subscriptions: Subscriptions = app.state.subscriptions
    woken: list[str] = []
    monkeypatch.setattr(subscriptions.dispatcher, "wake", lambda: woken.append("woken"))
    await subscriptions.start(deliver=deliver)
    dsn = holder.current.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    writer = await asyncpg.connect(dsn)  # another process's wake-up
    try:
        await writer.execute("SELECT pg_notify($1, $2)", SUBSCRIPTION_WAKE_CHANNEL, WAKE)
        async with asyncio.timeout(5 if deliver else 0.5):
            while not woken:
                await asyncio.sleep(0.01)
    except TimeoutError:
        pass
    finally:
        await writer.close()
        await subscriptions.close()
    assert woken == (["woken"] if deliver else [])
