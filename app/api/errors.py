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

from app.api.negotiation import FHIR_JSON
from app.api.outcomes import dumps, error_outcome, outcome_for_error
from app.errors import ErrorCode, FhirError, Gone

CONTENT_TYPE = f"{FHIR_JSON}; charset=utf-8"


def _outcome_response(status: int, body: dict[str, object], headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(body), status_code=status, headers=headers, media_type=CONTENT_TYPE)


async def fhir_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FhirError)
    status, body = outcome_for_error(exc)
    headers = {}
    if isinstance(exc, Gone) and exc.version_id is not None:
        headers["ETag"] = f'W/"{exc.version_id}"'
    return _outcome_response(status, body, headers)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        text = f"{request.method} is not supported on {request.url.path}"
        return _outcome_response(
            405, error_outcome(text, "not-supported", ErrorCode.METHOD_NOT_ALLOWED), dict(exc.headers or {})
        )
    if exc.status_code == 404:
        text = f"No FHIR endpoint at {request.url.path}"
        return _outcome_response(404, error_outcome(text, "not-found", ErrorCode.NOT_FOUND))
    code = ErrorCode.INVALID_REQUEST
    return _outcome_response(exc.status_code, error_outcome(str(exc.detail), "processing", code))


async def validation_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    text = "; ".join(str(e.get("msg")) for e in exc.errors()) or "invalid request"
    return _outcome_response(400, error_outcome(text, "invalid", ErrorCode.INVALID_REQUEST))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(FhirError, fhir_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
