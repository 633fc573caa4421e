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
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import aiosqlite


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

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        return fn(*args, **kwargs)

    async def _connect(self) -> InlineConnection:
        if self._connection is None:
            self._connection = self._connector()
        return self

    def __await__(self) -> Generator[Any, None, InlineConnection]:
        return self._connect().__await__()

    def stop(self) -> None:
        self._running = False
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def close(self) -> None:
        self.stop()


def connect_inline(database: str | Path, **kwargs: Any) -> InlineConnection:
    """Drop-in for ``aiosqlite.connect`` (SQLAlchemy's ``async_creator_fn``)."""
    kwargs.pop("iter_chunk_size", None)
    kwargs["check_same_thread"] = False
    location = str(database)

    def connector() -> sqlite3.Connection:
        connection: sqlite3.Connection = sqlite3.connect(location, **kwargs)
        return connection

    return InlineConnection(connector, 64)
