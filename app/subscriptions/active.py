"""This process's view of the Subscriptions that are active, by the resource type their criteria search.

Every write asks it which subscriptions could care (``for_type``), so it is
held in memory and kept current three ways:

- a Subscription written through this process is re-read by the next write
  that consults the view (``mark_stale``, then ``refresh`` on that write's
  connection, after the Subscription's transaction has committed);
- a process that wrote a Subscription announces it to the others once
  committed (``changed <id>`` on the broadcast, PostgreSQL NOTIFY), which
  mark it stale the same way: a new Subscription reaches every process in
  milliseconds;
- as a safety net for a missed announcement, ``poll`` (every
  ``FHIR_SUBSCRIPTION_POLL_SECONDS``) re-reads Subscriptions whose
  ``lastUpdated`` is recent: stamped after the previous poll began, less
  ``POLL_OVERLAP`` so that a slow commit (or a writer's clock a little behind)
  is not missed. The window moves with the polls, not with the newest
  Subscription: a thousand Subscriptions written in one minute are not
  read again at every poll until the next one is written;
- a new search registry (a SearchParameter was added) re-parses every
  criteria.

A Subscription that can no longer be parsed (its criteria used a custom
SearchParameter that was removed) is left out and logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from app import fhirjson
from app.errors import FhirError
from app.interactions.context import ContextHolder, utc_now
from app.search.registry import SearchRegistry
from app.storage.index_tables import IndexRows
from app.storage.tables import resources
from app.subscriptions.definition import SubscriptionDefinition, SubscriptionRules, read_definition
from app.subscriptions.matching import TypeIndex, with_database_check
from app.subscriptions.owners import owner_gate
from app.subscriptions.tables import subscription_state

LOG = logging.getLogger("fhir.subscriptions")
R = resources.c
# how far back a poll looks beyond the newest change it has seen: a version is stamped before its
# transaction commits, so a commit that took longer than this could be missed by another process
POLL_OVERLAP = timedelta(seconds=10)

_SUBSCRIPTIONS = (
    select(R.id, R.version_id, R.last_updated, R.deleted, R.body, subscription_state.c.owner)
    .select_from(resources.outerjoin(subscription_state, subscription_state.c.subscription_id == R.id))
    .where(R.resource_type == "Subscription")
)


class ActiveSubscriptions:
    """Active Subscriptions by the type they watch; see the module docstring for how it stays current."""

    def __init__(
        self,
        holder: ContextHolder,
        rules: SubscriptionRules,
        overlap: timedelta = POLL_OVERLAP,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._holder = holder
        self._overlap = overlap
        self._clock = clock
        self.rules = rules
        self._versions: dict[str, int] = {}  # every Subscription seen: id -> version read
        self._active: dict[str, SubscriptionDefinition] = {}
        self._by_type: dict[str, TypeIndex] = {}
        self._stale: set[str] = set()
        self._touched: set[str] = set()  # types whose subscriptions changed since the last ``_index``
        self._registry: SearchRegistry | None = None
        self._newest: datetime | None = None  # the newest lastUpdated read
        self._polled: datetime | None = None  # when the last load or poll began

    def concerns(self, resource_type: str) -> bool:
        """Writes of this type need the outbox: Subscriptions themselves, and watched types."""
        return resource_type == "Subscription" or resource_type in self._by_type or bool(self._stale)

    def watches(self, resource_type: str) -> bool:
        return resource_type in self._by_type

    def candidates(self, resource_type: str, rows: IndexRows) -> list[SubscriptionDefinition]:
        """The subscriptions on ``resource_type`` that a resource with these index rows could match
        (``app.subscriptions.matching``)."""
        index = self._by_type.get(resource_type)
        return index.candidates(rows) if index is not None else []

    def definition(self, subscription_id: str, version_id: int) -> SubscriptionDefinition | None:
        """The parsed definition of that version of an active Subscription, if this view holds it."""
        if self._versions.get(subscription_id) != version_id:
            return None
        return self._active.get(subscription_id)

    def ended(self, moment: datetime) -> list[SubscriptionDefinition]:
        """Active Subscriptions whose ``end`` is past: the server turns them off."""
        return [d for d in self._active.values() if d.end is not None and d.end <= moment]

    @property
    def stale(self) -> bool:
        """Some Subscription changed and has not been re-read yet, or the registry changed since the
        definitions were parsed (``refresh`` re-reads either)."""
        return bool(self._stale) or self._registry is not self._holder.current.registry

    def mark_stale(self, subscription_id: str) -> None:
        self._stale.add(subscription_id)

    def on_message(self, message: str) -> None:
        """A broadcast message: ``changed <id> <version>`` from the process that wrote a Subscription
        (a version already read here, such as this process's own, is not read again)."""
        kind, _, rest = message.partition(" ")
        subscription_id, _, version = rest.partition(" ")
        if kind == "changed" and subscription_id and str(self._versions.get(subscription_id)) != version:
            self.mark_stale(subscription_id)

    async def load(self, conn: AsyncConnection) -> None:
        """Read every Subscription (at start-up)."""
        self._polled = self._clock()
        self._versions.clear()
        self._active.clear()
        self._registry = self._holder.current.registry
        self._take(await conn.execute(_SUBSCRIPTIONS))
        self._index(everything=True)

    async def refresh(self, conn: AsyncConnection) -> None:
        """Re-read the Subscriptions marked stale, or re-parse all after a registry change."""
        if self._registry is not self._holder.current.registry:
            await self.load(conn)
            self._stale.clear()
            return
        if not self._stale:
            return
        ids = sorted(self._stale)
        self._stale.clear()
        self._take(await conn.execute(_SUBSCRIPTIONS.where(R.id.in_(ids))))
        self._index()

    async def poll(self, conn: AsyncConnection) -> int:
        """Pick up Subscriptions written through other processes. Returns how many recent versions it
        looked at (see the module docstring for which)."""
        if self._registry is not self._holder.current.registry or self._newest is None or self._polled is None:
            await self.load(conn)
            return len(self._versions)
        started = self._clock()
        since = max(self._newest, self._polled) - self._overlap
        recent = (
            await conn.execute(
                select(R.id, R.version_id).where(R.resource_type == "Subscription", R.last_updated > since)
            )
        ).all()
        changed = [row.id for row in recent if self._versions.get(row.id) != row.version_id]
        if changed:
            self._take(await conn.execute(_SUBSCRIPTIONS.where(R.id.in_(changed))))
            self._index()
        self._polled = started
        return len(recent)

    def _take(self, rows: Iterable[tuple[str, int, datetime, bool, bytes | None, str | None]]) -> None:
        ctx = self._holder.current
        for resource_id, version_id, last_updated, deleted, body, owner in rows:
            self._versions[resource_id] = version_id
            if (before := self._active.get(resource_id)) is not None:
                self._touched.add(before.resource_type)
            self._newest = last_updated if self._newest is None else max(self._newest, last_updated)
            self._active.pop(resource_id, None)
            if deleted or body is None:
                continue
            parsed = fhirjson.loads(body)
            if parsed.get("status") != "active":
                continue
            try:
                definition = read_definition(parsed, ctx.registry, self.rules)
                owned = replace(definition, owner=owner_gate(ctx, owner))
                self._active[resource_id] = with_database_check(owned)
                self._touched.add(definition.resource_type)
            except FhirError as exc:
                LOG.warning("Subscription/%s is active but cannot be used: %s", resource_id, exc.message)

    def _index(self, everything: bool = False) -> None:
        """File the active definitions by type again: every type, or those ``_take`` touched."""
        types = {d.resource_type for d in self._active.values()} if everything else self._touched
        self._touched = set()
        by_type: dict[str, list[SubscriptionDefinition]] = {name: [] for name in types}
        for definition in self._active.values():
            if definition.resource_type in by_type:
                by_type[definition.resource_type].append(definition)
        indexes = dict(self._by_type) if not everything else {}
        for name, found in by_type.items():
            if found:
                indexes[name] = TypeIndex(found)
            else:
                indexes.pop(name, None)
        self._by_type = indexes
