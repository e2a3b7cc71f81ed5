"""Dynamic batching: merged calls, exact per-request results, bounded queue, skipped and failing requests."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from service.batching import BatchQueue
from service.errors import QueueFull
from service.metrics import ServiceMetrics


class Recording:
    """Wraps the real encoder, remembering the size of every call."""

    def __init__(self, encode, gate: threading.Event | None = None):
        self.encode = encode
        self.calls: list[int] = []
        self.gate = gate

    def __call__(self, items):
        if self.gate is not None:
            self.gate.wait(5)
        self.calls.append(len(items))
        return self.encode(items)


def run(coro):
    return asyncio.run(coro)


TEXTS = ["a red circle", "a blue square", "the dog", "a photo of a cat", "green", "a small white diamond",
         "a large yellow triangle on the left", "an object"]


def test_concurrent_requests_share_calls_and_get_their_own_rows(encoder):
    recording = Recording(encoder.encode_texts)
    metrics = ServiceMetrics()

    async def main():
        with ThreadPoolExecutor(1) as executor:
            queue = BatchQueue("text", recording, executor, max_batch_size=32, max_wait_s=0.05, metrics=metrics)
            await queue.start()
            try:
                return await asyncio.gather(*(queue.submit([t]) for t in TEXTS))
            finally:
                await queue.stop()

    results = run(main())
    assert sum(recording.calls) == len(TEXTS)
    assert len(recording.calls) < len(TEXTS)  # merged
    alone = encoder.encode_texts(TEXTS)
    for i, result in enumerate(results):
        np.testing.assert_allclose(result.mean[0], alone.mean[i], atol=1e-5)
        np.testing.assert_allclose(result.logvar[0], alone.logvar[i], atol=1e-5)
    assert b"prolip_batch_size_count" in metrics.render()


def test_batches_never_exceed_max_batch_size_and_keep_order(encoder):
    recording = Recording(encoder.encode_texts)

    async def main():
        with ThreadPoolExecutor(1) as executor:
            queue = BatchQueue("text", recording, executor, max_batch_size=3, max_wait_s=0.05)
            await queue.start()
            try:
                return await asyncio.gather(*(queue.submit(TEXTS[i:i + 2]) for i in range(0, 8, 2)))
            finally:
                await queue.stop()

    results = run(main())
    assert all(size <= 3 for size in recording.calls) and sum(recording.calls) == 8
    alone = encoder.encode_texts(TEXTS)
    np.testing.assert_allclose(np.concatenate([r.mean for r in results]), alone.mean, atol=1e-5)


def test_without_batching_each_request_is_one_call(encoder):
    recording = Recording(encoder.encode_texts)

    async def main():
        with ThreadPoolExecutor(1) as executor:
            queue = BatchQueue("text", recording, executor, batching=False)
            await queue.start()
            return await asyncio.gather(*(queue.submit([t]) for t in TEXTS[:4]))

    run(main())
    assert recording.calls == [1, 1, 1, 1]


@pytest.mark.parametrize("batching", [True, False])
def test_full_queue_refuses_with_queue_full(encoder, batching):
    gate = threading.Event()
    recording = Recording(encoder.encode_texts, gate)

    async def main():
        with ThreadPoolExecutor(1) as executor:
            queue = BatchQueue("text", recording, executor, max_batch_size=1, max_queue=2, batching=batching)
            await queue.start()
            try:
                first = [asyncio.create_task(queue.submit([t])) for t in TEXTS[:2]]
                await asyncio.sleep(0.05)
                with pytest.raises(QueueFull) as refused:
                    await queue.submit(["one too many"])
                gate.set()
                done = await asyncio.gather(*first)
                return refused.value, done
            finally:
                gate.set()
                await queue.stop()

    error, done = run(main())
    assert error.status_code == 429 and error.headers["Retry-After"] == "1"
    assert len(done) == 2


def test_requests_whose_client_left_are_skipped(encoder):
    gate = threading.Event()
    recording = Recording(encoder.encode_texts, gate)

    async def main():
        with ThreadPoolExecutor(1) as executor:
            queue = BatchQueue("text", recording, executor, max_batch_size=1, max_wait_s=0)
            await queue.start()
            try:
                busy = asyncio.create_task(queue.submit(["keeps the encoder busy"]))
                await asyncio.sleep(0.05)
                gone = asyncio.create_task(queue.submit(["client disconnects"]))
                kept = asyncio.create_task(queue.submit(["client stays"]))
                await asyncio.sleep(0.01)
                gone.cancel()
                gate.set()
                await asyncio.gather(busy, kept)
            finally:
                gate.set()
                await queue.stop()

    run(main())
    assert recording.calls == [1, 1]  # the cancelled request never reached the encoder


def test_a_bad_input_fails_only_its_own_request(encoder):
    def picky(texts):
        if any(t == "poison" for t in texts):
            raise ValueError("cannot encode poison")
        return encoder.encode_texts(texts)

    async def main():
        with ThreadPoolExecutor(1) as executor:
            queue = BatchQueue("text", picky, executor, max_batch_size=8, max_wait_s=0.05)
            await queue.start()
            try:
                return await asyncio.gather(queue.submit(["a red circle"]), queue.submit(["poison"]),
                                            queue.submit(["a blue square"]), return_exceptions=True)
            finally:
                await queue.stop()

    good, bad, other = run(main())
    assert isinstance(bad, ValueError)
    assert good.mean.shape == (1, 64) and other.mean.shape == (1, 64)


def test_batched_searches_equal_single_searches(encoder, tmp_path):
    from indexer import Catalog
    from service.search import SearchBatcher

    catalog = Catalog(tmp_path / "data")
    index = catalog.create("texts", modality="text", dim=encoder.embed_dim, model_id="m")
    corpus = TEXTS * 3
    items = encoder.encode_texts(corpus)
    index.add([f"t{i}" for i in range(len(corpus))], items.mean, items.logvar, [{"i": i} for i in range(len(corpus))])
    queries = [encoder.encode_texts([t]) for t in TEXTS]
    metrics = ServiceMetrics()

    async def main():
        batcher = SearchBatcher(max_batch_size=16, max_wait_s=0.05, metrics=metrics)
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.search(index, q, k=1 + i % 4, rank="csd")
                                          for i, q in enumerate(queries)))
        finally:
            await batcher.stop()

    try:
        results = run(main())
        for i, (query, hits) in enumerate(zip(queries, results, strict=True)):
            alone = index.search(query.mean, query.logvar, 1 + i % 4, rank="csd")[0]
            assert [h.id for h in hits] == [h.id for h in alone]
            assert [h.csd for h in hits] == pytest.approx([h.csd for h in alone], abs=1e-5)
        assert b'prolip_batch_requests_count{queue="search"}' in metrics.render()
    finally:
        catalog.close()


def test_a_lone_request_does_not_wait_for_company(encoder):
    async def main(in_flight):
        with ThreadPoolExecutor(1) as executor:
            queue = BatchQueue("text", encoder.encode_texts, executor, max_wait_s=0.5, in_flight=in_flight)
            await queue.start()
            try:
                start = asyncio.get_running_loop().time()
                await queue.submit(["a red circle"])
                return asyncio.get_running_loop().time() - start
            finally:
                await queue.stop()

    assert run(main(lambda: 1)) < 0.4  # the only request in the service: no reason to wait
    assert run(main(lambda: 5)) >= 0.5  # others are in flight: it waits for them up to max_wait


# --- deadlines, the latency budget, batches in flight


def test_cost_model_fits_a_line_and_errs_long_before_it_can():
    from service.batching import CostModel

    model = CostModel()
    assert model.predict(4) is None
    model.observe(2, 0.02)
    assert model.predict(4) == pytest.approx(0.04)  # one size seen: proportional, an overestimate
    for n in (1, 9, 3, 7):
        model.observe(n, 0.005 + 0.005 * n)
    assert model.predict(5) == pytest.approx(0.03, rel=0.2)


def test_a_request_whose_deadline_passes_in_the_queue_gets_503_and_never_runs(encoder):
    from service.batching import DeadlineExceeded

    gate = threading.Event()
    recording = Recording(encoder.encode_texts, gate)

    async def main(batching):
        with ThreadPoolExecutor(1) as executor:
            queue = BatchQueue("text", recording, executor, max_batch_size=1, max_wait_s=0, deadline_s=0.2,
                               batching=batching)
            await queue.start()
            try:
                busy = asyncio.create_task(queue.submit(["keeps the encoder busy"]))
                await asyncio.sleep(0.05)
                late = asyncio.create_task(queue.submit(["waits past its deadline"]))
                with pytest.raises(DeadlineExceeded) as error:
                    await late
                gate.set()
                await asyncio.gather(busy, return_exceptions=True)  # its own deadline passed too, while it ran
                await asyncio.sleep(0.05)
                return error.value
            finally:
                gate.set()
                await queue.stop()

    for batching in (True, False):
        recording.calls.clear()
        gate.clear()
        error = run(main(batching))
        assert error.status_code == 503 and error.headers["Retry-After"] == "1"
        assert recording.calls == [1]  # the late request never reached the encoder


def test_a_request_the_queue_cannot_serve_in_time_is_refused_up_front(encoder):
    recording = Recording(encoder.encode_texts)

    async def main():
        with ThreadPoolExecutor(1) as executor:
            queue = BatchQueue("text", recording, executor, max_batch_size=2, deadline_s=1.0)
            for n in (1, 2):
                queue.cost.observe(n, 0.8 * n)  # the model is slow: 0.8 s per input
            queue._queued_items = 3  # three inputs queued ahead
            await queue.start()
            try:
                with pytest.raises(QueueFull) as refused:
                    await queue.submit(["one more"])
                return refused.value
            finally:
                await queue.stop()

    error = run(main())
    assert error.status_code == 429 and int(error.headers["Retry-After"]) >= 1
    assert "deadline" in error.message and recording.calls == []


def test_the_latency_budget_closes_a_batch_before_max_wait(encoder):
    import time

    from service.batching import _Pending

    async def main():
        with ThreadPoolExecutor(1) as executor:
            queue = BatchQueue("text", encoder.encode_texts, executor, max_wait_s=10.0, latency_budget_s=0.1,
                               in_flight=lambda: 50)  # many requests on their way: waiting could pay
            for n in (1, 4):
                queue.cost.observe(n, 0.01 * n)
            now = time.perf_counter()
            future = asyncio.get_running_loop().create_future()
            fresh = _Pending(["a"], future, now + 5, enqueued=now)
            old = _Pending(["a"], future, now + 5, enqueued=now - 0.095)
            return queue._wait_allowance([fresh], 1, now), queue._wait_allowance([old], 1, now)

    fresh, old = run(main())
    assert 0 < fresh <= 0.1 - 0.02  # budget minus the expected run of a batch of 2
    assert old <= 0  # its oldest request has used the budget up: run now


def test_batches_in_flight_overlap_and_every_request_gets_its_own_rows(encoder):
    barrier = threading.Barrier(2, timeout=5)  # passes only when two batches run at once

    def together(texts):
        barrier.wait()
        return encoder.encode_texts(texts)

    async def main():
        with ThreadPoolExecutor(2) as executor:
            queue = BatchQueue("text", together, executor, max_batch_size=2, max_wait_s=0, max_in_flight=2)
            await queue.start()
            try:
                return await asyncio.gather(*(queue.submit(TEXTS[i:i + 2]) for i in range(0, 8, 2)))
            finally:
                await queue.stop()

    results = run(main())
    alone = encoder.encode_texts(TEXTS)
    np.testing.assert_allclose(np.concatenate([r.mean for r in results]), alone.mean, atol=1e-5)


def test_expected_wait_counts_requests_without_batching_and_batches_with_it(encoder):
    def queue(batching):
        q = BatchQueue("text", encoder.encode_texts, None, batching=batching, max_batch_size=32)
        for n in (1, 1, 1):
            q.cost.observe(n, 0.02)
        return q

    unbatched = queue(False)
    unbatched._waiting, unbatched._queued_items = 40, 40
    assert unbatched.expected_wait(1) == pytest.approx(0.02 * 41)  # 40 calls of one ahead, then this one
    batched = queue(True)
    batched._queued_items = 40
    assert batched.expected_wait(1) == pytest.approx(0.02 * 32 * 2)  # two batches (the fallback cost: per input)


def test_queued_inputs_are_counted_once_whoever_gives_up(encoder):
    gate = threading.Event()
    recording = Recording(encoder.encode_texts, gate)

    async def main():
        with ThreadPoolExecutor(1) as executor:
            queue = BatchQueue("text", recording, executor, max_batch_size=1, deadline_s=0.1)
            await queue.start()
            try:
                busy = asyncio.create_task(queue.submit(["keeps the encoder busy"]))
                await asyncio.sleep(0.02)
                late = [asyncio.create_task(queue.submit([f"late {i}", "two inputs"])) for i in range(3)]
                await asyncio.gather(*late, return_exceptions=True)  # their deadlines pass in the queue
                gate.set()
                await asyncio.gather(busy, return_exceptions=True)
                await queue.submit(["after"])  # the queue skips the late ones, then serves this
                return queue._queued_items
            finally:
                gate.set()
                await queue.stop()

    assert run(main()) == 0
