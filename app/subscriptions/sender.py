"""Sending one rest-hook notification over HTTP: the network seam of delivery.

The dispatcher builds each notification as an ``httpx.Request`` (a plain
value: method, URL, headers, body; ``app.subscriptions.rest_hook``) and
hands it to a ``Sender`` with the seconds it may take. The server's sender
is ``AiohttpSender``; the tests give the dispatcher one that answers
through httpx's ``MockTransport`` (tests/subscriptions/conftest.py), and
test this one against a real HTTP server (tests/subscriptions/test_sender.py).

Why aiohttp, not httpx's own client: on the 2-core machine of BENCHMARKS.md
an httpx POST to a keep-alive receiver costs about 800 us of CPU and
aiohttp's about 190 us. Delivery runs in the server's processes (in the
worker itself on SQLite), and with httpx it was about two fifths of what a
notification costs them.

What an attempt comes to (``Outcome``):
- any 2xx answer is a delivery; any other, redirects included (never
  followed: a redirect to a private address would bypass
  ``app.subscriptions.endpoints``), is a failure to retry;
- ``timeout`` bounds the whole attempt, from connecting to the end of the
  answer (the Backport IG's ``backport-timeout``: "the maximum amount of
  time a server will wait before failing a notification");
- the answer's body is read up to 64 KiB and dropped: nothing in it is
  used, and an endpoint must not make the server hold an unbounded body
  (the connection is closed rather than reused when more was sent).
The session keeps no cookies: an answer's ``Set-Cookie`` never reaches
another notification. The endpoint's URL goes out as httpx encoded it,
not re-quoted. Header values are never logged or recorded (they often
carry credentials); an outcome's detail names only the status or the kind
of error.
"""

from __future__ import annotations

import time
from typing import Protocol

import aiohttp
import httpx
import yarl

from app.subscriptions.rest_hook import Outcome

USER_AGENT = "care-plan-repository"
ANSWER_BYTES = 64 * 1024  # of an answer's body read (and dropped) before the connection is given back
REDIRECTS = frozenset({301, 302, 303, 307, 308})
# set by aiohttp from the URL and the body; copying httpx's values would send them twice
_SET_BY_CLIENT = frozenset({b"host", b"content-length", b"transfer-encoding"})


class Sender(Protocol):
    """Sends a notification and says what came of it; never raises for a network failure."""

    async def send(self, request: httpx.Request, timeout: float) -> Outcome: ...

    async def aclose(self) -> None: ...


def answered(status: int, location: str | None, started: float) -> Outcome:
    """The outcome of an attempt that got an HTTP answer (``started``: ``time.monotonic()`` before it)."""
    detail = f"HTTP {status}"
    if status in REDIRECTS and location:
        detail += " (redirects are not followed)"
    return Outcome(200 <= status < 300, detail, since(started))


def since(started: float) -> int:
    """Milliseconds from ``started`` (``time.monotonic()``) to now."""
    return round((time.monotonic() - started) * 1000)


class AiohttpSender:
    """The server's sender: one aiohttp session (keep-alive connections per endpoint) per process.

    The session is opened at the first notification, inside the event loop that uses it (aiohttp binds
    a session to its loop), with httpx's trust store (certifi's CAs, as the rest of the server's
    outgoing HTTPS) and no proxy from the environment."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def _opened(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=httpx.create_ssl_context(trust_env=False))
            self._session = aiohttp.ClientSession(
                connector=connector,
                # no cookies kept: one receiver's Set-Cookie must never travel to another subscriber
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"User-Agent": USER_AGENT},
                # no made-up Content-Type on an empty POST; answers are read raw, never decompressed
                skip_auto_headers=("Content-Type", "Accept-Encoding"),
                auto_decompress=False,
                trust_env=False,
            )
        return self._session

    async def send(self, request: httpx.Request, timeout: float) -> Outcome:
        started = time.monotonic()
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in request.headers.raw
            if name.lower() not in _SET_BY_CLIENT
        ]
        try:
            async with self._opened().request(
                request.method,
                yarl.URL(str(request.url), encoded=True),  # as httpx encoded it: sent byte for byte
                data=request.content or None,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                await _drain(response.content)
                return answered(response.status, response.headers.get("Location"), started)
        except TimeoutError:
            return Outcome(False, "timeout", since(started))
        except aiohttp.ClientError as exc:
            return Outcome(False, f"connection failed ({type(exc).__name__})", since(started))
        except ValueError as exc:  # a request aiohttp will not write (a header value refused since it was stored)
            return Outcome(False, f"invalid request ({type(exc).__name__})", since(started))

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _drain(body: aiohttp.StreamReader) -> None:
    """Read and drop up to ``ANSWER_BYTES`` of an answer's body: a connection is reused only when its
    answer was read to the end."""
    left = ANSWER_BYTES
    while left > 0:
        chunk = await body.read(left)
        if not chunk:
            return
        left -= len(chunk)
