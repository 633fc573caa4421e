"""Batch sizing of the ``$reindex`` job: as many resources as fit in the target time."""

from __future__ import annotations

from app.interactions.reindex_job import FIRST_BATCH, TARGET_BATCH_SECONDS, next_batch_size


def test_batches_are_sized_to_the_target_time() -> None:
    assert next_batch_size(100, TARGET_BATCH_SECONDS, 200) == 100
    assert next_batch_size(100, TARGET_BATCH_SECONDS * 4, 200) == 25


def test_batch_size_stays_between_the_first_batch_and_the_limit() -> None:
    """Not below the first batch's size: each batch pays a dozen thread hand-offs on inline SQLite."""
    assert next_batch_size(10, TARGET_BATCH_SECONDS / 100, 200) == 200
    assert next_batch_size(1, 10.0, 200) == FIRST_BATCH
    assert next_batch_size(1, 10.0, 5) == 5
    assert next_batch_size(0, 0.0, 200) == 200
