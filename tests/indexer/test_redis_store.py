"""The Redis item store against a real redis-server (started per test on a free loopback port)."""

from __future__ import annotations

import signal

import numpy as np
import pytest
import redis

from indexer import Catalog, CorruptIndexError, IndexSpec, StoreError

from .conftest import DIM, start_redis


def test_collection_round_trip_through_redis(tmp_path, redis_url, dataset):
    spec = IndexSpec(kind="hnsw", codec="flat", ef_search=2000)
    with Catalog(tmp_path, redis_url=redis_url, auto_snapshot=False) as catalog:
        index = catalog.create("c", "image", DIM, "m", spec=spec)
        index.add(dataset.ids[:300], dataset.mean[:300], dataset.logvar[:300], dataset.metadata[:300])
        index.snapshot()
        index.add(dataset.ids[:2], dataset.mean[500:502], dataset.logvar[500:502], [{"new": 1}, {"new": 2}])
        assert index.delete(dataset.ids[10:20] + ["absent"]) == 10
        before = [[h.id for h in q] for q in index.search(dataset.query_mean, dataset.query_logvar, k=5)]
        assert catalog.list()[0].store == "redis" and catalog.list()[0].size == 290
        catalog.unload("c", snapshot=False)
        index = catalog.get("c")  # snapshot + replay of the rows after it, read from Redis
        assert len(index) == 290 and index.get("item-00001").metadata == {"new": 2}
        assert index.get("item-00015") is None
        np.testing.assert_array_equal(index.get("item-00100").logvar, dataset.logvar[100])
        after = [[h.id for h in q] for q in index.search(dataset.query_mean, dataset.query_logvar, k=5)]
        assert after == before
        hits = index.search(dataset.query_mean[:1], dataset.query_logvar[:1], k=3, rank="inclusion")
        assert len(hits[0]) == 3 and hits[0][0].metadata
        index.snapshot()  # purges the tombstones the snapshot now reflects
        client = redis.Redis.from_url(redis_url)
        assert client.scard(f"prolip:{catalog.list()[0].uuid}:dead") == 0
        catalog.drop("c")
        assert client.keys("prolip:*") == []


def test_acknowledged_writes_survive_a_redis_crash(tmp_path, dataset):
    process, url = start_redis(tmp_path / "redis")
    try:
        with Catalog(tmp_path / "data", redis_url=url, auto_snapshot=False) as catalog:
            index = catalog.create("c", "text", DIM, "m")
            index.add(dataset.ids[:50], dataset.mean[:50], dataset.logvar[:50], dataset.metadata[:50])
            index.delete(dataset.ids[:5])
            catalog.unload("c", snapshot=False)
        process.send_signal(signal.SIGKILL)  # no shutdown save: only the fsynced AOF remains
        process.wait(10)
        port = url.rsplit(":", 1)[1].split("/")[0]
        process, url = start_redis(tmp_path / "redis", port=int(port))
        with Catalog(tmp_path / "data", redis_url=url, auto_snapshot=False) as catalog:
            index = catalog.get("c")
            assert len(index) == 45 and index.get("item-00049").metadata == dataset.metadata[49]
            assert "item-00004" not in index
    finally:
        process.terminate()
        process.wait(10)


def test_redis_without_fsync_is_refused_unless_accepted(tmp_path):
    process, url = start_redis(tmp_path / "redis", durable=False)
    try:
        with pytest.raises(StoreError, match="appendfsync"):
            Catalog(tmp_path / "data", redis_url=url)
        with Catalog(tmp_path / "data", redis_url=url, redis_require_fsync=False) as catalog:
            catalog.create("c", "image", DIM, "m")
    finally:
        process.terminate()
        process.wait(10)


def test_flushed_redis_is_detected(tmp_path, redis_url, dataset):
    with Catalog(tmp_path, redis_url=redis_url) as catalog:
        catalog.create("c", "image", DIM, "m").add(dataset.ids[:3], dataset.mean[:3], dataset.logvar[:3])
    redis.Redis.from_url(redis_url).flushall()
    with Catalog(tmp_path, redis_url=redis_url) as catalog:
        with pytest.raises(CorruptIndexError, match="no data"):
            catalog.get("c")


def test_bit_rot_in_a_redis_row_is_detected(tmp_path, redis_url, dataset):
    with Catalog(tmp_path, redis_url=redis_url, auto_snapshot=False) as catalog:
        index = catalog.create("c", "image", DIM, "m")
        index.add(dataset.ids[:3], dataset.mean[:3], dataset.logvar[:3])
        uuid = catalog.list()[0].uuid
        client = redis.Redis.from_url(redis_url)
        key = f"prolip:{uuid}:i:item-00001"
        blob = bytearray(client.hget(key, "logvar"))
        blob[0] ^= 0x04
        client.hset(key, "logvar", bytes(blob))
        with pytest.raises(CorruptIndexError, match="item-00001"):
            index.get("item-00001")
        catalog.unload("c", snapshot=False)
        with pytest.raises(CorruptIndexError, match="item-00001"):
            catalog.get("c")


def test_sqlite_collection_needs_no_redis_but_redis_one_does(tmp_path, redis_url):
    with Catalog(tmp_path, redis_url=redis_url) as catalog:
        catalog.create("r", "image", DIM, "m")
    with Catalog(tmp_path) as catalog:
        with pytest.raises(StoreError, match="redis_url"):
            catalog.get("r")
