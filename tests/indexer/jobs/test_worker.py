"""Encoder workers on a real redis-server: results, take-over, poison tasks, remote queries."""

import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image

from indexer.pipeline import ChunkItem
from indexer.redis_queue import GROUP, RedisQueue, parse_result
from indexer.remote_encoder import EncoderUnavailableError, RemoteEncoder
from indexer.worker import Worker, WorkerSettings
from models.preprocess import ImageDecodeError
from tests.indexer.jobs.conftest import image_bytes, write_images

FAST = WorkerSettings(claim_idle_ms=200, max_deliveries=3, block_ms=50, heartbeat_s=0.5)


@contextmanager
def running_worker(queue, encoder, name="w1", settings=FAST):
    worker = Worker(queue, encoder, name=name, settings=settings)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not any(w["name"] == name for w in queue.live_workers()):  # registered: its first heartbeat
        assert time.monotonic() < deadline, "the worker did not register"
        time.sleep(0.01)
    try:
        yield worker
    finally:
        stop.set()
        thread.join(10)


def collect_results(queue, job_id, count, timeout=20.0):
    results, cursor = [], "0"
    deadline = time.monotonic() + timeout
    while len(results) < count:
        assert time.monotonic() < deadline, f"only {len(results)} of {count} results arrived"
        for entry_id, result in queue.read_results(job_id, cursor, block_ms=100):
            cursor = entry_id
            results.append(result)
    return results


def text_items(*texts):
    return [ChunkItem(f"t{i}", {"text": text}) for i, text in enumerate(texts)]


@pytest.fixture
def queue(redis_url):
    return RedisQueue.from_url(redis_url, namespace="test")


def test_worker_encodes_chunks_and_removes_their_tasks(queue, encoder):
    queue.enqueue_chunk("job1", 0, "text", encoder.model_id, 64, text_items("a red circle", "the dog"))
    queue.enqueue_chunk("job1", 1, "text", encoder.model_id, 64, text_items("a cat", ""))
    with running_worker(queue, encoder) as worker:
        results = sorted(collect_results(queue, "job1", 2), key=lambda r: r.chunk)
    assert worker.chunks_done == 2
    first, second = results
    assert first.kind == "ok" and first.worker == "w1" and first.encoded.ids == ["t0", "t1"]
    np.testing.assert_allclose(first.encoded.mean, encoder.encode_texts(["a red circle", "the dog"]).mean, atol=1e-6)
    assert second.encoded.ids == ["t0"] and second.encoded.failures == [("t1", "no caption text")]
    assert queue.redis.xlen(queue.chunks_key) == 0
    assert queue.redis.xpending(queue.chunks_key, GROUP)["pending"] == 0


def test_task_left_by_a_dead_worker_is_taken_over(queue, encoder):
    queue.enqueue_chunk("job2", 0, "text", encoder.model_id, 64, text_items("a dog"))
    queue.ensure_groups()
    # a worker that read the task and died: the task sits in its pending list, never acknowledged
    taken = queue.redis.xreadgroup(GROUP, "ghost", {queue.chunks_key: ">"}, count=1)
    assert taken and queue.redis.xpending(queue.chunks_key, GROUP)["consumers"][0]["name"] == b"ghost"
    with running_worker(queue, encoder, name="rescuer"):
        (result,) = collect_results(queue, "job2", 1)
    assert result.kind == "ok" and result.worker == "rescuer"
    assert queue.redis.xpending(queue.chunks_key, GROUP)["pending"] == 0


def test_poison_task_is_dead_lettered_after_k_deliveries_while_the_rest_flows(queue, encoder):
    queue.enqueue_chunk("job3", 0, "text", encoder.model_id, 64, text_items("a red circle"))
    queue.enqueue_chunk("job3", 1, "video", encoder.model_id, 64, text_items("never encodable"))
    queue.enqueue_chunk("job3", 2, "text", encoder.model_id, 64, text_items("the dog"))
    with running_worker(queue, encoder) as worker:
        results = {r.chunk: r for r in collect_results(queue, "job3", 3)}
    assert results[0].kind == results[2].kind == "ok"
    assert results[1].kind == "dead"
    assert "failed 3 times" in results[1].reason and "unknown modality 'video'" in results[1].reason
    (letter,) = queue.dead_letters()
    assert letter["job"] == "job3" and letter["chunk"] == "1" and "failed 3 times" in letter["reason"]
    assert worker.chunks_done == 2
    assert queue.redis.xlen(queue.chunks_key) == 0 and queue.redis.hlen(queue.errors_key) == 0


