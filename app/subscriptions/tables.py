"""Tables of Subscriptions: delivery state per subscription, the outbox of events, delivery attempts.

The outbox rows of a write are inserted in the write's own transaction
(``app.subscriptions.outbox``), so a notification exists exactly when its
write committed. Event numbers are given per subscription from
``subscription_state.events_assigned``, whose row the write updates: a
second write matching the same subscription waits for the first to commit,
so numbers follow commit order, start at 1 and never skip (a rolled-back
write gives its number back). Dispatchers (``app.subscriptions.dispatcher``)
lease a subscription, deliver its events from ``delivered_through + 1`` in
order, and record every attempt. Topic-based subscriptions also get a
handshake before their first event and heartbeats when idle (Backport IG).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, String, Table, Text, and_, false, or_

from app.storage.tables import UTCDateTime, metadata

subscription_state = Table(
    "subscription_state",
    metadata,
    Column("subscription_id", String(64), primary_key=True),
    Column("active", Boolean, nullable=False),  # the Subscription's status is active: its events are delivered
    Column("events_assigned", BigInteger, nullable=False),  # the newest event number given out
    Column("delivered_through", BigInteger, nullable=False),  # every event up to this one was delivered
    Column("attempts", Integer, nullable=False),  # failed tries of the next event
    Column("retry_at", UTCDateTime(), nullable=True),  # not before then (after a failure)
    Column("failing_since", UTCDateTime(), nullable=True),  # first failure of the current run of failures
    Column("last_error", Text, nullable=True),  # why the last try failed (never a header value)
    Column("lease_owner", String(64), nullable=True),  # the dispatcher delivering it now
    Column("lease_until", UTCDateTime(), nullable=True),  # after which another dispatcher may take over
    # JSON {"name", "scope", "compartment"} of the token that last wrote the Subscription (NULL: no token):
    # notifications never carry what it could not read
    Column("owner", Text, nullable=True),
    # topic-based (Backport IG): a handshake is sent before any event; a heartbeat when nothing was sent
    # for heartbeat_seconds (next one due at heartbeat_at)
    Column("handshake_due", Boolean, nullable=False, server_default=false()),
    Column("heartbeat_seconds", Integer, nullable=True),
    Column("heartbeat_at", UTCDateTime(), nullable=True),
)

_S = subscription_state.c
# active and with something to send now or later (events, a handshake, heartbeats): the subscriptions a
# dispatcher's round looks among (``app.subscriptions.delivery_statements.DUE``), under an index of their
# own, so a round reads those rather than every subscription's row. The round's query repeats this
# condition word for word: SQLite uses a partial index only for a query holding its condition's terms
# (sqlite.org/partialindex.html#queries_using_partial_indexes). The condition reads the counters, so on
# PostgreSQL an update of them is no longer a heap-only (HOT) update: it writes index entries too, one
# row per subscription a notifying write matches, against a round reading every row before
PENDING = and_(
    _S.active.is_(True),
    or_(_S.delivered_through < _S.events_assigned, _S.handshake_due.is_(True), _S.heartbeat_at.is_not(None)),
)
Index("ix_subscription_state_pending", _S.subscription_id, postgresql_where=PENDING, sqlite_where=PENDING)

subscription_events = Table(
    "subscription_events",
    metadata,
    Column("subscription_id", String(64), primary_key=True),
    Column("event_number", BigInteger, primary_key=True),
    Column("resource_type", String(64), nullable=False),
    Column("resource_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("deleted", Boolean, nullable=False),  # the event is the resource's deletion
    Column("occurred", UTCDateTime(), nullable=False),  # the write's time (the version's lastUpdated)
    Column("delivered", UTCDateTime(), nullable=True),
)

subscription_attempts = Table(
    "subscription_attempts",
    metadata,
    Column("attempt_id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("subscription_id", String(64), nullable=False),
    Column("event_number", BigInteger, nullable=False),
    Column("attempted", UTCDateTime(), nullable=False),
    Column("delivered", Boolean, nullable=False),
    Column("detail", Text, nullable=False),  # "HTTP 200", "HTTP 503", "timeout", "refused: ..."
    Column("milliseconds", Integer, nullable=False),
    Index("ix_subscription_attempts_subscription", "subscription_id", "attempted"),
)

# websocket binding tokens of topic-based Subscriptions ($get-ws-binding-token): only the SHA-256 of a
# token is stored, so the table cannot be used to bind
subscription_tokens = Table(
    "subscription_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("subscription_id", String(64), nullable=False),
    Column("expires", UTCDateTime(), nullable=False),
    Index("ix_subscription_tokens_expires", "expires"),
)
