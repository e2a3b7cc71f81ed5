"""Dynamic batching: concurrent requests share one call of a batched function.

The service batches two things: query encoding (one model call for many queries) and
index search (one FAISS search for many query vectors). One asyncio task owns each queue
(as in text-embeddings-inference's queue): it takes the oldest request, then keeps taking
queued requests until the batch holds ``max_batch_size`` inputs or ``max_wait`` has passed
since the first one, skips requests whose client has gone, and runs the function in a
worker thread (the event loop stays free meanwhile); ``split`` hands each request its part
of the result. The queue is bounded: when ``max_queue`` requests wait, new ones are
refused with ``QueueFull`` (HTTP 429).

With batching off every request is its own call, still through the same executor and
still bounded by the same queue limit; the benchmark compares the two.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from models.encoder import GaussianBatch

from .errors import QueueFull, Unavailable
from .metrics import ServiceMetrics

log = logging.getLogger(__name__)

Item = TypeVar("Item")
BatchFn = Callable[[list[Any]], Any]  # inputs of several requests -> one result for all of them
SplitFn = Callable[[Any, int, int], Any]  # (result, start, stop) -> the part of rows start..stop


def split_gaussians(out: GaussianBatch, start: int, stop: int) -> GaussianBatch:
    return out.rows(start, stop)


def split_list(out: Sequence[Any], start: int, stop: int) -> list[Any]:
    return list(out[start:stop])


@dataclass
class _Pending(Generic[Item]):
    items: list[Item]
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class BatchQueue(Generic[Item]):
    """Runs ``encode`` on lists of inputs, merging concurrent requests into batches.

    ``modality`` names the queue in metrics and errors ("text", "image", "search").
    """

    def __init__(self, modality: str, encode: BatchFn, executor: ThreadPoolExecutor, *,
                 max_batch_size: int = 32, max_wait_s: float = 0.002, max_queue: int = 256,
                 batching: bool = True, metrics: ServiceMetrics | None = None, split: SplitFn = split_gaussians,
                 in_flight: Callable[[], int] | None = None):
        if max_batch_size < 1 or max_queue < 1 or max_wait_s < 0:
            raise ValueError("max_batch_size and max_queue must be >= 1 and max_wait_s >= 0")
        self.modality = modality
        self.encode = encode
        self.executor = executor
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.batching = batching
        self.metrics = metrics
        self.split = split
        self.in_flight = in_flight  # requests being handled by the service now (None: unknown)
        self._queue: asyncio.Queue[_Pending[Item]] | None = None
        self._task: asyncio.Task | None = None
        self._carry: _Pending[Item] | None = None  # taken from the queue but did not fit the last batch
        self._waiting = 0  # requests admitted and not yet answered (the bound when batching is off)

    async def start(self) -> None:
        if self.batching and self._task is None:
            self._queue = asyncio.Queue(maxsize=self.max_queue)
            self._task = asyncio.create_task(self._run(), name=f"batch-queue-{self.modality}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        for pending in self._drain():
            if not pending.future.done():
                pending.future.set_exception(Unavailable("the service is shutting down"))

    def _drain(self) -> list[_Pending[Item]]:
        drained = [self._carry] if self._carry is not None else []
        self._carry = None
        while self._queue is not None and not self._queue.empty():
            drained.append(self._queue.get_nowait())
        return drained

    @property
    def depth(self) -> int:
        return self._waiting

    async def submit(self, items: Sequence[Item]) -> Any:
        """Run the function on ``items`` (with others'); raises QueueFull when the queue is at its bound."""
        items = list(items)
        if not items:
            raise ValueError("nothing to encode")
        if self._waiting >= self.max_queue:
            if self.metrics:
                self.metrics.rejected.labels("queue_full").inc()
            raise QueueFull(f"the {self.modality} queue is full ({self.max_queue} requests); retry shortly",
                            retry_after_s=1)
        self._waiting += 1
        self._gauge()
        try:
            if not self.batching:
                return await self._encode_now(items)
            if self._task is None:
                raise Unavailable("the encoder queue is not running")
            future = asyncio.get_running_loop().create_future()
            self._queue.put_nowait(_Pending(items, future))  # cannot overflow: _waiting bounds it
            return await future
        finally:
            self._waiting -= 1
            self._gauge()

    def _gauge(self) -> None:
        if self.metrics:
            self.metrics.queue_depth.labels(self.modality).set(self._waiting)

    async def _encode_now(self, items: list[Item]) -> Any:
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        out = await loop.run_in_executor(self.executor, self.encode, items)
        self._observe(len(items), 1, time.perf_counter() - start)
        return out

    def _observe(self, size: int, requests: int, seconds: float) -> None:
        if self.metrics:
            self.metrics.batch_size.labels(self.modality).observe(size)
            self.metrics.batch_requests.labels(self.modality).observe(requests)
            self.metrics.encode_seconds.labels(self.modality).observe(seconds)

    async def _next_batch(self) -> list[_Pending[Item]]:
        """Block for the first request, then gather more until full or max_wait has passed.

        Waiting only pays when other requests may still come: with ``in_flight`` (how many
        requests the service is handling now) the batch stops waiting as soon as it holds
        them all, so a lone client pays no wait; under load batches also form while the
        function runs, since requests queue up meanwhile.
        """
        first = self._carry if self._carry is not None else await self._queue.get()
        self._carry = None
        batch, size = [first], len(first.items)
        deadline = time.perf_counter() + self.max_wait_s
        while size < self.max_batch_size:
            try:
                nxt = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or (self.in_flight is not None and self.in_flight() <= len(batch)):
                    break
                try:
                    nxt = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if size + len(nxt.items) > self.max_batch_size:
                self._carry = nxt  # first in the next batch, so order is kept
                break
            batch.append(nxt)
            size += len(nxt.items)
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            live = [p for p in batch if not p.future.done()]  # a cancelled future: its client left
            if self.metrics and len(live) < len(batch):
                self.metrics.skipped.labels(self.modality).inc(len(batch) - len(live))
            if not live:
                continue
            items = [item for pending in live for item in pending.items]
            start = time.perf_counter()
            try:
                out = await loop.run_in_executor(self.executor, self.encode, items)
            except asyncio.CancelledError:
                for pending in live:
                    if not pending.future.done():
                        pending.future.set_exception(Unavailable("the service is shutting down"))
                raise
            except Exception as error:  # one bad batch fails its requests, never the queue
                if len(live) > 1:
                    # retry one by one so a single bad input fails only its own request
                    await self._encode_each(live)
                    continue
                if not live[0].future.done():
                    live[0].future.set_exception(error)
                continue
            self._observe(len(items), len(live), time.perf_counter() - start)
            self._hand_out(out, live)

    def _hand_out(self, out: Any, batch: list[_Pending[Item]]) -> None:
        """Give each request its rows of the batched result."""
        start = 0
        for pending in batch:
            stop = start + len(pending.items)
            if not pending.future.done():
                pending.future.set_result(self.split(out, start, stop))
            start = stop

    async def _encode_each(self, batch: list[_Pending[Item]]) -> None:
        loop = asyncio.get_running_loop()
        for pending in batch:
            if pending.future.done():
                continue
            try:
                out = await loop.run_in_executor(self.executor, self.encode, pending.items)
            except Exception as error:
                if not pending.future.done():
                    pending.future.set_exception(error)
                continue
            if not pending.future.done():
                pending.future.set_result(out)
