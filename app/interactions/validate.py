"""``$validate`` (hl7.org/fhir/R4/resource-operation-validate.html): check a resource, store nothing.

The body is the resource itself or a ``Parameters`` with a ``resource``
parameter and optionally ``mode`` (create, update, delete). The checks are
the ones a create or update would make (FHIR JSON rules, structure,
required bindings, the server's rules per type), so a resource that
validates here is accepted by a write. Invalid resources are reported as
errors (the API answers 400 with the issues); a valid one gets an
informational outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.errors import InvalidRequest, NotFound
from app.interactions.context import FhirContext
from app.interactions.create import check_body_type
from app.interactions.request_context import RequestContext
from app.interactions.update import check_id
from app.storage.repository import read_current

MODES = frozenset({"create", "update", "delete"})


@dataclass(frozen=True, slots=True)
class ValidateRequest:
    resource: dict[str, Any] | None
    mode: str | None


def parse_validate_request(body: dict[str, Any]) -> ValidateRequest:
    """The resource and mode from a resource body or a Parameters body."""
    if body.get("resourceType") != "Parameters":
        return ValidateRequest(body, None)
    resource: dict[str, Any] | None = None
    mode: str | None = None
    parameters = body.get("parameter", [])
    if not isinstance(parameters, list):
        raise InvalidRequest("Parameters.parameter must be an array", ["Parameters.parameter"])
    for parameter in parameters:
        if not isinstance(parameter, dict):
            continue
        if parameter.get("name") == "resource" and isinstance(parameter.get("resource"), dict):
            resource = parameter["resource"]
        elif parameter.get("name") == "mode":
            mode = parameter.get("valueCode") or parameter.get("valueString")
    if mode is not None and mode not in MODES:
        raise InvalidRequest(f"mode '{str(mode)[:40]}' must be one of create, update, delete", ["mode"])
    return ValidateRequest(resource, mode)


async def validate(
    ctx: FhirContext, rc: RequestContext, resource_type: str, request: ValidateRequest, resource_id: str | None = None
) -> None:
    """Return when the resource would be accepted; raise the error a write would get otherwise."""
    ctx.require_type(resource_type)
    if request.mode == "delete":
        if resource_id is None:
            raise InvalidRequest("mode=delete validates an existing resource: [type]/[id]/$validate")
        ctx.require_known(resource_type, resource_id)
        async with ctx.db.read() as conn:
            current = await read_current(conn, resource_type, resource_id, ctx.read_gate(rc.caller))
        if current is None or current.deleted:
            raise NotFound(f"{resource_type}/{resource_id} is not known")
        return
    if request.resource is None:
        raise InvalidRequest("$validate needs a resource: the body, or a Parameters 'resource' parameter")
    check_body_type(resource_type, request.resource)
    if resource_id is not None and request.mode != "create":
        check_id(resource_id, request.resource)
    await ctx.check(resource_type, request.resource)
