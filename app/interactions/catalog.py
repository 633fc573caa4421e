"""The FHIR interactions this server offers: one table from which the router and the CapabilityStatement
are both built, so ``/metadata`` lists exactly what is served (hl7.org/fhir/R4/http.html).

Data only: each route names its endpoint function, which ``app.api.routes`` provides. Path segments
``{resource_type:rtype}`` and ``{resource_id:rid}`` use the router's typed convertors (a resource type is
never ``_history``, ``$op`` or ``metadata``; an id never starts with ``$``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class InteractionRoute:
    """One FHIR interaction served at one path (hl7.org/fhir/R4/http.html)."""

    interaction: str
    level: Literal["type", "system", "compartment", "operation"]
    method: str
    path: str
    endpoint: str  # the name of the route function in app.api.routes


@dataclass(frozen=True, slots=True)
class ServerFeatures:
    """Behaviour flags advertised per type in the CapabilityStatement."""

    versioning: str = "versioned-update"
    read_history: bool = True
    update_create: bool = True
    conditional_create: bool = True
    conditional_update: bool = True
    conditional_delete: str = "multiple"
    conditional_read: str = "not-supported"


FEATURES = ServerFeatures()


# Operations listed in the CapabilityStatement under rest.operation.
OPERATION_DEFINITIONS = {
    "reindex": "urn:care-plan-repository:OperationDefinition:reindex",
    "validate": "http://hl7.org/fhir/OperationDefinition/Resource-validate",
    "status": "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-status",
    "events": "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-events",
    "get-ws-binding-token": (
        "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-get-ws-binding-token"
    ),
}
OPERATION_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH"]


T = "{resource_type:rtype}"
ID = "{resource_id:rid}"

# The most frequent interactions first (the router tries routes in order); a literal segment before a
# parameter of the same shape and method.
INTERACTIONS: tuple[InteractionRoute, ...] = (
    InteractionRoute("history-type", "type", "GET", f"/{T}/_history", "type_history"),
    InteractionRoute("read", "type", "GET", f"/{T}/{ID}", "read_resource"),
    InteractionRoute("search-type", "type", "POST", f"/{T}/_search", "search_type_post"),
    InteractionRoute("create", "type", "POST", f"/{T}", "create_resource"),
    InteractionRoute("search-type", "type", "GET", f"/{T}", "search_type"),
    InteractionRoute("update", "type", "PUT", f"/{T}/{ID}", "update_resource"),
    InteractionRoute("delete", "type", "DELETE", f"/{T}/{ID}", "delete_resource"),
    InteractionRoute("patch", "type", "PATCH", f"/{T}/{ID}", "patch_resource"),
    InteractionRoute("history-instance", "type", "GET", f"/{T}/{ID}/_history", "instance_history"),
    InteractionRoute("vread", "type", "GET", f"/{T}/{ID}/_history/{{version_id}}", "vread_resource"),
    InteractionRoute("update", "type", "PUT", f"/{T}", "conditional_update_resource"),
    InteractionRoute("delete", "type", "DELETE", f"/{T}", "conditional_delete_resource"),
    InteractionRoute("patch", "type", "PATCH", f"/{T}", "conditional_patch_resource"),
    InteractionRoute(
        "search-compartment",
        "compartment",
        "GET",
        f"/{{compartment_type:rtype}}/{{compartment_id:rid}}/{T}",
        "search_compartment",
    ),
    InteractionRoute("transaction", "system", "POST", "", "transaction_or_batch"),
    InteractionRoute("batch", "system", "POST", "", "transaction_or_batch"),
    InteractionRoute("history-system", "system", "GET", "/_history", "system_history"),
    InteractionRoute("search-system", "system", "GET", "", "search_system"),
    InteractionRoute("reindex", "operation", "POST", "/$reindex", "reindex_system"),
    InteractionRoute("reindex", "operation", "POST", f"/{T}/$reindex", "reindex_type"),
    InteractionRoute("reindex", "operation", "POST", f"/{T}/{ID}/$reindex", "reindex_instance"),
    InteractionRoute("validate", "operation", "POST", f"/{T}/$validate", "validate_type"),
    InteractionRoute("validate", "operation", "POST", f"/{T}/{ID}/$validate", "validate_instance"),
    # Subscriptions Backport IG operations, on Subscription only
    InteractionRoute("status", "operation", "GET", "/Subscription/$status", "subscription_status_type"),
    InteractionRoute("status", "operation", "POST", "/Subscription/$status", "subscription_status_type"),
    InteractionRoute("status", "operation", "GET", f"/Subscription/{ID}/$status", "subscription_status"),
    InteractionRoute("status", "operation", "POST", f"/Subscription/{ID}/$status", "subscription_status"),
    InteractionRoute("events", "operation", "GET", f"/Subscription/{ID}/$events", "subscription_events"),
    InteractionRoute("events", "operation", "POST", f"/Subscription/{ID}/$events", "subscription_events"),
    InteractionRoute(
        "get-ws-binding-token", "operation", "GET", f"/Subscription/{ID}/$get-ws-binding-token", "subscription_ws_token"
    ),
    InteractionRoute(
        "get-ws-binding-token",
        "operation",
        "POST",
        f"/Subscription/{ID}/$get-ws-binding-token",
        "subscription_ws_token",
    ),
)


def operation_type(route: InteractionRoute) -> str | None:
    """The one resource type an operation's path names (``/Subscription/$status``), or None for an
    operation at the system level or on every type."""
    first = route.path.split("/")[1] if route.path.count("/") > 1 else ""
    return first if first[:1].isupper() else None


# After every interaction: any other ``$operation`` at the system, type or instance level.
UNSUPPORTED_OPERATIONS: tuple[tuple[str, str], ...] = (
    ("/${operation}", "unsupported_operation"),
    (f"/{T}/${{operation}}", "unsupported_type_operation"),
    (f"/{T}/{ID}/${{operation}}", "unsupported_instance_operation"),
)
