"""The R4 websocket channel (hl7.org/fhir/R4/subscription.html#2.46.7.2): a client connects to the
server's websocket URL (advertised in the CapabilityStatement), sends ``bind [id]`` for a Subscription
whose channel is ``websocket``, gets ``bound [id]``, then ``ping [id]`` for each of its events.

An event is delivered by the dispatcher of whichever process leases the
subscription; the client may be connected to any process. So the
dispatcher publishes ``event <subscription id> <event number>`` on a broadcast
(``app.storage.broadcast``: PostgreSQL NOTIFY) and every process's hub
pings the sessions bound there. A ping reaches the clients connected at
that moment: the R4 websocket channel has no replay.

A session binds only Subscriptions its caller may read (with SMART on:
the access token given on the websocket request's ``Authorization``
header), so a ping never tells anyone of a Subscription they could not see.
"""

from __future__ import annotations

import asyncio
import logging

from app import fhirjson
from app.interactions.context import ContextHolder
from app.interactions.request_context import Caller
from app.storage.broadcast import Broadcast
from app.storage.repository import read_current

LOG = logging.getLogger("fhir.subscriptions")
MAX_QUEUED = 1000  # pings waiting for a slow client; beyond this it is disconnected


class Session:
    """One websocket client: what it is bound to and the messages waiting to be sent to it."""

    def __init__(self, caller: Caller) -> None:
        self.caller = caller
        self.outgoing: asyncio.Queue[str] = asyncio.Queue(MAX_QUEUED)
        self.bound: set[str] = set()
        self.overflowed = False

    def send(self, message: str) -> None:
        try:
            self.outgoing.put_nowait(message)
        except asyncio.QueueFull:
            self.overflowed = True


class WebSocketHub:
    """The sessions of this process by Subscription id; pings come from the broadcast."""

    def __init__(self, holder: ContextHolder, broadcast: Broadcast) -> None:
        self._holder = holder
        self.broadcast = broadcast
        self._sessions: dict[str, set[Session]] = {}
        broadcast.listen(self._on_event)

    async def handle(self, session: Session, message: str) -> None:
        """One message from the client: ``bind [id]`` is answered ``bound [id]`` or ``error [reason]``."""
        command, _, argument = message.strip().partition(" ")
        if command != "bind" or not argument.strip():
            session.send("error the server understands 'bind [subscription id]'")
            return
        subscription_id = argument.strip()
        problem = await self._cannot_bind(session.caller, subscription_id)
        if problem is not None:
            session.send(f"error {problem}")
            return
        session.bound.add(subscription_id)
        self._sessions.setdefault(subscription_id, set()).add(session)
        session.send(f"bound {subscription_id}")

    def drop(self, session: Session) -> None:
        for subscription_id in session.bound:
            sessions = self._sessions.get(subscription_id)
            if sessions is not None:
                sessions.discard(session)
                if not sessions:
                    del self._sessions[subscription_id]

    async def publish(self, subscription_id: str, event_number: int) -> None:
        await self.broadcast.publish(f"event {subscription_id} {event_number}")

    def _on_event(self, message: str) -> None:
        kind, _, rest = message.partition(" ")
        if kind != "event":
            return
        subscription_id, _, _number = rest.partition(" ")
        for session in self._sessions.get(subscription_id, ()):
            session.send(f"ping {subscription_id}")

    async def _cannot_bind(self, caller: Caller, subscription_id: str) -> str | None:
        ctx = self._holder.current
        gate = ctx.read_gate(caller)
        if len(subscription_id) > 64 or "\0" in subscription_id or not gate.permits("Subscription", "r"):
            return f"Subscription/{subscription_id[:64]} is not known"
        async with ctx.db.read() as conn:
            current = await read_current(conn, "Subscription", subscription_id, gate)
        if current is None or current.deleted or current.body is None:
            return f"Subscription/{subscription_id} is not known"
        body = fhirjson.loads(current.body)
        if (body.get("channel") or {}).get("type") != "websocket":
            return f"Subscription/{subscription_id} does not use the websocket channel"
        if body.get("status") != "active":
            return f"Subscription/{subscription_id} is not active"
        return None
