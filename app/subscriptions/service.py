"""The Subscriptions machinery of one server process, started and stopped with it."""

from __future__ import annotations

import asyncio

from app.storage.broadcast import Broadcast
from app.subscriptions.active import ActiveSubscriptions
from app.subscriptions.dispatcher import Dispatcher
from app.subscriptions.sender import Sender
from app.subscriptions.websocket import WebSocketHub


class Subscriptions:
    """The active-subscription view (consulted by the outbox hook at every write), the dispatcher and
    the websocket sessions of this process."""

    def __init__(
        self,
        active: ActiveSubscriptions,
        dispatcher: Dispatcher,
        hub: WebSocketHub,
        sender: Sender,
        websocket_url: str,
        wakes: Broadcast,
    ) -> None:
        """``wakes``: the channel on which writes that stored events wake the dispatchers of other
        processes (``dispatcher.wake`` listens to it); listened to only by a process that delivers."""
        self.active = active
        self.wakes = wakes
        self.websocket_url = websocket_url  # where websocket clients connect (the CapabilityStatement says it)
        self.dispatcher = dispatcher
        self.hub = hub
        self._sender = sender
        self._task: asyncio.Task[None] | None = None

    async def start(self, deliver: bool = True) -> None:
        """Read every Subscription, listen for websocket events, then (``deliver``) deliver in the
        background, events left by a stopped process too. Without ``deliver`` a delivery process of its
        own sends the notifications (``app.delivery_worker``)."""
        async with self.dispatcher.database.read() as conn:
            await self.active.load(conn)
        await self.hub.start()
        if deliver:
            await self.wakes.start()
            self._task = asyncio.create_task(self.dispatcher.run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.dispatcher.close()
        await self.wakes.close()
        await self.hub.close()
        await self._sender.aclose()
