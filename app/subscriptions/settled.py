"""The events of a write, as CTEs of the single statement that stores it (PostgreSQL).

When the outbox can tell before a create or update is stored which
subscriptions it matches (``app.subscriptions.outbox``, ``settle``), their
event numbers and event rows are written by the write's own statement
(``app.storage.single_statement.StatementPart``): the state row of each
matched active subscription is counted up and an event row inserted, only
when the write happened. A subscription whose criteria keep chains or
``_has`` after the in-memory judgement is numbered in the same statement on
condition: the chain's targets are the written resource's own references
(known in memory), the resources they must match are already stored, so the
condition is a query on committed rows (``app.subscriptions.matching.prewrite_condition``).
The numbered rows stay locked until the statement commits, as in a
transaction, so numbers follow commit order and never skip.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy import (
    ColumnElement,
    String,
    Text,
    and_,
    any_,
    bindparam,
    exists,
    false,
    insert,
    null,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.selectable import CTE

from app.search.request import AnyClause
from app.storage.index_tables import IndexRows
from app.storage.repository import StoredVersion
from app.storage.single_statement import StatementPart
from app.subscriptions.definition import SubscriptionDefinition
from app.subscriptions.matching import prewrite_condition, prewrite_values
from app.subscriptions.tables import subscription_events, subscription_state

S = subscription_state.c
E = subscription_events.c


def events_part(
    stored: StoredVersion,
    rows: IndexRows,
    matched: Sequence[str],
    undecided: Sequence[tuple[SubscriptionDefinition, tuple[AnyClause, ...]]],
    committed: Callable[[], None],
) -> StatementPart | None:
    """The part numbering ``matched`` and those of ``undecided`` whose remaining clauses hold; None when
    a remaining clause cannot be judged before the write (the write then needs a transaction)."""
    values: dict[str, object] = {
        "outbox.ids": sorted(matched),
        "outbox.rt": stored.resource_type,
        "outbox.rid": stored.id,
        "outbox.vid": stored.version_id,
        "outbox.occurred": stored.last_updated,
    }
    for position, (subscription, clauses) in enumerate(undecided):
        check_values = prewrite_values(clauses, rows, f"outbox.s{position}")
        if check_values is None:
            return None
        values[f"outbox.s{position}"] = subscription.id
        values.update(check_values)
    resource_type = stored.resource_type
    shape = ("outbox", resource_type, tuple((s.id, clauses) for s, clauses in undecided))

    def build(cur: CTE) -> tuple[CTE, CTE]:  # only when this shape is first compiled
        conditions = [
            (f"outbox.s{position}", prewrite_condition(clauses, resource_type, f"outbox.s{position}"))
            for position, (_, clauses) in enumerate(undecided)
        ]
        return _numbered_events(cur, conditions)

    return StatementPart(shape, build, values, committed)


def _numbered_events(cur: CTE, conditions: Sequence[tuple[str, ColumnElement[bool]]]) -> tuple[CTE, CTE]:
    """The next number of each matched active subscription (those of ``outbox.ids``, and each named by a
    bound id whose condition holds) and its event row, only when the write happened (``cur`` has its
    row)."""
    chosen = S.subscription_id == any_(bindparam("outbox.ids", type_=ARRAY(Text())))
    for name, condition in conditions:
        chosen = chosen | and_(S.subscription_id == bindparam(name, type_=String()), condition)
    numbered = (
        update(subscription_state)
        .where(chosen, S.active.is_(True), exists(select(cur.c.version_id)))
        .values(events_assigned=S.events_assigned + 1)
        .returning(S.subscription_id, S.events_assigned)
        .cte("outbox_numbered")
    )
    rows = select(
        numbered.c.subscription_id,
        numbered.c.events_assigned,
        bindparam("outbox.rt", type_=String()),
        bindparam("outbox.rid", type_=String()),
        bindparam("outbox.vid", type_=E.version_id.type),
        false(),
        bindparam("outbox.occurred", type_=E.occurred.type),
        null(),
    )
    names = ["subscription_id", "event_number", "resource_type", "resource_id", "version_id", "deleted"]
    appended = insert(subscription_events).from_select([*names, "occurred", "delivered"], rows).cte("outbox_events")
    return numbered, appended
