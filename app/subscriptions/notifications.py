"""Notifications of topic-based Subscriptions as the Backport IG 1.1 shapes them for R4.

A notification is a Bundle of type ``history`` (profile
``backport-subscription-notification-r4``) whose first entry is a
Parameters resource with the subscription's status
(``backport-subscription-status-r4``): the subscription, its topic, its
status, the notification's type (``handshake``, ``heartbeat``,
``event-notification``, or ``query-status``/``query-event`` for the
operations), the number of events since the subscription started, and a
``notification-event`` per event (its number, its time, and, unless the
content is ``empty``, its focus). With ``id-only`` each event's resource
follows as an entry with its URL and the request that wrote it; with
``full-resource`` the resource itself too.
hl7.org/fhir/uv/subscriptions-backport/notifications.html

``$status`` answers with these Parameters, ``$events`` with a whole
notification (``app.subscriptions.operations``); the same functions build
all of them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from app import fhirjson
from app.interactions.context import format_instant, utc_now
from app.subscriptions.backport import BACKPORT, Content

STATUS_PROFILE = BACKPORT + "backport-subscription-status-r4"
NOTIFICATION_PROFILE = BACKPORT + "backport-subscription-notification-r4"
NotificationType = Literal["handshake", "heartbeat", "event-notification", "query-status", "query-event"]


@dataclass(frozen=True, slots=True)
class NotifiedEvent:
    """One event of the outbox as a notification tells it."""

    number: int
    resource_type: str
    resource_id: str
    version_id: int
    deleted: bool
    occurred: datetime
    body: bytes | None = None  # the version written, when the notification carries full resources


@dataclass(frozen=True, slots=True)
class SubscriptionStatus:
    """What the status Parameters say of one subscription at the time of a notification."""

    subscription_id: str
    topic_url: str | None  # None: an R4 criteria Subscription, which has no topic
    status: str
    events_since_start: int
    error: str | None = None
    attempts: Sequence[Sequence[dict[str, Any]]] = ()  # recent delivery attempts (parameter parts), for $status


def status_parameters(
    base: str,
    status: SubscriptionStatus,
    kind: NotificationType,
    events: Sequence[NotifiedEvent] = (),
    content: Content = "id-only",
) -> dict[str, Any]:
    """The R4 SubscriptionStatus Parameters (``backport-subscription-status-r4``)."""
    parameters: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": f"{base}/Subscription/{status.subscription_id}"}}
    ]
    if status.topic_url is not None:
        parameters.append({"name": "topic", "valueCanonical": status.topic_url})
    parameters += [
        {"name": "status", "valueCode": status.status},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(status.events_since_start)},
    ]
    for event in events:
        parts: list[dict[str, Any]] = [
            {"name": "event-number", "valueString": str(event.number)},
            {"name": "timestamp", "valueInstant": format_instant(event.occurred)},
        ]
        if content != "empty":
            parts.append({"name": "focus", "valueReference": {"reference": _url(base, event)}})
        parameters.append({"name": "notification-event", "part": parts})
    if status.error is not None:
        parameters.append({"name": "error", "valueCodeableConcept": {"text": status.error}})
    for attempt in status.attempts:
        parameters.append({"name": "delivery-attempt", "part": list(attempt)})
    return {
        "resourceType": "Parameters",
        "id": str(uuid.uuid4()),
        "meta": {"profile": [STATUS_PROFILE]},
        "parameter": parameters,
    }


def notification_bundle(
    base: str,
    status: SubscriptionStatus,
    kind: NotificationType,
    events: Sequence[NotifiedEvent] = (),
    content: Content = "id-only",
) -> dict[str, Any]:
    """A notification (or the answer of ``$events``): the status, then each event's resource."""
    parameters = status_parameters(base, status, kind, events, content)
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": f"urn:uuid:{parameters['id']}",
            "resource": parameters,
            "request": {"method": "GET", "url": f"{base}/Subscription/{status.subscription_id}/$status"},
            "response": {"status": "200"},
        }
    ]
    if content != "empty":
        entries += [_event_entry(base, event, content) for event in events]
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"profile": [NOTIFICATION_PROFILE]},
        "type": "history",
        "timestamp": format_instant(utc_now()),
        "entry": entries,
    }


def _url(base: str, event: NotifiedEvent) -> str:
    return f"{base}/{event.resource_type}/{event.resource_id}"


def _event_entry(base: str, event: NotifiedEvent, content: Content) -> dict[str, Any]:
    """The entry of one event: what was written, by which request (history bundle entries need both)."""
    if event.deleted:
        request, response = {"method": "DELETE", "url": f"{event.resource_type}/{event.resource_id}"}, "204"
    elif event.version_id == 1:
        request, response = {"method": "POST", "url": event.resource_type}, "201"
    else:
        request, response = {"method": "PUT", "url": f"{event.resource_type}/{event.resource_id}"}, "200"
    entry: dict[str, Any] = {"fullUrl": _url(base, event)}
    if content == "full-resource" and event.body is not None and not event.deleted:
        entry["resource"] = fhirjson.loads(event.body)
    entry["request"] = request
    entry["response"] = {"status": response, "lastModified": format_instant(event.occurred)}
    return entry
