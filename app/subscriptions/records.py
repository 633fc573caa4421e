"""The record of a batch of notifications delivered whole, in one statement (PostgreSQL).

A dispatcher records each batch it sent: the attempts, the subscription's
state moved on (delivered through its last event, failures cleared, the
lease given back unless events came meanwhile), and the events stamped
delivered. As a transaction that is five round trips per batch, and most
batches are a single event: a busy server sends a notification for a few
percent of its writes, each to a different subscription. One statement of
data-modifying CTEs does it atomically with no transaction round trips;
the state moves only while the lease is still this dispatcher's and nobody
recorded meanwhile, and the events are stamped only when it moved. The
statement is built once per shape, its values bound by name, so SQLAlchemy
compiles it once. Failures and SQLite keep the transaction
(``app.subscriptions.dispatcher``), whose statements are built once too
(``ATTEMPTS``, ``moved_in_transaction``, ``EVENTS_DELIVERED``, ``FAILED``):
built at each record, with their cache keys derived again, they cost a
SQLite notification more than the database's work and the HTTP request
together.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    Insert,
    Integer,
    Select,
    String,
    Text,
    Update,
    and_,
    bindparam,
    case,
    exists,
    false,
    func,
    insert,
    null,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection

from app.storage.tables import UTCDateTime
from app.subscriptions.tables import subscription_attempts, subscription_events, subscription_state

S = subscription_state.c
E = subscription_events.c


@dataclass(frozen=True, slots=True)
class DeliveredBatch:
    """What went out: every attempt succeeded. ``after``: the subscription's ``delivered_through`` when the
    batch was read; ``through``: its last event's number (``after`` when it held only a handshake or a
    heartbeat); ``attempts``: (event number, 0 for a handshake or heartbeat; detail; milliseconds)."""

    subscription_id: str
    owner: str
    after: int
    through: int
    attempts: list[tuple[int, str, int]]
    handshake: bool  # a handshake was among them
    now: datetime
    lease_until: datetime
    heartbeat_at: datetime | None  # the next heartbeat, for a subscription that asks for them


def delivered_state(
    through: object,
    lease_until: object,
    heartbeat_at: object | None,
    *,
    events: bool,
    handshake: bool,
    whole: bool,
) -> dict[str, Any]:
    """A subscription's state after a batch went out, as UPDATE values (each argument a value or a
    bound parameter): delivered ``through`` its last event (``events``), failures cleared, the lease
    renewed, the handshake no longer due, the next heartbeat after the quiet period (``heartbeat_at``);
    a batch delivered ``whole`` gives the lease back unless events (or a handshake) came meanwhile."""
    values: dict[str, Any] = {
        "attempts": 0,
        "retry_at": null(),
        "failing_since": null(),
        "last_error": null(),
        "lease_until": lease_until,
    }
    if events:
        values["delivered_through"] = through
    if handshake:
        values["handshake_due"] = false()
    if heartbeat_at is not None:
        values["heartbeat_at"] = heartbeat_at
    if whole:
        done = and_(S.events_assigned <= through, true() if handshake else S.handshake_due.is_(False))
        values["lease_owner"] = case((done, null()), else_=S.lease_owner)
        values["lease_until"] = case((done, null()), else_=lease_until)
    return values


@lru_cache(maxsize=8)
def _statement(events: bool, handshake: bool, heartbeat: bool) -> Select[Any]:
    when = UTCDateTime()
    through = bindparam("through", type_=BigInteger())
    values = delivered_state(
        through,
        bindparam("lease_until", type_=when),
        bindparam("heartbeat_at", type_=when) if heartbeat else None,
        events=events,
        handshake=handshake,
        whole=True,
    )
    sid = bindparam("sid", type_=String())
    moved = (
        update(subscription_state)
        .where(
            S.subscription_id == sid,
            S.lease_owner == bindparam("holder", type_=String()),
            S.delivered_through == bindparam("after", type_=BigInteger()),
        )
        .values(values)
        .returning(S.lease_owner)
        .cte("moved")
    )
    rows = (
        func.unnest(
            bindparam("numbers", type_=ARRAY(BigInteger())),
            bindparam("details", type_=ARRAY(Text())),
            bindparam("milliseconds", type_=ARRAY(Integer())),
        )
        .table_valued("event_number", "detail", "milliseconds")
        .render_derived(name="u")
    )
    attempted = bindparam("now", type_=when)
    tried = (
        insert(subscription_attempts)
        .from_select(
            ["subscription_id", "event_number", "attempted", "delivered", "detail", "milliseconds"],
            select(sid, rows.c.event_number, attempted, true(), rows.c.detail, rows.c.milliseconds),
        )
        .cte("tried")
    )
    parts = [tried]
    if events:
        marked = (
            update(subscription_events)
            .where(E.subscription_id == sid, E.event_number > bindparam("after"), E.event_number <= through)
            .where(exists(select(moved.c.lease_owner)))
            .values(delivered=attempted)
        )
        parts.append(marked.cte("marked"))
    return select(moved.c.lease_owner).add_cte(*parts)


async def record_delivered(conn: AsyncConnection, batch: DeliveredBatch) -> tuple[bool, bool]:
    """Record ``batch`` in one statement on ``conn`` (autocommit): (whether the state moved, so the lease
    was still ours; whether the lease was given back)."""
    statement = _statement(batch.through > batch.after, batch.handshake, batch.heartbeat_at is not None)
    params = {
        "sid": batch.subscription_id,
        "holder": batch.owner,
        "after": batch.after,
        "through": batch.through,
        "lease_until": batch.lease_until,
        "heartbeat_at": batch.heartbeat_at,
        "now": batch.now,
        "numbers": [number for number, _, _ in batch.attempts],
        "details": [detail for _, detail, _ in batch.attempts],
        "milliseconds": [milliseconds for _, _, milliseconds in batch.attempts],
    }
    if batch.heartbeat_at is None:
        del params["heartbeat_at"]
    row = (await conn.execute(statement, params)).first()
    if row is None:
        return False, False
    return True, row.lease_owner is None


WHEN = UTCDateTime()

# the attempts of a batch (one row each, as values)
ATTEMPTS: Insert = insert(subscription_attempts)


@lru_cache(maxsize=16)
def moved_in_transaction(events: bool, handshake: bool, heartbeat: bool, whole: bool) -> Update:
    """The state moved on after a batch (``delivered_state``), in the transaction's own statement, only
    while the lease is still ``holder``'s and nobody recorded meanwhile (``after``); it returns the lease
    owner after the update (None: given back). Bound: ``sid``, ``holder``, ``after``, ``through``,
    ``lease_until``, and ``heartbeat_at`` when ``heartbeat``."""
    values = delivered_state(
        bindparam("through", type_=BigInteger()),
        bindparam("lease_until", type_=WHEN),
        bindparam("heartbeat_at", type_=WHEN) if heartbeat else None,
        events=events,
        handshake=handshake,
        whole=whole,
    )
    return (
        update(subscription_state)
        .where(
            S.subscription_id == bindparam("sid", type_=String()),
            S.lease_owner == bindparam("holder", type_=String()),
            S.delivered_through == bindparam("after", type_=BigInteger()),
        )
        .values(values)
        .returning(S.lease_owner)
    )


# a batch's events after number ``after`` up to ``through`` stamped with their delivery time ``now``
EVENTS_DELIVERED: Update = (
    update(subscription_events)
    .where(
        E.subscription_id == bindparam("sid", type_=String()),
        E.event_number > bindparam("after", type_=BigInteger()),
        E.event_number <= bindparam("through", type_=BigInteger()),
    )
    .values(delivered=bindparam("now", type_=WHEN))
)

# a failed attempt: the retry planned, the failure kept, the lease given back (bound: ``sid``, ``holder``,
# ``tries``, ``retry``, ``since``, ``error``; not the columns' own names, which SQLAlchemy keeps for the
# values of an UPDATE)
FAILED: Update = (
    update(subscription_state)
    .where(
        S.subscription_id == bindparam("sid", type_=String()),
        S.lease_owner == bindparam("holder", type_=String()),
    )
    .values(
        attempts=bindparam("tries", type_=Integer()),
        retry_at=bindparam("retry", type_=WHEN),
        failing_since=bindparam("since", type_=WHEN),
        last_error=bindparam("error", type_=Text()),
        lease_owner=null(),
        lease_until=null(),
    )
)
