"""Running a job on the Redis workers: hand out chunks, apply what comes back.

The coordinator is the only writer of the job's collection (the index allows one process
per collection); workers only encode. It keeps at most ``max_in_flight`` chunks of the job
in Redis at a time (so a million-item job does not park its whole plan there and several
jobs share the workers), applies each result with ``commit.apply_chunk`` (duplicates from a
task delivered twice are dropped by the chunk marker), and turns a dead-lettered chunk into
failed items with the reason.

Lost chunks are found by reconciling: a chunk counted in flight that is neither in the task
stream nor in the job's results stream was lost (Redis restarted without persistence, or a
stream was trimmed by hand) and is queued again. Reconciling runs when a run starts (which
also rebuilds the in-flight set after a coordinator crash) and whenever no result arrived
for ``reconcile_interval_s``.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .commit import apply_chunk, fail_chunk
from .jobstore import JobStore
from .redis_queue import ChunkResult, RedisQueue, same_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CoordinatorSettings:
    max_in_flight: int = 32          # chunks of one job queued or being encoded at once
    block_ms: int = 500              # one wait for results; also how often cancel/stop is noticed
    reconcile_interval_s: float = 60.0
    stall_note_s: float = 10.0       # no result this long: say so on the job (live workers, how long)


class RedisCoordinator:
    def __init__(self, queue: RedisQueue, store: JobStore, settings: CoordinatorSettings | None = None,
                 report: Callable[[str | None], None] | None = None):
        """``report(note)`` is told, while no result comes, why the job is not moving (None once it moves)."""
        self.queue = queue
        self.store = store
        self.settings = settings or CoordinatorSettings()
        self.report = report or (lambda note: None)

    def run(self, job_id: str, index, signal, dim: int) -> str:
        """Drive the job to the end; returns "completed", or the stop reason from ``signal``.

        ``dim`` is the collection's vector size, sent with each task so a worker running
        another model refuses it instead of producing vectors that do not fit.
        """
        job = dict(self.store.job(job_id)) | {"dim": dim}
        self.queue.ensure_groups()
        self.queue.uncancel(job_id)
        pending = set(self.store.pending_chunks(job_id))
        in_flight: set[int] = set()
        backlog: deque[int] = deque()  # pending chunks not in Redis, in order
        self._reconcile(job_id, pending, in_flight, backlog)
        waiting_since = last_result = time.monotonic()
        cursor = "0"  # results left over from an earlier run are read first
        while pending:
            reason = signal.reason()
            if reason is not None:
                if reason == "cancelled":
                    self.queue.cancel(job_id)  # workers drop its remaining tasks unencoded
                return reason
            while backlog and len(in_flight) < self.settings.max_in_flight:
                chunk = backlog.popleft()
                self._enqueue(job, chunk)
                in_flight.add(chunk)
            results = self.queue.read_results(job_id, cursor, self.settings.block_ms)
            for entry_id, result in results:
                cursor = entry_id
                self._apply(job, index, result, pending, in_flight)
                self.queue.delete_result(job_id, entry_id)
            if results:
                waiting_since = last_result = time.monotonic()
                self.report(None)
            elif time.monotonic() - last_result > self.settings.stall_note_s:
                self.report(self._stall_note(time.monotonic() - last_result))
            if not results and time.monotonic() - waiting_since > self.settings.reconcile_interval_s:
                self._warn_if_no_workers(job_id)
                self._reconcile(job_id, pending, in_flight, backlog)
                waiting_since = time.monotonic()
        self.queue.drop_results(job_id)
        return "completed"

    def _enqueue(self, job, chunk: int) -> None:
        planned = self.store.chunk(job["job_id"], chunk)
        self.queue.enqueue_chunk(job["job_id"], chunk, job["modality"], job["model_id"], job["dim"], planned.items)

    def _apply(self, job, index, result: ChunkResult, pending: set[int], in_flight: set[int]) -> None:
        job_id = job["job_id"]
        if result.chunk not in pending:
            self.store.count_duplicate(job_id)  # applied already: a task delivered twice
            log.info("job %s: result for chunk %d from %s is a duplicate; dropped", job_id, result.chunk, result.worker)
            return
        planned = self.store.chunk(job_id, result.chunk)
        if result.kind == "dead":
            fail_chunk(self.store, job_id, planned, f"dead-lettered: {result.reason}")
        elif not same_model(result.model_id, job["model_id"]):
            fail_chunk(self.store, job_id, planned, f"worker {result.worker} runs {result.model_id}, "
                                                    f"not {job['model_id']}")
        else:
            try:
                apply_chunk(self.store, index, job_id, planned, result.encoded)
            except ValueError as error:  # a result that does not match the plan, or that the index refuses
                log.error("job %s: result for chunk %d from worker %s refused: %s", job_id, result.chunk,
                          result.worker, error)
                fail_chunk(self.store, job_id, planned, f"result from worker {result.worker} refused: {error}")
        pending.discard(result.chunk)
        in_flight.discard(result.chunk)

    def _reconcile(self, job_id: str, pending: set[int], in_flight: set[int], backlog: deque[int]) -> None:
        """Make ``in_flight`` what Redis really holds; pending chunks it does not hold go to the backlog."""
        # Tasks first, then results: a worker moves a chunk from one to the other atomically,
        # so in this order a chunk in transit is always seen in one of them.
        queued = self.queue.queued_chunks(job_id)
        answered = self.queue.result_chunks(job_id)
        present = (queued | answered) & pending
        lost = in_flight - present
        if lost:
            log.warning("job %s: %d chunks in flight were lost from Redis; queueing them again", job_id, len(lost))
        in_flight.clear()
        in_flight.update(present)
        backlog.clear()
        backlog.extend(sorted(pending - present))

    def _stall_note(self, waited_s: float) -> str:
        try:
            workers = len(self.queue.live_workers())
        except Exception as error:  # noqa: BLE001 - a note, not a failure: the loop meets Redis errors itself
            return f"no worker has returned a chunk for {waited_s:.0f} s (cannot list workers: {error})"
        if not workers:
            return (f"no worker has taken a chunk for {waited_s:.0f} s: no encoder worker is alive on queue "
                    f"{self.queue.ns!r}; start one with `prolip-retrieval worker --redis-url URL --model MODEL`")
        return f"no worker has returned a chunk for {waited_s:.0f} s ({workers} alive on queue {self.queue.ns!r})"

    def _warn_if_no_workers(self, job_id: str) -> None:
        if not self.queue.live_workers():
            log.warning("job %s: waiting for results, but no encoder worker is alive on queue %r",
                        job_id, self.queue.ns)

