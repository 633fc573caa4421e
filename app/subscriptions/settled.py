"""The events of a write, as CTEs of the single statement that stores it (PostgreSQL).

When the outbox can tell before a create or update is stored which
subscriptions it matches (``app.subscriptions.outbox``, ``settle``), their
event numbers and event rows are written by the write's own statement
(``app.storage.single_statement.StatementPart``): the state row of each
matched active subscription is counted up and an event row inserted, only
when the write happened. The numbered rows stay locked until the statement
commits, as in a transaction, so numbers follow commit order and never skip.

A subscription whose criteria keep chains or ``_has`` after the in-memory
judgement becomes the part's veto (``StatementPart.veto``): the chain's
targets are the written resource's own references (known in memory) and the
resources they must match are already stored, so whether it may match is a
condition on committed rows (``app.subscriptions.matching.prewrite_condition``).
When none does, which is nearly every write, the statement stores the write
and numbers what memory matched; when one does, the statement stores
nothing and the write takes a transaction, where the outbox judges and
numbers them all. Numbering each such subscription in the statement on its
condition instead cost every write a data-modifying CTE per subscription
(BENCHMARKS.md, "Subscriptions: chains as the statement's veto").

Where notifications are sent by a delivery process, the statement also
wakes it (``app.storage.broadcast.StatementNotice``: a ``NOTIFY`` of the
statement's own, sent when it commits and only if it numbered an event),
instead of a statement of its own after the commit.
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
from app.storage.broadcast import StatementNotice
from app.storage.index_tables import IndexRows
from app.storage.repository import StoredVersion
from app.storage.single_statement import StatementPart
from app.subscriptions.chains import references_of
from app.subscriptions.definition import SubscriptionDefinition
from app.subscriptions.matching import OUTBOX, bind_references, prewrite_values, prewrite_veto
from app.subscriptions.tables import subscription_events, subscription_state

S = subscription_state.c
E = subscription_events.c


def events_part(
    stored: StoredVersion,
    rows: IndexRows,
    matched: Sequence[str],
    undecided: Sequence[tuple[SubscriptionDefinition, tuple[AnyClause, ...]]],
    committed: Callable[[int], None] | None,
    notice: StatementNotice | None = None,
) -> StatementPart | None:
    """The part numbering ``matched``, with a veto when one of ``undecided`` may match: then the write
    takes a transaction, which judges them and numbers those that do (``outbox``'s ``after``). None when
    a remaining clause cannot be judged before the write (the write then needs a transaction too).
    ``committed`` gets the number of events the statement stored; ``notice`` is sent by the statement
    when it stored one."""
    values: dict[str, object] = {
        f"{OUTBOX}.rt": stored.resource_type,
        f"{OUTBOX}.rid": stored.id,
        f"{OUTBOX}.vid": stored.version_id,
        f"{OUTBOX}.occurred": stored.last_updated,
    }
    # in the order of their ids, so that concurrent writes lock the subscriptions' rows in one order
    for position, subscription_id in enumerate(sorted(matched)):
        values[f"{OUTBOX}.s{position}"] = subscription_id
    references = references_of(rows) if undecided else {}
    for definition, clauses in undecided:
        if clauses is definition.unjudged and definition.prewrite is not None:  # known at parse time
            bind_references(definition.prewrite, references, values)
        elif not prewrite_values(clauses, references, OUTBOX, values):
            return None
    resource_type = stored.resource_type
    # every id is a value; equal clauses build the same SQL with the same values bound inside it
    layout = tuple(clauses for _, clauses in undecided)
    shape = (OUTBOX, resource_type, len(matched), layout, notice)
    count = len(matched)

    def build(cur: CTE) -> Sequence[CTE]:  # only when this shape is first compiled
        return _numbered_events(cur, count, notice) if count else ()

    def veto() -> ColumnElement[bool]:
        return prewrite_veto(layout, resource_type, OUTBOX)

    return StatementPart(shape, build, values, committed, veto if layout else None)


def _numbered_events(cur: CTE, count: int, notice: StatementNotice | None) -> list[CTE]:
    """The next number of each of ``count`` subscriptions (named by ``outbox.s<position>``) that is
    active, and its event row, only when the write happened (``cur`` has its row); and ``notice``
    issued once per numbered row (delivered once: the same message in one transaction).

    One UPDATE per subscription, each by its primary key: one UPDATE of all of them by a list of ids
    (or by ORed conditions) was planned as a scan of every subscription's row at every write once
    there were a thousand. The first CTE returned gathers the numbered rows (``StatementPart``'s
    count): the statement's result counts its rows, so it is evaluated in full, and a CTE calling a
    volatile function such as ``pg_notify`` is never folded into its reader."""
    written = exists(select(cur.c.version_id))
    counted = []
    for position in range(count):
        key = S.subscription_id == bindparam(f"{OUTBOX}.s{position}", type_=String())
        counted.append(
            update(subscription_state)
            .where(key, S.active.is_(True), written)
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
        bindparam(f"{OUTBOX}.rt", type_=String()),
        bindparam(f"{OUTBOX}.rid", type_=String()),
        bindparam(f"{OUTBOX}.vid", type_=E.version_id.type),
        false(),
        bindparam(f"{OUTBOX}.occurred", type_=E.occurred.type),
        null(),
    )
    names = ["subscription_id", "event_number", "resource_type", "resource_id", "version_id", "deleted"]
    appended = insert(subscription_events).from_select([*names, "occurred", "delivered"], rows).cte("outbox_events")
    if notice is None:
        return [numbered, *counted, appended]
    woken = select(numbered.c.subscription_id, notice.expression().label("woken")).cte("outbox_woken")
    return [woken, numbered, *counted, appended]
