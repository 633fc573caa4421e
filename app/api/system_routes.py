"""Routes that are not per resource: ``metadata`` and the health checks."""

from __future__ import annotations

import logging

import orjson
from starlette.requests import Request
from starlette.responses import Response

from app import fhirjson
from app.api.negotiation import negotiate

LOG = logging.getLogger("fhir.health")


async def metadata(request: Request) -> Response:
    """The CapabilityStatement (hl7.org/fhir/R4/http.html#capabilities), rendered again only when the
    search registry changed (a SearchParameter was added)."""
    fmt = negotiate(request.headers, request.query_params)
    registry = request.app.state.ctx.registry
    cached_for, body = request.app.state.capability
    if cached_for is not registry:
        body = request.app.state.capability_for(registry)
        request.app.state.capability = (registry, body)
    if fmt.pretty:
        body = fhirjson.reformat(body, pretty=True)
    return Response(body, media_type=fmt.content_type)


async def health(request: Request) -> Response:
    """Liveness: the process answers."""
    return Response(b'{"status":"ok"}', media_type="application/json")


async def ready(request: Request) -> Response:
    """Readiness: the database answers a query. The reason for a failure goes to the log, not to the
    answer: the probe is unauthenticated, and driver messages name hosts, users and databases."""
    try:
        ok = await request.app.state.ctx.db.ping()
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
