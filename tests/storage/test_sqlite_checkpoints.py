"""SQLite's WAL is checkpointed in a worker thread every so many writes, not inside a committing write
(``app.storage.sqlite_checkpoints``)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select

from app.storage.database import Database
from app.storage.sqlite_checkpoints import MOST_CATCH_UPS, WAL_BACKSTOP_PRAGMA, WalCheckpoints
from app.storage.writer_queue import WriterQueue

notes = Table("notes", MetaData(), Column("id", Integer, primary_key=True), Column("text", String))


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'wal.sqlite'}")
    async with db.engine.begin() as conn:
        await conn.run_sync(notes.metadata.create_all)
    yield db
    await db.dispose()


async def write_notes(db: Database, count: int) -> None:
    for index in range(count):
        async with db.write() as conn:
            await conn.execute(insert(notes).values(text="x" * 2000 + str(index)))


async def test_a_long_log_is_checkpointed_in_the_background(database: Database) -> None:
    checkpoints = database.checkpoints
    assert checkpoints is not None
    checkpoints.every = 20
    await write_notes(database, 60)
    await checkpoints.wait()
    assert checkpoints.last is not None
    busy, log_frames, copied = checkpoints.last
    assert busy == 0 and log_frames > 0 and copied == log_frames  # every frame back in the database file
    async with database.read() as conn:
        assert len((await conn.execute(select(notes.c.id))).all()) == 60


async def test_a_short_log_is_left_alone(database: Database) -> None:
    checkpoints = database.checkpoints
    assert checkpoints is not None
    await write_notes(database, 5)  # fewer than WRITES_PER_CHECKPOINT
    await checkpoints.wait()
    assert checkpoints.last is None and checkpoints.running is None


async def test_commits_checkpoint_only_past_the_backstop(database: Database) -> None:
    async with database.read() as conn:
        pages = (await conn.exec_driver_sql("PRAGMA wal_autocheckpoint")).scalar_one()
    assert f"PRAGMA wal_autocheckpoint={pages}" == WAL_BACKSTOP_PRAGMA
    assert pages == 16_384


def test_postgresql_has_no_checkpoints_of_ours() -> None:
    assert Database.from_url("postgresql+asyncpg://user@127.0.0.1:1/none").checkpoints is None


class RecordedCheckpoints(WalCheckpoints):
    """Records, for each checkpoint, whether it ran holding this process's writers."""

    def __init__(self, database: Path, writer: WriterQueue, restart_frames: int) -> None:
        super().__init__(database, writer, every=10, restart_frames=restart_frames)
        self.writers_held: list[bool] = []
        self.holding = False
        self.steps: list[str] = []

    async def _checkpoint_holding_writers(self, writer: WriterQueue) -> tuple[int, int, int]:
        self.holding = True
        try:
            return await super()._checkpoint_holding_writers(writer)
        finally:
            self.holding = False

    def _checkpoint(self) -> tuple[int, int, int]:
        assert self.writer is not None
        if self.holding:
            assert self.writer.held  # no write runs beside it
        self.writers_held.append(self.holding)
        self.steps.append("checkpoint holding the writers" if self.holding else "checkpoint")
        return super()._checkpoint()

    def _flush_database_file(self) -> None:
        assert self.writer is not None
        self.steps.append("flush with the writers held" if self.writer.held else "flush")
        super()._flush_database_file()


def log_frames(path: Path) -> int:
    """The frames in the log now (a PASSIVE checkpoint of a quiet database reports them)."""
    with sqlite3.connect(path, isolation_level=None) as connection:
        return int(connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])


async def test_past_restart_frames_the_next_checkpoint_holds_the_writers_so_the_log_starts_over(
    database: Database, tmp_path: Path
) -> None:
    assert database._sqlite_writer is not None
    recorded = RecordedCheckpoints(tmp_path / "wal.sqlite", database._sqlite_writer, restart_frames=5)
    database.checkpoints = recorded
    await write_notes(database, 10)
    await recorded.wait()
    assert recorded.writers_held == [False, True]  # one in the background, then one holding the writers
    assert recorded.held == 1 and recorded.running is None  # and no more: the log starts over at the next write
    before = recorded.last
    assert before is not None and before[1] >= 5 and before[2] == before[1]
    await write_notes(database, 1)
    assert log_frames(tmp_path / "wal.sqlite") < before[1]  # the writer started the log over


async def test_the_database_file_is_flushed_before_the_writers_are_held(database: Database, tmp_path: Path) -> None:
    """SQLite flushes the database file only at the checkpoint that copies the whole log: the held one.
    A background checkpoint flushes what it copied itself, with the writers going on, so that the held one
    flushes only what it copies."""
    assert database._sqlite_writer is not None
    recorded = RecordedCheckpoints(tmp_path / "wal.sqlite", database._sqlite_writer, restart_frames=5)
    database.checkpoints = recorded
    await write_notes(database, 10)
    await recorded.wait()
    assert recorded.steps == ["checkpoint", "flush", "checkpoint holding the writers"]
    async with database.read() as conn:
        assert len((await conn.execute(select(notes.c.id))).all()) == 10


