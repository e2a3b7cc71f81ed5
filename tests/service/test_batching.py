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
