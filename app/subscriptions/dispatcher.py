"""Delivery of the outbox: at least once, in event-number order per subscription, retried with backoff.

Every server process runs one dispatcher. A dispatcher **leases** the
subscriptions that have undelivered events and are due
(``subscription_state``): on PostgreSQL with ``FOR UPDATE SKIP LOCKED``, so
processes share the work and never take the same subscription at once;
SQLite has one process. It then delivers that subscription's events one
by one from ``delivered_through + 1``: the next is sent only when the one
before it was delivered, which keeps the order. Events are read and their
outcomes stored in batches of up to 50 (two statements per batch, not per
event). The lease (a minute, renewed at each batch) outlives any single
request (the HTTP timeout),
so a process that dies mid-delivery only delays its subscriptions until
the lease runs out; the event it was sending is then sent again (at least
once; ``X-Event-Id`` lets the receiver drop it).

A failed attempt (non-2xx, timeout, refused address) is retried after 1,
2, 4 ... seconds, at most 10 minutes apart, for
``FHIR_SUBSCRIPTION_RETRY_HOURS`` from the first failure in a row; then
the server sets the Subscription's status to ``error`` with the reason in
``Subscription.error`` (subscription.html#2.46.7.2) and stops. Each
subscription is delivered by its own task, with a cap per endpoint host,
so a slow or dead endpoint delays only itself. Every attempt is recorded
(``subscription_attempts``) and failures are logged, without header
values.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

from sqlalchemy import Row, Update, delete
from sqlalchemy.ext.asyncio import AsyncConnection

from app import fhirjson
from app.errors import FhirError
from app.interactions.context import ContextHolder, utc_now
from app.interactions.request_context import RequestContext
from app.interactions.update import update as update_resource
from app.storage.database import Database
from app.storage.repository import read_current, read_version
from app.subscriptions.active import ActiveSubscriptions
from app.subscriptions.definition import SubscriptionDefinition, read_definition
from app.subscriptions.delivery_statements import (
    CLAIM,
    DUE,
    LEASE_OWNER,
    RELEASE,
    RELEASE_IF_DONE,
    STATE_AND_EVENTS,
)
from app.subscriptions.endpoints import EndpointPolicy
from app.subscriptions.records import (
    ATTEMPTS,
    EVENTS_DELIVERED,
    FAILED,
    DeliveredBatch,
    moved_in_transaction,
    record_delivered,
)
from app.subscriptions.rest_hook import Event, Item, Notice, Outcome, notification, topic_notification
from app.subscriptions.sender import Sender
from app.subscriptions.tables import subscription_attempts
from app.subscriptions.websocket import WebSocketHub

LOG = logging.getLogger("fhir.subscriptions")
MAX_RETRY_DELAY = 600.0
PRUNE_SECONDS = 600.0  # how often old attempt records are deleted
DATABASE_TURNS = 4  # delivery tasks using a database connection at once (one each, never two)


def retry_delay(attempts: int) -> float:
    """Seconds before try ``attempts + 1``: 1, 2, 4 ... at most 10 minutes."""
    return min(MAX_RETRY_DELAY, 2.0 ** max(0, attempts - 1))


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    retry_hours: float = 24.0
    timeout_seconds: float = 10.0
    poll_seconds: float = 1.0
    lease_seconds: float = 60.0
    per_endpoint: int = 4  # requests in flight to one host
    concurrent: int = 64  # subscriptions delivered at once by one process
    attempts_keep_days: float = 7.0  # the record of each attempt is deleted after this
    base_url: str = "http://127.0.0.1:8080/fhir"  # the public base URL, for the URLs in notifications


@dataclass(frozen=True, slots=True)
class _Batch:
    """The next events of one subscription, read in one go, with what their delivery needs."""

    subscription_id: str
    definition: SubscriptionDefinition
    events: list[tuple[Item, bytes | None]]  # in order; a handshake or a heartbeat alone
    delivered_through: int
    failing_since: datetime | None
    attempts: int
    subscription_version: int


class Dispatcher:
    """This process's deliverer of the outbox (see the module docstring)."""

    def __init__(
        self,
        holder: ContextHolder,
        active: ActiveSubscriptions,
        policy: EndpointPolicy,
        sender: Sender,
        settings: DeliverySettings,
        hub: WebSocketHub,
    ) -> None:
        self._holder = holder
        self._hub = hub
        self._active = active
        self._policy = policy
        self._sender = sender
        self.settings = settings
        self.owner = uuid.uuid4().hex
        self._wake = asyncio.Event()
        self._woken = False  # this round follows a wake-up: something committed events
        self._running: dict[str, asyncio.Task[None]] = {}
        # due subscriptions a round passed over because their delivery task here was still finishing
        self._passed_over: set[str] = set()
        self._hosts: dict[str, asyncio.Semaphore] = {}
        # delivery tasks take turns at the database, so requests always find pooled connections
        self._database_turn = asyncio.Semaphore(DATABASE_TURNS)
        self._next_poll = 0.0
        self._next_prune = 0.0

    @property
    def database(self) -> Database:
        return self._holder.current.db

    def wake(self) -> None:
        """Look for due work now (called after a write that stored events commits)."""
        self._wake.set()

    async def run(self) -> None:
        """Claim and deliver until cancelled; a database hiccup is logged and retried at the next poll."""
        while True:
            self._woken = self._wake.is_set()
            self._wake.clear()
            try:
                await self.start_due()
            except Exception:
                LOG.exception("the subscription dispatcher could not claim work")
            # asyncio.timeout, not wait_for: on Python 3.11, wait_for returns the result when it is
            # cancelled after its awaitable finished (a wake() up to three loop passes before the
            # cancel), so the cancellation is lost, this loop never ends and close() waits for it forever
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.poll_seconds):
                    await self._wake.wait()

    async def start_due(self) -> None:
        """One round: (at most once per poll interval) pick up Subscriptions changed elsewhere and turn
        off ended ones; then start delivering the subscriptions that are due."""
        if time.monotonic() >= self._next_poll:
            self._next_poll = time.monotonic() + self.settings.poll_seconds
            async with self._holder.current.db.read() as conn:
                await self._active.poll(conn)
            await self._end_past_subscriptions()
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_SECONDS
            await self.prune_attempts()
        for subscription_id in await self._claim():
            self._start(subscription_id)

    async def prune_attempts(self) -> int:
        """Delete the records of attempts older than ``attempts_keep_days``: one row per delivery would
        otherwise grow without end. Returns how many were deleted."""
        cutoff = utc_now() - timedelta(days=self.settings.attempts_keep_days)
        async with self._database_turn, self._holder.current.db.write() as conn:
            result = await conn.execute(delete(subscription_attempts).where(subscription_attempts.c.attempted < cutoff))
        return int(result.rowcount)

    async def close(self) -> None:
        """Stop delivering; leases run out and another process (or the next start) resumes."""
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def drain(self) -> None:
        """Wait until this process has nothing in flight (for tests and shutdown)."""
        while self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    def _start(self, subscription_id: str) -> None:
        task = asyncio.create_task(self._deliver_all(subscription_id))
        self._running[subscription_id] = task
        task.add_done_callback(lambda _: self._finished(subscription_id))

    def _finished(self, subscription_id: str) -> None:
        """A delivery task ended. If a round passed its subscription over meanwhile (an event committed
        after the task's last look, its wake-up arriving before the task was gone), look again now,
        not at the next poll."""
        self._running.pop(subscription_id, None)
        if subscription_id in self._passed_over:
            self._passed_over.discard(subscription_id)
            self.wake()

    async def _claim(self) -> list[str]:
        """Lease due subscriptions not being delivered here; a cheap read first, so an idle server takes no
        write lock. After a wake-up with no delivery in flight here, the claim goes first: a write has
        just committed events, so one is due (unless another dispatcher took it), and there is no
        delivery task here the round could pass over (what the read is also for)."""
        room = self.settings.concurrent - len(self._running)
        if room <= 0:
            return []
        now = utc_now()
        db = self._holder.current.db
        if not (self._woken and not self._running):
            async with db.read() as conn:
                found = [row[0] for row in await conn.execute(DUE, {"now": now, "room": room})]
            if not found:
                return []
            if self._running:
                self._passed_over.update(i for i in found if i in self._running)
        values = {
            "now": now,
            "room": room,
            "running": list(self._running),
            "holder": self.owner,
            "lease_end": now + timedelta(seconds=self.settings.lease_seconds),
        }
        async with db.statement_write(urgent=True) as conn:
            return sorted(row[0] for row in await conn.execute(CLAIM, values))

    async def _deliver_all(self, subscription_id: str) -> None:
        """Deliver this subscription's events in order until none is left, one fails, or the lease is lost;
        the outcomes of a batch are stored together (one write per batch, not per event)."""
        try:
            while True:
                batch = await self._next_batch(subscription_id)
                if batch is None:
                    return
                delivered: list[tuple[Item, Outcome]] = []
                failed: tuple[Item, Outcome] | None = None
                for event, body in batch.events:
                    outcome = await self._attempt(batch, event, body)
                    if not outcome.delivered:
                        failed = (event, outcome)
                        break
                    delivered.append((event, outcome))
                if await self._record(batch, delivered, failed) != "keep" or failed is not None:
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            LOG.exception("delivering Subscription/%s failed", subscription_id)

    async def _next_batch(self, subscription_id: str) -> _Batch | None:
        """The next events to send, in order, or None (lease released) when there is nothing to do."""
        while True:
            batch, release = await self._read_batch(subscription_id)
            if release is None:
                return batch
            # after the read connection is back (never hold one while taking another). When the events
            # ran out, the lease is given up only if no event came meanwhile, else those are read now:
            # a write that committed while this task was finishing is not left for the next poll
            if await self._release(subscription_id, only_if_done=release == "done"):
                return None

    async def _read_batch(self, subscription_id: str) -> tuple[_Batch | None, Literal["done", "stop"] | None]:
        """(what to send next, or None; whether the lease should be given back: ``done`` when nothing is
        due, ``stop`` when the subscription cannot be delivered now). A due handshake goes before any
        event; a heartbeat only when no event is waiting."""
        now = utc_now()
        async with self._database_turn, self._holder.current.db.read() as conn:
            rows = (await conn.execute(STATE_AND_EVENTS, {"sid": subscription_id})).all()
            state = rows[0] if rows else None
            if state is None or state.lease_owner != self.owner:
                return None, None
            waiting = state.delivered_through < state.events_assigned
            heartbeat = state.heartbeat_at is not None and state.heartbeat_at <= now
            if not state.active or not (waiting or state.handshake_due or heartbeat):
                return None, "done"
            version = state.subscription_version
            definition = None
            if version is not None and not state.subscription_deleted and state.subscription_body is not None:
                definition = self._definition(subscription_id, version, state.subscription_body)
            if definition is None or not definition.live_at(now):
                return None, "stop"
            items: list[tuple[Item, bytes | None]] = []
            if state.handshake_due or not waiting:
                kind: Literal["handshake", "heartbeat"] = "handshake" if state.handshake_due else "heartbeat"
                items.append((Notice(subscription_id, kind, state.events_assigned), None))
            else:
                items = await self._events(conn, definition, subscription_id, rows)
            if not items:
                return None, "stop"
        batch = _Batch(
            subscription_id,
            definition,
            items,
            state.delivered_through,
            state.failing_since,
            state.attempts,
            version,
        )
        return batch, None

    async def _events(
        self, conn: AsyncConnection, definition: SubscriptionDefinition, subscription_id: str, rows: Sequence[Row[Any]]
    ) -> list[tuple[Item, bytes | None]]:
        """The events read with the state (``STATE_AND_EVENTS``), in order, with each version's body when
        it travels."""
        carries = definition.payload or definition.content == "full-resource"
        events: list[tuple[Item, bytes | None]] = []
        for row in rows:
            if row.event_number is None:  # the state's row without an event
                continue
            event = Event(
                subscription_id,
                row.event_number,
                row.event_type,
                row.event_resource_id,
                row.event_version,
                row.event_deleted,
                row.event_occurred,
            )
            body = None
            if carries and not event.deleted:
                version = await read_version(conn, event.resource_type, event.resource_id, event.version_id)
                body = version.body if version is not None else None
            events.append((event, body))
        return events

    def _definition(self, subscription_id: str, version: int, body: bytes) -> SubscriptionDefinition | None:
        """The current version's definition: the one the active view parsed, else parsed now."""
        known = self._active.definition(subscription_id, version)
        if known is not None:
            return known
        ctx = self._holder.current
        try:
            return read_definition(fhirjson.loads(body), ctx.registry, self._active.rules)
        except FhirError:
            return None

    async def _attempt(self, batch: _Batch, item: Item, body: bytes | None) -> Outcome:
        definition = batch.definition
        if definition.channel == "websocket":  # a ping to the clients bound now, in any process
            if isinstance(item, Event):
                await self._hub.publish(item.subscription_id, item.number)
            return Outcome(True, "ping published", 0)
        problem = await self._policy.problem_resolving(definition.endpoint)
        if problem is not None:
            return Outcome(False, f"refused: the endpoint {problem}", 0)
        try:
            if definition.topic is not None:
                request = topic_notification(definition, self.settings.base_url, item, body)
            elif isinstance(item, Event):
                request = notification(definition, item, body)
            else:  # R4 criteria subscriptions have no handshake or heartbeat
                return Outcome(True, "nothing to send", 0)
        except ValueError as exc:  # a header value no request can carry (stored before the rule refused it)
            return Outcome(False, f"invalid request ({type(exc).__name__})", 0)
        seconds = self.settings.timeout_seconds
        if definition.timeout_seconds is not None:
            seconds = min(float(definition.timeout_seconds), seconds)
        host = urlsplit(definition.endpoint).hostname or ""
        gate = self._hosts.setdefault(host, asyncio.Semaphore(self.settings.per_endpoint))
        async with gate:
            return await self._sender.send(request, seconds)

    async def _record(
        self, batch: _Batch, delivered: list[tuple[Item, Outcome]], failed: tuple[Item, Outcome] | None
    ) -> Literal["keep", "released", "lost"]:
        """Store the attempts of a batch and their consequence: ``keep`` the lease (more may be due),
        ``released`` (everything was delivered: the lease was given back in the same statement), or
        ``lost`` (another process has taken over meanwhile: stop). Handshakes and heartbeats are
        recorded as event 0. A batch delivered whole is recorded by one statement where the database
        allows (``_record_delivered``), else by a transaction."""
        now = utc_now()
        numbers = [item.number for item, _ in delivered if isinstance(item, Event)]
        db = self._holder.current.db
        if delivered and failed is None and db.modifying_ctes:
            return await self._record_delivered(batch, delivered, numbers, now)
        attempts = [(item, outcome) for item, outcome in delivered]
        if failed is not None:
            attempts.append(failed)
        tried = [
            {
                "subscription_id": item.subscription_id,
                "event_number": item.number if isinstance(item, Event) else 0,
                "attempted": now,
                "delivered": outcome.delivered,
                "detail": _attempt_detail(item, outcome),
                "milliseconds": outcome.milliseconds,
            }
            for item, outcome in attempts
        ]
        mine = {"sid": batch.subscription_id, "holder": self.owner}
        give_up = released = False
        async with self._database_turn, db.write(urgent=True) as conn:
            await conn.execute(ATTEMPTS, tried)
            if delivered:
                through = numbers[-1] if numbers else batch.delivered_through
                moved = (
                    await conn.execute(
                        *self._moved(batch, delivered, failed is None, through, now, {**mine, "through": through})
                    )
                ).first()
                if moved is None:
                    return "lost"
                released = moved.lease_owner is None
                if numbers:
                    after = {"after": batch.delivered_through, "through": through, "now": now}
                    await conn.execute(EVENTS_DELIVERED, {**mine, **after})
            if failed is None:
                return "released" if released else "keep"
            event, outcome = failed
            failing_since = (batch.failing_since if not delivered else None) or now
            tries = (batch.attempts if not delivered else 0) + 1
            give_up = now - failing_since >= timedelta(hours=self.settings.retry_hours)
            retry = now + timedelta(seconds=retry_delay(tries))
            failure = {"tries": tries, "retry": retry, "since": failing_since, "error": outcome.detail}
            await conn.execute(FAILED, {**mine, **failure})
        LOG.warning(
            "Subscription/%s %s not delivered (attempt %d): %s",
            event.subscription_id,
            f"event {event.number}" if isinstance(event, Event) else event.kind,
            tries,
            outcome.detail,
        )
        if give_up:
            await self._set_status(
                event.subscription_id,
                batch.subscription_version,
                "error",
                f"notifications failed for {self.settings.retry_hours:g} hours; last: {outcome.detail}",
            )
        return "released"  # (the failure's update gave the lease back)

    async def _record_delivered(
        self, batch: _Batch, delivered: list[tuple[Item, Outcome]], numbers: list[int], now: datetime
    ) -> Literal["keep", "released", "lost"]:
        """A batch delivered whole, recorded by one statement (``app.subscriptions.records``)."""
        heartbeat = batch.definition.heartbeat_seconds
        record = DeliveredBatch(
            batch.subscription_id,
            self.owner,
            batch.delivered_through,
            numbers[-1] if numbers else batch.delivered_through,
            [
                (item.number if isinstance(item, Event) else 0, _attempt_detail(item, outcome), outcome.milliseconds)
                for item, outcome in delivered
            ],
            any(isinstance(item, Notice) and item.kind == "handshake" for item, _ in delivered),
            now,
            now + timedelta(seconds=self.settings.lease_seconds),
            now + timedelta(seconds=heartbeat) if heartbeat is not None else None,
        )
        async with self._database_turn, self._holder.current.db.statement_write(urgent=True) as conn:
            moved, released = await record_delivered(conn, record)
        if not moved:
            return "lost"
        return "released" if released else "keep"

    def _moved(
        self,
        batch: _Batch,
        delivered: list[tuple[Item, Outcome]],
        whole: bool,
        through: int,
        now: datetime,
        bound: dict[str, object],
    ) -> tuple[Update, dict[str, object]]:
        """The transaction's update of the state after ``delivered`` went out (``records.delivered_state``)
        and its values."""
        heartbeat = batch.definition.heartbeat_seconds
        handshake = any(isinstance(item, Notice) and item.kind == "handshake" for item, _ in delivered)
        statement = moved_in_transaction(through > batch.delivered_through, handshake, heartbeat is not None, whole)
        values = {
            **bound,
            "after": batch.delivered_through,
            "lease_until": now + timedelta(seconds=self.settings.lease_seconds),
        }
        if heartbeat is not None:
            values["heartbeat_at"] = now + timedelta(seconds=heartbeat)
        return statement, values

    async def _release(self, subscription_id: str, only_if_done: bool = False) -> bool:
        """Give the lease back; with ``only_if_done``, only when every event was delivered or the
        subscription is no longer active (False: events are waiting, the lease is kept)."""
        mine = {"sid": subscription_id, "holder": self.owner}
        async with self._database_turn, self._holder.current.db.write(urgent=True) as conn:
            result = await conn.execute(RELEASE_IF_DONE if only_if_done else RELEASE, mine)
        if only_if_done and result.rowcount == 0:
            async with self._holder.current.db.read() as conn:
                holder = (await conn.execute(LEASE_OWNER, {"sid": subscription_id})).scalar_one_or_none()
            return bool(holder != self.owner)
        return True

    async def _end_past_subscriptions(self) -> None:
        """Subscriptions whose ``end`` has passed are turned ``off`` by the server (subscription.html)."""
        now = utc_now()
        for definition in self._active.ended(now):
            async with self._holder.current.db.read() as conn:
                current = await read_current(conn, "Subscription", definition.id)
            if current is not None and not current.deleted:
                await self._set_status(definition.id, current.version_id, "off", None)

    async def _set_status(self, subscription_id: str, version: int, status: str, error: str | None) -> None:
        """The server's own write of a Subscription's status, through the write gate like any other
        (only if nobody changed the Subscription meanwhile)."""
        ctx = self._holder.current
        async with ctx.db.read() as conn:
            current = await read_current(conn, "Subscription", subscription_id)
        if current is None or current.deleted or current.body is None or current.version_id != version:
            return
        body = fhirjson.loads(current.body)
        body["status"] = status
        if error is None:
            body.pop("error", None)
        else:
            body["error"] = error
        try:
            await update_resource(ctx, RequestContext(), "Subscription", subscription_id, body, if_match=version)
        except FhirError as exc:
            LOG.warning("Subscription/%s could not be set to %s: %s", subscription_id, status, exc.message)
            return
        LOG.warning("Subscription/%s is now %s%s", subscription_id, status, f": {error}" if error else "")


def _attempt_detail(item: Item, outcome: Outcome) -> str:
    """An attempt's recorded outcome; a handshake's or heartbeat's says which (they are event 0)."""
    return outcome.detail if isinstance(item, Event) else f"{item.kind}: {outcome.detail}"
