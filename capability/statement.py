"""The CapabilityStatement served at ``GET [base]/metadata``, built from what is registered.

Nothing here is hand-written per type: the resource types come from the
types the server validates and stores, the interactions and flags from the
route table in ``app.interactions.catalog``. Built once at start-up and served as bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import orjson

from app import __version__
from app.fhirjson import FHIR_JSON
from app.interactions.catalog import FEATURES, OPERATION_DEFINITIONS, InteractionRoute, ServerFeatures, operation_type
from app.interactions.context import format_instant
from app.search.registry import SearchRegistry
from app.search.request import supported

LIMITS_EXTENSION = "urn:care-plan-repository:StructureDefinition:server-limits"
WEBSOCKET_EXTENSION = "http://hl7.org/fhir/StructureDefinition/capabilitystatement-websocket"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
TOPIC_EXTENSION = BACKPORT + "capabilitystatement-subscriptiontopic-canonical"
BACKPORT_PROFILE = BACKPORT + "backport-subscription"
SUBSCRIPTIONS = (
    "R4 criteria Subscriptions (subscription.html): criteria is a search this server runs (unknown "
    "parameters are refused), matched against every write, including each Bundle entry and deletions. "
    "Channels: rest-hook (no payload: an empty POST to the endpoint; payload application/fhir+json: "
    "PUT [endpoint]/[type]/[id] with the version written, DELETE for a deletion; each channel.header is "
    "sent, and X-Event-Id = [subscription id]/[event number]) and websocket (bind [id], bound [id], "
    "ping [id]; URL in the capabilitystatement-websocket extension). "
    "Topic-based Subscriptions of the R4 Subscriptions Backport IG 1.1 (profile backport-subscription; "
    "topics listed in the capabilitystatement-subscriptiontopic-canonical extensions and readable at "
    "[base]/SubscriptionTopic): filter criteria on the topic's filter parameters; rest-hook and "
    "websocket (bind-with-token after $get-ws-binding-token); payload content empty (default), id-only "
    "or full-resource, one event per notification Bundle (history, SubscriptionStatus Parameters first); "
    "handshake on activation, heartbeats, backport-timeout; $status and $events. "
    "Delivery is at least once and in "
    "order per subscription, retried with backoff; after the retry period the status becomes error. "
    "A requested Subscription is stored active once accepted. Endpoints: https (http only to loopback), "
    "no private or link-local addresses, redirects not followed. With authorization on, a Subscription "
    "notifies only of what the token that wrote it may read."
)
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
SECURITY_SERVICE = "http://terminology.hl7.org/CodeSystem/restful-security-service"
SMART_ACCESS = (
    "OAuth 2 bearer tokens of SMART App Launch 2.x (see [base]/.well-known/smart-configuration): "
    "scopes v1 and v2 are enforced on every interaction and every Bundle entry. patient/ scopes reach the "
    "token's patient compartment: the R4 Patient CompartmentDefinition plus Task through Task.for, which R4 "
    "leaves out but a patient's app needs for its tasks. Granular scopes (?param=value) reach only what the "
    "same search finds."
)


def security(oauth_uris: Mapping[str, str] | None) -> dict[str, Any]:
    """``rest.security``: CORS always; with authorization on, the SMART-on-FHIR service and its
    endpoints (hl7.org/fhir/smart-app-launch/conformance.html, the oauth-uris extension)."""
    if oauth_uris is None:
        return {"cors": True, "description": "Authorization is off (FHIR_AUTH=off): the API is open to anyone."}
    return {
        "extension": [
            {
                "url": OAUTH_URIS,
                "extension": [{"url": name, "valueUri": uri} for name, uri in oauth_uris.items()],
            }
        ],
        "cors": True,
        "service": [
            {
                "coding": [{"system": SECURITY_SERVICE, "code": "SMART-on-FHIR", "display": "SMART-on-FHIR"}],
                "text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)",
            }
        ],
        "description": SMART_ACCESS,
    }


PATCH_FORMATS = ["application/json-patch+json", "application/fhir+json"]


def build_capability_statement(
    resource_types: Iterable[str],
    routes: Iterable[InteractionRoute],
    base_url: str,
    started_at: datetime,
    registry: SearchRegistry,
    features: ServerFeatures = FEATURES,
    limits: Mapping[str, int] | None = None,
    oauth_uris: Mapping[str, str] | None = None,
    websocket_url: str | None = None,
    topic_urls: Iterable[str] = (),
) -> dict[str, Any]:
    """``oauth_uris`` (authorize, token, revoke, introspect): the authorization server's endpoints,
    or None when authorization is off. ``websocket_url``: where Subscription websocket clients connect.
    ``topic_urls``: the canonical URLs of the topics topic-based Subscriptions can use (Backport IG)."""
    routes = list(routes)
    rev_includes = search_rev_includes(registry)
    type_codes = list(dict.fromkeys(r.interaction for r in routes if r.level == "type"))
    system_codes = [r.interaction for r in routes if r.level == "system"]
    resources = [
        {
            "type": resource_type,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{resource_type}",
            "interaction": [{"code": code} for code in type_codes],
            "versioning": features.versioning,
            "readHistory": features.read_history,
            "updateCreate": features.update_create,
            "conditionalCreate": features.conditional_create,
            "conditionalRead": features.conditional_read,
            "conditionalUpdate": features.conditional_update,
            "conditionalDelete": features.conditional_delete,
            "searchInclude": [*search_includes(registry, resource_type), "*"],
            "searchRevInclude": rev_includes.get(resource_type, []),
            "searchParam": search_params(registry, resource_type),
        }
        for resource_type in sorted(resource_types)
    ]
    for resource in resources:
        own = list(dict.fromkeys(r.interaction for r in routes if operation_type(r) == resource["type"]))
        if own:
            resource["operation"] = [{"name": name, "definition": OPERATION_DEFINITIONS[name]} for name in own]
        if resource["type"] == "Subscription":
            resource["documentation"] = SUBSCRIPTIONS
            topics = [{"url": TOPIC_EXTENSION, "valueCanonical": url} for url in topic_urls]
            if topics:
                resource["extension"] = topics
                resource["supportedProfile"] = [BACKPORT_PROFILE]
    rest: dict[str, Any] = {
        "mode": "server",
        "documentation": documentation(limits or {}),
        "security": security(oauth_uris),
        "resource": resources,
    }
    extensions: list[dict[str, Any]] = []
    if limits:
        extensions.append(
            {
                "url": LIMITS_EXTENSION,
                "extension": [{"url": name, "valueInteger": value} for name, value in limits.items()],
            }
        )
    if websocket_url is not None:
        extensions.append({"url": WEBSOCKET_EXTENSION, "valueUri": websocket_url})
    if extensions:
        rest["extension"] = extensions
    if system_codes:
        rest["interaction"] = [{"code": code} for code in system_codes]
    operations = list(
        dict.fromkeys(r.interaction for r in routes if r.level == "operation" and operation_type(r) is None)
    )
    if operations:
        rest["operation"] = [{"name": name, "definition": OPERATION_DEFINITIONS[name]} for name in operations]
    if any(r.level == "compartment" for r in routes):
        rest["compartment"] = [
            f"http://hl7.org/fhir/CompartmentDefinition/{code.lower()}" for code in sorted(registry.compartments)
        ]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": format_instant(started_at),
        "publisher": "Care plan repository",
        "kind": "instance",
        "software": {"name": "care-plan-repository", "version": __version__},
        "implementation": {"description": "Care plan repository FHIR R4 server", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": [FHIR_JSON, "application/json"],
        "patchFormat": PATCH_FORMATS,
        "rest": [rest],
    }


LIMIT_TEXT = {
    "maxBodyBytes": "request bodies (and PATCH results) of at most {} bytes",
    "maxBundleEntries": "at most {} entries per transaction or batch Bundle",
    "maxBundleResponseResources": "at most {} resources returned by the read and search entries of one "
    "transaction or batch",
    "maxArrayItems": "at most {} items in any JSON array of a resource",
    "maxJsonDepth": "JSON objects nested at most {} levels deep",
    "maxPageSize": "_count of at most {}",
    "searchMaxParameters": "at most {} search parameters per search",
    "searchMaxValuesPerParameter": "at most {} comma-separated values per parameter",
    "searchMaxValues": "at most {} values per search",
    "searchMaxChainLinks": "chains of at most {} links",
    "searchMaxHasLevels": "_has nested at most {} levels",
    "searchMaxIncludes": "at most {} _include/_revinclude parameters",
    "searchMaxSortKeys": "at most {} _sort keys",
    "maxUrlBytes": "URLs of at most {} bytes (longer searches: POST [type]/_search)",
    "dbStatementTimeoutSeconds": "database statements cancelled after {} s (503)",
}


def documentation(limits: Mapping[str, int]) -> str:
    """``rest.documentation``: the limits in words (the same numbers as the server-limits extension)."""
    text = "Care plan repository FHIR R4 REST API."
    parts = [LIMIT_TEXT[name].format(value) for name, value in limits.items() if name in LIMIT_TEXT]
    if parts:
        text += " Limits: " + "; ".join(parts) + "."
    return text


def search_params(registry: SearchRegistry, resource_type: str) -> list[dict[str, Any]]:
    """Every parameter the search engine implements for the type, with its definition."""
    return [
        {"name": code, "definition": param.url, "type": param.type, "documentation": param.description}
        for code, param in sorted(registry.for_type(resource_type).items())
        if supported(param)
    ]


def search_includes(registry: SearchRegistry, resource_type: str) -> list[str]:
    """``_include`` values: every reference parameter of the type."""
    return [
        f"{resource_type}:{code}"
        for code, param in sorted(registry.for_type(resource_type).items())
        if param.type == "reference" and param.expression
    ]


def search_rev_includes(registry: SearchRegistry) -> dict[str, list[str]]:
    """``_revinclude`` values per target type: reference parameters of any type that may point at it."""
    by_target: dict[str, list[str]] = {}
    for source_type, params in sorted(registry.by_type.items()):
        for code, param in sorted(params.items()):
            if param.type == "reference" and param.expression:
                for target in param.targets:
                    by_target.setdefault(target, []).append(f"{source_type}:{code}")
    return by_target


def without_empty(value: Any) -> Any:
    """The value with empty strings, arrays and objects left out (json.html: FHIR JSON has none)."""
    if isinstance(value, dict):
        pruned = {k: without_empty(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in ("", [], {}, None)}
    if isinstance(value, list):
        return [v for v in (without_empty(item) for item in value) if v not in ("", [], {}, None)]
    return value


def render(statement: dict[str, Any]) -> bytes:
    return orjson.dumps(without_empty(statement))
