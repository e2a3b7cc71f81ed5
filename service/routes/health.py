"""GET /healthz (alive), /readyz (model loaded, indexes open) and /metrics (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from ..deps import State, authorized
from ..errors import Unauthorized
from ..schemas import Health, Readiness, error_responses
from ..security import presented_key

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="The process is alive")
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, response_model_exclude_none=True,
            responses={503: {"model": Readiness, "description": "not ready"}},
            summary="Ready to serve: model loaded and every index open (503 otherwise; the reasons need a key "
                    "when keys are set)")
async def readyz(request: Request, state: State) -> JSONResponse:
    checks = await run_in_threadpool(state.readiness)
    ready = all(status == "ok" for status in checks.values())
    if state.api_keys.enabled:
        try:  # without a valid key: up or down, nothing else (no collection names, paths or errors)
            state.api_keys.check(presented_key(request.headers, state.settings.api_key_header))
        except Unauthorized:
            checks = None
    body = Readiness(ready=ready, checks=checks).model_dump(exclude_none=True)
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response, dependencies=[Depends(authorized)],
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, **error_responses(401, 429)},
            summary="Prometheus metrics: latency, batch sizes, queue depth, index sizes, job progress")
async def metrics(state: State) -> Response:
    return Response(await run_in_threadpool(state.metrics.render), media_type=CONTENT_TYPE_LATEST)
