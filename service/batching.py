"""Dynamic batching: concurrent requests share one call of a batched function.

The service batches two things: query encoding (one model call for many queries) and
index search (one FAISS search for many query vectors). One asyncio task owns each queue
(as in text-embeddings-inference's queue): when a batch slot is free it takes the oldest
request, then the requests queued behind it, up to ``max_batch_size`` inputs, skipping those
whose client has gone or whose deadline has passed, and runs the function in a worker
thread (the event loop stays free meanwhile); ``split`` hands each request its part of the
result. While a batch runs, the next one forms from what arrives meanwhile.

When to close a batch is a latency budget, not a fixed wait: a batch waits for more requests
only while requests that may join it are on their way (``in_flight``: requests the service is
handling) and while the oldest request's age plus the batch's expected run time stays within
``latency_budget_s`` (expected run times come from a cost model fitted online to the calls
so far, ``CostModel``); ``max_wait_s`` caps the wait. A lone client never waits. The
service's default ``max_wait_s`` is 0: a batch then runs as soon as a slot is free, with
what queued while the previous one ran (on 2 busy cores any deliberate wait cost more at 32
and 64 clients than it gained; ``bench.service_bench``).

Up to ``max_in_flight`` batches run at once: more than one pays where the function releases
the GIL and the machine has cores to spare (ONNX Runtime sessions, FAISS searches); a
PyTorch model on the CPU already uses every core per call.

Every request has a deadline (``deadline_s``). One the queue cannot serve in time is refused
at once with ``QueueFull`` (HTTP 429, Retry-After: the expected wait) rather than queued;
one whose deadline passes while it waits is answered ``Unavailable`` (HTTP 503). The queue
is also bounded in requests: at ``max_queue`` waiting ones, new ones get 429.

With batching off every request is its own call, still through the same executor and
still bounded by the same queue limit and deadline; the benchmark compares the two.
"""

from __future__ import annotations

import asyncio
import logging
import math
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


class DeadlineExceeded(Unavailable):
    """A request waited in a batch queue past its deadline (HTTP 503, retry later)."""

    code = "deadline_exceeded"


class CostModel:
    """Expected seconds of one call for ``n`` inputs, ``a + b n``, fitted online to recent calls.

    A least-squares line over the calls observed, older calls weighing less (``decay`` per
    call). Until two batch sizes have been seen the slope is unknown and the cost is taken as
    proportional to ``n`` (which overestimates, so a latency budget errs on the short side).
    """

    def __init__(self, decay: float = 0.95):
        self.decay = decay
        self._w = self._x = self._y = self._xx = self._xy = 0.0

    def observe(self, n: int, seconds: float) -> None:
        d = self.decay
        self._w = d * self._w + 1.0
        self._x = d * self._x + n
        self._y = d * self._y + seconds
        self._xx = d * self._xx + n * n
        self._xy = d * self._xy + n * seconds

    def predict(self, n: int) -> float | None:
        """Seconds for a call of ``n`` inputs; None before any call was observed."""
        if self._w == 0.0:
            return None
        mean_x, mean_y = self._x / self._w, self._y / self._w
        variance = self._xx / self._w - mean_x ** 2
        if variance > 1e-9:
            slope = max((self._xy / self._w - mean_x * mean_y) / variance, 0.0)
            return max(mean_y + slope * (n - mean_x), 0.0)
        return mean_y * n / max(mean_x, 1.0)


@dataclass(frozen=True)
class BatchPolicy:
    """How a queue batches; the service builds it from ``Settings`` (see ``from_settings``)."""

    batching: bool = True
    max_batch_size: int = 32
    max_wait_s: float = 0.0  # longest a batch waits for company (0: never; see the module docstring)
    latency_budget_s: float = 0.05  # a batch stops waiting once oldest age + expected run time would pass this
    max_in_flight: int = 1  # batches running at once
    max_queue: int = 256  # waiting requests before 429
    deadline_s: float = 10.0  # a request not served by then: 429 up front or 503 when it passes

    def __post_init__(self):
        if self.max_batch_size < 1 or self.max_queue < 1 or self.max_in_flight < 1:
            raise ValueError("max_batch_size, max_queue and max_in_flight must be >= 1")
        if self.max_wait_s < 0 or self.latency_budget_s < 0 or self.deadline_s <= 0:
            raise ValueError("max_wait_s and latency_budget_s must be >= 0, deadline_s > 0")


