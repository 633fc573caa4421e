"""Background jobs kept in the database (hl7.org/fhir/R4/async.html).

A job accepted by one server process may be polled through any other, and
must outlive the process that runs it: its state, progress and resume
cursor are rows here, never process memory.

Ownership is a lease. The process running a job writes its ``owner`` token
and refreshes ``heartbeat`` with every checkpoint; every write of a running
job names the owner, so a process whose lease was taken over (or whose job
was cancelled) finds that its update changed no row and stops. A job whose
owner is NULL (released at shutdown) or whose heartbeat is older than the
lease is taken over by one ``UPDATE ... WHERE`` per job: the row count says
who won, on either backend, without ``SELECT ... FOR UPDATE``.

Statuses: ``accepted`` (not started) -> ``running`` -> ``completed`` or
``failed``; any of these -> ``cancelled`` when a client deletes the polling
location (a running job stops at its next checkpoint).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

import orjson
from sqlalchemy import Column, Index, String, Table, Text, and_, bindparam, insert, or_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from app.storage.tables import UTCDateTime, metadata

JobStatus = Literal["accepted", "running", "completed", "failed", "cancelled"]
ACTIVE: tuple[JobStatus, ...] = ("accepted", "running")

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("parameters", Text, nullable=False),
    Column("progress", Text, nullable=True),
    Column("cursor_type", String(64), nullable=True),
    Column("cursor_id", String(64), nullable=True),
    Column("result", Text, nullable=True),
    Column("error", Text, nullable=True),
    Column("created", UTCDateTime(), nullable=False),
    Column("updated", UTCDateTime(), nullable=False),
    Column("heartbeat", UTCDateTime(), nullable=True),
    Column("owner", String(64), nullable=True),
    Index("ix_jobs_status", "status"),
)


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a job stands: every resource of ``resource_type`` up to ``last_id`` is done."""

    resource_type: str
    last_id: str


@dataclass(frozen=True, slots=True)
class Job:
    """One job row; ``result`` holds the work done so far while running, the outcome once completed."""

    id: str
    kind: str
    status: JobStatus
    parameters: dict[str, Any]
    progress: str | None
    cursor: Cursor | None
    result: dict[str, Any] | None
    error: str | None
    created: datetime
    updated: datetime
    heartbeat: datetime | None
    owner: str | None


_J = jobs.c
_COLUMNS = (
    _J.id,
    _J.kind,
    _J.status,
    _J.parameters,
    _J.progress,
    _J.cursor_type,
    _J.cursor_id,
    _J.result,
    _J.error,
    _J.created,
    _J.updated,
    _J.heartbeat,
    _J.owner,
)
_GET = select(*_COLUMNS).where(_J.id == bindparam("job_id"))
_OWNED = and_(_J.id == bindparam("job_id"), _J.owner == bindparam("me"), _J.status.in_(ACTIVE))
_STALE = and_(
    _J.status.in_(ACTIVE),
    or_(_J.owner.is_(None), _J.heartbeat < bindparam("stale_before")),
)
_CANDIDATES = select(_J.id).where(_STALE).order_by(_J.created)
_CLAIM = (
    update(jobs)
    .where(_J.id == bindparam("job_id"), _STALE)
    .values(owner=bindparam("me"), heartbeat=bindparam("now"), updated=bindparam("now"))
)
_CHECKPOINT = (
    update(jobs)
    .where(_OWNED)
    .values(
        status="running",
        progress=bindparam("progress_text"),
        cursor_type=bindparam("ctype"),
        cursor_id=bindparam("cid"),
        result=bindparam("result_json"),
        heartbeat=bindparam("now"),
        updated=bindparam("now"),
    )
)
_FINISH = (
    update(jobs)
    .where(_OWNED)
    .values(status="completed", result=bindparam("result_json"), owner=None, heartbeat=None, updated=bindparam("now"))
)
_FAIL = (
    update(jobs)
    .where(_OWNED)
    .values(status="failed", error=bindparam("error_text"), owner=None, heartbeat=None, updated=bindparam("now"))
)
_BEAT = (
    update(jobs)
    .where(_J.id.in_(bindparam("job_ids", expanding=True)), _J.owner == bindparam("me"), _J.status.in_(ACTIVE))
    .values(heartbeat=bindparam("now"))
)
_RELEASE = update(jobs).where(_OWNED).values(owner=None, updated=bindparam("now"))
_CANCEL = (
    update(jobs)
    .where(_J.id == bindparam("job_id"), _J.status != "cancelled")
    .values(status="cancelled", owner=None, heartbeat=None, updated=bindparam("now"))
)