async def test_a_log_short_of_restart_frames_is_not_checkpointed_holding_the_writers(
    database: Database, tmp_path: Path
) -> None:
    assert database._sqlite_writer is not None
    recorded = RecordedCheckpoints(tmp_path / "wal.sqlite", database._sqlite_writer, restart_frames=100_000)
    database.checkpoints = recorded
    await write_notes(database, 10)
    await recorded.wait()
    assert recorded.writers_held == [False] and recorded.held == 0


class WritesDuringCheckpoints(RecordedCheckpoints):
    """Each of the first ``slowed`` background checkpoints runs until ``writes`` more writes have committed."""

    def __init__(self, database: Path, writer: WriterQueue, writes: int, slowed: int) -> None:
        super().__init__(database, writer, restart_frames=5)
        self.writes_wanted = writes
        self.slowed = slowed

    def _checkpoint(self) -> tuple[int, int, int]:
        if not self.holding and self.slowed > 0:
            self.slowed -= 1
            deadline = time.monotonic() + 10
            while self.writes < self.writes_wanted and time.monotonic() < deadline:
                time.sleep(0.001)
        return super()._checkpoint()


async def test_a_checkpoint_that_writes_outran_is_caught_up_before_the_writers_are_held(
    database: Database, tmp_path: Path
) -> None:
    """Twenty writes committed while the first checkpoint ran: a second catches up on them in the
    background, none came during it, and only then is one run holding the writers."""
    assert database._sqlite_writer is not None
    recorded = WritesDuringCheckpoints(tmp_path / "wal.sqlite", database._sqlite_writer, writes=20, slowed=1)
    database.checkpoints = recorded
    await write_notes(database, 10)  # the tenth starts the first checkpoint
    await write_notes(database, 20)
    await recorded.wait()
    assert recorded.writers_held == [False, False, True]
    assert recorded.held == 1 and recorded.catch_ups == 0


async def test_under_steady_writes_the_writers_are_held_after_a_few_catch_ups(
    database: Database, tmp_path: Path
) -> None:
    """Writes outrun every background checkpoint: after MOST_CATCH_UPS of them the writers are held anyway,
    so that the log still starts over."""
    assert database._sqlite_writer is not None
    recorded = WritesDuringCheckpoints(
        tmp_path / "wal.sqlite", database._sqlite_writer, writes=12, slowed=MOST_CATCH_UPS + 1
    )
    database.checkpoints = recorded
    async with asyncio.timeout(30):
        while recorded.held == 0:
            await write_notes(database, 1)
    await recorded.wait()
    assert recorded.writers_held[: MOST_CATCH_UPS + 2] == [False] * (MOST_CATCH_UPS + 1) + [True]


def test_waiting_ends_for_a_checkpoint_whose_event_loop_has_ended(tmp_path: Path) -> None:
    """A checkpoint begun in an event loop that ended before its done callback ran (an app reused across
    ``asyncio.run`` calls) is never marked finished: waiting for it must still end."""
    checkpoints = WalCheckpoints(tmp_path / "wal.sqlite")
    ended = asyncio.new_event_loop()
    running: asyncio.Future[tuple[int, int, int]] = ended.create_future()
    running.add_done_callback(checkpoints._finished)
    running.set_result((0, 1, 1))  # its callback is scheduled on the loop, which never runs again
    ended.close()
    checkpoints.running = running
    asyncio.run(asyncio.wait_for(checkpoints.wait(), timeout=5))
    assert checkpoints.running is running and checkpoints.last is None


async def test_waiting_covers_the_checkpoint_that_a_finished_one_starts(tmp_path: Path) -> None:
    """A checkpoint can be done with its done callback, which starts the next one (the one holding the
    writers), still waiting its turn on the loop: the wait lets it run and waits for the next one too."""
    checkpoints = WalCheckpoints(tmp_path / "wal.sqlite")
    loop = asyncio.get_running_loop()
    first: asyncio.Future[tuple[int, int, int]] = loop.create_future()
    second: asyncio.Future[tuple[int, int, int]] = loop.create_future()

    def start_the_next(_: object) -> None:
        checkpoints.running = second

    first.add_done_callback(start_the_next)
    checkpoints.running = first
    waiting = asyncio.ensure_future(checkpoints.wait())  # to run first
    first.set_result((0, 9, 9))  # done; its callback is only scheduled, after the waiting task's first step
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiting.done()  # waiting for the second
    second.set_result((0, 9, 9))
    second.add_done_callback(lambda _: setattr(checkpoints, "running", None))
    await asyncio.wait_for(waiting, timeout=5)
