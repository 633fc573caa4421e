"""Request id, one structured access-log line per request, and the last-resort 500.

A pure ASGI middleware, outermost of ours: an exception that escapes every
handler is logged with its traceback and answered here with a 500
OperationOutcome that quotes the request id, never the exception text.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.outcomes import dumps, error_outcome
from app.errors import ErrorCode

access_log = logging.getLogger("fhir.access")
error_log = logging.getLogger("fhir.errors")


class RequestLogMiddleware:
    """Echo or assign ``X-Request-Id`` and log method, path, status and duration as JSON."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        started_response = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                status = message["status"]
                started_response = True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            error_log.exception("unhandled error on %s %s (request %s)", scope["method"], scope["path"], request_id)
            if not started_response:
                await _send_internal_error(send_with_id, request_id)
        finally:
            if access_log.isEnabledFor(logging.INFO):
                record: dict[str, Any] = {
                    "event": "request",
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    "request_id": request_id,
                }
                access_log.info(orjson.dumps(record).decode())


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            text = value.decode("latin-1").strip()
            if 0 < len(text) <= 200 and text.isprintable():
                return text
    return None


async def _send_internal_error(send: Send, request_id: str) -> None:
    body = dumps(
        error_outcome(f"internal server error; quote request id {request_id}", "exception", ErrorCode.INTERNAL)
    )
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [
                (b"content-type", b"application/fhir+json; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
