"""A notification is sent while clients keep writing, on SQLite, where the dispatcher shares the
worker's event loop with every request (inline SQLite: no driver call gives the loop a pass, so each
read and write scope ends with one, ``app.storage.connection_scope``)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from fastapi import FastAPI

from app.interactions.context import ContextHolder
from tests.subscriptions.conftest import Receiver, make_dispatcher, post, subscribe, task

WRITERS = 16


class TimedReceiver(Receiver):
    """A receiver that also notes when each request arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.arrived.append(time.monotonic())
        return super().__call__(request)


async def delivery_time_under_writers(client: httpx.AsyncClient, app: FastAPI) -> float:
    """Seconds from a notifying write's response to its notification, while sixteen clients write."""
    receiver = TimedReceiver()
    dispatcher = make_dispatcher(app, receiver, poll_seconds=0.05)
    await subscribe(client, "Task?owner=Practitioner/watched")
    running = asyncio.create_task(dispatcher.run())
    stop = asyncio.Event()

    deadline = time.monotonic() + 5  # writers that never gave the loop a pass would stop here

    async def keep_writing(number: int) -> None:
        while not stop.is_set() and time.monotonic() < deadline:
            await post(client, task(owner=f"Practitioner/busy-{number}"))

    writers = [asyncio.create_task(keep_writing(n)) for n in range(WRITERS)]
    try:
        before = time.monotonic()
        await asyncio.sleep(0.5)  # every writer is at it
        assert time.monotonic() - before < 2.5, "the writers held the event loop"
        await post(client, task(owner="Practitioner/watched"))
        written = time.monotonic()
        async with asyncio.timeout(30):
            while not receiver.arrived:
                await asyncio.sleep(0.01)
        return receiver.arrived[0] - written
    finally:
        stop.set()
        await asyncio.gather(*writers, return_exceptions=True)
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await dispatcher.close()


async def test_a_notification_is_not_held_up_by_clients_writing(client: httpx.AsyncClient, app: FastAPI) -> None:
    holder: ContextHolder = app.state.fhir
    if holder.current.db.dialect != "sqlite":
        pytest.skip("on PostgreSQL notifications are sent by a delivery process of its own")
    assert holder.current.db.pauses  # one server process: SQLite runs inline
    waited = await delivery_time_under_writers(client, app)
    print(f"notification after {waited:.3f} s")
    assert waited < 1.0
