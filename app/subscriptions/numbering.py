"""The events of a write judged inside its transaction: numbered per subscription and stored.

A write that needs a transaction (every write on SQLite; on PostgreSQL one
whose subscriptions memory and the statement's veto cannot settle,
``app.subscriptions.settled``) numbers its events here, after the outbox
found which subscriptions it matches (``app.subscriptions.outbox``). The
statements are built once per number of subscriptions, their values bound:
built from Core constructs at each write, with SQLAlchemy deriving their
cache key again, they cost a notifying SQLite write three times what
running them did (about 0.5 ms against 0.17;
docs.sqlalchemy.org/20/core/connections.html#sql-compilation-caching).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy import Insert, String, Update, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.storage.writes import Change
from app.subscriptions.tables import subscription_events, subscription_state

S = subscription_state.c
BOUND_ONE_BY_ONE = 8  # up to this many subscriptions, a bound value each; beyond, one list spread at execution
_STORE: Insert = insert(subscription_events)


@lru_cache(maxsize=BOUND_ONE_BY_ONE + 1)
def _numbering(count: int) -> Update:
    """The next event number of ``count`` subscriptions (bound ``s0``, ``s1`` ...; 0: a list bound as
    ``ids``) that are active.

    The state rows are locked in the order of their ids (``FOR UPDATE`` over a sorted select, on
    PostgreSQL), as the single-statement writes lock them: rows locked in whatever order a scan meets
    them could deadlock two writes that notify the same subscriptions, and PostgreSQL breaks a deadlock
    only after a second."""
    ids = (
        S.subscription_id.in_([bindparam(f"s{n}", type_=String()) for n in range(count)])
        if count
        else S.subscription_id.in_(bindparam("ids", expanding=True))
    )
    locked = select(S.subscription_id).where(ids, S.active.is_(True)).order_by(S.subscription_id).with_for_update()
    return (
        update(subscription_state)
        .where(S.subscription_id.in_(locked))
        .values(events_assigned=S.events_assigned + 1)
        .returning(S.subscription_id, S.events_assigned)
    )


async def append_events(conn: AsyncConnection, subscription_ids: list[str], change: Change) -> None:
    """The next event number of each of ``subscription_ids`` that is active, and its event row, in
    ``conn``'s transaction."""
    ordered = sorted(subscription_ids)
    values: dict[str, Any]
    if len(ordered) <= BOUND_ONE_BY_ONE:
        statement, values = _numbering(len(ordered)), {f"s{n}": value for n, value in enumerate(ordered)}
    else:
        statement, values = _numbering(0), {"ids": ordered}
    numbered = await conn.execute(statement, values)
    stored = change.stored
    rows = [
        {
            "subscription_id": subscription_id,
            "event_number": number,
            "resource_type": stored.resource_type,
            "resource_id": stored.id,
            "version_id": stored.version_id,
            "deleted": stored.deleted,
            "occurred": stored.last_updated,
            "delivered": None,
        }
        for subscription_id, number in numbered
    ]
    if rows:
        await conn.execute(_STORE, rows)
