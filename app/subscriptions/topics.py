"""The care-coordination topics of topic-based Subscriptions, read once from ``capability/topics``.

A topic (R5 SubscriptionTopic, carried to R4 by the Subscriptions Backport
IG, hl7.org/fhir/uv/subscriptions-backport) names an event in words a care
team uses, "a task was assigned", and says how the server recognises it:
the resource type written, the interactions that count (create, update,
delete), and a FHIRPath rule over the version before the write
(``%previous``, empty for a create) and the version after it
(``%current``), as R5's ``SubscriptionTopic.resourceTrigger.fhirPathCriteria``
defines them. Comparing the two is what makes a trigger an event rather
than a state: ``task-status-changed`` fires when the status changes, not
at every update of a Task whose status is unchanged.

A Subscription to a topic narrows it with filters (``canFilterBy``): each
is a search parameter of the topic's resource type, so a filter is matched
exactly like R4 criteria (``app.subscriptions.matching``).

The files are R4B SubscriptionTopic resources, served read-only at
``[base]/SubscriptionTopic`` and listed in the CapabilityStatement.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal

import fhirpathpy

Interaction = Literal["create", "update", "delete"]
Rule = Callable[[Any, dict[str, Any]], list[Any]]


@dataclass(frozen=True, slots=True)
class Topic:
    """One topic: its canonical URL, what triggers it, and the filters a Subscription may set."""

    url: str
    name: str
    resource_type: str
    interactions: frozenset[str]
    rule: Rule | None  # compiled fhirPathCriteria; None: every supported interaction fires
    filters: frozenset[str]  # search parameter codes of resource_type
    definition: Mapping[str, Any]  # the SubscriptionTopic resource, as served

    def fires(self, interaction: Interaction, previous: dict[str, Any] | None, current: dict[str, Any] | None) -> bool:
        """Whether a write of ``interaction`` from ``previous`` to ``current`` is this topic's event."""
        if interaction not in self.interactions:
            return False
        if self.rule is None:
            return True
        environment: dict[str, Any] = {"previous": previous or [], "current": current or []}
        result = self.rule(current or {}, environment)
        return result == [True]


class TopicCatalog:
    """Every topic the server offers, by canonical URL (built once at start-up, immutable)."""

    def __init__(self, topics: list[Topic]) -> None:
        self._by_url = {topic.url: topic for topic in topics}
        self._by_name = {topic.name: topic for topic in topics}

    def __iter__(self) -> Iterator[Topic]:
        return iter(sorted(self._by_url.values(), key=lambda topic: topic.name))

    def __len__(self) -> int:
        return len(self._by_url)

    def by_url(self, url: str) -> Topic | None:
        """The topic of a canonical URL; a ``|version`` suffix is ignored (topics have one version)."""
        return self._by_url.get(url.partition("|")[0])

    def by_name(self, name: str) -> Topic | None:
        return self._by_name.get(name)


def topic_of(definition: Mapping[str, Any]) -> Topic:
    """A SubscriptionTopic resource read into a ``Topic`` (one resource trigger, as all ours have)."""
    trigger = definition["resourceTrigger"][0]
    criteria = trigger.get("fhirPathCriteria")
    return Topic(
        url=definition["url"],
        name=definition["id"],
        resource_type=trigger["resource"],
        interactions=frozenset(trigger["supportedInteraction"]),
        rule=fhirpathpy.compile(criteria) if criteria else None,
        filters=frozenset(f["filterParameter"] for f in definition.get("canFilterBy", ())),
        definition=definition,
    )


@cache
def load_topics() -> TopicCatalog:
    """The topics shipped in ``capability/topics``, one JSON file each: read once per process, then
    shared."""
    folder = resources.files("capability").joinpath("topics")
    found = [
        topic_of(json.loads(entry.read_bytes()))
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".json")
    ]
    return TopicCatalog(found)
