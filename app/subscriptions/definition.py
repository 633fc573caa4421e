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
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from urllib.parse import parse_qsl

from sqlalchemy import Select

from app.errors import FhirError, InvalidResource
from app.search.dates import parse_date_range
from app.search.memory import ClauseCheck
from app.search.registry import SearchRegistry
from app.search.request import INCLUDE_PARAMS, RESULT_PARAMS, SearchRequest, parse_search
from app.storage.gate import OPEN, ReadGate
from app.subscriptions.endpoints import EndpointPolicy

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

    @property
    def resource_type(self) -> str:
        return self.criteria.resource_type

    def live_at(self, moment: datetime) -> bool:
        """Active and not past its ``end``."""
        return self.status == "active" and (self.end is None or moment < self.end)


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
        if any(c in text for c in "\r\n\0"):
            raise InvalidResource([("a header value cannot hold line breaks", where)])
        if len(str(value)) > MAX_HEADER_CHARS:
            raise InvalidResource([(f"a header of at most {MAX_HEADER_CHARS} characters", where)])
        parsed.append((name, text.strip()))
    return tuple(parsed)


def _end(body: dict[str, Any]) -> datetime | None:
    found = parse_date_range(body["end"]) if isinstance(body.get("end"), str) else None
    return found.low if found is not None else None


def read_definition(
    body: dict[str, Any], registry: SearchRegistry, resource_types: frozenset[str], policy: EndpointPolicy
) -> SubscriptionDefinition:
    """The definition of a structurally valid Subscription body, or ``InvalidResource`` naming the
    element that makes it unusable."""
    criteria = parse_criteria(body.get("criteria"), registry, resource_types)
    channel = body.get("channel") or {}
    channel_type = channel.get("type")
    subscription_id, status, end = str(body.get("id", "")), str(body.get("status")), _end(body)
    checks = tuple(ClauseCheck.of(clause) for clause in criteria.clauses)
    if channel_type == "websocket":  # R4: the client connects and binds; endpoint and payload are not used
        return SubscriptionDefinition(subscription_id, status, criteria, "websocket", "", False, (), end, checks)
    if channel_type != "rest-hook":
        raise InvalidResource(
            [
                (
                    f"channel type '{str(channel_type)[:40]}' is not supported; this server delivers "
                    f"{', '.join(SUPPORTED_CHANNELS)}",
                    "Subscription.channel.type",
                )
            ]
        )
    payload = channel.get("payload")
    if payload is not None and payload.split(";")[0].strip() not in JSON_PAYLOADS:
        raise InvalidResource(
            [(f"payload '{payload[:60]}' is not supported; use {FHIR_JSON} or none", "Subscription.channel.payload")]
        )
    endpoint = channel.get("endpoint")
    if not isinstance(endpoint, str):
        raise InvalidResource([("a rest-hook needs the URL to notify", "Subscription.channel.endpoint")])
    problem = policy.problem_with(endpoint)
    if problem is not None:
        raise InvalidResource([(problem, "Subscription.channel.endpoint")])
    headers = _headers(channel.get("header"))
    return SubscriptionDefinition(
        subscription_id, status, criteria, "rest-hook", endpoint, payload is not None, headers, end, checks
    )


def accept_subscription(
    body: dict[str, Any], registry: SearchRegistry, resource_types: frozenset[str], policy: EndpointPolicy
) -> None:
    """The write-time rule for Subscription: a ``requested`` or ``active`` one must be usable (400
    otherwise), and a ``requested`` one is stored ``active`` (the server accepts it now)."""
    if body.get("status") not in ("requested", "active"):
        return
    read_definition(body, registry, resource_types, policy)
    body["status"] = "active"
    body.pop("error", None)
