"""The Subscriptions machinery of one server process, started and stopped with it."""

from __future__ import annotations

import asyncio

import httpx

from app.subscriptions.active import ActiveSubscriptions
from app.subscriptions.dispatcher import Dispatcher


class Subscriptions:
    """The active-subscription view (consulted by the outbox hook at every write) and the dispatcher."""

    def __init__(self, active: ActiveSubscriptions, dispatcher: Dispatcher, client: httpx.AsyncClient) -> None:
        self.active = active
        self.dispatcher = dispatcher
        self._client = client
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Read every Subscription, then deliver in the background (events left by a stopped process too)."""
        async with self.dispatcher.database.read() as conn:
            await self.active.load(conn)
        self._task = asyncio.create_task(self.dispatcher.run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.dispatcher.close()
        await self._client.aclose()
