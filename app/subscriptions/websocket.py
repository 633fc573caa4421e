"""The websocket channel of Subscriptions, in its two protocols, on one URL (advertised in the
CapabilityStatement).

R4 (hl7.org/fhir/R4/subscription.html#2.46.7.2): the client sends ``bind
[id]`` for a Subscription whose channel is ``websocket``, gets ``bound
[id]``, then ``ping [id]`` for each of its events. The session binds only
Subscriptions its caller may read (with SMART on: the access token given
on the websocket request's ``Authorization`` header).

Backport IG 1.1 (topic-based; hl7.org/fhir/uv/subscriptions-backport/channels.html):
the client asks ``$get-ws-binding-token`` over HTTP, connects (a browser
cannot send an ``Authorization`` header on a websocket, so the token
stands for it) and sends ``bind-with-token [token]``; the server answers
with a handshake notification Bundle, then sends a notification Bundle
(JSON text) per event and a heartbeat Bundle after each quiet
``backport-heartbeat-period``. Binding the token of an R4 Subscription
binds it as ``bind [id]`` does.

An event is delivered by the dispatcher of whichever process leases the
subscription; the client may be connected to any process. So the
dispatcher publishes ``event <subscription id> <event number>`` on a
broadcast (``app.storage.broadcast``: PostgreSQL NOTIFY) and every
process's hub tells the sessions bound there: a ping at once, a
notification Bundle built by one task per hub (so Bundles leave in event
order). Only clients connected at that moment hear of it: a topic client
that missed some asks ``$events``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Literal

from sqlalchemy import select

from app import fhirjson
from app.errors import FhirError
from app.interactions.context import ContextHolder
from app.interactions.request_context import Caller
from app.storage.broadcast import Broadcast
from app.storage.gate import OPEN
from app.storage.repository import read_current, read_version
from app.subscriptions.binding import carries_resources, redeem_token
from app.subscriptions.definition import SubscriptionDefinition, SubscriptionRules, read_definition
from app.subscriptions.notifications import NotifiedEvent, SubscriptionStatus, notification_bundle
from app.subscriptions.owners import written_by
from app.subscriptions.tables import subscription_events, subscription_state

LOG = logging.getLogger("fhir.subscriptions")
MAX_QUEUED = 1000  # messages waiting for a slow client; beyond this it is disconnected
MAX_BOUND = 100  # Subscriptions one connection may bind
HEARTBEAT_CHECK_SECONDS = 1.0
E = subscription_events.c
S = subscription_state.c


class Session:
    """One websocket client: what it is bound to and the messages waiting to be sent to it. ``caller``
    None: the client sent no access token, so it may only ``bind-with-token``."""

    def __init__(self, caller: Caller | None) -> None:
        self.caller = caller
        self.outgoing: asyncio.Queue[str] = asyncio.Queue(MAX_QUEUED)
        self.bound: set[str] = set()
        # topic-based bindings: subscription id -> [definition, events so far, last sent (monotonic)]
        self.topics: dict[str, list[Any]] = {}
        self.overflowed = False

    def send(self, message: str) -> None:
        try:
            self.outgoing.put_nowait(message)
        except asyncio.QueueFull:
            self.overflowed = True


class WebSocketHub:
    """The sessions of this process by Subscription id; events come from the broadcast."""

    def __init__(self, holder: ContextHolder, broadcast: Broadcast, rules: SubscriptionRules, base_url: str) -> None:
        self._holder = holder
        self.broadcast = broadcast
        self._rules = rules
        self._base_url = base_url
        self._sessions: dict[str, set[Session]] = {}
        self._bundles: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        broadcast.listen(self._on_event)

    async def start(self) -> None:
        await self.broadcast.start()
        self._worker = asyncio.create_task(self._work())

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        await self.broadcast.close()

    async def handle(self, session: Session, message: str) -> None:
        """One message from the client: ``bind [id]`` or ``bind-with-token [token]``."""
        command, _, argument = message.strip().partition(" ")
        argument = argument.strip()
        if command == "bind-with-token" and argument:
            await self._bind_with_token(session, argument)
        elif command == "bind" and argument:
            if session.caller is None:
                session.send("error bind needs an access token on the connection; use bind-with-token")
                return
            await self._bind(session, argument, session.caller)
        else:
            session.send("error the server understands 'bind [subscription id]' and 'bind-with-token [token]'")

    def drop(self, session: Session) -> None:
        for subscription_id in session.bound:
            sessions = self._sessions.get(subscription_id)
            if sessions is not None:
                sessions.discard(session)
                if not sessions:
                    del self._sessions[subscription_id]

    async def publish(self, subscription_id: str, event_number: int) -> None:
        await self.broadcast.publish(f"event {subscription_id} {event_number}")

    async def _bind_with_token(self, session: Session, token: str) -> None:
        subscription_id = await redeem_token(self._holder.current, token)
        if subscription_id is None:
            session.send("error the token is not known or has expired")
            return
        await self._bind(session, subscription_id, None)

    async def _bind(self, session: Session, subscription_id: str, caller: Caller | None) -> None:
        """Bind after the checks (``caller`` None: a redeemed token stands for the caller)."""
        found = await self._bindable(subscription_id, caller)
        if isinstance(found, str):
            session.send(f"error {found}")
            return
        definition, events_so_far = found
        if subscription_id not in session.bound and len(session.bound) >= MAX_BOUND:
            session.send(f"error one connection binds at most {MAX_BOUND} Subscriptions")
            return
        session.bound.add(subscription_id)
        self._sessions.setdefault(subscription_id, set()).add(session)
        if definition.topic is None:
            session.send(f"bound {subscription_id}")
            return
        session.topics[subscription_id] = [definition, events_so_far, time.monotonic()]
        session.send(self._notice(definition, "handshake", events_so_far))

    async def _bindable(self, subscription_id: str, caller: Caller | None) -> tuple[SubscriptionDefinition, int] | str:
        """(the definition, its events so far), or why it cannot be bound."""
        ctx = self._holder.current
        gate = ctx.read_gate(caller) if caller is not None else None
        unknown = f"Subscription/{subscription_id[:64]} is not known"
        if len(subscription_id) > 64 or "\0" in subscription_id:
            return unknown
        if gate is not None and not gate.permits("Subscription", "r"):
            return unknown
        async with ctx.db.read() as conn:
            current = await read_current(conn, "Subscription", subscription_id, gate or OPEN)
            state = (
                await conn.execute(select(S.events_assigned, S.owner).where(S.subscription_id == subscription_id))
            ).first()
        if current is None or current.deleted or current.body is None:
            return unknown
        body = fhirjson.loads(current.body)
        if (body.get("channel") or {}).get("type") != "websocket":
            return f"Subscription/{subscription_id} does not use the websocket channel"
        if body.get("status") != "active":
            return f"Subscription/{subscription_id} is not active"
        owner = state.owner if state is not None else None
        foreign = caller is not None and not written_by(owner, caller.name)
        if foreign and gate is not None and not gate.open and carries_resources(body):
            return f"Subscription/{subscription_id} notifies of resources read by the client that wrote it"
        try:
            definition = read_definition(body, ctx.registry, self._rules)
        except FhirError:  # stored before a SearchParameter it used was removed
            return f"Subscription/{subscription_id} cannot be used"
        return definition, state[0] if state is not None else 0

    def _on_event(self, message: str) -> None:
        kind, _, rest = message.partition(" ")
        if kind != "event":
            return
        subscription_id, _, number = rest.partition(" ")
        sessions = self._sessions.get(subscription_id, ())
        for session in sessions:
            if subscription_id not in session.topics:
                session.send(f"ping {subscription_id}")
        if any(subscription_id in session.topics for session in sessions) and number.isdigit():
            self._bundles.put_nowait((subscription_id, int(number)))

    async def _work(self) -> None:
        """Build and send the notification Bundles of topic sessions, in event order; heartbeats."""
        while True:
            try:
                # not wait_for, which on Python 3.11 loses a cancellation arriving as an item is put
                # (the worker would then never end: see Dispatcher.run)
                async with asyncio.timeout(HEARTBEAT_CHECK_SECONDS):
                    subscription_id, number = await self._bundles.get()
            except TimeoutError:
                self._heartbeats()
                continue
            try:
                await self._notify(subscription_id, number)
            except Exception:
                LOG.exception("notifying websocket clients of Subscription/%s failed", subscription_id)
            self._heartbeats()

    async def _notify(self, subscription_id: str, number: int) -> None:
        sessions = [s for s in self._sessions.get(subscription_id, ()) if subscription_id in s.topics]
        if not sessions:
            return
        definition: SubscriptionDefinition = sessions[0].topics[subscription_id][0]
        async with self._holder.current.db.read() as conn:
            row = (
                await conn.execute(
                    select(subscription_events).where(E.subscription_id == subscription_id, E.event_number == number)
                )
            ).first()
            if row is None:
                return
            body = None
            if definition.content == "full-resource" and not row.deleted:
                version = await read_version(conn, row.resource_type, row.resource_id, row.version_id)
                body = version.body if version is not None else None
        event = NotifiedEvent(
            number, row.resource_type, row.resource_id, row.version_id, row.deleted, row.occurred, body
        )
        topic_url = definition.topic.url if definition.topic is not None else None
        status = SubscriptionStatus(subscription_id, topic_url, "active", number)
        text = fhirjson.dumps(
            notification_bundle(self._base_url, status, "event-notification", [event], definition.content or "empty")
        ).decode()
        for session in sessions:
            binding = session.topics.get(subscription_id)
            if binding is not None:
                binding[1], binding[2] = max(binding[1], number), time.monotonic()
                session.send(text)

    def _heartbeats(self) -> None:
        now = time.monotonic()
        for session in {session for sessions in self._sessions.values() for session in sessions}:
            for binding in session.topics.values():
                definition, events_so_far, last = binding
                if definition.heartbeat_seconds is not None and now - last >= definition.heartbeat_seconds:
                    binding[2] = now
                    session.send(self._notice(definition, "heartbeat", events_so_far))

    def _notice(
        self, definition: SubscriptionDefinition, kind: Literal["handshake", "heartbeat"], events_so_far: int
    ) -> str:
        topic_url = definition.topic.url if definition.topic is not None else None
        status = SubscriptionStatus(definition.id, topic_url, "active", events_so_far)
        return fhirjson.dumps(notification_bundle(self._base_url, status, kind)).decode()
