"""The rest-hook channel: one HTTP request per event (hl7.org/fhir/R4/subscription.html#2.46.7.3).

R4: without ``channel.payload`` the notification is a POST with an empty
body to the endpoint; with a payload the resource is sent as an update,
``PUT [endpoint]/[type]/[id]`` in ``application/fhir+json``. A deletion
with a payload is ``DELETE [endpoint]/[type]/[id]`` (as HAPI FHIR sends
it). Every ``channel.header`` is sent as given, and ``X-Event-Id``
(``<subscription id>/<event number>``) lets a receiver drop a repeat: the
delivery is at least once, so a notification whose answer was lost is
sent again.

The requests are sent by ``app.subscriptions.sender``: any 2xx answer is a
delivery, redirects are not followed, header values are never logged or
recorded (they often carry credentials).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import httpx

from app import fhirjson
from app.interactions.context import utc_now
from app.subscriptions.definition import FHIR_JSON, SubscriptionDefinition
from app.subscriptions.notifications import NotifiedEvent, SubscriptionStatus, notification_bundle


@dataclass(frozen=True, slots=True)
class Event:
    """One stored event (``app.subscriptions.tables.subscription_events``)."""

    subscription_id: str
    number: int
    resource_type: str
    resource_id: str
    version_id: int
    deleted: bool
    occurred: datetime | None = None

    @property
    def event_id(self) -> str:
        return f"{self.subscription_id}/{self.number}"


@dataclass(frozen=True, slots=True)
class Notice:
    """A notification of a topic-based subscription that carries no event (Backport IG): the
    ``handshake`` when it is activated, a ``heartbeat`` after a quiet period."""

    subscription_id: str
    kind: Literal["handshake", "heartbeat"]
    events_since_start: int


Item = Event | Notice


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt came to: ``detail`` is safe to record and log (status or error kind only)."""

    delivered: bool
    detail: str
    milliseconds: int


def notification(definition: SubscriptionDefinition, event: Event, body: bytes | None) -> httpx.Request:
    """The request that notifies ``definition``'s endpoint of ``event`` (``body``: the event's version)."""
    headers = dict(definition.headers)
    headers["X-Event-Id"] = event.event_id
    if not definition.payload:
        return httpx.Request("POST", definition.endpoint, headers=headers, content=b"")
    url = f"{definition.endpoint.rstrip('/')}/{event.resource_type}/{event.resource_id}"
    if event.deleted or body is None:
        return httpx.Request("DELETE", url, headers=headers)
    headers["Content-Type"] = FHIR_JSON
    return httpx.Request("PUT", url, headers=headers, content=body)


def topic_notification(definition: SubscriptionDefinition, base: str, item: Item, body: bytes | None) -> httpx.Request:
    """The notification Bundle of a topic-based subscription, POSTed to its endpoint
    (hl7.org/fhir/uv/subscriptions-backport/channels.html#rest-hook); ``X-Event-Id`` on events only."""
    headers = dict(definition.headers)
    headers["Content-Type"] = FHIR_JSON
    topic_url = definition.topic.url if definition.topic is not None else None
    content = definition.content or "empty"
    if isinstance(item, Notice):
        status = SubscriptionStatus(definition.id, topic_url, definition.status, item.events_since_start)
        bundle = notification_bundle(base, status, item.kind, (), content)
    else:
        headers["X-Event-Id"] = item.event_id
        event = NotifiedEvent(
            item.number,
            item.resource_type,
            item.resource_id,
            item.version_id,
            item.deleted,
            item.occurred or utc_now(),
            body,
        )
        status = SubscriptionStatus(definition.id, topic_url, definition.status, item.number)
        bundle = notification_bundle(base, status, "event-notification", [event], content)
    return httpx.Request("POST", definition.endpoint, headers=headers, content=fhirjson.dumps(bundle))