@dataclass
class _Pending(Generic[Item]):
    items: list[Item]
    future: asyncio.Future
    deadline: float
    enqueued: float = field(default_factory=time.perf_counter)
    accounted: bool = False  # its inputs no longer count as queued (taken into a batch, or given up)


class BatchQueue(Generic[Item]):
    """Runs ``encode`` on lists of inputs, merging concurrent requests into batches.

    ``modality`` names the queue in metrics and errors ("text", "image", "search"). The
    executor needs at least ``max_in_flight`` threads for that many batches to run at once.
    Keyword options override the fields of ``policy`` (``BatchPolicy``).
    """

    def __init__(self, modality: str, encode: BatchFn, executor: ThreadPoolExecutor, *,
                 policy: BatchPolicy | None = None, metrics: ServiceMetrics | None = None,
                 split: SplitFn = split_gaussians, in_flight: Callable[[], int] | None = None, **options: Any):
        policy = policy or BatchPolicy()
        if options:
            policy = BatchPolicy(**{**policy.__dict__, **options})
        self.modality = modality
        self.encode = encode
        self.executor = executor
        self.policy = policy
        self.metrics = metrics
        self.split = split
        self.in_flight = in_flight  # requests being handled by the service now (None: unknown)
        self.cost = CostModel()
        self._queue: asyncio.Queue[_Pending[Item]] | None = None
        self._task: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()  # batches being run
        self._carry: _Pending[Item] | None = None  # taken from the queue but did not fit the last batch
        self._waiting = 0  # requests admitted and not yet answered (the bound when batching is off)
        self._queued_items = 0  # inputs admitted and not yet taken into a batch

    # the policy's fields, read where the queue decides
    @property
    def batching(self) -> bool:
        return self.policy.batching

    @property
    def max_batch_size(self) -> int:
        return self.policy.max_batch_size

    @property
    def max_queue(self) -> int:
        return self.policy.max_queue

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
        for task in list(self._running):
            task.cancel()
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
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

    def expected_wait(self, items: int) -> float | None:
        """Seconds until a new request of ``items`` inputs would be answered (None: no estimate yet)."""
        if not self.batching:  # every request its own call: the ones admitted, then this one
            per_call = self.cost.predict(items)
            return None if per_call is None else per_call * (self._waiting + 1) / self.policy.max_in_flight
        ahead = self._queued_items + items
        per_call = self.cost.predict(min(ahead, self.max_batch_size))
        if per_call is None:
            return None
        batches = math.ceil(ahead / self.max_batch_size) + len(self._running)
        return per_call * batches / self.policy.max_in_flight

    async def submit(self, items: Sequence[Item]) -> Any:
        """Run the function on ``items`` (with others'); QueueFull (429) when it cannot be served in time."""
        items = list(items)
        if not items:
            raise ValueError("nothing to encode")
        self._admit(len(items))
        deadline = time.perf_counter() + self.policy.deadline_s
        self._waiting += 1
        self._queued_items += len(items)
        self._gauge()
        pending = None
        try:
            if not self.batching:
                return await self._encode_now(items, deadline)
            if self._task is None:
                raise Unavailable("the encoder queue is not running")
            pending = _Pending(items, asyncio.get_running_loop().create_future(), deadline)
            self._queue.put_nowait(pending)  # cannot overflow: _waiting bounds it
            try:
                return await asyncio.wait_for(pending.future, self.policy.deadline_s)
            except TimeoutError:
                raise self._late() from None
        finally:
            if self.batching and (pending is None or not pending.accounted):
                if pending is not None:
                    pending.accounted = True  # still in the queue: _take must not count it again
                self._queued_items -= len(items)  # never reached a batch (refused, cancelled, late)
            self._waiting -= 1
            self._gauge()

    def _admit(self, items: int) -> None:
        if self._waiting >= self.max_queue:
            self._refuse("queue_full", f"the {self.modality} queue is full ({self.max_queue} requests); "
                                       "retry shortly", 1.0)
        expected = self.expected_wait(items)
        if expected is not None and expected > self.policy.deadline_s:
            self._refuse("deadline", f"the {self.modality} queue would take {expected:.1f} s to serve this "
                                     f"request, past its {self.policy.deadline_s:g} s deadline; retry shortly",
                         expected - self.policy.deadline_s)

    def _refuse(self, reason: str, message: str, retry_after_s: float) -> None:
        if self.metrics:
            self.metrics.rejected.labels(reason).inc()
        raise QueueFull(message, retry_after_s=max(1.0, retry_after_s))

    def _late(self) -> DeadlineExceeded:
        if self.metrics:
            self.metrics.rejected.labels("deadline_passed").inc()
        return DeadlineExceeded(f"the {self.modality} queue did not serve the request within its "
                                f"{self.policy.deadline_s:g} s deadline; retry shortly", headers={"Retry-After": "1"})

    def _gauge(self) -> None:
        if self.metrics:
            self.metrics.queue_depth.labels(self.modality).set(self._waiting)

    async def _encode_now(self, items: list[Item], deadline: float) -> Any:
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        call = loop.run_in_executor(self.executor, self._timed, items, 1)
        try:
            out = await asyncio.wait_for(call, max(deadline - start, 0.0))  # a call not yet started is dropped
        except TimeoutError:
            raise self._late() from None
        finally:
            self._queued_items -= len(items)
        return out

    def _timed(self, items: list[Item], requests: int) -> Any:
        """Run the function (worker thread) and feed its duration to the cost model and the metrics."""
        start = time.perf_counter()
        out = self.encode(items)
        seconds = time.perf_counter() - start
        self.cost.observe(len(items), seconds)
        if self.metrics:
            self.metrics.batch_size.labels(self.modality).observe(len(items))
            self.metrics.batch_requests.labels(self.modality).observe(requests)
            self.metrics.encode_seconds.labels(self.modality).observe(seconds)
        return out

    # --- forming batches

    def _wait_allowance(self, batch: list[_Pending[Item]], size: int, opened: float) -> float:
        """How much longer this batch may wait for company (<= 0: close it now)."""
        now = time.perf_counter()
        others = self.in_flight() if self.in_flight is not None else None
        if others is not None and others <= len(batch) + self._waiting_beyond(batch):
            return 0.0  # nobody else is on the way: a lone client never waits
        allowance = self.policy.max_wait_s - (now - opened)
        expected = self.cost.predict(size + 1)
        if expected is not None:
            allowance = min(allowance, self.policy.latency_budget_s - (now - batch[0].enqueued) - expected)
        return allowance

    def _waiting_beyond(self, batch: list[_Pending[Item]]) -> int:
        """Requests of this queue admitted but not in ``batch`` (queued, or in batches running)."""
        return max(self._waiting - len(batch), 0)

    def _take(self, pending: _Pending[Item]) -> bool:
        """Account a request leaving the queue; False when it must not run (client gone, deadline passed)."""
        if not pending.accounted:
            pending.accounted = True
            self._queued_items -= len(pending.items)
        if pending.future.done():
            if self.metrics:
                self.metrics.skipped.labels(self.modality).inc()
            return False
        if time.perf_counter() > pending.deadline:
            pending.future.set_exception(self._late())
            return False
        return True

    async def _next_batch(self) -> list[_Pending[Item]]:
        """Block for the first live request, then gather more until full or the wait allowance is spent."""
        while True:
            first = self._carry if self._carry is not None else await self._queue.get()
            self._carry = None
            if self._take(first):
                break
        batch, size, opened = [first], len(first.items), time.perf_counter()
        while size < self.max_batch_size:
            try:
                nxt = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                allowance = self._wait_allowance(batch, size, opened)
                if allowance <= 0:
                    break
                try:
                    nxt = await asyncio.wait_for(self._queue.get(), allowance)
                except TimeoutError:
                    break
            if size + len(nxt.items) > self.max_batch_size:
                self._carry = nxt  # first in the next batch, so order is kept
                break
            if self._take(nxt):
                batch.append(nxt)
                size += len(nxt.items)
        return batch

    async def _run(self) -> None:
        slots = asyncio.Semaphore(self.policy.max_in_flight)
        while True:
            await slots.acquire()
            try:
                batch = await self._next_batch()
            except BaseException:
                slots.release()
                raise
            task = asyncio.create_task(self._run_batch(batch))
            self._running.add(task)
            task.add_done_callback(lambda done: (self._running.discard(done), slots.release()))

    async def _run_batch(self, batch: list[_Pending[Item]]) -> None:
        loop = asyncio.get_running_loop()
        items = [item for pending in batch for item in pending.items]
        try:
            out = await loop.run_in_executor(self.executor, self._timed, items, len(batch))
        except asyncio.CancelledError:
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(Unavailable("the service is shutting down"))
            raise
        except Exception as error:  # one bad batch fails its requests, never the queue
            if len(batch) > 1:
                # retry one by one so a single bad input fails only its own request
                await self._encode_each(batch)
                return
            if not batch[0].future.done():
                batch[0].future.set_exception(error)
            return
        self._hand_out(out, batch)

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

