"""Background jobs behind the asynchronous request pattern (hl7.org/fhir/R4/async.html).

A long operation (``$reindex`` of a type or of the whole server) answers its
request at once and runs as an asyncio task of the process that accepted
it, batch by batch, each batch committed together with a checkpoint (the
progress text, the resume cursor and the partial result) in
``app.storage.jobs``. Between batches the task yields to the event loop, so
other clients keep being served by the same process.

A job survives its process. Each process has a ``JobRunner`` with its own
owner token; the runner refreshes the heartbeat of its jobs and, at
start-up and then periodically, takes over jobs nobody owns (released at
shutdown) or whose owner stopped beating (the process died), and resumes
them from their cursor. The runner holds every task it started, so none is
garbage-collected mid-run, and cancels them at shutdown, releasing their
jobs for the next process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from app.errors import FhirError, NotFound
from app.interactions.context import ContextHolder, FhirContext, utc_now
from app.storage.jobs import (
    Cursor,
    Job,
    beat,
    cancel_job,
    claim_stale_jobs,
    create_job,
    fail_job,
    finish_job,
    get_job,
    record_progress,
    release_job,
)

log = logging.getLogger("fhir.jobs")

# The most resources in one batch (one transaction; batches are also sized by time, see reindex_job):
# with SQLite on the event loop thread, the loop serves nobody else while a batch runs.
BATCH_SIZE = 200
STALE_AFTER = timedelta(seconds=60)
SWEEP_EVERY = 15.0
UNEXPECTED = "the job stopped on an unexpected server error; the server log has the details (job {id})"


class JobLost(Exception):
    """The job is no longer this process's to run: cancelled, or taken over after a missed heartbeat."""


@dataclass(frozen=True, slots=True)
class JobHandle:
    """What a running job's work sees: the job as claimed, and how to checkpoint it."""

    job: Job
    owner: str
    batch_size: int

    async def checkpoint(
        self, conn: AsyncConnection, progress: str, cursor: Cursor | None, result: dict[str, Any]
    ) -> None:
        """Record progress in the caller's transaction; ``JobLost`` (rolling the batch back) if cancelled."""
        if not await record_progress(conn, self.job.id, self.owner, utc_now(), progress, cursor, result):
            raise JobLost(self.job.id)


@dataclass(frozen=True, slots=True)
class JobKind:
    """One kind of job: the work (returning the final result) and the FHIR resource a completed job answers."""

    run: Callable[[FhirContext, JobHandle], Awaitable[dict[str, Any]]]
    resource: Callable[[dict[str, Any]], dict[str, Any]]


