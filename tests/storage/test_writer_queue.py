"""The SQLite writer queue: one writer at a time, first come first served, urgent writers first."""

from __future__ import annotations

import asyncio

from app.storage.writer_queue import WriterQueue


async def _writer(queue: WriterQueue, name: str, order: list[str], urgent: bool = False) -> None:
    async with queue.hold(urgent):
        order.append(name)
        await asyncio.sleep(0)


async def test_waiting_writers_go_in_order_and_urgent_ones_first() -> None:
    queue, order = WriterQueue(), []
    async with queue.hold():
        tasks = [asyncio.create_task(_writer(queue, "a", order)), asyncio.create_task(_writer(queue, "b", order))]
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(_writer(queue, "urgent", order, urgent=True)))
        tasks.append(asyncio.create_task(_writer(queue, "c", order)))
        await asyncio.sleep(0)
        order.append("holder")
    await asyncio.gather(*tasks)
    assert order == ["holder", "urgent", "a", "b", "c"]
    assert not queue.held


async def test_a_cancelled_waiter_neither_holds_nor_blocks_the_queue() -> None:
    queue, order = WriterQueue(), []
    async with queue.hold():
        cancelled = asyncio.create_task(_writer(queue, "cancelled", order))
        waiting = asyncio.create_task(_writer(queue, "waiting", order))
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.sleep(0)
    await waiting
    assert cancelled.cancelled()
    assert order == ["waiting"]
    assert not queue.held


async def test_a_waiter_cancelled_as_the_lock_reaches_it_passes_it_on() -> None:
    queue, order = WriterQueue(), []
    async with queue.hold():
        handed = asyncio.create_task(_writer(queue, "handed", order))
        after = asyncio.create_task(_writer(queue, "after", order))
        await asyncio.sleep(0)
    handed.cancel()  # the lock was just handed to it, and it has not run yet
    await asyncio.gather(handed, after, return_exceptions=True)
    assert handed.cancelled()
    assert order == ["after"]
    assert not queue.held
