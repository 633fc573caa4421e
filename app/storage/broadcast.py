"""Short messages to every server process sharing a database: PostgreSQL ``LISTEN``/``NOTIFY``; on
SQLite (one server process) straight to this process's listeners.

Used to reach a websocket client bound to another process
(``app.subscriptions.websocket``). A message is a hint, not a record: what
must not be lost is in tables; a process that is not listening at the
moment simply misses it. The listening connection is a dedicated asyncpg
connection outside the pool (a pooled one would be handed to requests),
re-opened when it drops.

A write's own statement can carry a message too (``StatementNotice``):
PostgreSQL sends a ``NOTIFY`` when the transaction that issued it commits
and drops it when that rolls back, so the message goes out exactly when the
write is stored, without a statement or a pooled connection of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import ColumnElement, func, literal, select

from app.storage.database import Database

LOG = logging.getLogger("fhir.storage")
RECONNECT_SECONDS = 1.0
MAX_PAYLOAD_BYTES = 7000  # NOTIFY payloads must stay under 8,000 bytes


@dataclass(frozen=True, slots=True)
class StatementNotice:
    """A message on ``channel`` sent by the statement that evaluates ``expression()`` once its
    transaction commits (postgresql.org/docs/15/sql-notify.html: never for a rollback; the same
    message issued several times in one transaction is delivered once)."""

    channel: str
    message: str

    def expression(self) -> ColumnElement[Any]:
        return func.pg_notify(literal(self.channel), literal(self.message))


class Broadcast:
    """One named channel of messages to all processes (see the module docstring)."""

    def __init__(self, db: Database, channel: str) -> None:
        self.db = db
        self.channel = channel
        self._listeners: list[Callable[[str], None]] = []
        self._watch: asyncio.Task[None] | None = None
        self._connection: asyncpg.Connection | None = None
        self.listening = asyncio.Event()
        self._sending: set[asyncio.Task[None]] = set()

    def listen(self, callback: Callable[[str], None]) -> None:
        """Call ``callback`` with every message published by any process (from now on)."""
        self._listeners.append(callback)

    async def start(self) -> None:
        if self.db.dialect != "postgresql":
            self.listening.set()
            return
        self._watch = asyncio.create_task(self._stay_connected())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):  # not wait_for, which can lose a cancellation on Python 3.11
                await self.listening.wait()

    async def publish(self, message: str) -> None:
        if len(message.encode()) > MAX_PAYLOAD_BYTES:
            raise ValueError("a broadcast message must stay under 7,000 bytes")
        if self.db.dialect != "postgresql":
            self._deliver(message)
            return
        async with self.db.read() as conn:
            await conn.execute(select(StatementNotice(self.channel, message).expression()))

    def statement_notice(self, message: str) -> StatementNotice | None:
        """``message``, to be sent by a statement of a write (PostgreSQL); None on SQLite, where the
        listeners are in this process and are called after the commit instead (``publish``)."""
        return StatementNotice(self.channel, message) if self.db.dialect == "postgresql" else None

    def announce(self, message: str) -> None:
        """``publish`` from synchronous code (an after-commit callback): sent in the background."""
        task = asyncio.get_running_loop().create_task(self._publish_quietly(message))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _publish_quietly(self, message: str) -> None:
        try:
            await self.publish(message)
        except Exception:  # a hint lost: the receivers' poll catches up
            LOG.exception("a broadcast message could not be sent")

    async def close(self) -> None:
        await asyncio.gather(*self._sending, return_exceptions=True)
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        if self._connection is not None and not self._connection.is_closed():
            await self._connection.close()

    def _deliver(self, message: str) -> None:
        for callback in self._listeners:
            try:
                callback(message)
            except Exception:  # one listener's failure must not silence the others
                LOG.exception("a broadcast listener failed")

    def _on_notify(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        self._deliver(payload)

    async def _stay_connected(self) -> None:
        dsn = self.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while True:
            try:
                self._connection = await asyncpg.connect(dsn)
                await self._connection.add_listener(self.channel, self._on_notify)
                self.listening.set()
                while not self._connection.is_closed():
                    await asyncio.sleep(RECONNECT_SECONDS)
            except (OSError, asyncpg.PostgresError) as exc:
                LOG.warning("listening for %s failed (%s); retrying", self.channel, type(exc).__name__)
            self.listening.clear()
            await asyncio.sleep(RECONNECT_SECONDS)
