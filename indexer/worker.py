"""An encoder worker: takes chunk tasks and query requests from Redis Streams and encodes them.

Run one per GPU (``prolip-retrieval worker``). The loop, per turn:

1. every so often, take over entries other workers left pending too long (XAUTOCLAIM);
2. otherwise read new entries, query requests before chunk tasks (XREADGROUP);
3. a chunk task: drop it if its job was cancelled; dead-letter it if it has been delivered
   more than ``max_deliveries`` times (workers keep dying on it); else read, decode and
   encode it with ``ChunkEncoder`` and hand back the result in the same transaction that
   removes the task. A failure leaves it pending to be retried after ``claim_idle_ms``; the
   ``max_deliveries``-th failure dead-letters it.
4. a request: answer it unless its caller's deadline has passed.

While a chunk is being encoded a keep-alive thread resets its idle time, so a slow chunk is
not taken over by another worker. A worker whose encoder fails ``max_consecutive_failures``
chunks in a row stops (exit status 1): a broken GPU should not burn every chunk's retries.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass

import redis

from models.preprocess import ImageDecodeError

from .fetch import FetchPolicy
from .pipeline import ChunkEncoder
from .redis_queue import Delivery, RedisQueue, parse_chunk_task, same_model
from .remote_encoder import encode_reply
from .roots import Confinement

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerSettings:
    claim_idle_ms: int = 60_000        # a task untouched this long is taken over from its worker
    max_deliveries: int = 3            # deliveries (or failures) before a task is dead-lettered
    block_ms: int = 1000               # how long one read waits for new entries
    heartbeat_s: float = 5.0           # registry refresh; the entry expires after 3 missed beats
    max_consecutive_failures: int = 5  # chunk failures in a row before the worker gives up
    decode_workers: int = 4

    def __post_init__(self):
        if self.claim_idle_ms < 1 or self.max_deliveries < 1 or self.block_ms < 1:
            raise ValueError("claim_idle_ms, max_deliveries and block_ms must be >= 1")


class WorkerUnhealthyError(RuntimeError):
    """The encoder failed too many chunks in a row; the worker stops so others take over."""


def default_worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Worker:
    def __init__(self, queue: RedisQueue, encoder, *, name: str | None = None,
                 settings: WorkerSettings | None = None, confinement: Confinement | None = None,
                 fetch_policy: FetchPolicy | None = None):
        self.queue = queue
        self.encoder = encoder
        self.name = name or default_worker_name()
        self.settings = settings or WorkerSettings()
        self.chunk_encoder = ChunkEncoder(encoder, confinement, fetch_policy,
                                          decode_workers=self.settings.decode_workers)
        self.model_id = str(encoder.model_id)
        self.chunks_done = 0
        self.requests_done = 0
        self._failures_in_a_row = 0
        self._next_reclaim = 0.0

    def info(self) -> dict:
        return {"model_id": self.model_id, "embed_dim": int(self.encoder.embed_dim),
                "pair_logit": self.encoder.pair_logit.to_dict(), "family": self.encoder.family,
                "deterministic": bool(self.encoder.deterministic),
                "calibration": None if getattr(self.encoder, "calibrator", None) is None
                else self.encoder.calibrator.to_dict(metrics=False),
                "image_size": int(self.encoder.preprocessor.image_size), "pid": os.getpid(),
                "device": str(getattr(getattr(self.encoder, "backend", None), "device", "unknown"))}

    def run(self, stop: threading.Event | None = None) -> None:
        """Serve until ``stop`` is set (the task in hand is finished first)."""
        stop = stop or threading.Event()
        wait = 0.5
        while not stop.is_set():
            try:
                self.queue.ensure_groups()
                self._beat()
                break
            except redis.ConnectionError as error:
                log.warning("worker %s: Redis unreachable (%s); retrying in %.1fs", self.name, error, wait)
                stop.wait(wait)
                wait = min(wait * 2, 10.0)
        log.info("worker %s: serving model %s on queue %r", self.name, self.model_id, self.queue.ns)
        # heartbeats from their own thread, so a long chunk does not make the worker look dead
        beating = threading.Event()
        heart = threading.Thread(target=self._heartbeats, args=(beating,), name="heartbeat", daemon=True)
        heart.start()
        backoff = 0.5
        try:
            while not stop.is_set():
                try:
                    self.step()
                    backoff = 0.5
                except redis.ResponseError as error:
                    if "NOGROUP" not in str(error):
                        raise
                    log.warning("worker %s: consumer group vanished (Redis restarted?); recreating", self.name)
                    self.queue.forget_groups()
                except redis.ConnectionError as error:
                    # Redis restarting is not our failure: wait for it, keep the encoder loaded
                    log.warning("worker %s: Redis unreachable (%s); retrying in %.1fs", self.name, error, backoff)
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 10.0)
        finally:
            beating.set()
            heart.join()
            try:
                self.queue.unregister(self.name)
            except redis.RedisError:
                pass  # the registry entry expires by itself
            self.chunk_encoder.close()
            log.info("worker %s: stopped after %d chunks and %d requests", self.name, self.chunks_done,
                     self.requests_done)

    def step(self) -> int:
        """One turn of the loop; returns how many entries it handled."""
        now = time.monotonic()
        deliveries: list[Delivery] = []
        if now >= self._next_reclaim:
            deliveries = self.queue.reclaim(self.name, self.settings.claim_idle_ms)
            # look again soon while there is a backlog of abandoned entries, else every half idle period
            self._next_reclaim = now + (0 if deliveries else min(self.settings.claim_idle_ms / 2000, 5.0))
        if not deliveries:
            deliveries = self.queue.read(self.name, self.settings.block_ms)
        for delivery in deliveries:
            if delivery.stream == self.queue.requests_key:
                self._serve_request(delivery)
            else:
                self._serve_chunk(delivery)
        return len(deliveries)

    def _beat(self) -> None:
        self.queue.heartbeat(self.name, self.info(), ttl_s=3 * self.settings.heartbeat_s)

    def _heartbeats(self, done: threading.Event) -> None:
        while not done.wait(self.settings.heartbeat_s):
            try:
                self._beat()
            except redis.RedisError as error:  # the main loop reports Redis trouble; keep beating
                log.debug("heartbeat failed: %s", error)

    # --- chunk tasks -------------------------------------------------------------------------------

    def _serve_chunk(self, delivery: Delivery) -> None:
        try:
            task = parse_chunk_task(delivery)
        except ValueError as error:
            self.queue.dead_letter(delivery, str(error), self.name, None)  # no retry can fix a malformed task
            log.error("worker %s: %s; dead-lettered", self.name, error)
            return
        if self.queue.is_cancelled(task.job_id):
            self.queue.finish(delivery)
            return
        deliveries = self.queue.deliveries(delivery)
        if deliveries > self.settings.max_deliveries:
            last = self.queue.last_error(delivery) or "workers stopped or timed out while encoding it"
            self._dead_letter(delivery, task, f"delivered {deliveries} times without completing; last error: {last}")
            return
        try:
            if not same_model(task.model_id, self.model_id) or task.dim != int(self.encoder.embed_dim):
                raise ValueError(f"task needs model {task.model_id} (dim {task.dim}) but this worker runs "
                                 f"{self.model_id} (dim {self.encoder.embed_dim})")
            started = time.monotonic()
            with _KeepAlive(self.queue, delivery, self.name, self.settings.claim_idle_ms):
                encoded = self.chunk_encoder(task.modality, task.items)
            self.queue.complete_chunk(delivery, task, encoded, self.name, self.model_id)
            log.info("worker %s: chunk %d of job %s: %d items encoded, %d failed, in %.2fs (delivery %d)", self.name,
                     task.chunk, task.job_id[:8], len(encoded.ids), len(encoded.failures),
                     time.monotonic() - started, deliveries)
        except Exception as error:  # noqa: BLE001 - any failure is recorded against the task, then retried
            reason = f"{type(error).__name__}: {error}"
            log.warning("worker %s: chunk %d of job %s failed (delivery %d of %d): %s", self.name, task.chunk,
                        task.job_id, deliveries, self.settings.max_deliveries, reason)
            if deliveries >= self.settings.max_deliveries:
                self._dead_letter(delivery, task, f"failed {deliveries} times; last error: {reason}")
            else:
                self.queue.record_error(delivery, reason)
            self._failures_in_a_row += 1
            if self._failures_in_a_row >= self.settings.max_consecutive_failures:
                raise WorkerUnhealthyError(
                    f"{self._failures_in_a_row} chunks failed in a row; last: {reason}") from error
            return
        self._failures_in_a_row = 0
        self.chunks_done += 1

    def _dead_letter(self, delivery: Delivery, task, reason: str) -> None:
        log.error("worker %s: dead-lettering chunk %d of job %s: %s", self.name, task.chunk, task.job_id, reason)
        self.queue.dead_letter(delivery, reason, self.name, task)

    # --- query requests ----------------------------------------------------------------------------

    def _serve_request(self, delivery: Delivery) -> None:
        try:
            deadline_ms = int(delivery.field("deadline_ms") or 0)
        except ValueError:
            deadline_ms = 0
        if time.time() * 1000 > deadline_ms or not delivery.field("reply"):
            self.queue.finish(delivery)  # its caller has given up: no one to answer
            return
        try:
            kind = delivery.field("kind")
            if kind == "text":
                batch = self.encoder.encode_texts(json.loads(delivery.field("texts")))
            elif kind == "image":
                count = int(delivery.field("count"))
                images = [delivery.fields[f"image:{i}".encode()] for i in range(count)]
                batch = self.encoder.encode_images(images)
            else:
                raise ValueError(f"unknown request kind {kind!r}")
            payload = encode_reply(batch.mean, batch.logvar)
        except ImageDecodeError as error:
            payload = encode_reply(error=str(error), error_kind="decode")
        except Exception as error:  # noqa: BLE001 - the caller gets the reason instead of a timeout
            log.exception("worker %s: request %s failed", self.name, delivery.message_id)
            payload = encode_reply(error=f"{type(error).__name__}: {error}")
        self.queue.reply(delivery, payload)
        self.requests_done += 1


class _KeepAlive:
    """Resets a task's idle time while it is being encoded, from a background thread."""

    def __init__(self, queue: RedisQueue, delivery: Delivery, consumer: str, claim_idle_ms: int):
        self.queue, self.delivery, self.consumer = queue, delivery, consumer
        self.period_s = claim_idle_ms / 3000
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="keepalive", daemon=True)

    def _beat(self) -> None:
        while not self._done.wait(self.period_s):
            try:
                self.queue.touch(self.delivery, self.consumer)
            except Exception as error:  # noqa: BLE001 - a missed beat only risks a duplicate, never a loss
                log.warning("keep-alive for %s failed: %s", self.delivery.message_id, error)

    def __enter__(self) -> _KeepAlive:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
