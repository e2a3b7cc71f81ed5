"""Jobs on Redis encoder workers: exactly-once despite killed workers, duplicates, poison and lost tasks."""

import os
import signal
import threading
import time
from collections import Counter

import pytest

from indexer import Catalog
from indexer.coordinator import CoordinatorSettings
from indexer.jobs import JobManager, JobSettings
from indexer.redis_queue import GROUP, RedisQueue
from indexer.worker import Worker, WorkerSettings
from tests.indexer.jobs.conftest import cli, write_images

NAMESPACE = "t"


class CountingCatalog:
    """The real catalog; every id handed to ``add`` is counted, to prove nothing is added twice."""

    def __init__(self, catalog):
        self.catalog = catalog
        self.added = Counter()

    def get(self, name):
        return _CountingIndex(self.catalog.get(name), self.added)

    def create(self, *args, **kwargs):
        return _CountingIndex(self.catalog.create(*args, **kwargs), self.added)

    def close(self):
        self.catalog.close()


class _CountingIndex:
    def __init__(self, index, added):
        self.index, self.added = index, added

    def __getattr__(self, name):
        return getattr(self.index, name)

    def __len__(self):
        return len(self.index)

    def add(self, ids, mean, logvar, metadata=None):
        self.index.add(ids, mean, logvar, metadata)
        self.added.update(ids)


def settings(**coordinator):
    return JobSettings(chunk_size=4, namespace=NAMESPACE, device="cpu",
                       coordinator=CoordinatorSettings(block_ms=50, **coordinator))


@pytest.fixture
def catalog(tmp_path):
    counting = CountingCatalog(Catalog(tmp_path / "data"))
    yield counting
    counting.close()


def worker_thread(redis_url, encoder, name, stop, **overrides):
    worker_settings = WorkerSettings(**{"claim_idle_ms": 300, "block_ms": 50, "heartbeat_s": 0.5, **overrides})
    worker = Worker(RedisQueue.from_url(redis_url, NAMESPACE), encoder, name=name, settings=worker_settings)
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    return thread