def test_task_redelivered_too_often_is_dead_lettered_unprocessed(queue, encoder):
    queue.enqueue_chunk("job4", 0, "text", encoder.model_id, 64, text_items("a dog"))
    queue.ensure_groups()
    # three workers took it in turn and died (a chunk that crashes its worker)
    queue.redis.xreadgroup(GROUP, "dead-1", {queue.chunks_key: ">"}, count=1)
    for name in ("dead-2", "dead-3"):
        time.sleep(0.01)
        queue.redis.xautoclaim(queue.chunks_key, GROUP, name, 1, start_id="0-0")
    time.sleep(0.25)
    with running_worker(queue, encoder) as worker:
        (result,) = collect_results(queue, "job4", 1)
    assert result.kind == "dead" and "delivered 4 times without completing" in result.reason
    assert worker.chunks_done == 0


def test_malformed_task_and_other_model_and_cancelled_job(queue, encoder):
    queue.ensure_groups()
    queue.redis.xadd(queue.chunks_key, {"job": "x", "chunk": "zero", "items": "[]"})
    queue.enqueue_chunk("job5", 0, "text", "some-other-model", 64, text_items("a dog"))
    queue.cancel("job6")
    queue.enqueue_chunk("job6", 0, "text", encoder.model_id, 64, text_items("a cat"))
    with running_worker(queue, encoder) as worker:
        (result,) = collect_results(queue, "job5", 1)
        deadline = time.monotonic() + 5
        while queue.redis.xlen(queue.chunks_key) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert result.kind == "dead" and "task needs model some-other-model" in result.reason
    reasons = [letter["reason"] for letter in queue.dead_letters()]
    assert any("malformed chunk task" in reason for reason in reasons)
    assert worker.chunks_done == 0 and queue.redis.xlen(queue.chunks_key) == 0
    assert queue.redis.xlen(queue.results_key("job6")) == 0  # the cancelled job's task was dropped unencoded


def test_results_round_trip_through_redis(queue, encoder):
    queue.enqueue_chunk("job7", 3, "text", encoder.model_id, 64, text_items("green square"))
    with running_worker(queue, encoder):
        collect_results(queue, "job7", 1)
    (entry_id, fields), = queue.redis.xrange(queue.results_key("job7"))
    result = parse_result(fields)
    assert result.chunk == 3 and result.model_id == encoder.model_id
    assert result.encoded.mean.dtype == np.float32 and result.encoded.mean.flags.writeable
    assert queue.result_chunks("job7") == {3}


# --- RemoteEncoder ---------------------------------------------------------------------------------

