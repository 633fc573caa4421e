"""The server's rest-hook sender (aiohttp) against a real HTTP server on the loopback interface: what
arrives, what each kind of answer or failure comes to, the timeout, redirects never followed, and
connections kept alive only when an answer was read to its end."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from app.subscriptions.sender import ANSWER_BYTES, USER_AGENT, AiohttpSender


@dataclass
class Arrival:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    connection: int  # which TCP connection brought it (1, 2 ... in the order they were opened)


@dataclass
class Endpoint:
    """An HTTP/1.1 endpoint whose answer depends on the path: ``/ok`` 200, ``/fail`` 500, ``/moved`` 302 to
    ``/elsewhere``, ``/cookie`` 200 setting a cookie, ``/slow`` 200 after two seconds, ``/big`` 200 with a
    body larger than the sender reads."""

    port: int
    arrivals: list[Arrival] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    connections = iter(range(1, 1000))

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            self.connection_number = next(connections)

        def _answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = list(self.headers.items())
            found.arrivals.append(Arrival(self.command, self.path, headers, body, self.connection_number))
            if self.path == "/slow":
                time.sleep(2)
            status, extra, answer = {
                "/fail": (500, [], b"{}"),
                "/moved": (302, [("Location", found.url("/elsewhere"))], b""),
                "/cookie": (200, [("Set-Cookie", "session=abc; Path=/")], b""),
                "/big": (200, [], b"x" * (4 * ANSWER_BYTES)),
            }.get(self.path, (200, [], b""))
            self.send_response(status)
            for name, value in extra:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        do_POST = do_PUT = do_DELETE = _answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: object, client_address: object) -> None:
            pass  # the sender hanging up on a slow or oversized answer, as it should

    server = Server(("127.0.0.1", 0), Handler)
    found = Endpoint(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield found
    server.shutdown()
    server.server_close()


@pytest.fixture
async def sender() -> AsyncIterator[AiohttpSender]:
    opened = AiohttpSender()
    yield opened
    await opened.aclose()


async def test_an_empty_post_carries_the_channel_headers_as_given_and_no_content_type(
    endpoint: Endpoint, sender: AiohttpSender
) -> None:
    headers = {"Authorization": "Bearer secret-token", "X-Event-Id": "s1/1"}
    outcome = await sender.send(httpx.Request("POST", endpoint.url("/ok"), headers=headers, content=b""), 5.0)
    assert (outcome.delivered, outcome.detail) == (True, "HTTP 200")
    (arrival,) = endpoint.arrivals
    assert (arrival.method, arrival.path, arrival.body) == ("POST", "/ok", b"")
    names = [name for name, _ in arrival.headers]
    assert ("Authorization", "Bearer secret-token") in arrival.headers and ("X-Event-Id", "s1/1") in arrival.headers
    assert ("Content-Length", "0") in arrival.headers and ("User-Agent", USER_AGENT) in arrival.headers
    assert "Content-Type" not in names and names.count("Host") == 1 and names.count("Content-Length") == 1
    assert "secret-token" not in outcome.detail


async def test_a_resource_is_put_byte_for_byte_with_its_content_type(endpoint: Endpoint, sender: AiohttpSender) -> None:
    body = b'{"resourceType":"Task","id":"t1","status":"requested","note":[{"text":"caf\\u00e9"}]}'
    headers = {"Content-Type": "application/fhir+json"}
    request = httpx.Request("PUT", endpoint.url("/Task/t1"), headers=headers, content=body)
    outcome = await sender.send(request, 5.0)
    assert outcome.delivered
    (arrival,) = endpoint.arrivals
    assert (arrival.method, arrival.path, arrival.body) == ("PUT", "/Task/t1", body)
    assert ("Content-Type", "application/fhir+json") in arrival.headers


async def test_a_non_2xx_answer_is_a_failure_naming_its_status(endpoint: Endpoint, sender: AiohttpSender) -> None:
    outcome = await sender.send(httpx.Request("DELETE", endpoint.url("/fail")), 5.0)
    assert (outcome.delivered, outcome.detail) == (False, "HTTP 500")


async def test_a_redirect_is_not_followed(endpoint: Endpoint, sender: AiohttpSender) -> None:
    outcome = await sender.send(httpx.Request("POST", endpoint.url("/moved"), content=b""), 5.0)
    assert (outcome.delivered, outcome.detail) == (False, "HTTP 302 (redirects are not followed)")
    assert [arrival.path for arrival in endpoint.arrivals] == ["/moved"]


async def test_an_endpoint_slower_than_the_timeout_fails_the_attempt_when_the_timeout_ends(
    endpoint: Endpoint, sender: AiohttpSender
) -> None:
    started = time.monotonic()
    outcome = await sender.send(httpx.Request("POST", endpoint.url("/slow"), content=b""), 0.3)
    assert (outcome.delivered, outcome.detail) == (False, "timeout")
    assert 250 <= outcome.milliseconds < 1500 and time.monotonic() - started < 1.5


async def test_a_refused_connection_is_a_failure_naming_the_kind_of_error(sender: AiohttpSender) -> None:
    with socket.socket() as probe:  # a port nothing listens on: bound, never listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        outcome = await sender.send(httpx.Request("POST", f"http://127.0.0.1:{port}/hooks", content=b""), 5.0)
    assert (outcome.delivered, outcome.detail) == (False, "connection failed (ClientConnectorError)")


async def test_a_connection_is_reused_after_a_read_answer_and_closed_after_an_oversized_one(
    endpoint: Endpoint, sender: AiohttpSender
) -> None:
    for path in ("/ok", "/ok", "/big", "/ok"):
        outcome = await sender.send(httpx.Request("POST", endpoint.url(path), content=b""), 5.0)
        assert outcome.delivered
    # the two first share a connection; the oversized answer's connection is not given back
    assert [arrival.connection for arrival in endpoint.arrivals] == [1, 1, 1, 2]


async def test_no_cookie_an_answer_sets_is_sent_again(endpoint: Endpoint, sender: AiohttpSender) -> None:
    """One receiver's Set-Cookie must never travel with a later notification (for any subscriber); a
    host name, not an address, since cookies are never kept for addresses anyway."""
    for path in ("/cookie", "/ok"):
        request = httpx.Request("POST", f"http://localhost:{endpoint.port}{path}", content=b"")
        assert (await sender.send(request, 5.0)).delivered
    assert [arrival.path for arrival in endpoint.arrivals] == ["/cookie", "/ok"]
    assert all(name.lower() != "cookie" for arrival in endpoint.arrivals for name, _ in arrival.headers)


async def test_the_endpoints_url_arrives_as_encoded_not_requoted(endpoint: Endpoint, sender: AiohttpSender) -> None:
    path = "/hooks/a%3Db%26c%40d/%2E%2E/e?sig=x%2Fy%3Az&next=%3F"
    assert (await sender.send(httpx.Request("POST", endpoint.url(path), content=b""), 5.0)).delivered
    assert [arrival.path for arrival in endpoint.arrivals] == [path]


async def test_a_header_value_no_request_can_carry_is_a_recorded_failure(
    endpoint: Endpoint, sender: AiohttpSender
) -> None:
    request = httpx.Request("POST", endpoint.url("/ok"), headers={"X-Note": "a\x01b"}, content=b"")
    outcome = await sender.send(request, 5.0)
    assert (outcome.delivered, outcome.detail) == (False, "invalid request (ValueError)")
    assert endpoint.arrivals == []