def wait_for(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.mark.slow
def test_two_worker_processes_one_killed_mid_chunk_every_item_indexed_exactly_once(
        tmp_path, redis_url, model_dir, catalog):
    corpus = tmp_path / "corpus"
    names = [f"{i:03d}.png" for i in range(160)]
    write_images(corpus, names)
    queue = RedisQueue.from_url(redis_url, NAMESPACE)
    common = ["--log-level", "WARNING", "worker", "--redis-url", redis_url, "--model", str(model_dir),
              "--device", "cpu", "--namespace", NAMESPACE, "--claim-idle-s", "1"]
    victim = cli(*common, "--name", "victim")
    survivor = cli(*common, "--name", "survivor")
    try:
        wait_for(lambda: len(queue.live_workers()) == 2, 60, "both workers to start")
        manager = JobManager(tmp_path / "data", catalog=catalog, model=str(model_dir), redis_url=redis_url,
                             settings=settings(max_in_flight=8))
        job_id = manager.submit(corpus, "photos")

        def victim_pending() -> int:
            for consumer in queue.redis.xpending(queue.chunks_key, GROUP)["consumers"]:
                if consumer["name"] == b"victim":
                    return consumer["pending"]
            return 0

        killed = False
        while not killed:
            assert manager.status(job_id).state in ("queued", "planning", "running"), "job ended before the kill"
            if victim_pending():
                os.kill(victim.pid, signal.SIGSTOP)  # freeze it, then look again: still holding a task?
                if victim_pending():
                    victim.kill()
                    killed = True
                else:
                    os.kill(victim.pid, signal.SIGCONT)
        victim.wait(10)
        status = manager.wait(job_id, 90)
        assert (status.state, status.done, status.failed) == ("completed", 160, 0)
        assert set(catalog.added) == {n for n in names} and max(catalog.added.values()) == 1
        assert len(catalog.get("photos")) == 160
        assert queue.redis.xpending(queue.chunks_key, GROUP)["pending"] == 0
        assert queue.dead_letters() == []
        manager.close()
    finally:
        for process in (victim, survivor):
            if process.poll() is None:
                process.terminate()
                process.wait(10)
    assert survivor.returncode == 0  # SIGTERM: a clean stop


def test_a_task_delivered_twice_is_applied_once(tmp_path, redis_url, encoder, catalog):
    corpus = tmp_path / "corpus"
    write_images(corpus, [f"{i}.png" for i in range(12)])
    queue = RedisQueue.from_url(redis_url, NAMESPACE)
    manager = JobManager(tmp_path / "data", catalog=catalog, encoder=encoder, redis_url=redis_url,
                         settings=settings(max_in_flight=1))
    job_id = manager.submit(corpus, "photos")
    wait_for(lambda: queue.redis.xlen(queue.chunks_key) == 1, what="the job's first task")
    (_, fields), = queue.redis.xrange(queue.chunks_key)
    queue.redis.xadd(queue.chunks_key, fields)  # the same task once more, before the job's next ones
    stop = threading.Event()
    thread = worker_thread(redis_url, encoder, "w", stop)
    status = manager.wait(job_id, 30)
    stop.set()
    thread.join(10)
    assert (status.state, status.done, status.duplicates) == ("completed", 12, 1)
    assert len(catalog.added) == 12 and max(catalog.added.values()) == 1
    manager.close()


class PoisonedEncoder:
    """The real encoder, except that it crashes on any text containing "poison"."""

    def __init__(self, encoder):
        self.encoder = encoder

    def __getattr__(self, name):
        return getattr(self.encoder, name)

    def encode_texts(self, texts):
        if any("poison" in text for text in texts):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return self.encoder.encode_texts(texts)


def test_poison_chunk_fails_its_items_and_the_rest_of_the_job_completes(tmp_path, redis_url, encoder, catalog):
    captions = tmp_path / "captions.csv"
    lines = [f"c{i},a red circle {i}" for i in range(12)]
    lines[5] = "c5,poison pill"
    captions.write_text("id,caption\n" + "\n".join(lines) + "\n")
    manager = JobManager(tmp_path / "data", catalog=catalog, encoder=encoder, redis_url=redis_url,
                         settings=settings())
    stop = threading.Event()
    thread = worker_thread(redis_url, PoisonedEncoder(encoder), "w", stop, claim_idle_ms=100, max_deliveries=2)
    job_id = manager.submit(captions, "captions")
    status = manager.wait(job_id, 30)
    stop.set()
    thread.join(10)
    assert (status.state, status.done, status.failed) == ("completed", 8, 4)  # chunk 1 = c4..c7
    failures = manager.failures(job_id)
    assert [f.item_id for f in failures] == ["c4", "c5", "c6", "c7"]
    assert "dead-lettered: failed 2 times" in failures[0].reason and "illegal memory access" in failures[0].reason
    (letter,) = RedisQueue.from_url(redis_url, NAMESPACE).dead_letters()
    assert letter["job"] == job_id and letter["chunk"] == "1"
    manager.close()


def test_restarted_coordinator_reuses_queued_tasks_and_requeues_lost_ones(tmp_path, redis_url, encoder, catalog):
    corpus = tmp_path / "corpus"
    write_images(corpus, [f"{i}.png" for i in range(20)])  # 5 chunks
    queue = RedisQueue.from_url(redis_url, NAMESPACE)
    first = JobManager(tmp_path / "data", catalog=catalog, encoder=encoder, redis_url=redis_url,
                       settings=settings(max_in_flight=3))
    job_id = first.submit(corpus, "photos")
    wait_for(lambda: queue.redis.xlen(queue.chunks_key) == 3, what="three tasks in flight")
    first.close()                                       # the coordinator goes away; its tasks stay queued
    assert first.status(job_id).state == "interrupted"
    lost_id, _ = queue.redis.xrange(queue.chunks_key, count=1)[0]
    queue.redis.xdel(queue.chunks_key, lost_id)         # and one task is lost from Redis meanwhile

    second = JobManager(tmp_path / "data", catalog=catalog, encoder=encoder, redis_url=redis_url,
                        settings=settings(max_in_flight=3, reconcile_interval_s=0.3))
    assert second.resume_unfinished() == [job_id]
    stop = threading.Event()
    thread = worker_thread(redis_url, encoder, "w", stop)
    status = second.wait(job_id, 30)
    stop.set()
    thread.join(10)
    assert (status.state, status.done, status.duplicates) == ("completed", 20, 0)
    assert len(catalog.added) == 20 and max(catalog.added.values()) == 1
    second.close()


def test_cancelled_distributed_job_leaves_no_work_behind(tmp_path, redis_url, encoder, catalog):
    corpus = tmp_path / "corpus"
    write_images(corpus, [f"{i}.png" for i in range(12)])
    queue = RedisQueue.from_url(redis_url, NAMESPACE)
    manager = JobManager(tmp_path / "data", catalog=catalog, encoder=encoder, redis_url=redis_url,
                         settings=settings())
    job_id = manager.submit(corpus, "photos")
    wait_for(lambda: queue.redis.xlen(queue.chunks_key) == 3, what="the job's tasks")
    manager.cancel(job_id)
    assert manager.wait(job_id, 10).state == "cancelled"
    stop = threading.Event()
    thread = worker_thread(redis_url, encoder, "w", stop)
    wait_for(lambda: queue.redis.xlen(queue.chunks_key) == 0, what="the worker to drop the tasks")
    stop.set()
    thread.join(10)
    assert catalog.added == Counter() and queue.redis.xlen(queue.results_key(job_id)) == 0
    manager.close()


def test_a_job_with_no_worker_alive_says_so(tmp_path, redis_url, encoder, catalog):
    """Issue #16, defect 12: `index --workers-url` with no worker used to sit at 0 % without a word."""
    write_images(tmp_path / "corpus", [f"{i}.png" for i in range(4)])
    manager = JobManager(tmp_path / "data", catalog=catalog, encoder=encoder, redis_url=redis_url,
                         settings=settings(stall_note_s=0.2))
    job_id = manager.submit(tmp_path / "corpus", "photos")
    wait_for(lambda: manager.status(job_id).note is not None, timeout=20, what="a note on the stalled job")
    note = manager.status(job_id).note
    assert "no worker has taken a chunk" in note and "no encoder worker is alive" in note, note
    stop = threading.Event()
    thread = worker_thread(redis_url, encoder, "late", stop)
    try:
        status = manager.wait(job_id, 60)
    finally:
        stop.set()
        thread.join(10)
    assert (status.state, status.done, status.note) == ("completed", 4, None)
    manager.close()
