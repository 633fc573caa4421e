"""The queue of SQLite writers in one process: first come, first served, except that urgent writers go
first.

SQLite takes one writer at a time, so each process queues its write
transactions on an asyncio lock rather than spinning on ``SQLITE_BUSY``
(``app.storage.database``). Under load that queue holds every client's
write; a short bookkeeping write that others wait on (the Subscriptions
dispatcher's lease and outcome records, which stand between a committed
event and its notification) would wait behind all of them. An urgent
writer is served before the waiting ordinary ones, never before the writer
holding the lock.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class WriterQueue:
    """A mutual-exclusion lock with two waiting lines; the lock passes directly to the next waiter."""

    def __init__(self) -> None:
        self._held = False
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._ordinary: deque[asyncio.Future[None]] = deque()

    @property
    def held(self) -> bool:
        return self._held

    @asynccontextmanager
    async def hold(self, urgent: bool = False) -> AsyncIterator[None]:
        await self._acquire(urgent)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, urgent: bool) -> None:
        if not self._held:
            self._held = True
            return
        line = self._urgent if urgent else self._ordinary
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        line.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # the lock was handed over as the wait was cancelled
                self._release()
            elif turn in line:  # (a release may already have passed over it)
                line.remove(turn)
            raise

    def _release(self) -> None:
        for line in (self._urgent, self._ordinary):
            while line:
                turn = line.popleft()
                if not turn.done():
                    turn.set_result(None)  # still held: it is the next writer's now
                    return
        self._held = False
