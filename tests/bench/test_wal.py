"""The WAL helpers of the benchmarks: a flush timed from the samples that saw it, and recycled segments
ready for the writes to come (on a real PostgreSQL server)."""

from __future__ import annotations

import asyncio

import asyncpg

from bench.wal import WalWaits, WalWaitSampler, recycle_wal_segments


def test_a_backends_wal_io_is_timed_from_the_first_to_the_last_sample_that_saw_it() -> None:
    waits = WalWaits()
    waits.record(10.000, {7}, queued=2)
    waits.record(10.004, {7}, queued=9, initialising=True)
    waits.record(10.030, {7, 8}, queued=15)  # 8 starts its own while 7 still writes
    waits.record(10.034, {8}, queued=1)  # 7 ended: seen from 10.000 to 10.030
    waits.record(10.038, set(), queued=4)  # 8 ended after 4 ms; nobody writes, so 4 queued is not counted
    assert round(waits.longest_io_ms, 3) == 30.0
    assert waits.most_queued == 15
    assert waits.segment_inits == 1
    assert waits.samples == 5


def test_a_wal_io_still_open_when_sampling_stops_is_counted() -> None:
    waits = WalWaits()
    waits.record(1.0, {3}, queued=0)
    waits.record(1.5, {3}, queued=0)
    waits.close()
    assert waits.longest_io_ms == 500.0
    assert waits.samples == 2


def test_recycled_segments_wait_ahead_of_the_wal_position_and_the_sampler_polls(postgres_server: str) -> None:
    async def check() -> tuple[int, int]:
        dsn = postgres_server.replace("postgresql+asyncpg", "postgresql")
        connection = await asyncpg.connect(dsn)
        try:
            await recycle_wal_segments(connection, 8)
            current = await connection.fetchval("SELECT pg_walfile_name(pg_current_wal_lsn())")
            ahead = await connection.fetchval(
                "SELECT count(*) FROM pg_ls_waldir() WHERE length(name) = 24 AND name > $1", current
            )
        finally:
            await connection.close()
        with WalWaitSampler(dsn, interval=0.01) as sampler:
            await asyncio.sleep(0.2)
        return ahead, sampler.waits.samples

    ahead, samples = asyncio.run(check())
    assert ahead >= 8  # the next writes reuse these files instead of creating and zero-filling new ones
    assert samples >= 5
