"""API keys and rate limits, below HTTP."""

import pytest

from service.errors import TooManyRequests, Unauthorized
from service.security import ApiKeys, RateLimiter


def test_api_keys_accept_only_configured_keys():
    keys = ApiKeys(["first-key-123", "second-key-456"])
    assert keys.check("second-key-456").startswith("key:")
    assert keys.check("first-key-123") != keys.check("second-key-456")
    for bad in (None, "", "first-key-12", "first-key-1234", "x" * 10_000):
        with pytest.raises(Unauthorized):
            keys.check(bad)


def test_without_keys_everyone_is_anonymous():
    assert ApiKeys([]).check(None) == "anonymous"


def test_rate_limiter_allows_burst_then_says_when_to_retry():
    limiter = RateLimiter(per_minute=60, burst=3)  # one token per second
    for _ in range(3):
        limiter.acquire("k", now=100.0)
    with pytest.raises(TooManyRequests) as refused:
        limiter.acquire("k", now=100.0)
    assert refused.value.headers["Retry-After"] == "1"
    limiter.acquire("other", now=100.0)  # buckets are per caller
    limiter.acquire("k", now=101.01)  # a token came back after a second
    with pytest.raises(TooManyRequests):
        limiter.acquire("k", now=101.02)


def test_rate_limiter_forgets_old_callers():
    limiter = RateLimiter(per_minute=60, burst=1, max_callers=10)
    for i in range(100):
        limiter.acquire(f"caller-{i}", now=0.0)
    assert len(limiter._buckets) == 10


def test_zero_rate_means_unlimited():
    limiter = RateLimiter(per_minute=0, burst=1)
    for _ in range(1000):
        limiter.acquire("k")
