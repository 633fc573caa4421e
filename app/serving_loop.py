"""The event loop the server runs on: uvloop, accepting every waiting connection at once.

libuv, under uvloop, accepts one connection per turn of the event loop (since
libuv pull request 3696, "unix: don't accept() connections in a loop") and
leaves the others waiting in the listen queue for later turns.
Under load a turn runs the callbacks of every request in flight, 5 to 28 ms
here, so when a client opens sixteen connections at once the sixteenth is
accepted some fifteen turns after the first: measured under wrk on
PostgreSQL, ``accept4`` calls 4 to 28 ms apart, 180 ms to accept sixteen,
and the first requests of the last connections answered after 105 to 134 ms
while the server's own work on each took 5 to 18 ms (BENCHMARKS.md, "New
connections accepted at once"). Python's own loop accepts up to ``backlog``
connections per readiness (``asyncio.selector_events``), but the server on it
made 6 and 9 % fewer creates a second in two runs.

So the server keeps uvloop and accepts on its own: each listening socket is
watched with ``add_reader``, every connection waiting is accepted in one
callback, and each is handed to uvloop as a transport with
``connect_accepted_socket``, where its requests run as before.

Only for a process that is the only one accepting on its sockets (one
worker). With several workers sharing one listening socket, libuv's one
connection per turn spreads a burst over the workers; accepting all of it
at once would give it to whichever woke first, for as long as its
keep-alive connections last, so ``fhir-server serve`` keeps uvloop's own
server there (``app.cli``).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable, Iterable
from typing import Any

import uvloop

LOG = logging.getLogger("fhir.serving")

# errors accept() reports for the connection it took, not for the listening socket: Linux passes a
# new connection's pending network error on as accept()'s own, and accept(2) asks that these be
# treated as a retry (ECONNABORTED, the client gone while it waited, is ConnectionAbortedError).
# Any other error (out of file descriptors or memory above all) pauses accepting for a moment, as
# asyncio does for those (asyncio.constants.ACCEPT_RETRY_DELAY); the waiting connections stay queued.
CONNECTION_ERRORS = frozenset(
    {
        errno.ENETDOWN,
        errno.EPROTO,
        errno.ENOPROTOOPT,
        errno.EHOSTDOWN,
        errno.ENONET,
        errno.EHOSTUNREACH,
        errno.EOPNOTSUPP,
        errno.ENETUNREACH,
    }
)
ProtocolFactory = Callable[[], asyncio.BaseProtocol]


class BatchAcceptServer(asyncio.AbstractServer):
    """Listening sockets whose waiting connections are all accepted in one callback."""

    retry_delay = 1.0  # seconds without accepting after an error of the listening socket

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sockets: Iterable[socket.socket], factory: ProtocolFactory, batch: int
    ) -> None:
        self._loop = loop
        self._sockets = tuple(sockets)
        self._factory = factory
        self._batch = max(1, batch)
        self._serving = False
        self._connecting: set[asyncio.Task[Any]] = set()

    def start(self) -> None:
        if self._serving:
            return
        self._serving = True
        for sock in self._sockets:
            sock.setblocking(False)
            self._loop.add_reader(sock.fileno(), self.accept_waiting, sock)

    def accept_waiting(self, sock: socket.socket) -> int:
        """Accept the connections waiting on ``sock``, at most ``batch``; how many were accepted."""
        accepted = 0
        for _ in range(self._batch):
            try:
                connection, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as error:
                if isinstance(error, ConnectionAbortedError) or error.errno in CONNECTION_ERRORS:
                    continue  # that connection's own failure, reported by accept(): the next may be fine
                # an error of the listening socket lasts (out of file descriptors or memory above all):
                # raised here, the callback would run again at once, every turn
                LOG.warning(
                    "cannot accept connections (%s); trying again in %g s",
                    errno.errorcode.get(error.errno or 0, error.errno),
                    self.retry_delay,
                )
                self._loop.remove_reader(sock.fileno())
                self._loop.call_later(self.retry_delay, self._resume, sock)
                break
            accepted += 1
            self._hand_over(connection)
        return accepted

    def _hand_over(self, connection: socket.socket) -> None:
        connection.setblocking(False)
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as uvloop's and asyncio's servers do
        task = self._loop.create_task(self._loop.connect_accepted_socket(self._factory, connection))
        self._connecting.add(task)
        task.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Task[Any]) -> None:
        self._connecting.discard(task)
        if not task.cancelled() and task.exception() is not None:
            LOG.error("a connection could not be set up", exc_info=task.exception())

    def _resume(self, sock: socket.socket) -> None:
        if self._serving and sock.fileno() != -1:
            self._loop.add_reader(sock.fileno(), self.accept_waiting, sock)

    def close(self) -> None:
        """Stop accepting and close the listening sockets; connections already accepted go on."""
        if self._serving:
            self._serving = False
            for sock in self._sockets:
                if sock.fileno() != -1:
                    self._loop.remove_reader(sock.fileno())
        for sock in self._sockets:
            sock.close()

    async def wait_closed(self) -> None:
        return None

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return self._sockets

    async def start_serving(self) -> None:
        self.start()

    async def serve_forever(self) -> None:
        self.start()
        await self._loop.create_future()

    def close_clients(self) -> None:
        """Connections are the HTTP server's (uvicorn closes its own at shutdown)."""

    def abort_clients(self) -> None:
        """Connections are the HTTP server's (uvicorn closes its own at shutdown)."""


class BatchAcceptLoop(uvloop.Loop):
    """uvloop, whose plain TCP servers accept every waiting connection at once (``BatchAcceptServer``)."""

    async def create_server(  # type: ignore[override]
        self,
        protocol_factory: ProtocolFactory,
        host: str | None = None,
        port: int | None = None,
        *,
        sock: socket.socket | None = None,
        backlog: int = 100,
        ssl: Any = None,
        start_serving: bool = True,
        **options: Any,
    ) -> asyncio.AbstractServer:
        if ssl is not None or options:  # TLS or options of uvloop's own: its own server
            own: Any = super()  # (its overloads take either host and port or sock)
            server: asyncio.AbstractServer = await own.create_server(
                protocol_factory,
                host,
                port,
                sock=sock,
                backlog=backlog,
                ssl=ssl,
                start_serving=start_serving,
                **options,
            )
            return server
        sockets = [sock] if sock is not None else await self._bound_sockets(host, port)
        for listening in sockets:
            listening.listen(backlog)
        batch_server = BatchAcceptServer(self, sockets, protocol_factory, batch=backlog)
        if start_serving:
            batch_server.start()
        return batch_server

    async def _bound_sockets(self, host: str | None, port: int | None) -> list[socket.socket]:
        """A socket bound to each address of ``host`` (every interface when None), as asyncio binds them."""
        infos = await self.getaddrinfo(
            host or None, port, family=socket.AF_UNSPEC, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        sockets: list[socket.socket] = []
        try:
            for family, kind, proto, _, address in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:  # an IPv6 socket beside an IPv4 one on the same port
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
        except OSError:
            for sock in sockets:
                sock.close()
            raise
        return sockets


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The loop factory ``fhir-server serve`` names to uvicorn for one worker (``app.cli.event_loop``)."""
    return BatchAcceptLoop()
