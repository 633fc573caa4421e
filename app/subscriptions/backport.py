"""Topic-based Subscriptions in R4: the elements the Subscriptions Backport IG 1.1 adds to a Subscription.

hl7.org/fhir/uv/subscriptions-backport/StructureDefinition-backport-subscription.html:
``criteria`` holds the canonical URL of a topic (``app.subscriptions.topics``)
instead of a search; the filters ride on ``_criteria`` as
``backport-filter-criteria`` strings (``Task?owner=Practitioner/1``); the
channel carries ``backport-heartbeat-period``, ``backport-timeout`` and
``backport-max-count``; how much of a resource travels is
``backport-payload-content`` on ``channel._payload`` (``empty``,
``id-only`` or ``full-resource``). Anything the server could not honour is
a 400 naming the element, never a Subscription that is accepted and then
silently never fires.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, cast
from urllib.parse import parse_qsl

from app.errors import FhirError, InvalidResource
from app.search.registry import SearchRegistry
from app.search.request import SearchRequest, parse_search
from app.subscriptions.topics import Topic, TopicCatalog

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
PROFILE = BACKPORT + "backport-subscription"
FILTER_CRITERIA = BACKPORT + "backport-filter-criteria"
PAYLOAD_CONTENT = BACKPORT + "backport-payload-content"
HEARTBEAT_PERIOD = BACKPORT + "backport-heartbeat-period"
TIMEOUT = BACKPORT + "backport-timeout"
MAX_COUNT = BACKPORT + "backport-max-count"

Content = Literal["empty", "id-only", "full-resource"]
CONTENTS: tuple[Content, ...] = ("empty", "id-only", "full-resource")
DEFAULT_CONTENT: Content = "empty"  # when the Subscription does not say: the least that tells of an event


@dataclass(frozen=True, slots=True)
class TopicChoice:
    """What a topic-based Subscription asks for."""

    topic: Topic
    filters: SearchRequest  # on the topic's resource type; no clauses: every event of the topic
    content: Content
    heartbeat_seconds: int | None
    timeout_seconds: int | None
    max_count: int | None


def is_topic_based(body: dict[str, Any]) -> bool:
    """The Subscription declares the backport profile, or its criteria is a canonical URL."""
    profiles = (body.get("meta") or {}).get("profile") or []
    if any(isinstance(p, str) and p.partition("|")[0] == PROFILE for p in profiles):
        return True
    criteria = body.get("criteria")
    return isinstance(criteria, str) and criteria.strip().startswith(("http://", "https://", "urn:"))


def _extensions(element: object, url: str) -> Iterator[dict[str, Any]]:
    if not isinstance(element, dict):
        return
    for extension in element.get("extension") or ():
        if isinstance(extension, dict) and extension.get("url") == url:
            yield extension


def _one_number(channel: dict[str, Any], url: str, key: str, where: str) -> int | None:
    found = list(_extensions(channel, url))
    if not found:
        return None
    value = found[0].get(key)
    if len(found) > 1 or not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidResource([(f"one {url.rsplit('/', 1)[-1]} with a whole number of at least 1", where)])
    return value


def _filters(body: dict[str, Any], topic: Topic, registry: SearchRegistry) -> SearchRequest:
    """Every ``backport-filter-criteria`` joined (AND) into one search on the topic's resource type."""
    where = "Subscription._criteria.extension"
    pairs: list[tuple[str, str]] = []
    for extension in _extensions(body.get("_criteria"), FILTER_CRITERIA):
        text = extension.get("valueString")
        if not isinstance(text, str) or not text.strip():
            raise InvalidResource([("a filter criteria is a string such as Task?owner=Practitioner/1", where)])
        resource_type, question, query = text.strip().partition("?")
        if not question:
            resource_type, query = topic.resource_type, text.strip()
        if resource_type != topic.resource_type:
            raise InvalidResource(
                [(f"the topic {topic.name} is about {topic.resource_type}, not {resource_type}", where)]
            )
        pairs += parse_qsl(query, keep_blank_values=True)
    for name, _ in pairs:
        if name.partition(":")[0] not in topic.filters:
            allowed = ", ".join(sorted(topic.filters))
            raise InvalidResource([(f"the topic {topic.name} can be filtered by {allowed}; not by {name[:60]}", where)])
    try:
        return parse_search(topic.resource_type, pairs, registry, 1, 1, strict=True)
    except FhirError as exc:
        raise InvalidResource([(exc.message, where)]) from exc


def _content(channel: dict[str, Any]) -> Content:
    where = "Subscription.channel._payload.extension"
    found = list(_extensions(channel.get("_payload"), PAYLOAD_CONTENT))
    if not found:
        return DEFAULT_CONTENT
    value = found[0].get("valueCode")
    if len(found) > 1 or value not in CONTENTS:
        raise InvalidResource([(f"the payload content is one of {', '.join(CONTENTS)}", where)])
    return cast(Content, value)


def read_topic_choice(body: dict[str, Any], registry: SearchRegistry, topics: TopicCatalog) -> TopicChoice:
    """The backport elements of a topic-based Subscription, or ``InvalidResource`` naming the element."""
    criteria = body.get("criteria")
    topic = topics.by_url(criteria.strip()) if isinstance(criteria, str) else None
    if topic is None:
        offered = ", ".join(t.url for t in topics)
        raise InvalidResource(
            [(f"'{str(criteria)[:120]}' is not a topic this server offers; topics: {offered}", "Subscription.criteria")]
        )
    channel = body.get("channel") or {}
    where = "Subscription.channel.extension"
    return TopicChoice(
        topic,
        _filters(body, topic, registry),
        _content(channel),
        _one_number(channel, HEARTBEAT_PERIOD, "valueUnsignedInt", where),
        _one_number(channel, TIMEOUT, "valueUnsignedInt", where),
        _one_number(channel, MAX_COUNT, "valuePositiveInt", where),
    )