def test_remote_encoder_matches_the_local_encoder(redis_url, queue, encoder, tmp_path):
    (path,) = write_images(tmp_path, ["p.png"], seed=5)
    picture = Image.fromarray(np.random.default_rng(6).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    with running_worker(queue, encoder):
        remote = RemoteEncoder(redis_url, namespace="test", timeout_s=10, batch_size=2)
        texts = ["a red circle", "the dog", "a photo of a cat"]
        np.testing.assert_allclose(remote.encode_texts(texts).mean, encoder.encode_texts(texts).mean, atol=1e-6)
        images = [image_bytes(4), path, picture]
        got = remote.encode_images(images)
        want = encoder.encode_images(images)
        np.testing.assert_allclose(got.mean, want.mean, atol=1e-5)
        np.testing.assert_allclose(got.logvar, want.logvar, atol=1e-5)
        assert remote.embed_dim == 64 and remote.model_id == encoder.model_id
        assert remote.pair_logit == encoder.pair_logit
        assert len(remote.encode_texts([])) == 0
        with pytest.raises(ImageDecodeError, match="not a recognised image"):
            remote.encode_images([b"definitely not an image"])


def test_remote_encoder_without_workers_is_unavailable_not_hanging(redis_url, queue):
    remote = RemoteEncoder(redis_url, namespace="test", timeout_s=0.3)
    with pytest.raises(EncoderUnavailableError, match="no live encoder worker"):
        remote.encode_texts(["a dog"])
    # a worker that registered and then hung: the request times out and is withdrawn
    pair_logit = {"cos_weight": 1.0, "variance_weight": -0.5, "bias": 0.0}
    queue.heartbeat("hung", {"model_id": "m", "embed_dim": 64, "pair_logit": pair_logit,
                             "image_size": 32}, ttl_s=30)
    with pytest.raises(EncoderUnavailableError, match="no encoder worker answered within 0.3s"):
        remote.encode_texts(["a dog"])
    assert queue.redis.xlen(queue.requests_key) == 0


def test_remote_encoder_with_redis_down_is_unavailable():
    from tests.processes import free_port

    remote = RemoteEncoder(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.5)
    with pytest.raises(EncoderUnavailableError, match="cannot reach Redis"):
        remote.encode_texts(["a dog"])


def test_worker_rides_out_a_redis_restart_that_loses_everything(tmp_path, encoder):
    from tests.processes import free_port, start_redis

    port = free_port()
    server, _ = start_redis(tmp_path, port, durable=False)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        queue = RedisQueue.from_url(url, namespace="test")
        with running_worker(queue, encoder) as worker:
            queue.enqueue_chunk("before", 0, "text", encoder.model_id, 64, text_items("a dog"))
            collect_results(queue, "before", 1)
            server.terminate()
            server.wait(10)
            time.sleep(0.3)  # the worker sees connection errors meanwhile
            server, _ = start_redis(tmp_path, port, durable=False)  # empty: streams and the consumer group are gone
            coordinator = RedisQueue.from_url(url, namespace="test")
            coordinator.enqueue_chunk("after", 0, "text", encoder.model_id, 64, text_items("a cat"))
            (result,) = collect_results(coordinator, "after", 1)
        assert result.kind == "ok" and worker.chunks_done == 2
    finally:
        server.terminate()
        server.wait(10)


def test_workers_that_do_not_answer_are_not_blamed_on_redis(redis_url, queue):
    """Issue #16, defect 12: with a socket timeout in the Redis URL shorter than the wait for a worker,
    the wait used to end in "cannot reach Redis ... Timeout reading from socket" although Redis was fine."""
    queue.heartbeat("hung", {"model_id": "m", "embed_dim": 64,
                             "pair_logit": {"cos_weight": 1.0, "variance_weight": -0.5, "bias": 0.0},
                             "image_size": 32}, ttl_s=30)
    remote = RemoteEncoder(f"{redis_url}?socket_timeout=0.3", namespace="test", timeout_s=1.0)
    with pytest.raises(EncoderUnavailableError) as refused:
        remote.encode_texts(["a dog"])
    assert "no encoder worker answered within 1s" in str(refused.value)
    assert "cannot reach Redis" not in str(refused.value)


def test_workers_log_each_chunk(queue, encoder, caplog):
    import logging

    queue.enqueue_chunk("job9", 0, "text", encoder.model_id, 64, text_items("a red circle", ""))
    with caplog.at_level(logging.INFO, logger="indexer.worker"), running_worker(queue, encoder):
        collect_results(queue, "job9", 1)
    lines = [r.getMessage() for r in caplog.records if "chunk 0 of job job9" in r.getMessage()]
    assert lines and "1 items encoded, 1 failed" in lines[0]


def test_remote_encoder_carries_a_deterministic_models_points(redis_url, queue, clip_encoder):
    """A CLIP worker says it is deterministic; replies carry means only and arrive with logvar None."""
    with running_worker(queue, clip_encoder):
        remote = RemoteEncoder(redis_url, namespace="test", timeout_s=10, batch_size=2)
        texts = ["a red circle", "the dog", "a photo of a cat"]
        got = remote.encode_texts(texts)
        np.testing.assert_allclose(got.mean, clip_encoder.encode_texts(texts).mean, atol=1e-6)
        assert got.logvar is None and remote.deterministic and remote.family == "clip"
        assert remote.encode_texts([]).logvar is None
        assert remote.pair_logit == clip_encoder.pair_logit
        queue.enqueue_chunk("jobc", 0, "text", clip_encoder.model_id, 32, text_items("a red circle", "the dog"))
        (result,) = collect_results(queue, "jobc", 1)
    assert result.encoded.logvar is None and result.encoded.mean.shape == (2, 32)
