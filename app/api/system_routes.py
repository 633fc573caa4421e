"""Routes that are not per resource: ``metadata`` and the health checks."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from app.api.negotiation import negotiate


async def metadata(request: Request) -> Response:
    """The CapabilityStatement, rendered once at start-up (hl7.org/fhir/R4/http.html#capabilities)."""
    fmt = negotiate(request.headers, request.query_params)
    body: bytes = request.app.state.capability_bytes
    if fmt.pretty:
        body = orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2)
    return Response(body, media_type=fmt.content_type)


async def health(request: Request) -> Response:
    """Liveness: the process answers."""
    return Response(b'{"status":"ok"}', media_type="application/json")


async def ready(request: Request) -> Response:
    """Readiness: the database answers a query."""
    try:
        ok = await request.app.state.ctx.db.ping()
    except Exception as exc:  # any failure to reach the database means "not ready"
        return Response(
            orjson.dumps({"status": "unavailable", "database": str(exc)[:200]}), 503, media_type="application/json"
        )
    status = 200 if ok else 503
    return Response(
        orjson.dumps({"status": "ok" if ok else "unavailable", "database": "ok" if ok else "error"}),
        status,
        media_type="application/json",
    )
