"""kill -9 redis-server (AOF, appendfsync always) under load: nothing acknowledged is lost after restart.

Two writers run at once: one adds items to a collection whose item store is Redis, one queues
job chunks on the task stream. Every call that returned before the kill must be there after
Redis restarts from its AOF.
"""

from __future__ import annotations

import random
import signal
import threading
import time

import numpy as np

from indexer import Catalog, IndexSpec
from indexer.redis_queue import ChunkItem, RedisQueue
from tests.processes import free_port, start_redis

DIM = 16
BATCH = 10


def _vectors(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mean = rng.standard_normal((BATCH, DIM)).astype(np.float32)
    logvar = (rng.standard_normal((BATCH, DIM)) - 3).astype(np.float32)
    return mean / np.linalg.norm(mean, axis=1, keepdims=True), logvar


def _add_items(index, acknowledged: set[str], stop: threading.Event) -> None:
    for batch in range(100_000):
        if stop.is_set():
            return
        ids = [f"b{batch}-{j}" for j in range(BATCH)]
        mean, logvar = _vectors(batch)
        try:
            index.add(ids, mean, logvar, [{"b": batch}] * BATCH)
        except Exception:
            return  # Redis is gone
        acknowledged.update(ids)


def _queue_chunks(queue: RedisQueue, acknowledged: set[int], stop: threading.Event) -> None:
    for chunk in range(100_000):
        if stop.is_set():
            return
        try:
            queue.enqueue_chunk("job-1", chunk, "text", "m", DIM, [ChunkItem(f"t{chunk}", {"text": "a dog"})])
        except Exception:
            return
        acknowledged.add(chunk)


def test_kill_9_redis_under_load_loses_nothing_acknowledged(tmp_path):
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    server, _ = start_redis(redis_dir, port)
    items: set[str] = set()
    chunks: set[int] = set()
    try:
        catalog = Catalog(tmp_path / "data", redis_url=url, auto_snapshot=False)
        index = catalog.create("c", "image", DIM, "m", spec=IndexSpec(kind="flat", codec="flat"))
        stop = threading.Event()
        writers = [threading.Thread(target=_add_items, args=(index, items, stop)),
                   threading.Thread(target=_queue_chunks, args=(RedisQueue.from_url(url), chunks, stop))]
        for writer in writers:
            writer.start()
        time.sleep(random.Random(3).uniform(0.5, 1.0))
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        stop.set()
        for writer in writers:
            writer.join(30)
            assert not writer.is_alive()
        assert items and chunks  # both writers got acknowledgements before the kill
        try:
            catalog.close()
        except Exception:
            pass  # closing wants Redis; it is down
        server, _ = start_redis(redis_dir, port)
        with Catalog(tmp_path / "data", redis_url=url, auto_snapshot=False) as reopened:
            index = reopened.get("c")
            missing = [item_id for item_id in items if item_id not in index]
            assert not missing, f"{len(missing)} acknowledged items lost, e.g. {missing[:3]}"
            assert len(index) - len(items) in (0, BATCH)  # at most the batch in flight at the kill
        queued = RedisQueue.from_url(url).queued_chunks("job-1")
        assert chunks <= queued, f"lost chunks: {sorted(chunks - queued)[:5]}"
        assert len(queued - chunks) <= 1
    finally:
        server.kill()
        server.wait(10)
