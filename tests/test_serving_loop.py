"""The server's event loop accepts every waiting connection in one turn (``app.serving_loop``)."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvloop

from app.serving_loop import BatchAcceptServer, new_event_loop

CONNECTIONS = 16


class Echo(asyncio.Protocol):
    """Answers each read with the same bytes, and keeps the connections made and whether each sends
    its writes at once (``TCP_NODELAY``)."""

    made: list[asyncio.BaseTransport]
    no_delay: list[int]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        Echo.made.append(transport)
        Echo.no_delay.append(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def no_connections_yet() -> None:
    Echo.made = []
    Echo.no_delay = []


@contextmanager
def running(loop: asyncio.AbstractEventLoop) -> Iterator[asyncio.AbstractEventLoop]:
    try:
        yield loop
    finally:
        for transport in Echo.made:
            transport.close()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()


def turns_until(loop: asyncio.AbstractEventLoop, done: Callable[[], bool], timeout: float = 5.0) -> int:
    """Run ``loop`` until ``done()``; how many turns of the loop that took (a callback that schedules
    itself again runs once per turn)."""
    turns = 0

    def count() -> None:
        nonlocal turns
        turns += 1
        if not done():
            loop.call_soon(count)

    async def wait() -> None:
        loop.call_soon(count)
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(Echo.made)} connections made after {turns} turns")
            await asyncio.sleep(0)

    loop.run_until_complete(wait())
    return turns


def open_clients(port: int, count: int = CONNECTIONS) -> list[socket.socket]:
    """``count`` connections the kernel has completed, waiting in the listen queue to be accepted."""
    return [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]


def port_of(server: asyncio.AbstractServer) -> int:
    return int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]


def test_every_waiting_connection_is_accepted_in_one_turn_of_the_loop() -> None:
    with running(new_event_loop()) as loop:
        server = loop.run_until_complete(loop.create_server(Echo, "127.0.0.1", 0))
        assert isinstance(server, BatchAcceptServer)
        clients = open_clients(port_of(server))
        turns = turns_until(loop, lambda: len(Echo.made) == CONNECTIONS)
        # one turn accepts all sixteen; setting up their transports takes a turn or two more
        assert turns <= 4, turns
        for client in clients:
            client.close()
        server.close()


def test_uvloops_own_server_accepts_one_connection_a_turn() -> None:
    """Why ``app.serving_loop`` exists: when this fails, uvloop accepts in batches again and the
    module can go."""
    with running(uvloop.new_event_loop()) as loop:
        server = loop.run_until_complete(loop.create_server(Echo, "127.0.0.1", 0))
        clients = open_clients(port_of(server))
        turns = turns_until(loop, lambda: len(Echo.made) == CONNECTIONS)
        assert turns >= CONNECTIONS, turns
        for client in clients:
            client.close()
        server.close()


def test_accepted_connections_carry_data_both_ways() -> None:
    with running(new_event_loop()) as loop:
        server = loop.run_until_complete(loop.create_server(Echo, "127.0.0.1", 0))
        port = port_of(server)

        async def exchange(text: bytes) -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(text)
            answer = await reader.readexactly(len(text))
            writer.close()
            return answer

        async def all_of_them() -> list[bytes]:
            return await asyncio.gather(*(exchange(f"client {n}".encode()) for n in range(CONNECTIONS)))

        assert loop.run_until_complete(all_of_them()) == [f"client {n}".encode() for n in range(CONNECTIONS)]
        assert Echo.no_delay == [1] * CONNECTIONS
        server.close()


def test_a_closed_server_refuses_new_connections_and_keeps_the_accepted_ones() -> None:
    with running(new_event_loop()) as loop:
        server = loop.run_until_complete(loop.create_server(Echo, "127.0.0.1", 0))
        port = port_of(server)
        (kept,) = open_clients(port, 1)
        turns_until(loop, lambda: len(Echo.made) == 1)
        server.close()
        loop.run_until_complete(server.wait_closed())
        assert not server.is_serving()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1)
        kept.sendall(b"still here")

        async def answer() -> bytes:
            await asyncio.sleep(0.05)
            return kept.recv(100)

        kept.settimeout(1)
        assert loop.run_until_complete(answer()) == b"still here"
        kept.close()


class FailingOnce:
    """A listening socket whose next ``accept`` fails with ``code``, as the kernel reports it."""

    def __init__(self, sock: socket.socket, code: int = errno.EMFILE) -> None:
        self._sock = sock
        self._code = code
        self.failures = 1

    def accept(self) -> tuple[socket.socket, Any]:
        if self.failures:
            self.failures -= 1
            raise OSError(self._code, os.strerror(self._code))
        return self._sock.accept()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


@pytest.mark.parametrize("name", ["EMFILE", "EPERM"])
def test_an_error_of_the_listening_socket_pauses_accepting_then_resumes(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Out of file descriptors (EMFILE), or any error that is not one connection's own: accepting
    pauses for the retry delay instead of failing again every turn."""
    with running(new_event_loop()) as loop:
        listening = socket.create_server(("127.0.0.1", 0))
        failing = FailingOnce(listening, getattr(errno, name))
        server = BatchAcceptServer(loop, [failing], Echo, batch=100)  # type: ignore[list-item]
        server.retry_delay = 0.2
        server.start()
        (client,) = open_clients(listening.getsockname()[1], 1)
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="fhir.serving"):
            turns_until(loop, lambda: len(Echo.made) == 1)
        assert time.monotonic() - started >= 0.2  # the connection waited in the queue for the retry
        assert failing.failures == 0
        assert caplog.text.count(f"cannot accept connections ({name}); trying again in 0.2 s") == 1
        client.close()
        server.close()


@pytest.mark.parametrize("code", [errno.EPROTO, errno.ENETUNREACH])
def test_a_network_error_of_one_connection_does_not_pause_the_others(
    code: int, caplog: pytest.LogCaptureFixture
) -> None:
    """accept(2): Linux reports a new connection's pending network error as accept's own, to be
    treated as a retry, not as a fault of the listening socket."""
    with running(new_event_loop()) as loop:
        listening = socket.create_server(("127.0.0.1", 0))
        listening.setblocking(False)  # as start() sets it: the accepting ends when the queue is empty
        failing = FailingOnce(listening, code)
        server = BatchAcceptServer(loop, [failing], Echo, batch=100)  # type: ignore[list-item]
        clients = open_clients(listening.getsockname()[1], 2)
        with caplog.at_level(logging.WARNING, logger="fhir.serving"):
            assert server.accept_waiting(failing) == 2  # type: ignore[arg-type]
        assert failing.failures == 0
        assert "cannot accept" not in caplog.text
        for client in clients:
            client.close()
        server.close()
