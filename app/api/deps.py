"""What routes get from FastAPI's dependency injection, as ``Annotated`` aliases (fastapi.tiangolo.com,
"Dependencies"): a route's signature says what it needs, and a test can replace any of them with
``app.dependency_overrides``. Only these functions read ``request.app.state``.

A FHIR route needs one thing, ``Ctx``: the ``RequestContext`` of the request and the process's
``FhirContext`` as the request starts (one registry for the whole request, even if a SearchParameter
write installs a new one meanwhile). They come as one dependency because FastAPI's resolution costs
about 12 us per dependency and request. The dependencies are ``async``: FastAPI runs plain functions
in a thread pool, which costs a hundred microseconds a request.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, cast

from fastapi import Depends
from starlette.requests import Request

from app.api.auth import Authenticator
from app.api.responses import prefer_return
from app.config import Settings
from app.interactions.context import ContextHolder, FhirContext
from app.interactions.jobs import JobRunner
from app.interactions.request_context import UNRESTRICTED, Caller, RequestContext, RequestLimits


@dataclass(frozen=True, slots=True)
class RouteContext:
    """What a route works with: the process's context, this request's context, and the holder that a
    SearchParameter write installs a new process context into."""

    fhir: FhirContext
    rc: RequestContext
    holder: ContextHolder


def request_limits(config: Settings) -> RequestLimits:
    """The limits every request works within, from the settings (built once by the app factory)."""
    return RequestLimits(
        max_body_bytes=config.max_body_bytes,
        default_page_size=config.default_page_size,
        max_page_size=config.max_page_size,
        max_bundle_entries=config.max_bundle_entries,
        max_bundle_response_resources=config.max_bundle_response_resources,
    )


async def request_caller(request: Request) -> Caller:
    """Who asks: the bearer token's caller (``app.api.auth``); 401 without a valid token."""
    auth = cast(Authenticator, request.app.state.auth)
    if not auth.enforced:
        return UNRESTRICTED
    return await auth.caller(request.headers.get("authorization"))


def request_context(request: Request, caller: Caller) -> RequestContext:
    """Who asks and how."""
    prefer = request.headers.get("prefer", "")
    state = request.app.state
    return RequestContext(
        caller=caller,
        base_url=state.settings.public_base_url,
        prefer_return=prefer_return(request.headers),
        strict="handling=strict" in prefer.replace(" ", ""),
        now=datetime.now(UTC),
        request_id=request.scope.get("state", {}).get("request_id"),
        limits=state.request_limits,
    )


async def route_context(request: Request) -> RouteContext:
    """The context of a FHIR interaction; authentication comes first, so a request without a valid
    token learns nothing else (its body is not even read)."""
    caller = await request_caller(request)
    holder = cast(ContextHolder, request.app.state.fhir)
    return RouteContext(holder.current, request_context(request, caller), holder)


async def caller(request: Request) -> Caller:
    """The caller alone, for the routes that are not FHIR interactions but still need a token."""
    return await request_caller(request)


async def fhir_context(request: Request) -> FhirContext:
    """The process's context alone, for the routes that are not FHIR interactions (health, metadata)."""
    return cast(ContextHolder, request.app.state.fhir).current


async def job_runner(request: Request) -> JobRunner:
    return cast(JobRunner, request.app.state.jobs)


Ctx = Annotated[RouteContext, Depends(route_context)]
Fhir = Annotated[FhirContext, Depends(fhir_context)]
Jobs = Annotated[JobRunner, Depends(job_runner)]
CallerDep = Annotated[Caller, Depends(caller)]
