"""A Subscription resource read into what matching and delivery need, with the write-time rules.

R4 criteria Subscriptions (hl7.org/fhir/R4/subscription.html): ``criteria``
is a search URL (``Task?owner=Practitioner/123&status=requested``), parsed
by the server's own search parser when the Subscription is written, so a
criteria the server could not run is a 400 naming ``Subscription.criteria``
instead of a subscription that silently never fires. Unknown parameters are
refused (dropping one would widen what matches), and so are parameters that
shape a result rather than select resources (``_sort``, ``_include``...).

Status lifecycle (subscription.html#2.46.7.2): a client writes
``requested``; the server accepts it at once, so what is stored is
``active``. ``off`` is kept as written (the client stops it); ``error`` is
set by the server when deliveries keep failing. ``end`` passed means no
further notifications.

Topic-based Subscriptions (Subscriptions Backport IG 1.1) are read by
``app.subscriptions.backport``: their filters become the same kind of
search as R4 criteria, so both kinds are matched by one machinery.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal
from urllib.parse import parse_qsl

from sqlalchemy import Select

from app.errors import FhirError, InvalidResource
from app.search.dates import parse_date_range
from app.search.memory import ClauseCheck
from app.search.registry import SearchRegistry
from app.search.request import INCLUDE_PARAMS, RESULT_PARAMS, AnyClause, SearchRequest, parse_search
from app.storage.gate import OPEN, ReadGate
from app.subscriptions.backport import Content, TopicChoice, is_topic_based, read_topic_choice
from app.subscriptions.chains import ChainCheck
from app.subscriptions.endpoints import EndpointPolicy
from app.subscriptions.topics import Topic, TopicCatalog

ChannelType = Literal["rest-hook", "websocket"]
FHIR_JSON = "application/fhir+json"
# payload types accepted as meaning the resource in FHIR JSON (R4 lists the FHIR MIME types)
JSON_PAYLOADS = frozenset({FHIR_JSON, "application/json", "application/json+fhir"})
SUPPORTED_CHANNELS = ("rest-hook", "websocket")
# headers the server sets itself; a channel.header may not replace them
RESERVED_HEADERS = frozenset(
    {"host", "content-length", "content-type", "transfer-encoding", "connection", "x-event-id", "upgrade"}
)
MAX_HEADERS = 50
MAX_HEADER_CHARS = 8192  # what common HTTP servers accept in one header line
HEADER_NAME_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass(frozen=True, slots=True)
class SubscriptionDefinition:
    """What the outbox and the dispatcher need of one Subscription."""

    id: str
    status: str
    criteria: SearchRequest
    channel: ChannelType
    endpoint: str
    payload: bool  # the resource travels with the notification (channel.payload set)
    headers: tuple[tuple[str, str], ...]
    end: datetime | None
    checks: tuple[ClauseCheck, ...]  # the criteria's clauses, ready to judge (``app.search.memory``)
    owner: ReadGate = OPEN  # what the token that wrote it may read: matches are confined to it
    # what only the database can judge (chains, _has, composites, the owner's gate), prepared once:
    # a statement on the written resource's type and id (``app.subscriptions.matching.database_check``)
    database_check: Select[Any] | None = None
    # the same, when it is only chains the outbox can judge on the targets' index rows
    # (``app.subscriptions.chains``) and the owner's gate is open: no statement of its own
    chains: tuple[ChainCheck, ...] | None = None
    # every clause of the criteria, when memory can judge none of them (``CarePlan?subject.family=x``):
    # what memory leaves of them at every write, known without judging
    unjudged: tuple[AnyClause, ...] | None = None
    # and what a write's statement binds to judge them before the write, when it can
    # (``app.subscriptions.matching.prewrite_binds``, under the outbox's names)
    prewrite: tuple[tuple[str, tuple[int, str], str], ...] | None = None
    # topic-based (Backport IG): the topic, how much of a resource a notification carries, the seconds
    # between heartbeats, the longest wait for the endpoint, the most events in one notification
    topic: Topic | None = None
    content: Content | None = None
    heartbeat_seconds: int | None = None
    timeout_seconds: int | None = None
    max_count: int | None = None

    @property
    def resource_type(self) -> str:
        return self.criteria.resource_type

    def live_at(self, moment: datetime) -> bool:
        """Active and not past its ``end``."""
        return self.status == "active" and (self.end is None or moment < self.end)


@dataclass(frozen=True, slots=True)
class SubscriptionRules:
    """What a Subscription is checked against besides the search registry: the types stored, the
    endpoint policy and the topics offered."""

    resource_types: frozenset[str]
    policy: EndpointPolicy
    topics: TopicCatalog


def parse_criteria(criteria: object, registry: SearchRegistry, resource_types: frozenset[str]) -> SearchRequest:
    """``Type?query`` -> the search it means; ``InvalidResource`` on Subscription.criteria otherwise."""
    where = "Subscription.criteria"
    if not isinstance(criteria, str) or not criteria.strip():
        raise InvalidResource([("a search URL such as Task?status=requested is required", where)])
    resource_type, _, query = criteria.strip().partition("?")
    if resource_type not in resource_types:
        raise InvalidResource([(f"'{resource_type[:80]}' is not a resource type this server stores", where)])
    pairs = parse_qsl(query, keep_blank_values=True)
    shaping = sorted({name for name, _ in pairs} & (RESULT_PARAMS | INCLUDE_PARAMS))
    if shaping:
        raise InvalidResource([(f"{', '.join(shaping)} shape a search result and select nothing", where)])
    try:
        return parse_search(resource_type, pairs, registry, 1, 1, strict=True)
    except FhirError as exc:
        raise InvalidResource([(exc.message, where)]) from exc


def _headers(values: object) -> tuple[tuple[str, str], ...]:
    if values is None:
        return ()
    if not isinstance(values, list):
        raise InvalidResource([("must be a list of 'Name: value' strings", "Subscription.channel.header")])
    if len(values) > MAX_HEADERS:
        raise InvalidResource([(f"at most {MAX_HEADERS} headers", "Subscription.channel.header")])
    parsed = []
    for index, value in enumerate(values):
        where = f"Subscription.channel.header[{index}]"
        name, colon, text = str(value).partition(":")
        name = name.strip()
        if not colon or not name or not set(name) <= HEADER_NAME_CHARS:
            raise InvalidResource([("must be 'Name: value' with an HTTP header name", where)])
        if name.lower() in RESERVED_HEADERS:
            raise InvalidResource([(f"the server sets {name} itself", where)])
        if not all(c == "\t" or " " <= c <= "~" for c in text):
            # HTTP field values (RFC 9110 section 5.5): visible ASCII, spaces and tabs; a line break would
            # start a header of the client's choosing, and no HTTP client sends the other controls
            raise InvalidResource([("a header value holds only printable ASCII characters, spaces and tabs", where)])
        if len(str(value)) > MAX_HEADER_CHARS:
            raise InvalidResource([(f"a header of at most {MAX_HEADER_CHARS} characters", where)])
        parsed.append((name, text.strip()))
    return tuple(parsed)


def _end(body: dict[str, Any]) -> datetime | None:
    found = parse_date_range(body["end"]) if isinstance(body.get("end"), str) else None
    return found.low if found is not None else None


def _channel_type(channel: dict[str, Any]) -> ChannelType:
    channel_type = channel.get("type")
    if channel_type not in SUPPORTED_CHANNELS:
        supported = ", ".join(SUPPORTED_CHANNELS)
        message = f"channel type '{str(channel_type)[:40]}' is not supported; this server delivers {supported}"
        raise InvalidResource([(message, "Subscription.channel.type")])
    return "websocket" if channel_type == "websocket" else "rest-hook"


def _payload(channel: dict[str, Any], topic_based: bool) -> bool:
    """Whether a payload MIME type is set (R4: the resource travels); only FHIR JSON is offered."""
    payload = channel.get("payload")
    if payload is not None and payload.split(";")[0].strip() not in JSON_PAYLOADS:
        message = f"payload '{payload[:60]}' is not supported; use {FHIR_JSON}" + ("" if topic_based else " or none")
        raise InvalidResource([(message, "Subscription.channel.payload")])
    return payload is not None


def read_definition(body: dict[str, Any], registry: SearchRegistry, rules: SubscriptionRules) -> SubscriptionDefinition:
    """The definition of a structurally valid Subscription body, or ``InvalidResource`` naming the
    element that makes it unusable."""
    choice: TopicChoice | None = None
    if is_topic_based(body):
        choice = read_topic_choice(body, registry, rules.topics)
        criteria = choice.filters
    else:
        criteria = parse_criteria(body.get("criteria"), registry, rules.resource_types)
    channel = body.get("channel") or {}
    channel_type = _channel_type(channel)
    endpoint: object = ""
    payload, headers = False, tuple[tuple[str, str], ...]()
    if channel_type == "rest-hook":  # (websocket: the client connects and binds; no endpoint, no payload)
        payload = _payload(channel, choice is not None)
        endpoint = channel.get("endpoint")
        if not isinstance(endpoint, str):
            raise InvalidResource([("a rest-hook needs the URL to notify", "Subscription.channel.endpoint")])
        problem = rules.policy.problem_with(endpoint)
        if problem is not None:
            raise InvalidResource([(problem, "Subscription.channel.endpoint")])
        headers = _headers(channel.get("header"))
    definition = SubscriptionDefinition(
        str(body.get("id", "")),
        str(body.get("status")),
        criteria,
        channel_type,
        str(endpoint),
        payload,
        headers,
        _end(body),
        tuple(ClauseCheck.of(clause) for clause in criteria.clauses),
    )
    if choice is None:
        return definition
    return replace(
        definition,
        payload=False,
        topic=choice.topic,
        content=choice.content,
        heartbeat_seconds=choice.heartbeat_seconds,
        timeout_seconds=choice.timeout_seconds,
        max_count=choice.max_count,
    )


def watched_type(body: dict[str, Any], registry: SearchRegistry, rules: SubscriptionRules) -> str:
    """The resource type a Subscription's notifications are about."""
    if is_topic_based(body):
        return read_topic_choice(body, registry, rules.topics).topic.resource_type
    return parse_criteria(body.get("criteria"), registry, rules.resource_types).resource_type


def accept_subscription(body: dict[str, Any], registry: SearchRegistry, rules: SubscriptionRules) -> None:
    """The write-time rule for Subscription: a ``requested`` or ``active`` one must be usable (400
    otherwise), and a ``requested`` one is stored ``active`` (the server accepts it now)."""
    if body.get("status") not in ("requested", "active"):
        return
    read_definition(body, registry, rules)
    body["status"] = "active"
    body.pop("error", None)
