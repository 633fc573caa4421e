"""Storage fixtures: a database in each connection mode the server uses."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.storage.database import Database


@pytest.fixture(params=["threaded", "inline"])
async def db(database_url: str, request: pytest.FixtureRequest) -> AsyncIterator[Database]:
    """On SQLite both connection modes: aiosqlite's worker thread and inline calls (a module needing
    one mode only defines its own ``db``)."""
    if request.param == "inline" and not database_url.startswith("sqlite"):
        pytest.skip("inline mode exists only for SQLite")
    database = Database.from_url(database_url, sqlite_inline=request.param == "inline")
    yield database
    await database.dispose()
