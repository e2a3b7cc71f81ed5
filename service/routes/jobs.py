"""/v1/jobs: batch indexing of a server-side source (confined to the configured roots)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from ..deps import State, authorized
from ..errors import Unavailable, UnknownSource
from ..json_bodies import BoundedJsonRoute
from ..schemas import JobFailure, JobRequest, JobsResponse, JobStatus, error_responses

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(authorized)],
                   responses=error_responses(401, 403, 404, 409, 422, 429, 503),
                   route_class=BoundedJsonRoute)

MAX_FAILURES_SHOWN = 100


def _manager(state: State) -> Any:
    if state.jobs is None:
        raise Unavailable("batch jobs are not available on this server")
    return state.jobs


def _status(manager: Any, job: Any, with_failures: bool = False) -> JobStatus:
    job_id = job.job_id
    failures = []
    if with_failures:
        failures = [JobFailure(item=failure.item_id or failure.location, reason=failure.reason)
                    for failure in manager.failures(job_id, limit=MAX_FAILURES_SHOWN)]
    return JobStatus(id=job_id, state=job.state, collection=job.collection, source=job.source, done=job.done,
                     failed=job.failed, total=job.total, rate=job.items_per_s, eta_s=job.eta_s, failures=failures,
                     error=job.error, sync=job.sync, unchanged=job.unchanged, removed=job.removed, note=job.note)


@router.post("", response_model=JobStatus, status_code=202, summary="Start indexing a server-side source")
async def submit_job(body: JobRequest, state: State) -> JobStatus:
    manager = _manager(state)
    state.limits.collection(body.collection)
    if body.collection in state.collection_names():
        state.collection(body.collection, body.modality)  # 409 for another modality or model, before any work
    try:
        job_id = await run_in_threadpool(manager.submit, body.source, body.collection, modality=body.modality,
                                         sync=body.sync)
    except FileNotFoundError as error:
        raise UnknownSource(f"source not found: {error}") from None
    return await run_in_threadpool(_status, manager, await run_in_threadpool(manager.status, job_id))


@router.get("", response_model=JobsResponse, summary="All jobs")
async def list_jobs(state: State) -> JobsResponse:
    manager = _manager(state)
    jobs = await run_in_threadpool(manager.list)
    return JobsResponse(jobs=[_status(manager, job) for job in jobs], warnings=manager.warnings)


@router.get("/{job_id}", response_model=JobStatus, summary="Progress of one job, with failures and their reasons")
async def get_job(job_id: str, state: State) -> JobStatus:
    manager = _manager(state)
    job = await run_in_threadpool(manager.status, job_id)
    return await run_in_threadpool(_status, manager, job, True)


@router.delete("/{job_id}", response_model=JobStatus, summary="Cancel a job (items already indexed stay)")
async def cancel_job(job_id: str, state: State) -> JobStatus:
    manager = _manager(state)
    job = await run_in_threadpool(manager.cancel, job_id)
    return _status(manager, job)
