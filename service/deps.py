"""Annotated dependencies, so route signatures stay short and typed.

``authorized`` guards every router but health: it checks the API key (when keys are
configured) and takes a token from the caller's rate-limit bucket.

They are ``async def`` although none awaits: FastAPI runs a plain ``def`` dependency in a
worker thread, and these few-microsecond lookups then cost a thread hop each (five a request,
measured as the largest per-request overhead of a search under load on 2 cores).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from .encoding import QueryEncoder
from .errors import TooManyRequests, Unauthorized, Unavailable
from .images import ImageDecoder
from .limits import Limits
from .security import presented_key
from .settings import Settings
from .state import ServiceState


async def get_state(request: Request) -> ServiceState:
    return request.app.state.service


State = Annotated[ServiceState, Depends(get_state)]


async def get_settings(state: State) -> Settings:
    return state.settings


async def get_limits(state: State) -> Limits:
    return state.limits


async def get_images(state: State) -> ImageDecoder:
    return state.images


async def get_queries(state: State) -> QueryEncoder:
    if state.queries is None:
        raise Unavailable("the model is not loaded yet")
    return state.queries


SettingsDep = Annotated[Settings, Depends(get_settings)]
LimitsDep = Annotated[Limits, Depends(get_limits)]
Images = Annotated[ImageDecoder, Depends(get_images)]
Queries = Annotated[QueryEncoder, Depends(get_queries)]


async def authorized(request: Request, state: State) -> str:
    """The caller's identity; 401 without a valid key, 429 over the rate limit."""
    try:
        caller = state.api_keys.check(presented_key(request.headers, state.settings.api_key_header))
    except Unauthorized:
        state.metrics.rejected.labels("unauthorized").inc()
        raise
    if caller == "anonymous":  # no keys configured: limit per client address instead
        caller = "client:" + (request.client.host if request.client else "unknown")
    try:
        state.rate_limiter.acquire(caller)
    except TooManyRequests:
        state.metrics.rejected.labels("rate_limited").inc()
        raise
    return caller


Caller = Annotated[str, Depends(authorized)]
