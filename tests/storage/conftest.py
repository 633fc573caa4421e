"""Storage fixtures: a database in each connection mode the server uses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from app.interactions.context import utc_now
from app.storage.database import Database
from app.storage.repository import StoredVersion, read_current


@pytest.fixture(params=["threaded", "inline"])
async def db(database_url: str, request: pytest.FixtureRequest) -> AsyncIterator[Database]:
    """On SQLite both connection modes: aiosqlite's worker thread and inline calls (a module needing
    one mode only defines its own ``db``)."""
    if request.param == "inline" and not database_url.startswith("sqlite"):
        pytest.skip("inline mode exists only for SQLite")
    database = Database.from_url(database_url, sqlite_inline=request.param == "inline")
    yield database
    await database.dispose()


async def cancel_until_done(task: asyncio.Task[object], pause: float = 0.0) -> int:
    """Cancel ``task`` again at every pass (``pause`` seconds apart) until it ends, as anyio's cancel
    scopes do under Starlette; how many cancellations it took."""
    cancels = 0
    while not task.done():
        task.cancel()
        cancels += 1
        await asyncio.sleep(pause)
    return cancels


@pytest.fixture
async def inline(database_url: str, backend: str) -> AsyncIterator[Database]:
    """SQLite with its calls on the event loop thread (``app.storage.sqlite_inline``)."""
    if backend != "sqlite":
        pytest.skip("inline mode exists only for SQLite")
    database = Database.from_url(database_url, sqlite_inline=True)
    yield database
    await database.dispose()


def task_version(resource_id: str) -> StoredVersion:
    """Version 1 of an empty Task, as a PUT stores it."""
    return StoredVersion("Task", resource_id, 1, utc_now(), False, b"{}", "PUT")


async def stored_task_ids(db: Database, candidates: list[str]) -> set[str]:
    """Which of the ``candidates`` are stored Tasks, read in a read scope."""
    async with db.read() as conn:
        return {rid for rid in candidates if await read_current(conn, "Task", rid) is not None}
