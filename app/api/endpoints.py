"""The route functions by the names ``app.interactions.catalog`` gives them, and the typed path segments
the catalog's paths use."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.convertors import Convertor, register_url_convertor
from starlette.responses import Response

from app.api.instance_routes import (
    delete_resource,
    instance_history,
    patch_resource,
    read_resource,
    update_resource,
    vread_resource,
)
from app.api.operation_routes import (
    reindex_instance,
    reindex_system,
    reindex_type,
    unsupported_instance_operation,
    unsupported_operation,
    unsupported_type_operation,
    validate_instance,
    validate_type,
)
from app.api.subscription_routes import (
    subscription_events,
    subscription_status,
    subscription_status_type,
    subscription_ws_token,
)
from app.api.system_routes import search_system, system_history, transaction_or_batch
from app.api.type_routes import (
    conditional_delete_resource,
    conditional_patch_resource,
    conditional_update_resource,
    create_resource,
    search_compartment,
    search_type,
    search_type_post,
    type_history,
)

Endpoint = Callable[..., Awaitable[Response]]


class ResourceTypeConvertor(Convertor[str]):
    """A path segment that can be a resource type (``CarePlan``): never ``_history``, ``$op`` or ``metadata``,
    so routes of the same shape do not compete and the hot ones can come first."""

    regex = "[A-Z][A-Za-z]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


class ResourceIdConvertor(ResourceTypeConvertor):
    """A path segment in the place of an id: anything but an ``$operation`` (an invalid id is refused by
    the interaction, with a message, rather than by the router)."""

    regex = "[^/$][^/]*"


register_url_convertor("rtype", ResourceTypeConvertor())
register_url_convertor("rid", ResourceIdConvertor())


# Route functions by the names app.interactions.catalog gives them.
ENDPOINTS: dict[str, Endpoint] = {
    "search_compartment": search_compartment,
    "type_history": type_history,
    "read_resource": read_resource,
    "search_type_post": search_type_post,
    "create_resource": create_resource,
    "search_type": search_type,
    "update_resource": update_resource,
    "delete_resource": delete_resource,
    "patch_resource": patch_resource,
    "instance_history": instance_history,
    "vread_resource": vread_resource,
    "conditional_update_resource": conditional_update_resource,
    "conditional_delete_resource": conditional_delete_resource,
    "conditional_patch_resource": conditional_patch_resource,
    "transaction_or_batch": transaction_or_batch,
    "system_history": system_history,
    "search_system": search_system,
    "reindex_system": reindex_system,
    "reindex_type": reindex_type,
    "reindex_instance": reindex_instance,
    "validate_type": validate_type,
    "validate_instance": validate_instance,
    "subscription_status_type": subscription_status_type,
    "subscription_status": subscription_status,
    "subscription_events": subscription_events,
    "subscription_ws_token": subscription_ws_token,
    "unsupported_operation": unsupported_operation,
    "unsupported_type_operation": unsupported_type_operation,
    "unsupported_instance_operation": unsupported_instance_operation,
}