class JobRunner:
    """Runs this process's jobs; built by the app factory, started and closed by its lifespan."""

    def __init__(
        self,
        holder: ContextHolder,
        kinds: Mapping[str, JobKind],
        batch_size: int = BATCH_SIZE,
        stale_after: timedelta = STALE_AFTER,
        sweep_every: float = SWEEP_EVERY,
    ) -> None:
        self.holder = holder
        self.kinds = dict(kinds)
        self.batch_size = batch_size
        self.stale_after = stale_after
        self.sweep_every = sweep_every
        self.owner = uuid.uuid4().hex
        self.tasks: dict[str, asyncio.Task[None]] = {}  # strong references: job id -> its task
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def ctx(self) -> FhirContext:
        """The current context: a job started after a SearchParameter was added indexes for it."""
        return self.holder.current

    async def submit(self, kind: str, parameters: dict[str, Any]) -> Job:
        """Record a new job owned by this process and start it; returns at once."""
        if kind not in self.kinds:
            raise ValueError(f"no job kind {kind!r}")
        job_id = uuid.uuid4().hex
        async with self.ctx.db.write() as conn:
            await create_job(conn, job_id, kind, parameters, self.owner, utc_now())
            job = await get_job(conn, job_id)
        assert job is not None
        self._start(job)
        return job

    async def status(self, job_id: str) -> Job:
        """The job as stored; ``NotFound`` when unknown or cancelled (async.html: the location is gone)."""
        async with self.ctx.db.read() as conn:
            job = await get_job(conn, job_id) if len(job_id) <= 64 else None
        if job is None:
            raise NotFound(f"There is no job '{job_id[:80]}'")
        if job.status == "cancelled":
            raise NotFound(f"Job {job_id} was cancelled")
        return job

    async def cancel(self, job_id: str) -> None:
        """Cancel a job; a running one stops at its next checkpoint, in whichever process runs it."""
        async with self.ctx.db.write() as conn:
            cancelled = len(job_id) <= 64 and await cancel_job(conn, job_id, utc_now())
        if not cancelled:
            raise NotFound(f"There is no job '{job_id[:80]}' to cancel")

    def result_resource(self, job: Job) -> dict[str, Any]:
        """The resource a completed job answers with."""
        return self.kinds[job.kind].resource(job.result or {})

    async def start(self) -> None:
        """Resume abandoned jobs now, then keep beating and sweeping in the background."""
        try:
            await self.resume_stale()
        except Exception:  # the server still starts; the next sweep tries again
            log.exception("resuming jobs at start-up failed")
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="job sweeper")

    async def resume_stale(self) -> list[str]:
        """Claim jobs nobody owns or whose owner stopped beating, and run them here; their ids."""
        now = utc_now()
        async with self.ctx.db.write() as conn:
            claimed = await claim_stale_jobs(conn, self.owner, now, now - self.stale_after, frozenset(self.tasks))
        for job in claimed:
            log.info("resuming job %s (%s) from %s", job.id, job.kind, job.cursor)
            self._start(job)
        return [job.id for job in claimed]

    async def close(self) -> None:
        """Stop every task; their jobs stay resumable from their last checkpoint."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        running = dict(self.tasks)
        for task in running.values():
            task.cancel()
        await asyncio.gather(*running.values(), return_exceptions=True)
        for job_id in running:
            try:
                async with self.ctx.db.write() as conn:
                    await release_job(conn, job_id, self.owner, utc_now())
            except Exception:  # the job is still taken over once its heartbeat is stale
                log.exception("could not release job %s", job_id)

    def _start(self, job: Job) -> None:
        task = asyncio.create_task(self._run(job), name=f"job {job.id}")
        self.tasks[job.id] = task
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        for job_id, running in list(self.tasks.items()):
            if running is task:
                del self.tasks[job_id]

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_every)
            try:
                async with self.ctx.db.write() as conn:
                    await beat(conn, self.owner, list(self.tasks), utc_now())
                await self.resume_stale()
            except Exception:  # a database hiccup must not end the sweeper
                log.exception("job sweep failed")

    async def _run(self, job: Job) -> None:
        handle = JobHandle(job, self.owner, self.batch_size)
        try:
            async with self.ctx.db.write() as conn:
                await handle.checkpoint(conn, job.progress or "started", job.cursor, job.result or {})
            kind = self.kinds.get(job.kind)
            if kind is None:
                raise FhirError(f"this server cannot run jobs of kind '{job.kind}'")
            result = await kind.run(self.ctx, handle)
            async with self.ctx.db.write() as conn:
                await finish_job(conn, job.id, self.owner, utc_now(), result)
        except JobLost:
            log.info("job %s was cancelled or taken over; stopped here", job.id)
        except FhirError as exc:
            await self._fail(job, exc.message)
        except Exception:
            log.exception("job %s failed", job.id)
            await self._fail(job, UNEXPECTED.format(id=job.id))

    async def _fail(self, job: Job, message: str) -> None:
        try:
            async with self.ctx.db.write() as conn:
                await fail_job(conn, job.id, self.owner, utc_now(), message)
        except Exception:  # left running: another process takes it over once the heartbeat is stale
            log.exception("could not record the failure of job %s", job.id)
