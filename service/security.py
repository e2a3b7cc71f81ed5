"""API keys (constant-time comparison) and per-key rate limiting (token buckets)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections import OrderedDict

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import TooManyRequests, Unauthorized, error_body

log = logging.getLogger(__name__)

GUARDED_PREFIXES = ("/v1/", "/metrics")  # everything but health, the docs and the web UI's files


def presented_key(headers: Headers, header: str) -> str | None:
    """The key a request presents: the configured header, else an ``Authorization: Bearer`` token."""
    key = headers.get(header)
    if key:
        return key
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class ApiKeys:
    """Checks a presented key against the configured ones without leaking which byte differs."""

    def __init__(self, keys: list[str]):
        # Compare digests of equal length, so neither content nor length leaks through timing.
        self._digests = [hashlib.sha256(key.encode()).digest() for key in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def check(self, presented: str | None) -> str:
        """The caller's identity (a short key digest), or Unauthorized."""
        if not self.enabled:
            return "anonymous"
        if not presented:
            raise Unauthorized("this server requires an API key (X-API-Key header or Authorization: Bearer)")
        digest = hashlib.sha256(presented.encode()).digest()
        matched = False
        for known in self._digests:  # no early exit: every key is compared every time
            matched |= hmac.compare_digest(digest, known)
        if not matched:
            raise Unauthorized("invalid API key")
        return "key:" + digest.hex()[:12]


class RateLimiter:
    """Token bucket per caller: ``per_minute`` sustained, ``burst`` at once; thread-safe.

    Buckets of callers not seen for a while are forgotten (at most ``max_callers`` kept),
    so a flood of distinct identities cannot grow memory without bound.
    """

    def __init__(self, per_minute: float, burst: int, max_callers: int = 100_000):
        if per_minute < 0 or burst < 1:
            raise ValueError("per_minute must be >= 0 and burst >= 1")
        self.rate = per_minute / 60.0  # tokens per second
        self.burst = burst
        self.max_callers = max_callers
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # caller -> (tokens, last time)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def acquire(self, caller: str, now: float | None = None) -> None:
        """Take one token for ``caller`` or raise TooManyRequests with the wait until the next one."""
        if not self.enabled:
            return
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.pop(caller, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[caller] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
                raise TooManyRequests(f"rate limit of {self.rate * 60:g} requests per minute exceeded", wait)
            self._buckets[caller] = (tokens - 1.0, now)
            while len(self._buckets) > self.max_callers:
                self._buckets.popitem(last=False)


class RedisRateLimiter:
    """The same token buckets in Redis, shared by every API replica (one Lua script per request, atomic).

    Time is Redis' own clock, so replicas with skewed clocks share one bucket correctly. A bucket
    not touched for the time it takes to refill expires. When Redis cannot be reached the request
    is let through (logged): the limit protects the service, and Redis being away must not turn
    into refusing everyone.
    """

    _SCRIPT = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'last')
local tokens = math.min(burst, (tonumber(state[1]) or burst) + (now - (tonumber(state[2]) or now)) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'last', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(tokens)}
"""

    def __init__(self, url: str, per_minute: float, burst: int, prefix: str = "prolip"):
        import redis

        if per_minute < 0 or burst < 1:
            raise ValueError("per_minute must be >= 0 and burst >= 1")
        self.rate = per_minute / 60.0
        self.burst = burst
        self.prefix = prefix
        self._client = redis.Redis.from_url(url, socket_timeout=2.0)
        self._script = self._client.register_script(self._SCRIPT)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def acquire(self, caller: str, now: float | None = None) -> None:
        """Take one token for ``caller`` or raise TooManyRequests with the wait until the next one."""
        import redis

        if not self.enabled:
            return
        key = f"{self.prefix}:ratelimit:" + hashlib.sha256(caller.encode()).hexdigest()[:32]
        try:
            allowed, tokens = self._script(keys=[key], args=[repr(self.rate), self.burst])
        except redis.RedisError as error:
            log.warning("rate limiter: Redis unreachable (%s); letting the request through", error)
            return
        if not int(allowed):
            raise TooManyRequests(f"rate limit of {self.rate * 60:g} requests per minute exceeded",
                                  (1.0 - float(tokens)) / self.rate)


class KeyGate:
    """Refuses requests to guarded paths without a valid key before routing (ASGI middleware).

    The routes check keys too (``deps.authorized``, which also rate-limits per key); this gate
    makes a caller without a key get 401 for every guarded path, whether or not a route
    matches, so the API does not tell strangers which collections, items or paths exist.
    """

    def __init__(self, app: ASGIApp, keys: ApiKeys, header: str):
        self.app = app
        self.keys = keys
        self.header = header

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.keys.enabled and scope["path"].startswith(GUARDED_PREFIXES):
            try:
                self.keys.check(presented_key(Headers(scope=scope), self.header))
            except Unauthorized as error:
                response = JSONResponse(error_body(error.code, error.message), status_code=error.status_code,
                                        headers=error.headers)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
