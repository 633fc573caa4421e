"""aiosqlite connections that run SQLite calls on the event loop thread.

aiosqlite hands every call (cursor, execute, fetch, close, commit) to a worker
thread and back: about a dozen thread hand-offs per FHIR read, which measured
2.7 ms of CPU per read here, most of it switching. SQLite calls on a local
file take microseconds, so within one server process it is cheaper to make
them directly. This subclass keeps aiosqlite's API (which SQLAlchemy's
``sqlite+aiosqlite`` dialect drives) but executes inline.

Only safe when nothing else holds SQLite's write lock for long: one server
process, whose writers already queue on an asyncio lock (see
``Database.write``). With several worker processes the server uses plain
aiosqlite, so a busy wait never blocks the event loop.

A few transactions are too large to run inline: a 9 MB resource's insert,
index rows and commit, or its deletion, take SQLite most of a second, during
which the loop would answer no one. ``run_off_loop`` hands the rest of such a
transaction's statements and its commit to a worker thread (``sqlite3``
releases the GIL while SQLite works), until it commits or rolls back. Only
calls that run SQLite once go there (``OFF_LOOP_CALLS``): ``executemany`` and
the fetches step SQLite once per row and give up the GIL at each step, and a
thread that does so while the loop is busy waits up to the 5 ms switch
interval for it every time (a convoy: a 3,000-resource ``$reindex`` took 40 s
instead of 10). They stay on the loop, in chunks (``app.storage.batch_insert``).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Generator
from functools import partial
from pathlib import Path
from typing import Any

import aiosqlite

# sqlite3 calls that run SQLite once (a statement's first step; a commit): the ones ``run_off_loop`` sends
# to a worker thread
OFF_LOOP_CALLS = frozenset({"execute", "commit", "rollback"})


class _InlineQueue:
    """Stands in for the worker thread's queue: runs each call at once.

    SQLAlchemy's adapter puts some calls (setting ``isolation_level``) on the
    queue directly rather than through ``_execute``.
    """

    def put_nowait(self, item: tuple[Any, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except BaseException as exc:  # handed to the awaiting side, as the worker thread does
            if future is not None and not future.done():
                future.set_exception(exc)
            return
        if future is not None and not future.done():
            future.set_result(result)


class InlineConnection(aiosqlite.Connection):
    """An ``aiosqlite.Connection`` without the worker thread."""

    def __init__(self, connector: Callable[[], sqlite3.Connection], iter_chunk_size: int) -> None:
        super().__init__(connector, iter_chunk_size)
        self._tx = _InlineQueue()  # type: ignore[assignment]
        self._off_loop = False  # the open transaction's calls run in a worker thread until it ends

    @property
    def off_loop(self) -> bool:
        """Whether the open transaction's calls have been sent to a worker thread (``run_off_loop``)."""
        return self._off_loop

    @property
    def sqlite_connection(self) -> sqlite3.Connection | None:
        """The ``sqlite3`` connection itself, for statements made without aiosqlite (``app.storage.sqlite_direct``)."""
        return self._connection

    def run_off_loop(self) -> None:
        """Run this connection's calls in a worker thread until its transaction commits or rolls back."""
        self._off_loop = True

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        if self._off_loop and getattr(fn, "__name__", None) in OFF_LOOP_CALLS:
            return await _in_worker_thread(partial(fn, *args, **kwargs))
        return fn(*args, **kwargs)

    async def commit(self) -> None:
        try:
            await super().commit()
        finally:
            self._off_loop = False

    async def rollback(self) -> None:
        try:
            await super().rollback()
        finally:
            self._off_loop = False

    async def _connect(self) -> InlineConnection:
        if self._connection is None:
            self._connection = self._connector()
        return self

    def __await__(self) -> Generator[Any, None, InlineConnection]:
        return self._connect().__await__()

    def stop(self) -> None:
        self._off_loop = False
        self._running = False
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def close(self) -> None:
        self.stop()


async def _in_worker_thread(call: Callable[[], Any]) -> Any:
    """``call()`` in the default executor, awaited to its end even when the caller is cancelled: the
    connection must not be used (a rollback on cancellation) while the thread still runs on it."""
    future = asyncio.get_running_loop().run_in_executor(None, call)
    cancelled: asyncio.CancelledError | None = None
    while not future.done():
        try:
            await asyncio.wait((future,))
        except asyncio.CancelledError as error:
            cancelled = error
    if cancelled is not None:
        raise cancelled
    return future.result()


def connect_inline(database: str | Path, **kwargs: Any) -> InlineConnection:
    """Drop-in for ``aiosqlite.connect`` (SQLAlchemy's ``async_creator_fn``)."""
    kwargs.pop("iter_chunk_size", None)
    kwargs["check_same_thread"] = False
    location = str(database)

    def connector() -> sqlite3.Connection:
        connection: sqlite3.Connection = sqlite3.connect(location, **kwargs)
        return connection

    return InlineConnection(connector, 64)
