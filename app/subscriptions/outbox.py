"""The transactional outbox: at every write, the events of the Subscriptions it matches, stored in the
write's own transaction (a write hook of ``app.storage.writes``).

A written resource matches an R4 Subscription when "the same search,
restricted to that resource, finds it" (subscription.html#2.46.7.1). Asking
that of the database per subscription per write would cost a statement
each, so matching goes from cheap to dear: only subscriptions on the
written type are considered; each criteria clause that the resource's own
index rows can answer is judged in memory (``app.search.memory``), which
settles most subscriptions; a chain whose inner clause memory can judge is
judged on the index rows of the resources the write references, read in one
small statement per index table for all such subscriptions
(``app.subscriptions.chains``); the clauses left (other chains, ``_has``,
composites) are asked of the database, for all those subscriptions in one
statement, on the write's connection so the new index rows are seen.

A deletion is matched against the version it removes (its index rows are
computed again from its body); clauses only the database could judge are
taken as met then, since the rows they would need are gone: a deletion
notifies rather than risk a missed one.

A topic-based subscription (``app.subscriptions.topics``) is matched the
same way on its filters, and its topic's trigger must fire too: the
trigger compares the version before the write with the one written, so
each body is parsed once per write, and only when a topic asks.

Each matched subscription gets the next event number from
``subscription_state`` (see ``app.subscriptions.tables``) and an event row;
after the commit the local dispatcher is woken. For a plain create or
update on PostgreSQL, ``settle`` hands the numbering and the event rows to
the write gate as CTEs of the write's own single statement
(``app.subscriptions.settled``), instead of a transaction of some ten
statements: what memory matched is numbered outright, and the statement
stores nothing (the write then takes a transaction) when a subscription
left with chains or ``_has`` may match, judged on the stored resources they
reach. A written Subscription is
announced to the other processes after the commit (``ActiveSubscriptions``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import CompoundSelect, Select, insert, union_all, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app import fhirjson
from app.errors import FhirError, Forbidden
from app.interactions.context import ContextHolder, utc_now
from app.search.memory import clauses_hold
from app.search.request import AnyClause
from app.storage.broadcast import StatementNotice
from app.storage.database import Database
from app.storage.gate import Author
from app.storage.index_tables import IndexRows
from app.storage.single_statement import StatementPart
from app.storage.tables import resources
from app.storage.writes import Change
from app.subscriptions.active import ActiveSubscriptions
from app.subscriptions.backport import is_topic_based
from app.subscriptions.chains import judge_chains
from app.subscriptions.definition import SubscriptionDefinition, read_definition, watched_type
from app.subscriptions.matching import database_check
from app.subscriptions.numbering import append_events
from app.subscriptions.owners import author_gate, owner_text, saw_removed
from app.subscriptions.settled import events_part
from app.subscriptions.tables import subscription_state
from app.subscriptions.topics import Interaction, Topic

R = resources.c
S = subscription_state.c


class SubscriptionOutbox:
    """The write hook: Subscription bookkeeping and event rows (see the module docstring)."""

    def __init__(
        self,
        holder: ContextHolder,
        active: ActiveSubscriptions,
        wake: Callable[[], None],
        announce: Callable[[str], None],
        wake_notice: StatementNotice | None = None,
    ) -> None:
        """``wake`` after the commit of a write that stored events; or, for a write whose own
        statement stores them, ``wake_notice`` sent by that statement (PostgreSQL with a delivery
        process: the wake-up is the broadcast's message)."""
        self._holder = holder
        self.active = active
        self._wake = wake
        self._wake_notice = wake_notice
        self._announce = announce
        self._checks = PreparedChecks()

    def concerns(self, resource_type: str) -> bool:
        """Writes of a watched type (whether one matches is ``settle``'s or the call's to find)."""
        return self.active.concerns(resource_type)

    def settle(self, change: Change) -> Sequence[StatementPart] | None:
        """The events of a create or update that memory alone matches, as CTEs of the statement storing
        it (none when nothing matches), chains and ``_has`` the statement's veto, judged on the resources
        already stored (``app.subscriptions.settled``); None when the write needs a transaction: a
        Subscription written (its bookkeeping), the view of subscriptions stale, a deletion (matched on
        the removed version), or an owner's gate or a clause only the stored resource can judge."""
        stored = change.stored
        if stored.resource_type == "Subscription" or stored.deleted or self.active.stale:
            return None
        if not self.active.watches(stored.resource_type):
            return ()
        candidates = [
            s for s in self.active.candidates(stored.resource_type, change.rows) if s.live_at(stored.last_updated)
        ]
        matched, undecided = _judge_in_memory(change, change.rows, candidates)
        if any(not subscription.owner.open for subscription, _ in undecided):
            return None
        if not matched and not undecided:
            return ()
        notice = self._wake_notice
        part = events_part(stored, change.rows, matched, undecided, None if notice else self._woken_by, notice)
        return None if part is None else (part,)

    def _woken_by(self, events: int) -> None:
        """After a write's own statement: the dispatcher is woken only when it stored events (a write
        whose chained criteria did not hold stored none and costs the dispatchers nothing)."""
        if events:
            self._wake()

    async def __call__(self, conn: AsyncConnection, change: Change) -> None:
        stored = change.stored
        if stored.resource_type == "Subscription":
            await self._track(conn, change)
            self.active.mark_stale(stored.id)
            Database.after_commit(conn, lambda: self._announce(f"changed {stored.id} {stored.version_id}"))
        await self.active.refresh(conn)
        if not self.active.watches(stored.resource_type):
            return
        rows = self._rows(change)
        candidates = [s for s in self.active.candidates(stored.resource_type, rows) if s.live_at(stored.last_updated)]
        if not candidates:
            return
        matched = await self._matching(conn, change, rows, candidates)
        if matched:
            await append_events(conn, matched, change)
            Database.after_commit(conn, self._wake)

    def _rows(self, change: Change) -> IndexRows:
        """The index rows a write is matched on: the new version's, or for a deletion the removed one's."""
        stored, previous = change.stored, change.previous
        if not stored.deleted:
            return change.rows
        if previous is None or previous.body is None:
            return {}
        return self._holder.current.index_rows(stored.resource_type, stored.id, fhirjson.loads(previous.body))

    async def _matching(
        self,
        conn: AsyncConnection,
        change: Change,
        rows: IndexRows,
        candidates: Sequence[SubscriptionDefinition],
    ) -> list[str]:
        matched, undecided = _judge_in_memory(change, rows, candidates)
        if not undecided:
            return matched
        on_targets = [(s.id, s.chains) for s, clauses in undecided if s.chains is not None and _only_chains(s, clauses)]
        if on_targets:
            chained, unsure = await judge_chains(conn, rows, on_targets)
            matched += chained
            judged = {subscription_id for subscription_id, _ in on_targets}.difference(unsure)
            undecided = [(s, clauses) for s, clauses in undecided if s.id not in judged]
        if undecided:
            stored = change.stored
            matched += await _ask_database(conn, stored.resource_type, stored.id, undecided, self._checks)
        return matched

    async def _track(self, conn: AsyncConnection, change: Change) -> None:
        """Keep ``subscription_state`` in step with a written Subscription: a row from its first version
        on (numbers continue across status changes), ``active`` as its status says, and the token that
        wrote it as its owner, which must be allowed to read what the criteria search (403 otherwise).
        A topic-based rest-hook is due a handshake when it becomes active, and heartbeats if it asks."""
        stored, author = change.stored, change.author
        body = fhirjson.loads(stored.body) if stored.body is not None and not stored.deleted else {}
        active = body.get("status") == "active"
        values: dict[str, object] = {"active": active, **self._notices(body, active and not _was_active(change))}
        if author is not None:
            values["owner"] = owner_text(author)
            if active:
                self._require_readable(author, body)
        result = await conn.execute(update(subscription_state).where(S.subscription_id == stored.id).values(values))
        if result.rowcount == 0:
            await conn.execute(
                insert(subscription_state).values(
                    subscription_id=stored.id, events_assigned=0, delivered_through=0, attempts=0, **values
                )
            )
        elif active and not _was_active(change):  # (re)activated by its author: deliver from now on, afresh
            await conn.execute(
                update(subscription_state)
                .where(S.subscription_id == stored.id)
                .values(attempts=0, retry_at=None, failing_since=None, last_error=None)
            )

    def _notices(self, body: dict[str, Any], activated: bool) -> dict[str, object]:
        """The handshake and heartbeat columns for a written Subscription (Backport IG: a handshake when
        a rest-hook is activated, a heartbeat after each quiet period)."""
        if not is_topic_based(body) or not body:
            return {"handshake_due": False, "heartbeat_seconds": None, "heartbeat_at": None}
        ctx = self._holder.current
        try:
            definition = read_definition(body, ctx.registry, self.active.rules)
        except FhirError:  # not active, or no longer usable: nothing to send
            return {"handshake_due": False, "heartbeat_seconds": None, "heartbeat_at": None}
        # (a websocket's heartbeats go to each connection from the hub: app.subscriptions.websocket)
        active_hook = definition.status == "active" and definition.channel == "rest-hook"
        period = definition.heartbeat_seconds if active_hook else None
        values: dict[str, object] = {
            "heartbeat_seconds": period,
            "heartbeat_at": utc_now() + timedelta(seconds=period) if period else None,
        }
        if activated:
            values["handshake_due"] = definition.channel == "rest-hook"
        return values

    def _require_readable(self, author: Author, body: dict[str, object]) -> None:
        ctx = self._holder.current
        watched = watched_type(body, ctx.registry, self.active.rules)
        if author_gate(ctx, author).read_reach(watched) == "none":
            raise Forbidden(f"the access token does not permit reading {watched}, which the criteria search")


Undecided = list[tuple[SubscriptionDefinition, tuple[AnyClause, ...]]]


def _judge_in_memory(
    change: Change, rows: IndexRows, candidates: Sequence[SubscriptionDefinition]
) -> tuple[list[str], Undecided]:
    """The candidates ``change`` matches on what memory can judge (clauses answered by ``rows``, topic
    triggers, and for a deletion the owner), and those left for the database with their clauses."""
    stored = change.stored
    matched: list[str] = []
    undecided: Undecided = []
    versions = _Versions(change)
    for subscription in candidates:
        if subscription.unjudged is not None:
            holds, rest = True, subscription.unjudged
        else:
            holds, rest = clauses_hold(subscription.checks, rows)
        if not holds or (subscription.topic is not None and not versions.fire(subscription.topic)):
            continue
        if stored.deleted:
            if saw_removed(subscription.owner, stored.resource_type, stored.id, rows):
                matched.append(subscription.id)
        elif rest or not subscription.owner.open:
            undecided.append((subscription, rest))
        else:
            matched.append(subscription.id)
    return matched, undecided


def _only_chains(subscription: SubscriptionDefinition, clauses: tuple[AnyClause, ...]) -> bool:
    """What memory left of ``subscription`` is exactly its chains (not also a clause the interpreter
    met a construct in that it does not know)."""
    chains = subscription.chains or ()  # in the order of the criteria's clauses, as memory leaves them
    return len(clauses) == len(chains) and all(
        clause is check.clause for clause, check in zip(clauses, chains, strict=True)
    )


async def _ask_database(
    conn: AsyncConnection,
    resource_type: str,
    resource_id: str,
    undecided: Undecided,
    prepared_checks: PreparedChecks,
) -> list[str]:
    """The subscriptions whose remaining clauses the stored resource meets, and whose owner may read
    it, in one statement: each one's prepared check (or, for a clause that could not be judged in
    memory after all, one built now), joined by ``UNION ALL``."""
    checks: list[Select[Any]] = []
    all_prepared = True
    for subscription, clauses in undecided:
        prepared = {id(check.clause) for check in subscription.checks if check.conditions is None}
        check = subscription.database_check
        if check is None or not {id(clause) for clause in clauses} <= prepared:
            check = database_check(subscription.id, resource_type, clauses, subscription.owner)
            all_prepared = False
        checks.append(check)
    statement = prepared_checks.union(checks) if all_prepared else _union(checks)
    return [row[0] for row in await conn.execute(statement, {"rt": resource_type, "rid": resource_id})]


def _union(checks: Sequence[Select[Any]]) -> Select[Any] | CompoundSelect[Any]:
    return checks[0] if len(checks) == 1 else union_all(*checks)


class PreparedChecks:
    """The ``UNION ALL`` of the same prepared checks, built once and reused.

    SQLAlchemy finds a statement's compiled form by a cache key that it
    computes by walking the statement, once per statement object: a union
    built anew at each write walked ten chained checks again every time,
    about a millisecond per write on SQLite (where every write that meets
    such subscriptions asks the database). Kept per outbox, dropped whole
    when it holds too many (a changed Subscription brings new checks)."""

    MOST = 256

    def __init__(self) -> None:
        self._unions: dict[tuple[int, ...], tuple[tuple[Select[Any], ...], Select[Any] | CompoundSelect[Any]]] = {}

    def union(self, checks: Sequence[Select[Any]]) -> Select[Any] | CompoundSelect[Any]:
        key = tuple(id(check) for check in checks)
        found = self._unions.get(key)
        if found is not None:  # its checks are kept alive with it, so no other object has their ids
            return found[1]
        if len(self._unions) >= self.MOST:
            self._unions.clear()
        statement = _union(checks)
        self._unions[key] = (tuple(checks), statement)
        return statement


class _Versions:
    """The bodies before and after one write, parsed at most once, for topic triggers."""

    def __init__(self, change: Change) -> None:
        self._change = change
        self._bodies: tuple[dict[str, Any] | None, dict[str, Any] | None] | None = None

    def fire(self, topic: Topic) -> bool:
        change = self._change
        interaction: Interaction = "delete" if change.stored.deleted else "create" if change.created else "update"
        if interaction not in topic.interactions:
            return False
        if self._bodies is None:
            previous = change.previous
            before = None if change.created or previous is None or previous.body is None else previous.body
            after = None if change.stored.deleted else change.stored.body
            self._bodies = (
                fhirjson.loads(before) if before is not None else None,
                fhirjson.loads(after) if after is not None else None,
            )
        return topic.fires(interaction, *self._bodies)


def _was_active(change: Change) -> bool:
    previous = change.previous
    return (
        previous is not None and previous.body is not None and fhirjson.loads(previous.body).get("status") == "active"
    )
