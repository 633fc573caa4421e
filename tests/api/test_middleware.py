"""The outermost middleware at the ASGI seam: disconnects cancel the request, HEAD has no body, long URLs 414."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
import pytest
from starlette.requests import Request
from starlette.responses import Response

from app.api.middleware import MAX_URL_BYTES, RequestLogMiddleware


def scope(
    method: str = "GET", path: str = "/fhir/Patient", query: bytes = b"", headers: list[Any] | None = None
) -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "headers": headers or [],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("testserver", 80),
    }


class Peer:
    """An HTTP server's side of one request: scripted incoming messages, recorded outgoing ones."""

    def __init__(self, incoming: list[dict[str, Any]], disconnect_after: float | None = None) -> None:
        self.incoming = list(incoming)
        self.disconnect_after = disconnect_after
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        if self.incoming:
            return self.incoming.pop(0)
        if self.disconnect_after is None:
            await asyncio.Event().wait()
        await asyncio.sleep(self.disconnect_after or 0)
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def status(self) -> int | None:
        starts = [m for m in self.sent if m["type"] == "http.response.start"]
        return starts[0]["status"] if starts else None

    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


async def test_a_disconnect_cancels_the_request(caplog: pytest.LogCaptureFixture) -> None:
    cancelled = asyncio.Event()

    async def slow_app(scope: Any, receive: Any, send: Any) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    peer = Peer([{"type": "http.request", "body": b"", "more_body": False}], disconnect_after=0.05)
    caplog.set_level(logging.INFO)
    started = asyncio.get_running_loop().time()
    await RequestLogMiddleware(slow_app)(scope(), peer.receive, peer.send)
    assert asyncio.get_running_loop().time() - started < 2
    assert cancelled.is_set()
    assert peer.status() is None  # nobody to answer
    records = [orjson.loads(r.getMessage()) for r in caplog.records if r.name == "fhir.access"]
    assert records[-1]["status"] == 499
    assert not [r for r in caplog.records if r.name == "fhir.errors"]


async def test_a_disconnect_after_the_body_of_a_post_cancels_too() -> None:
    read = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        body = await Request(scope, receive).body()
        assert body == b"abc"
        read.set()
        await asyncio.sleep(30)

    peer = Peer(
        [
            {"type": "http.request", "body": b"ab", "more_body": True},
            {"type": "http.request", "body": b"c", "more_body": False},
        ],
        disconnect_after=0.05,
    )
    await RequestLogMiddleware(app)(scope("POST", headers=[(b"content-length", b"3")]), peer.receive, peer.send)
    assert read.is_set()


async def test_a_client_gone_while_sending_the_body_is_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await Request(scope, receive).body()  # raises ClientDisconnect

    peer = Peer([{"type": "http.request", "body": b"ab", "more_body": True}, {"type": "http.disconnect"}])
    caplog.set_level(logging.INFO)
    await RequestLogMiddleware(app)(scope("POST", headers=[(b"content-length", b"100")]), peer.receive, peer.send)
    assert not [r for r in caplog.records if r.name == "fhir.errors"]
    assert orjson.loads([r for r in caplog.records if r.name == "fhir.access"][-1].getMessage())["status"] == 499


async def test_a_finished_response_is_not_cancelled() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await Response(b'{"ok":true}', media_type="application/json")(scope, receive, send)

    peer = Peer([{"type": "http.request", "body": b"", "more_body": False}], disconnect_after=0)
    await RequestLogMiddleware(app)(scope(), peer.receive, peer.send)
    assert peer.status() == 200
    assert peer.body() == b'{"ok":true}'


async def test_head_answers_carry_no_body() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await Response(b"0123456789", media_type="application/fhir+json")(scope, receive, send)

    peer = Peer([{"type": "http.request", "body": b"", "more_body": False}], disconnect_after=0)
    await RequestLogMiddleware(app)(scope("HEAD"), peer.receive, peer.send)
    start = next(m for m in peer.sent if m["type"] == "http.response.start")
    assert (b"content-length", b"10") in start["headers"]
    assert peer.body() == b""


async def test_overlong_urls_are_414_before_routing() -> None:
    reached = False

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal reached
        reached = True

    peer = Peer([{"type": "http.request", "body": b"", "more_body": False}], disconnect_after=0)
    await RequestLogMiddleware(app)(scope(query=b"name=" + b"a" * MAX_URL_BYTES), peer.receive, peer.send)
    assert peer.status() == 414
    assert orjson.loads(peer.body())["issue"][0]["code"] == "too-long"
    assert not reached


async def test_unexpected_errors_are_a_logged_500_without_details(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("secret internal detail")

    peer = Peer([{"type": "http.request", "body": b"", "more_body": False}], disconnect_after=None)
    await RequestLogMiddleware(app)(scope(), peer.receive, peer.send)
    assert peer.status() == 500
    assert b"secret" not in peer.body()
    assert [r for r in caplog.records if r.name == "fhir.errors"]
