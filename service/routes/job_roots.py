"""GET /v1/jobs/roots: the folders indexing jobs may read from, so clients (the web UI) can offer them."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from ..deps import State, authorized
from ..schemas import JobRoots, error_responses

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(authorized)],
                   responses=error_responses(401, 429))


@router.get("/roots", response_model=JobRoots, summary="Folders that indexing jobs may read from")
async def job_roots(state: State) -> JobRoots:
    return JobRoots(roots=[str(root.expanduser().resolve()) for root in state.settings.job_roots])
