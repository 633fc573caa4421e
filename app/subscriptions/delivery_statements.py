"""The statements a dispatcher runs for every notification, built once.

A dispatcher leases due subscriptions, reads their state and next events,
and gives the lease back, for every notification it sends
(``app.subscriptions.dispatcher``). Building such a statement from Core
constructs at each call, and SQLAlchemy deriving its cache key from them,
cost more of the delivery process's time than running it; built once with
bound parameters, each is compiled once and looked up by a key computed
once (docs.sqlalchemy.org/20/core/connections.html#sql-compilation-caching).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, Update, and_, bindparam, or_, select, update

from app.storage.tables import resources
from app.subscriptions.tables import PENDING, subscription_events, subscription_state

S = subscription_state.c
E = subscription_events.c
R = resources.c
BATCH = 50  # events read, sent in order, and recorded together

# a subscription's delivery state, the current version of its Subscription resource and its next events
# (up to ``BATCH`` after ``delivered_through``, in order), in one read: a row per event, or one row with
# no event. Events are numbered without gaps and never deleted, so the next ones are a range of numbers
# read from the primary key (bound: ``sid``)
STATE_AND_EVENTS: Select[Any] = (
    select(
        subscription_state,
        R.version_id.label("subscription_version"),
        R.deleted.label("subscription_deleted"),
        R.body.label("subscription_body"),
        E.event_number,
        E.resource_type.label("event_type"),
        E.resource_id.label("event_resource_id"),
        E.version_id.label("event_version"),
        E.deleted.label("event_deleted"),
        E.occurred.label("event_occurred"),
    )
    .select_from(
        subscription_state.outerjoin(
            resources, and_(R.resource_type == "Subscription", R.id == S.subscription_id)
        ).outerjoin(
            subscription_events,
            and_(
                E.subscription_id == S.subscription_id,
                E.event_number > S.delivered_through,
                E.event_number <= S.delivered_through + BATCH,
            ),
        )
    )
    .where(S.subscription_id == bindparam("sid"))
    .order_by(E.event_number)
)

# the active subscriptions with something to send (events, a handshake, a heartbeat), not waiting for a
# retry and not leased, in id order (bound: ``now``, ``room``: how many); read from the index of those
# ``PENDING`` (whose condition this one implies, and holds word for word for SQLite)
DUE: Select[Any] = (
    select(S.subscription_id)
    .where(
        PENDING,
        or_(S.delivered_through < S.events_assigned, S.handshake_due.is_(True), S.heartbeat_at <= bindparam("now")),
        or_(S.retry_at.is_(None), S.retry_at <= bindparam("now")),
        or_(S.lease_until.is_(None), S.lease_until < bindparam("now")),
    )
    .order_by(S.subscription_id)
    .limit(bindparam("room"))
)

# the leases of those due and not in ``running`` (delivered by this process already), taken in one
# statement: the rows it selects are locked until it ends, those another dispatcher has locked are
# skipped (PostgreSQL; SQLite has one writer). Bound: ``now``, ``room``, ``running``, ``holder``,
# ``lease_end``
CLAIM: Update = (
    update(subscription_state)
    .where(
        S.subscription_id.in_(
            DUE.where(S.subscription_id.not_in(bindparam("running", expanding=True))).with_for_update(skip_locked=True)
        )
    )
    .values(lease_owner=bindparam("holder"), lease_until=bindparam("lease_end"))
    .returning(S.subscription_id)
)

_MINE = and_(S.subscription_id == bindparam("sid"), S.lease_owner == bindparam("holder"))

# the lease given back (bound: ``sid``, ``holder``: this dispatcher)
RELEASE: Update = update(subscription_state).where(_MINE).values(lease_owner=None, lease_until=None)

# the same, only when every event was delivered or the subscription is no longer active
RELEASE_IF_DONE: Update = (
    update(subscription_state)
    .where(_MINE, or_(S.delivered_through >= S.events_assigned, S.active.is_(False)))
    .values(lease_owner=None, lease_until=None)
)

# who holds a subscription's lease (bound: ``sid``)
LEASE_OWNER: Select[Any] = select(S.lease_owner).where(S.subscription_id == bindparam("sid"))
