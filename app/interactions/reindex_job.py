"""``$reindex`` of a type or of every type as a background job (hl7.org/fhir/R4/async.html).

Types are walked in name order and each type's resources in id order, so
the cursor (type, last id done) says exactly what is left: types before the
cursor's are done, and the cursor's type continues after its id. Each batch
is reindexed and checkpointed in one transaction, so after a crash the
cursor and the counts match the index rows committed; nothing is counted
twice and nothing is skipped.

A batch is sized by time, not by count: extracting a Patient costs several
times a CarePlan (some of its expressions run on fhirpathpy), and what a
batch does on the event loop (reading its rows, preparing its index rows'
inserts) grows with it. Each batch's size is what the last one's pace fits
in ``TARGET_BATCH_SECONDS``, between ``FIRST_BATCH`` and the runner's batch
size.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from app.interactions.context import FhirContext
from app.interactions.jobs import JobHandle, JobKind
from app.interactions.reindex import count_live, counts_parameters, reindex_after
from app.storage.jobs import Cursor

REINDEX = "reindex"
TARGET_BATCH_SECONDS = 0.04
FIRST_BATCH = 20


def next_batch_size(done: int, seconds: float, limit: int) -> int:
    """How many resources fit in the target time at the pace of the last batch (``done`` in ``seconds``),
    at least ``FIRST_BATCH``: a batch's statements run in a worker thread on inline SQLite, each handed
    back to a loop that may be busy, and a batch much smaller than that would spend its time on the
    hand-offs (``app.interactions.reindex``)."""
    if done <= 0 or seconds <= 0:
        return limit
    return max(min(FIRST_BATCH, limit), min(limit, int(done * TARGET_BATCH_SECONDS / seconds)))


def reindex_parameters(resource_type: str | None) -> dict[str, Any]:
    """The stored parameters of a job: one type, or (None) every served type."""
    return {"type": resource_type}


async def run_reindex(ctx: FhirContext, handle: JobHandle) -> dict[str, Any]:
    """Reindex what the job names, from its cursor on; the final counts per type."""
    job = handle.job
    counts: dict[str, int] = {str(t): int(n) for t, n in (job.result or {}).items()}
    only = job.parameters.get("type")
    if only is not None:
        ctx.require_type(only)
    start = job.cursor
    for resource_type in [only] if only is not None else sorted(ctx.resource_types):
        if start is not None and resource_type < start.resource_type:
            continue
        after = start.last_id if start is not None and resource_type == start.resource_type else ""
        await _reindex_type(ctx, handle, resource_type, after, counts)
    return counts


async def _reindex_type(
    ctx: FhirContext, handle: JobHandle, resource_type: str, after: str, counts: dict[str, int]
) -> None:
    total = await count_live(ctx, resource_type)
    if total == 0:
        return
    size = min(FIRST_BATCH, handle.batch_size)
    while True:
        started = time.perf_counter()
        async with ctx.db.write() as conn:
            ids = await reindex_after(ctx, conn, resource_type, after, size)
            if not ids:
                return
            after = ids[-1]
            counts[resource_type] = counts.get(resource_type, 0) + len(ids)
            progress = f"{resource_type}: {counts[resource_type]} of ~{total} resources"
            await handle.checkpoint(conn, progress, Cursor(resource_type, after), counts)
        size = next_batch_size(len(ids), time.perf_counter() - started, handle.batch_size)
        await asyncio.sleep(0)  # let the event loop serve other requests between batches


REINDEX_JOB = JobKind(run=run_reindex, resource=counts_parameters)
