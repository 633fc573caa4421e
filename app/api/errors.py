"""Exception handlers: every failure leaves as an OperationOutcome, never a stack trace.

Unknown exceptions are not handled here but in ``RequestLogMiddleware``, which
answers them with a logged 500 that carries the request id.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from app.api.outcomes import dumps, error_outcome, outcome_for_error
from app.errors import ErrorCode, FhirError, Gone, MethodNotAllowed, Unauthorized
from app.fhirjson import FHIR_JSON
from app.storage.database import DATABASE_ERRORS, storage_error

CONTENT_TYPE = f"{FHIR_JSON}; charset=utf-8"


def _outcome_response(status: int, body: dict[str, object], headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(body), status_code=status, headers=headers, media_type=CONTENT_TYPE)


async def fhir_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FhirError)
    status, body = outcome_for_error(exc)
    headers = {}
    if isinstance(exc, Gone) and exc.version_id is not None:
        headers["ETag"] = f'W/"{exc.version_id}"'
    if isinstance(exc, MethodNotAllowed):
        headers["Allow"] = ", ".join(exc.allow or allowed_methods(request))
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = bearer_challenge(exc)
    return _outcome_response(status, body, headers)


def bearer_challenge(exc: Unauthorized) -> str:
    """The ``WWW-Authenticate`` value of a 401 (RFC 6750 section 3): ``error="invalid_token"`` only
    when a token was sent; the description is ours, never the token."""
    if exc.error is None:
        return 'Bearer realm="fhir"'
    description = exc.message.replace('"', "'")
    return f'Bearer realm="fhir", error="{exc.error}", error_description="{description}"'


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (RFC 9110 15.5.6: ``Allow`` on a 405)."""
    path = request.url.path
    methods: set[str] = set()
    for route in request.app.routes:
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path) and getattr(route, "methods", None):
            methods |= set(route.methods)
    order = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
    return sorted(methods, key=lambda m: order.index(m) if m in order else len(order))


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        allow = allowed_methods(request)
        text = f"{request.method} is not supported on {request.url.path[:200]}; use {', '.join(allow)}"
        outcome = error_outcome(text, "not-supported", ErrorCode.METHOD_NOT_ALLOWED)
        return _outcome_response(405, outcome, {"Allow": ", ".join(allow)})
    if exc.status_code == 404:
        text = f"No FHIR endpoint at {request.url.path[:200]}"
        return _outcome_response(404, error_outcome(text, "not-found", ErrorCode.NOT_FOUND))
    code = ErrorCode.INVALID_REQUEST
    return _outcome_response(exc.status_code, error_outcome(str(exc.detail), "processing", code))


async def validation_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    text = "; ".join(str(e.get("msg")) for e in exc.errors()) or "invalid request"
    return _outcome_response(400, error_outcome(text, "invalid", ErrorCode.INVALID_REQUEST))


async def database_error_handler(request: Request, exc: Exception) -> Response:
    """A database error that stands for a client-visible condition (a statement timeout); any other
    is re-raised to the request log middleware, which answers 500 and logs it."""
    translated = storage_error(exc)
    if translated is None:
        raise exc
    return await fhir_error_handler(request, translated)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(FhirError, fhir_error_handler)
    for error_class in DATABASE_ERRORS:
        app.add_exception_handler(error_class, database_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
