"""Operations: ``$reindex``, ``$validate``, and a clear refusal of every other ``$operation``."""

from __future__ import annotations

from typing import NoReturn

from starlette.requests import Request
from starlette.responses import Response

from app.api.async_requests import accepted
from app.api.deps import Ctx, Jobs, RouteContext
from app.api.negotiation import negotiate
from app.api.outcomes import dumps, informational
from app.api.request_parts import resource_body
from app.errors import MethodNotAllowed, OperationNotSupported
from app.interactions import reindex
from app.interactions import validate as validate_mod
from app.interactions.catalog import INTERACTIONS, operation_type
from app.interactions.reindex_job import REINDEX, reindex_parameters


async def reindex_system(request: Request, ctx: Ctx, jobs: Jobs) -> Response:
    """``POST [base]/$reindex``: every stored resource of every type, as a job (async.html)."""
    ctx.rc.caller.require_system(maintains="*")
    return await accepted(request, jobs, ctx.rc, REINDEX, reindex_parameters(None), "$reindex of every resource type")


async def reindex_type(request: Request, resource_type: str, ctx: Ctx, jobs: Jobs) -> Response:
    """``POST [base]/[type]/$reindex``, as a job (async.html)."""
    ctx.rc.caller.require_system(maintains=resource_type)
    ctx.fhir.require_type(resource_type)
    what = f"$reindex of {resource_type}"
    return await accepted(request, jobs, ctx.rc, REINDEX, reindex_parameters(resource_type), what)


async def reindex_instance(request: Request, resource_type: str, resource_id: str, ctx: Ctx) -> Response:
    """``POST [base]/[type]/[id]/$reindex``: one resource, at once; a Parameters with the count."""
    fmt = negotiate(request.headers, request.query_params)
    count = await reindex.reindex_instance(ctx.fhir, ctx.rc, resource_type, resource_id)
    parameters = reindex.counts_parameters({resource_type: count})
    return Response(dumps(parameters, fmt.pretty), 200, media_type=fmt.content_type)


async def _validate_response(
    request: Request, ctx: RouteContext, resource_type: str, resource_id: str | None
) -> Response:
    fmt = negotiate(request.headers, request.query_params)
    body = await resource_body(request, ctx.rc)
    await validate_mod.validate(ctx.fhir, ctx.rc, resource_type, validate_mod.parse_validate_request(body), resource_id)
    outcome = informational("Validation successful: no errors", "informational")
    return Response(dumps(outcome, fmt.pretty), 200, media_type=fmt.content_type)


async def validate_type(request: Request, resource_type: str, ctx: Ctx) -> Response:
    """``POST [base]/[type]/$validate``: 200 when a create would accept the resource, else 400 with the
    issues a create would report; nothing is stored (resource-operation-validate.html)."""
    return await _validate_response(request, ctx, resource_type, None)


async def validate_instance(request: Request, resource_type: str, resource_id: str, ctx: Ctx) -> Response:
    """``POST [base]/[type]/[id]/$validate``: as for the type, with the id checked (mode update/delete)."""
    return await _validate_response(request, ctx, resource_type, resource_id)


async def unsupported_operation(operation: str) -> Response:
    """Any other ``$operation``: a clear refusal instead of the path being read as a type or an id."""
    _refuse(operation, None)


def _refuse(operation: str, resource_type: str | None) -> NoReturn:
    """405 for a known operation invoked with another method, 404 (not-supported) otherwise."""
    known = sorted({r.interaction for r in INTERACTIONS if r.level == "operation"})
    if operation in known:
        routes = [r for r in INTERACTIONS if r.interaction == operation]
        types = sorted({t for r in routes if (t := operation_type(r)) is not None})
        if types and resource_type not in types:
            raise OperationNotSupported(f"${operation} is an operation of {', '.join(types)}")
        allowed = sorted({r.method for r in routes})
        paths = ", ".join(sorted({r.path.replace("{resource_type:rtype}", "[type]") for r in routes}))
        paths = paths.replace("{resource_id:rid}", "[id]")
        raise MethodNotAllowed(f"${operation} is invoked with {', '.join(allowed)} at {paths}", allow=allowed)
    raise OperationNotSupported(
        f"the operation ${operation[:80]} is not supported on this server; supported: "
        + ", ".join(f"${name}" for name in known)
    )


async def unsupported_type_operation(resource_type: str, operation: str) -> Response:
    _refuse(operation, resource_type)


async def unsupported_instance_operation(resource_type: str, resource_id: str, operation: str) -> Response:
    _refuse(operation, resource_type)
