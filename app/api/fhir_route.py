"""FastAPI routes for the FHIR interactions, called without FastAPI's per-request dependency solving.

A FHIR route's signature is ``(request, <path segments as str>, ctx: Ctx)``
(``app.api.deps``): the request, Starlette's converted path parameters and
one dependency. For that shape, FastAPI's request handler still does per
request what nothing here needs: it extracts the endpoint's context for error
messages, looks for a body, and walks the dependency tree
(``solve_dependencies``, 13% of a read's CPU in a profile under load). This
route class calls ``route_context`` and the endpoint directly for that shape,
and leaves everything else to FastAPI: any other signature, and any request
while ``app.dependency_overrides`` is set (tests), get FastAPI's own handler.
The ASGI wrapping (``request_response``: exit stacks, exception handlers)
is FastAPI's in both cases.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from app.api.deps import route_context

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class FhirRoute(APIRoute):
    """An ``APIRoute`` whose handler skips dependency solving for the FHIR routes' one shape."""

    def get_route_handler(self) -> Handler:
        full: Handler = super().get_route_handler()
        names = lean_parameters(self.dependant)
        if names is None:
            return full
        request_name, context_name = names
        endpoint = self.endpoint
        provider = self.dependency_overrides_provider

        async def handler(request: Request) -> Response:
            if provider is not None and provider.dependency_overrides:
                return await full(request)
            context = await route_context(request)
            response: Response = await endpoint(**{request_name: request, context_name: context}, **request.path_params)
            return response

        return handler


def lean_parameters(dependant: Dependant) -> tuple[str, str] | None:
    """``(request parameter, context parameter)`` when the endpoint takes exactly the request, ``str``
    path parameters and the route context; None otherwise."""
    if dependant.request_param_name is None or len(dependant.dependencies) != 1:
        return None
    (context,) = dependant.dependencies
    if context.call is not route_context or context.name is None or context.dependencies:
        return None
    others = (
        dependant.query_params,
        dependant.header_params,
        dependant.cookie_params,
        dependant.body_params,
    )
    specials = (
        dependant.websocket_param_name,
        dependant.http_connection_param_name,
        dependant.response_param_name,
        dependant.background_tasks_param_name,
        dependant.security_scopes_param_name,
    )
    if any(others) or any(name is not None for name in specials):
        return None
    if any(field.field_info.annotation is not str for field in dependant.path_params):
        return None
    return dependant.request_param_name, context.name
