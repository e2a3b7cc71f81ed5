"""Rate limits shared by replicas: token buckets in a real Redis, one bucket per caller for every replica."""

from __future__ import annotations

import pytest

from service.errors import TooManyRequests
from service.security import RateLimiter, RedisRateLimiter
from tests.processes import start_redis


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    process, url = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    process.terminate()
    process.wait(10)


def test_two_replicas_draw_from_one_bucket_per_caller(redis_url):
    first, second = (RedisRateLimiter(redis_url, per_minute=1, burst=5, prefix="t") for _ in range(2))
    for limiter in (first, second, first, second, first):  # the burst, spread over both replicas
        limiter.acquire("key:abc")
    for limiter in (first, second):
        with pytest.raises(TooManyRequests) as refused:
            limiter.acquire("key:abc")
        assert 1 <= int(refused.value.headers["Retry-After"]) <= 60
    second.acquire("key:other")  # another caller has a bucket of its own


def test_a_shared_bucket_refills_at_the_configured_rate(redis_url):
    import time

    limiter = RedisRateLimiter(redis_url, per_minute=600, burst=1, prefix="t2")  # one token per 0.1 s
    limiter.acquire("c")
    with pytest.raises(TooManyRequests):
        limiter.acquire("c")
    time.sleep(0.15)
    limiter.acquire("c")


def test_without_redis_the_limiter_lets_requests_through():
    limiter = RedisRateLimiter("redis://127.0.0.1:1/0", per_minute=1, burst=1)
    for _ in range(3):
        limiter.acquire("c")  # logged, not refused: Redis away must not refuse everyone
    assert RateLimiter(0, 1).enabled is False and RedisRateLimiter("redis://127.0.0.1:1/0", 0, 1).enabled is False
