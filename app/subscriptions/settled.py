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
    bindparam,
    exists,
    false,
    insert,
    null,
    select,
    union_all,
    update,
)
from sqlalchemy.sql.selectable import CTE

from app.search.request import AnyClause
from app.storage.index_tables import IndexRows
from app.storage.repository import StoredVersion
from app.storage.single_statement import StatementPart
from app.subscriptions.chains import references_of
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
    committed: Callable[[int], None],
) -> StatementPart | None:
    """The part numbering ``matched`` and those of ``undecided`` whose remaining clauses hold; None when
    a remaining clause cannot be judged before the write (the write then needs a transaction).
    ``committed`` gets the number of events the statement stored."""
    values: dict[str, object] = {
        "outbox.rt": stored.resource_type,
        "outbox.rid": stored.id,
        "outbox.vid": stored.version_id,
        "outbox.occurred": stored.last_updated,
    }
    # in the order of their ids, so that concurrent writes lock the subscriptions' rows in one order
    chosen: list[tuple[str, tuple[AnyClause, ...] | None]] = [(subscription_id, None) for subscription_id in matched]
    chosen = sorted(chosen + [(s.id, clauses) for s, clauses in undecided], key=lambda entry: entry[0])
    references = references_of(rows) if undecided else {}
    for position, (subscription_id, clauses) in enumerate(chosen):
        values[f"outbox.s{position}"] = subscription_id
        if clauses is not None and not prewrite_values(clauses, references, "outbox", values):
            return None
    resource_type = stored.resource_type
    # every id is a value; equal clauses build the same SQL with the same values bound inside it
    layout = tuple(clauses for _, clauses in chosen)
    shape = ("outbox", resource_type, layout)

    def build(cur: CTE) -> Sequence[CTE]:  # only when this shape is first compiled
        conditions = [
            None if clauses is None else prewrite_condition(clauses, resource_type, "outbox") for clauses in layout
        ]
        return _numbered_events(cur, conditions)

    return StatementPart(shape, build, values, committed)


def _numbered_events(cur: CTE, conditions: Sequence[ColumnElement[bool] | None]) -> list[CTE]:
    """The next number of each subscription named by ``outbox.s<position>`` that is active and whose
    condition (if any) holds, and its event row, only when the write happened (``cur`` has its row).

    One UPDATE per subscription, each by its primary key: one UPDATE of all of them by a list of ids
    (or by ORed conditions) was planned as a scan of every subscription's row at every write once
    there were a thousand. The first CTE returned gathers the numbered rows (``StatementPart``'s
    count)."""
    written = exists(select(cur.c.version_id))
    counted = []
    for position, condition in enumerate(conditions):
        key = S.subscription_id == bindparam(f"outbox.s{position}", type_=String())
        where = [key, S.active.is_(True), written] + ([] if condition is None else [condition])
        counted.append(
            update(subscription_state)
            .where(*where)
            .values(events_assigned=S.events_assigned + 1)
            .returning(S.subscription_id, S.events_assigned)
            .cte(f"outbox_n{position}")
        )
    numbered = union_all(*(select(cte.c.subscription_id, cte.c.events_assigned) for cte in counted)).cte(
        "outbox_numbered"
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
    return [numbered, *counted, appended]