def _json(value: dict[str, Any] | None) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _job(m: RowMapping) -> Job:
    cursor = Cursor(m["cursor_type"], m["cursor_id"]) if m["cursor_type"] is not None else None
    return Job(
        id=m["id"],
        kind=m["kind"],
        status=cast(JobStatus, m["status"]),
        parameters=orjson.loads(m["parameters"]),
        progress=m["progress"],
        cursor=cursor,
        result=orjson.loads(m["result"]) if m["result"] is not None else None,
        error=m["error"],
        created=m["created"],
        updated=m["updated"],
        heartbeat=m["heartbeat"],
        owner=m["owner"],
    )


async def create_job(
    conn: AsyncConnection, job_id: str, kind: str, parameters: dict[str, Any], owner: str | None, now: datetime
) -> None:
    """A new ``accepted`` job; ``owner`` is the accepting process, which starts it at once."""
    await conn.execute(
        insert(jobs).values(
            id=job_id,
            kind=kind,
            status="accepted",
            parameters=_json(parameters),
            created=now,
            updated=now,
            heartbeat=now if owner is not None else None,
            owner=owner,
        )
    )


async def get_job(conn: AsyncConnection, job_id: str) -> Job | None:
    row = (await conn.execute(_GET, {"job_id": job_id})).first()
    return None if row is None else _job(row._mapping)


async def claim_stale_jobs(
    conn: AsyncConnection, owner: str, now: datetime, stale_before: datetime, skip: frozenset[str] = frozenset()
) -> list[Job]:
    """Take over unfinished jobs that nobody owns or whose owner stopped beating; the jobs won.

    Each is claimed by its own conditional UPDATE: of several processes
    sweeping at once, exactly one sees a row count of 1 for a given job
    (PostgreSQL re-checks the WHERE on the row the winner committed; SQLite
    write transactions are serialised). ``skip`` names jobs this process
    already runs.
    """
    candidates = [row[0] for row in await conn.execute(_CANDIDATES, {"stale_before": stale_before})]
    claimed = []
    for job_id in candidates:
        if job_id in skip:
            continue
        params = {"job_id": job_id, "me": owner, "now": now, "stale_before": stale_before}
        if (await conn.execute(_CLAIM, params)).rowcount == 1:
            job = await get_job(conn, job_id)
            if job is not None:
                claimed.append(job)
    return claimed


async def record_progress(
    conn: AsyncConnection,
    job_id: str,
    owner: str,
    now: datetime,
    progress: str,
    cursor: Cursor | None,
    result: dict[str, Any],
) -> bool:
    """Checkpoint: the job is running, this far, with this partial result; also the heartbeat.

    False when the job is no longer this owner's (cancelled, or taken over
    after a missed heartbeat): the caller must stop, rolling back its batch.
    """
    params = {
        "job_id": job_id,
        "me": owner,
        "now": now,
        "progress_text": progress,
        "ctype": cursor.resource_type if cursor else None,
        "cid": cursor.last_id if cursor else None,
        "result_json": _json(result),
    }
    return (await conn.execute(_CHECKPOINT, params)).rowcount == 1


async def beat(conn: AsyncConnection, owner: str, job_ids: Collection[str], now: datetime) -> int:
    """Refresh the lease on jobs this owner is running (between their checkpoints); how many.

    Only jobs with a live task are named, so a job whose task ended without
    recording its end goes stale and is taken over like any abandoned one.
    """
    if not job_ids:
        return 0
    return (await conn.execute(_BEAT, {"job_ids": list(job_ids), "me": owner, "now": now})).rowcount


async def finish_job(conn: AsyncConnection, job_id: str, owner: str, now: datetime, result: dict[str, Any]) -> bool:
    params = {"job_id": job_id, "me": owner, "now": now, "result_json": _json(result)}
    return (await conn.execute(_FINISH, params)).rowcount == 1


async def fail_job(conn: AsyncConnection, job_id: str, owner: str, now: datetime, error: str) -> bool:
    params = {"job_id": job_id, "me": owner, "now": now, "error_text": error}
    return (await conn.execute(_FAIL, params)).rowcount == 1


async def release_job(conn: AsyncConnection, job_id: str, owner: str, now: datetime) -> bool:
    """Give a job up without finishing it (shutdown): the next sweep of any process resumes it."""
    return (await conn.execute(_RELEASE, {"job_id": job_id, "me": owner, "now": now})).rowcount == 1


async def cancel_job(conn: AsyncConnection, job_id: str, now: datetime) -> bool:
    """Cancel a job (async.html: its polling location is then gone); False when unknown or already cancelled."""
    return (await conn.execute(_CANCEL, {"job_id": job_id, "now": now})).rowcount == 1
