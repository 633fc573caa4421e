"""``$status`` and ``$events`` of Subscriptions (Subscriptions Backport IG 1.1), for both kinds.

``$status`` (OperationDefinition backport-subscription-status) answers a
searchset Bundle with one R4 SubscriptionStatus Parameters per
Subscription the caller may read: its status, the number of events since
it started, the last delivery error, and (a parameter of this server,
``delivery-attempt``) its most recent delivery attempts with their
outcomes, so that a team can see why notifications do not arrive.

``$events`` (backport-subscription-events) answers the events numbered
``eventsSinceNumber`` to ``eventsUntilNumber`` as a notification Bundle of
type ``query-event``: a client that missed notifications fetches them
again. The outbox keeps every event, so any range can be asked; at most
``MAX_EVENTS`` are returned per call (ask again from the next number).
A full resource is included only when the caller may read it now; the
others are given by id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import desc, select
from sqlalchemy.ext.asyncio import AsyncConnection

from app import fhirjson
from app.errors import FhirError, InvalidRequest, NotFound
from app.interactions.context import FhirContext, format_instant
from app.storage.gate import ReadGate
from app.storage.repository import read_current, read_version
from app.storage.tables import resources
from app.subscriptions.backport import CONTENTS, Content
from app.subscriptions.definition import SubscriptionDefinition, SubscriptionRules, read_definition
from app.subscriptions.notifications import (
    NotifiedEvent,
    SubscriptionStatus,
    notification_bundle,
    status_parameters,
)
from app.subscriptions.tables import subscription_attempts, subscription_events, subscription_state

MAX_EVENTS = 100  # events in one $events answer
RECENT_ATTEMPTS = 10  # delivery attempts listed by $status
MAX_STATUSES = 1000  # Subscriptions in one type-level $status answer
R = resources.c
S = subscription_state.c
E = subscription_events.c
A = subscription_attempts.c


async def statuses(
    ctx: FhirContext,
    gate: ReadGate,
    rules: SubscriptionRules,
    base: str,
    ids: Sequence[str] | None,
    status_filter: Sequence[str] = (),
) -> dict[str, Any]:
    """``$status``: a searchset of status Parameters, of ``ids`` (instance level: one, 404 if it cannot
    be read) or of every Subscription the caller may read, optionally only those in ``status_filter``."""
    gate.require("Subscription", "r")
    for subscription_id in ids or ():
        ctx.require_known("Subscription", subscription_id)
    async with ctx.db.read() as conn:
        if ids is not None and len(ids) == 1:
            found = [(ids[0], await readable_subscription(conn, gate, ids[0]))]
        else:
            statement = select(R.id, R.body).where(R.resource_type == "Subscription", R.deleted.is_(False))
            if ids is not None:
                statement = statement.where(R.id.in_(list(ids)))
            if not gate.open:
                statement = statement.where(gate.ids("Subscription", R.id))
            rows = await conn.execute(statement.order_by(R.id).limit(MAX_STATUSES))
            found = [(row.id, fhirjson.loads(row.body)) for row in rows]
        entries = []
        for subscription_id, body in found:
            if status_filter and body.get("status") not in status_filter:
                continue
            status = await _status(conn, subscription_id, body, _definition(ctx, rules, body), with_attempts=True)
            parameters = status_parameters(base, status, "query-status")
            entries.append({"fullUrl": f"urn:uuid:{parameters['id']}", "resource": parameters})
    return {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries}


async def events(
    ctx: FhirContext,
    gate: ReadGate,
    rules: SubscriptionRules,
    base: str,
    subscription_id: str,
    since: int | None,
    until: int | None,
    content: str | None,
) -> dict[str, Any]:
    """``$events``: the events in the range as a ``query-event`` notification Bundle."""
    gate.require("Subscription", "r")
    ctx.require_known("Subscription", subscription_id)
    if content is not None and content not in CONTENTS:
        raise InvalidRequest(f"content is one of {', '.join(CONTENTS)}")
    async with ctx.db.read() as conn:
        body = await readable_subscription(conn, gate, subscription_id)
        definition = _definition(ctx, rules, body)
        status = await _status(conn, subscription_id, body, definition, with_attempts=False)
        chosen: Content = content if content is not None else _content(definition)
        last = status.events_since_start
        low = since if since is not None else max(1, (until if until is not None else last) - MAX_EVENTS + 1)
        high = min(until if until is not None else last, low + MAX_EVENTS - 1)
        rows = await conn.execute(
            select(subscription_events)
            .where(E.subscription_id == subscription_id, E.event_number >= low, E.event_number <= high)
            .order_by(E.event_number)
        )
        found = []
        for row in list(rows):
            event_body = None
            if chosen == "full-resource" and not row.deleted:
                event_body = await _readable_version(conn, gate, row.resource_type, row.resource_id, row.version_id)
            found.append(
                NotifiedEvent(
                    row.event_number,
                    row.resource_type,
                    row.resource_id,
                    row.version_id,
                    row.deleted,
                    row.occurred,
                    event_body,
                )
            )
    return notification_bundle(base, status, "query-event", found, chosen)


async def readable_subscription(conn: AsyncConnection, gate: ReadGate, subscription_id: str) -> dict[str, Any]:
    """The current body of a Subscription the gate lets the caller read; 404 otherwise."""
    current = await read_current(conn, "Subscription", subscription_id, gate)
    if current is None or current.deleted or current.body is None:
        raise NotFound(f"Subscription/{subscription_id[:64]} is not known")
    body: dict[str, Any] = fhirjson.loads(current.body)
    return body


async def _readable_version(
    conn: AsyncConnection, gate: ReadGate, resource_type: str, resource_id: str, version_id: int
) -> bytes | None:
    """The body of that version when the caller may read the resource (else the event goes by id)."""
    if not gate.permits(resource_type, "r"):
        return None
    version = await read_version(conn, resource_type, resource_id, version_id, gate)
    return version.body if version is not None and not version.deleted else None


def _definition(ctx: FhirContext, rules: SubscriptionRules, body: dict[str, Any]) -> SubscriptionDefinition | None:
    try:
        return read_definition(body, ctx.registry, rules)
    except FhirError:  # stored before a SearchParameter it used was removed, or off and never checked
        return None


def _content(definition: SubscriptionDefinition | None) -> Content:
    if definition is None:
        return "id-only"
    if definition.content is not None:
        return definition.content
    return "full-resource" if definition.payload else "id-only"


async def _status(
    conn: AsyncConnection,
    subscription_id: str,
    body: dict[str, Any],
    definition: SubscriptionDefinition | None,
    with_attempts: bool,
) -> SubscriptionStatus:
    state = (await conn.execute(select(subscription_state).where(S.subscription_id == subscription_id))).first()
    topic = definition.topic.url if definition is not None and definition.topic is not None else None
    attempts: list[list[dict[str, Any]]] = []
    if with_attempts:
        recent = await conn.execute(
            select(A.event_number, A.attempted, A.delivered, A.detail, A.milliseconds)
            .where(A.subscription_id == subscription_id)
            .order_by(desc(A.attempted), desc(A.attempt_id))
            .limit(RECENT_ATTEMPTS)
        )
        attempts = [
            [
                {"name": "event-number", "valueString": str(row.event_number)},
                {"name": "attempted", "valueInstant": format_instant(row.attempted)},
                {"name": "delivered", "valueBoolean": row.delivered},
                {"name": "outcome", "valueString": row.detail},
                {"name": "milliseconds", "valueInteger": row.milliseconds},
            ]
            for row in recent
        ]
    return SubscriptionStatus(
        subscription_id,
        topic,
        str(body.get("status")),
        state.events_assigned if state is not None else 0,
        body.get("error") or (state.last_error if state is not None else None),
        attempts,
    )
