"""Request id, one structured access-log line per request, the last-resort 500, and the edges of HTTP.

A pure ASGI middleware, outermost of ours:

* an exception that escapes every handler is logged with its traceback and
  answered here with a 500 OperationOutcome that quotes the request id,
  never the exception text;
* a URL longer than ``MAX_URL_BYTES`` is a 414 OperationOutcome before any
  routing (a long search belongs in ``POST [type]/_search``);
* ``HEAD`` answers carry the headers of the ``GET`` answer and no body
  (RFC 9110 9.3.2), whatever the HTTP server in front does;
* when the client goes away before the answer is complete, the request's
  task is cancelled, so its database statements are cancelled too (asyncpg
  sends PostgreSQL a cancel request) instead of running on for nobody. This
  is logged as one line with status 499, not as an error with a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import orjson
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.outcomes import dumps, error_outcome
from app.errors import ErrorCode

access_log = logging.getLogger("fhir.access")
error_log = logging.getLogger("fhir.errors")

MAX_URL_BYTES = 8192
CLIENT_CLOSED = 499  # nginx's code for "the client closed the connection before the answer"
_BODYLESS = (b"GET", b"HEAD", b"DELETE", b"OPTIONS")


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
        head = scope["method"] == "HEAD"
        watch = _DisconnectWatch(receive, asyncio.current_task())

        async def send_with_id(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                status = message["status"]
                started_response = True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                if not message.get("more_body"):
                    watch.response_complete = True
                if head:
                    message = {**message, "body": b""}
            await send(message)

        try:
            if len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") > MAX_URL_BYTES:
                await _send_outcome(send_with_id, 414, _too_long())
            else:
                if not _has_body(scope):
                    watch.arm()
                await self.app(scope, watch.receive, send_with_id)
        except asyncio.CancelledError:
            if not watch.disconnected:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            status = CLIENT_CLOSED
        except ClientDisconnect:
            status = CLIENT_CLOSED
        except Exception:
            if watch.disconnected:
                status = CLIENT_CLOSED
            else:
                error_log.exception("unhandled error on %s %s (request %s)", scope["method"], scope["path"], request_id)
                if not started_response:
                    await _send_internal_error(send_with_id, request_id)
        finally:
            watch.stop()
            if access_log.isEnabledFor(logging.INFO):
                record: dict[str, Any] = {
                    "event": "request",
                    "method": scope["method"],
                    "path": scope["path"][:512],
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    "request_id": request_id,
                }
                access_log.info(orjson.dumps(record).decode())


class _DisconnectWatch:
    """Reads ``http.disconnect`` for a request whose body has been read, and cancels the request task.

    Until the body is read the application owns ``receive``; afterwards only
    the watcher calls it (never two readers at once) and hands the application
    what it reads: the (empty) body of a request that has none, or the
    disconnect. Most requests are answered in a few milliseconds, so the
    watcher only starts once a request has run for ``WATCH_AFTER`` seconds (or
    when the application itself waits for the disconnect): a timer costs far
    less than a task per request.
    """

    WATCH_AFTER = 0.25

    def __init__(self, receive: Receive, task: asyncio.Task[Any] | None) -> None:
        self._receive = receive
        self._task = task
        self._watcher: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._unread: list[Message] = []  # read by the watcher, not yet by the application
        self._news: asyncio.Event | None = None
        self._body_read = False
        self._gone = False
        self.disconnected = False
        self.response_complete = False

    def arm(self) -> None:
        """The body is read (or there is none): watch for the client going away from a moment on."""
        self._body_read = True
        if self._timer is None and self._task is not None:
            self._timer = asyncio.get_running_loop().call_later(self.WATCH_AFTER, self.start)

    def start(self) -> None:
        if self._watcher is None and self._task is not None and not self.response_complete:
            self._news = asyncio.Event()
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._watcher is not None and not self._watcher.done():
            self._watcher.cancel()

    async def receive(self) -> Message:
        if self._watcher is None and not self._body_read:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
            elif not message.get("more_body"):
                self.arm()
            return message
        self.start()  # after the body only the watcher reads
        while True:
            if self._unread:
                return self._unread.pop(0)
            if self._gone:
                return {"type": "http.disconnect"}
            assert self._news is not None
            self._news.clear()
            await self._news.wait()

    async def _watch(self) -> None:
        assert self._news is not None
        while True:
            message = await self._receive()
            if message["type"] != "http.disconnect":
                self._unread.append(message)  # the (empty) body of a request without one
                self._news.set()
                continue
            self._gone = True
            self._news.set()
            if not self.response_complete and self._task is not None:
                self.disconnected = True
                self._task.cancel()
            return


def _has_body(scope: Scope) -> bool:
    if scope["method"].encode() in _BODYLESS:
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value not in (b"0", b""):
                return True
            if name == b"transfer-encoding":
                return True
        return False
    return True


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            text: str = value.decode("latin-1").strip()
            if 0 < len(text) <= 200 and text.isprintable():
                return text
    return None


def _too_long() -> dict[str, Any]:
    text = f"the URL is longer than {MAX_URL_BYTES} bytes; send long searches as POST [type]/_search"
    return error_outcome(text, "too-long", ErrorCode.URI_TOO_LONG)


async def _send_outcome(send: Send, status: int, outcome: dict[str, Any]) -> None:
    body = dumps(outcome)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/fhir+json; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _send_internal_error(send: Send, request_id: str) -> None:
    outcome = error_outcome(f"internal server error; quote request id {request_id}", "exception", ErrorCode.INTERNAL)
    await _send_outcome(send, 500, outcome)
