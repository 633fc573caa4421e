"""A server killed with SIGKILL in the middle of a large transaction leaves all of it or none (PostgreSQL)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.server.process import FHIR, start_server

pytestmark = pytest.mark.server
ENTRIES = 3000


def big_transaction() -> dict:
    entries = [
        {
            "fullUrl": f"urn:uuid:00000000-0000-4000-8000-{n:012d}",
            "resource": {
                "resourceType": "Task",
                "status": "requested",
                "intent": "order",
                "description": f"crash test task {n}",
                **({"partOf": [{"reference": "urn:uuid:00000000-0000-4000-8000-000000000000"}]} if n else {}),
            },
            "request": {"method": "POST", "url": "Task"},
        }
        for n in range(ENTRIES)
    ]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


async def writing_transaction_open(conn: asyncpg.Connection, *others: int) -> bool:
    """True while another session (not ``conn``'s, nor the pids in ``others``) holds a transaction that
    has written: one with a transaction id."""
    count = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND pid <> ALL($1::int[])",
        [conn.get_server_pid(), *others],
    )
    return bool(count)


async def task_count(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM resources WHERE resource_type = 'Task'"))
    finally:
        await conn.close()


async def test_sigkill_mid_transaction_leaves_all_or_nothing(database_url: str, tmp_path: Path) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("the crash test watches PostgreSQL's sessions")
    dsn = database_url.replace("postgresql+asyncpg", "postgresql")
    server = start_server(database_url, tmp_path / "first.log")
    body = big_transaction()
    watcher = await asyncpg.connect(dsn)
    # The history table is held in SHARE mode, so the transaction stops at its first history row, after
    # it has written its first current rows: the kill always lands while it is writing, however fast
    # the machine (a 3,000-entry transaction writes for about 0.2 s, which a watcher can miss).
    blocker = await asyncpg.connect(dsn)
    held = blocker.transaction()
    await held.start()
    await blocker.execute("LOCK TABLE resource_history IN SHARE MODE")
    try:
        async with httpx.AsyncClient(base_url=server.base, timeout=120) as client:
            request = asyncio.create_task(client.post("/fhir", json=body, headers=FHIR))
            for _ in range(6000):
                if await writing_transaction_open(watcher, blocker.get_server_pid()):
                    break
                if request.done():
                    pytest.fail(f"the transaction ended before it was seen writing: {request.result().status_code}")
                await asyncio.sleep(0.01)
            else:
                pytest.fail("the transaction never started writing")
            server.process.send_signal(signal.SIGKILL)
            server.process.wait(timeout=30)
            with pytest.raises(httpx.HTTPError):
                await request
    finally:
        await held.rollback()
        await blocker.close()
    # PostgreSQL ends the killed server's session and rolls its transaction back
    for _ in range(100):
        if not await writing_transaction_open(watcher):
            break
        await asyncio.sleep(0.05)
    await watcher.close()
    assert await task_count(dsn) in (0, ENTRIES)  # killed while writing: in practice 0
    killed_mid_write = await task_count(dsn)
    restarted = start_server(database_url, tmp_path / "second.log")
    try:
        async with httpx.AsyncClient(base_url=restarted.base, timeout=120) as client:
            response = await client.post("/fhir", json=body, headers={**FHIR, "Prefer": "return=minimal"})
            assert response.status_code == 200, response.text[:500]
            assert len(response.json()["entry"]) == ENTRIES
        assert await task_count(dsn) == killed_mid_write + ENTRIES
    finally:
        restarted.process.send_signal(signal.SIGTERM)
        try:
            restarted.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            restarted.process.kill()
