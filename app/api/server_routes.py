"""Routes that are not FHIR interactions on resources: ``metadata`` and the health checks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated

import orjson
from fastapi import Depends
from starlette.requests import Request
from starlette.responses import Response

from app import fhirjson
from app.api.deps import Fhir
from app.api.negotiation import negotiate
from app.search.registry import SearchRegistry

LOG = logging.getLogger("fhir.health")


class CapabilityCache:
    """The rendered CapabilityStatement, rendered again only when the search registry changed (a
    SearchParameter was added)."""

    def __init__(self, render: Callable[[SearchRegistry], bytes]) -> None:
        self._render = render
        self._for: SearchRegistry | None = None
        self._body = b""

    def body(self, registry: SearchRegistry) -> bytes:
        if registry is not self._for:
            self._body = self._render(registry)
            self._for = registry
        return self._body


async def capability_cache(request: Request) -> CapabilityCache:
    cache: CapabilityCache = request.app.state.capability
    return cache


Capability = Annotated[CapabilityCache, Depends(capability_cache)]


async def metadata(request: Request, fhir: Fhir, capability: Capability) -> Response:
    """The CapabilityStatement (hl7.org/fhir/R4/http.html#capabilities)."""
    fmt = negotiate(request.headers, request.query_params)
    body = capability.body(fhir.registry)
    if fmt.pretty:
        body = fhirjson.reformat(body, pretty=True)
    return Response(body, media_type=fmt.content_type)


async def health(request: Request) -> Response:
    """Liveness: the process answers. With ``FHIR_AUTH=off`` it says so, loudly, to whoever watches."""
    body: dict[str, str] = {"status": "ok"}
    if not request.app.state.settings.auth_enforced:
        body["auth"] = "off"
        body["warning"] = "FHIR_AUTH=off: the FHIR API is open to anyone, without a token"
    return Response(orjson.dumps(body), media_type="application/json")


async def ready(fhir: Fhir) -> Response:
    """Readiness: the database answers a query. The reason for a failure goes to the log, not to the
    answer: the probe is unauthenticated, and driver messages name hosts, users and databases."""
    try:
        ok = await fhir.db.ping()
    except Exception:  # any failure to reach the database means "not ready"
        LOG.exception("readiness check: the database did not answer")
        return Response(
            orjson.dumps({"status": "unavailable", "database": "unreachable"}), 503, media_type="application/json"
        )
    status = 200 if ok else 503
    return Response(
        orjson.dumps({"status": "ok" if ok else "unavailable", "database": "ok" if ok else "error"}),
        status,
        media_type="application/json",
    )
