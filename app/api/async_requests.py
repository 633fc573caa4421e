"""The asynchronous request pattern over HTTP (hl7.org/fhir/R4/async.html).

Kick-off: ``202 Accepted`` with the polling location in ``Content-Location``.
``GET [base]/_async/[id]``: ``202`` with ``X-Progress`` while the job is
accepted or running, ``200`` with the operation's result once completed,
``500`` with an OperationOutcome when it failed, ``404`` when unknown or
cancelled. ``DELETE [base]/_async/[id]``: cancel, ``202``; the location then
answers 404, as async.html requires. These routes are mounted by the app
factory beside ``/metadata``, not listed in ``INTERACTIONS``: they are not
FHIR interactions and the CapabilityStatement does not list them.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from app.api.deps import CallerDep, Jobs
from app.api.negotiation import negotiate
from app.api.outcomes import dumps, error_outcome, informational
from app.errors import ErrorCode
from app.interactions.jobs import JobRunner
from app.interactions.request_context import RequestContext
from app.storage.jobs import ACTIVE

ASYNC_PATH = "/_async"
RETRY_AFTER_SECONDS = "1"


def status_url(rc: RequestContext, job_id: str) -> str:
    return f"{rc.base_url}{ASYNC_PATH}/{job_id}"


async def accepted(
    request: Request, jobs: JobRunner, rc: RequestContext, kind: str, parameters: dict[str, Any], what: str
) -> Response:
    """Start a job and answer the kick-off request: 202, ``Content-Location``, an informational outcome."""
    fmt = negotiate(request.headers, request.query_params)
    job = await jobs.submit(kind, parameters)
    url = status_url(rc, job.id)
    text = f"Accepted: {what} runs in the background as job {job.id}; poll {url} for its status and result"
    headers = {"Content-Location": url}
    return Response(dumps(informational(text), fmt.pretty), 202, headers, media_type=fmt.content_type)


async def job_status(request: Request, job_id: str, jobs: Jobs, caller: CallerDep) -> Response:
    """``GET [base]/_async/[id]``: for the backend services that start jobs (``system/`` scopes)."""
    caller.require_system()
    fmt = negotiate(request.headers, request.query_params)
    runner = jobs
    job = await runner.status(job_id)
    if job.status in ACTIVE:
        progress = job.progress if job.status == "running" and job.progress else "accepted, not started yet"
        text = f"Job {job.id} is {job.status}: {progress}"
        headers = {"X-Progress": progress[:99], "Retry-After": RETRY_AFTER_SECONDS}
        return Response(dumps(informational(text), fmt.pretty), 202, headers, media_type=fmt.content_type)
    if job.status == "failed":
        outcome = error_outcome(job.error or "the job failed", "exception", ErrorCode.INTERNAL)
        return Response(dumps(outcome, fmt.pretty), 500, media_type=fmt.content_type)
    return Response(dumps(runner.result_resource(job), fmt.pretty), 200, media_type=fmt.content_type)


async def cancel(request: Request, job_id: str, jobs: Jobs, caller: CallerDep) -> Response:
    """``DELETE [base]/_async/[id]``: 202; the polling location is gone from then on."""
    caller.require_system()
    fmt = negotiate(request.headers, request.query_params)
    await jobs.cancel(job_id)
    text = f"Job {job_id} is cancelled"
    return Response(dumps(informational(text), fmt.pretty), 202, media_type=fmt.content_type)
