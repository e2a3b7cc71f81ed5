"""Redis Streams transport between job coordinators, encoder workers and remote-encoder clients.

Keys (``ns`` is the namespace, "prolip" by default; all sides must agree on it):

* ``ns:chunks``: chunk tasks, read by the consumer group "workers" (XREADGROUP). A task
  stays in the group's pending list until the worker that took it hands back its result;
  a worker that dies leaves it pending, and after ``claim_idle_ms`` another worker takes
  it over (XAUTOCLAIM). Each take-over counts as a delivery; a task delivered more than
  ``max_deliveries`` times, or failing that often, is a poison task: it moves to
  ``ns:dead`` and its job is told, so the rest of the job flows on.
* ``ns:results:<job>``: results of one job's chunks (embeddings as raw float32), read by
  that job's coordinator, which deletes each entry once applied. A worker writes its result
  and removes its task in one MULTI transaction, so a task is always in exactly one of the
  two streams (or applied): that is what lets a restarted coordinator find lost chunks.
* ``ns:requests``: query encodings for ``RemoteEncoder`` (same group); the answer goes to
  the list ``ns:reply:<id>`` that the client waits on with BLPOP.
* ``ns:worker:<name>`` (with a TTL, refreshed by heartbeats) and the set ``ns:worker-names``:
  live workers and what they run (model, dimension, logit scale and bias, image size).
* ``ns:cancelled:<job>``: a flag; workers drop a cancelled job's tasks unencoded.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import redis

from .pipeline import ChunkItem, EncodedChunk

log = logging.getLogger(__name__)

GROUP = "workers"
RESULT_TTL_S = 7 * 24 * 3600       # results of an abandoned job do not live forever
CANCEL_TTL_S = 7 * 24 * 3600
REPLY_TTL_S = 120                  # a reply nobody collected (the client timed out) expires
DEAD_LETTER_MAXLEN = 100_000


def connect(url: str) -> redis.Redis:
    """A binary-safe client (embeddings travel as raw bytes)."""
    return redis.Redis.from_url(url, decode_responses=False, health_check_interval=30)


def _text(value: bytes | str | None) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else ("" if value is None else value)


@dataclass
class Delivery:
    """One stream entry handed to a worker."""

    stream: str            # full key of the stream it came from
    message_id: str
    fields: dict[bytes, bytes]

    def field(self, name: str) -> str:
        return _text(self.fields.get(name.encode()))


@dataclass
class ChunkTask:
    job_id: str
    chunk: int
    modality: str
    model_id: str
    dim: int
    items: list[ChunkItem]
    results_key: str


@dataclass
class ChunkResult:
    job_id: str
    chunk: int
    kind: str                       # "ok" or "dead"
    worker: str
    model_id: str
    encoded: EncodedChunk | None    # for "ok"
    reason: str | None              # for "dead"


class RedisQueue:
    """All stream operations, for both sides; one instance per process (thread-safe client)."""

    def __init__(self, client: redis.Redis, namespace: str = "prolip"):
        if not namespace or any(c in namespace for c in " \n{}"):
            raise ValueError(f"invalid queue namespace {namespace!r}")
        self.redis = client
        self.ns = namespace
        self.chunks_key = f"{namespace}:chunks"
        self.requests_key = f"{namespace}:requests"
        self.dead_key = f"{namespace}:dead"
        self.errors_key = f"{namespace}:chunk-errors"
        self.worker_names_key = f"{namespace}:worker-names"
        self._groups_ready = False

    @classmethod
    def from_url(cls, url: str, namespace: str = "prolip") -> RedisQueue:
        return cls(connect(url), namespace)

    def results_key(self, job_id: str) -> str:
        return f"{self.ns}:results:{job_id}"

    def ensure_groups(self) -> None:
        if self._groups_ready:
            return
        for stream in (self.chunks_key, self.requests_key):
            try:
                # id 0: tasks added before the group existed are still delivered
                self.redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except redis.ResponseError as error:
                if "BUSYGROUP" not in str(error):
                    raise
        self._groups_ready = True

    def forget_groups(self) -> None:
        """Create the groups again on next use (after Redis lost them)."""
        self._groups_ready = False

    # --- coordinator side -------------------------------------------------------------------------

    def enqueue_chunk(self, job_id: str, chunk: int, modality: str, model_id: str, dim: int,
                      items: Sequence[ChunkItem]) -> str:
        self.ensure_groups()
        fields = {
            "job": job_id, "chunk": str(chunk), "modality": modality, "model": model_id, "dim": str(dim),
            "items": json.dumps([[item.item_id, item.ref] for item in items]),
            "results": self.results_key(job_id),
        }
        return _text(self.redis.xadd(self.chunks_key, fields))

    def queued_chunks(self, job_id: str) -> set[int]:
        """Chunks of a job still in the task stream (waiting, or taken and not yet finished)."""
        found = set()
        for _, fields in self._scan(self.chunks_key):
            if _text(fields.get(b"job")) == job_id:
                found.add(int(fields[b"chunk"]))
        return found

    def result_chunks(self, job_id: str) -> set[int]:
        return {int(fields[b"chunk"]) for _, fields in self._scan(self.results_key(job_id))}

    def _scan(self, stream: str, page: int = 1000):
        start = "-"
        while True:
            entries = self.redis.xrange(stream, min=start, max="+", count=page)
            for entry_id, fields in entries:
                yield _text(entry_id), fields
            if len(entries) < page:
                return
            start = "(" + _text(entries[-1][0])

    def read_results(self, job_id: str, after: str, block_ms: int, count: int = 16) -> list[tuple[str, ChunkResult]]:
        answer = self.redis.xread({self.results_key(job_id): after}, count=count, block=block_ms)
        results = []
        for _, entries in answer or []:
            for entry_id, fields in entries:
                results.append((_text(entry_id), parse_result(fields)))
        return results

    def delete_result(self, job_id: str, entry_id: str) -> None:
        self.redis.xdel(self.results_key(job_id), entry_id)

    def drop_results(self, job_id: str) -> None:
        self.redis.delete(self.results_key(job_id))

    def cancel(self, job_id: str) -> None:
        self.redis.set(f"{self.ns}:cancelled:{job_id}", b"1", ex=CANCEL_TTL_S)

    def uncancel(self, job_id: str) -> None:
        self.redis.delete(f"{self.ns}:cancelled:{job_id}")

    def is_cancelled(self, job_id: str) -> bool:
        return bool(self.redis.exists(f"{self.ns}:cancelled:{job_id}"))

    # --- worker side -----------------------------------------------------------------------------

    def read(self, consumer: str, block_ms: int) -> list[Delivery]:
        """New entries for this consumer: query requests first, then (blocking) either stream."""
        self.ensure_groups()
        answer = self.redis.xreadgroup(GROUP, consumer, {self.requests_key: ">"}, count=1)
        if not answer:
            answer = self.redis.xreadgroup(GROUP, consumer, {self.requests_key: ">", self.chunks_key: ">"},
                                           count=1, block=block_ms)
        deliveries = [Delivery(_text(stream), _text(entry_id), fields)
                      for stream, entries in answer or [] for entry_id, fields in entries]
        deliveries.sort(key=lambda d: d.stream != self.requests_key)  # requests are latency-bound
        return deliveries

    def reclaim(self, consumer: str, min_idle_ms: int, count: int = 1) -> list[Delivery]:
        """Take over entries another consumer left pending longer than ``min_idle_ms``."""
        self.ensure_groups()
        taken = []
        for stream in (self.requests_key, self.chunks_key):
            reply = self.redis.xautoclaim(stream, GROUP, consumer, min_idle_ms, start_id="0-0", count=count)
            claimed = reply[1]
            deleted = reply[2] if len(reply) > 2 else []
            if deleted:  # entries removed from the stream while pending: nothing left to do for them
                self.redis.xack(stream, GROUP, *deleted)
            for entry_id, fields in claimed:
                if fields is not None:
                    taken.append(Delivery(stream, _text(entry_id), fields))
        return taken

    def deliveries(self, delivery: Delivery) -> int:
        """How many times this entry has been handed out (1 on first delivery)."""
        info = self.redis.xpending_range(delivery.stream, GROUP, min=delivery.message_id,
                                         max=delivery.message_id, count=1)
        return int(info[0]["times_delivered"]) if info else 1

    def touch(self, delivery: Delivery, consumer: str) -> None:
        """Reset the entry's idle time (a long chunk is still being worked on, do not reclaim it)."""
        self.redis.xclaim(delivery.stream, GROUP, consumer, 0, [delivery.message_id], justid=True)

    def finish(self, delivery: Delivery) -> None:
        """Acknowledge and remove an entry that needs no result (expired request, cancelled job)."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(delivery.stream, GROUP, delivery.message_id)
            pipe.xdel(delivery.stream, delivery.message_id)
            pipe.hdel(self.errors_key, delivery.message_id)
            pipe.execute()

    def complete_chunk(self, delivery: Delivery, task: ChunkTask, encoded: EncodedChunk, worker: str,
                       model_id: str) -> None:
        """Hand back the result and remove the task, atomically."""
        fields = {
            "job": task.job_id, "chunk": str(task.chunk), "kind": "ok", "worker": worker, "model": model_id,
            "dim": str(encoded.mean.shape[1]), "ids": json.dumps(encoded.ids),
            "failures": json.dumps(encoded.failures),
            "metadata": json.dumps(encoded.metadata, ensure_ascii=False),
            "mean": np.ascontiguousarray(encoded.mean, dtype=np.float32).tobytes(),
            # empty for a deterministic model's points (no variances to send)
            "logvar": b"" if encoded.logvar is None else np.ascontiguousarray(encoded.logvar, np.float32).tobytes(),
        }
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(task.results_key, fields)
            pipe.expire(task.results_key, RESULT_TTL_S)
            pipe.xack(delivery.stream, GROUP, delivery.message_id)
            pipe.xdel(delivery.stream, delivery.message_id)
            pipe.hdel(self.errors_key, delivery.message_id)
            pipe.execute()

    def dead_letter(self, delivery: Delivery, reason: str, worker: str, task: ChunkTask | None) -> None:
        """Move a poison task to the dead-letter stream and tell its job, atomically."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.dead_key, {**delivery.fields, "reason": reason, "source_id": delivery.message_id,
                                      "stream": delivery.stream, "worker": worker},
                      maxlen=DEAD_LETTER_MAXLEN, approximate=True)
            if task is not None:
                pipe.xadd(task.results_key, {"job": task.job_id, "chunk": str(task.chunk), "kind": "dead",
                                             "worker": worker, "model": "", "reason": reason})
                pipe.expire(task.results_key, RESULT_TTL_S)
            pipe.xack(delivery.stream, GROUP, delivery.message_id)
            pipe.xdel(delivery.stream, delivery.message_id)
            pipe.hdel(self.errors_key, delivery.message_id)
            pipe.execute()

    def record_error(self, delivery: Delivery, error: str) -> None:
        self.redis.hset(self.errors_key, delivery.message_id, error[:2000])

    def last_error(self, delivery: Delivery) -> str | None:
        value = self.redis.hget(self.errors_key, delivery.message_id)
        return _text(value) if value is not None else None

    def dead_letters(self, count: int = 100) -> list[dict[str, str]]:
        """The most recent dead-lettered entries (text fields only), newest last."""
        entries = self.redis.xrevrange(self.dead_key, count=count)
        return [{_text(k): _text(v) for k, v in fields.items() if k not in (b"mean", b"logvar")}
                for _, fields in reversed(entries)]

    # --- query requests (RemoteEncoder) -------------------------------------------------------------

    def submit_request(self, fields: dict[str, bytes | str], timeout_s: float) -> tuple[str, str]:
        """Queue a request; returns (entry id, reply key). It expires unanswered after ``timeout_s``."""
        self.ensure_groups()
        reply_key = f"{self.ns}:reply:{uuid.uuid4().hex}"
        deadline_ms = int((time.time() + timeout_s) * 1000)
        entry_id = self.redis.xadd(self.requests_key, {**fields, "reply": reply_key, "deadline_ms": str(deadline_ms)})
        return _text(entry_id), reply_key

    def withdraw_request(self, entry_id: str) -> None:
        self.redis.xdel(self.requests_key, entry_id)

    def wait_reply(self, reply_key: str, timeout_s: float) -> bytes | None:
        """The reply, or None when none came within ``timeout_s``.

        BLPOP blocks in slices shorter than the client's socket timeout (a ``socket_timeout`` in the
        URL), so a long wait for a worker is never mistaken for Redis not answering.
        """
        socket_timeout = self.redis.connection_pool.connection_kwargs.get("socket_timeout")
        step = timeout_s if not socket_timeout else max(float(socket_timeout) * 0.8 - 0.05, 0.01)
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            answer = self.redis.blpop([reply_key], timeout=max(min(step, left), 0.01))
            if answer is not None:
                return answer[1]

    def reachable(self) -> bool:
        """Whether Redis itself answers (to tell a Redis problem from a worker problem)."""
        try:
            return bool(self.redis.ping())
        except redis.RedisError:
            return False

    def reply(self, delivery: Delivery, payload: bytes) -> None:
        key = delivery.field("reply")
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, payload)
            pipe.expire(key, REPLY_TTL_S)
            pipe.xack(delivery.stream, GROUP, delivery.message_id)
            pipe.xdel(delivery.stream, delivery.message_id)
            pipe.execute()

    # --- worker registry ----------------------------------------------------------------------------

    def heartbeat(self, name: str, info: dict, ttl_s: float) -> None:
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(f"{self.ns}:worker:{name}", json.dumps({**info, "name": name, "seen": time.time()}),
                     px=int(ttl_s * 1000))
            pipe.sadd(self.worker_names_key, name)
            pipe.execute()

    def unregister(self, name: str) -> None:
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(f"{self.ns}:worker:{name}")
            pipe.srem(self.worker_names_key, name)
            pipe.execute()

    def live_workers(self) -> list[dict]:
        names = sorted(_text(n) for n in self.redis.smembers(self.worker_names_key))
        if not names:
            return []
        values = self.redis.mget([f"{self.ns}:worker:{name}" for name in names])
        gone = [name for name, value in zip(names, values, strict=True) if value is None]
        if gone:
            self.redis.srem(self.worker_names_key, *gone)
        return [json.loads(value) for value in values if value is not None]


def same_model(a: str, b: str) -> bool:
    """Whether two model sources name the same model (a local folder by its real path)."""
    def canonical(source: str) -> str:
        path = Path(source).expanduser()
        return str(path.resolve()) if path.is_dir() else source

    return a == b or canonical(a) == canonical(b)


def parse_chunk_task(delivery: Delivery) -> ChunkTask:
    """The task in a chunk entry; ValueError when it is malformed."""
    try:
        items = [ChunkItem(str(item_id), dict(ref)) for item_id, ref in json.loads(delivery.field("items"))]
        task = ChunkTask(job_id=delivery.field("job"), chunk=int(delivery.field("chunk")),
                         modality=delivery.field("modality"), model_id=delivery.field("model"),
                         dim=int(delivery.field("dim")), items=items, results_key=delivery.field("results"))
    except (ValueError, TypeError) as error:
        raise ValueError(f"malformed chunk task {delivery.message_id}: {error}") from None
    if not task.job_id or not task.results_key:
        raise ValueError(f"malformed chunk task {delivery.message_id}: no job or results key")
    return task


def parse_result(fields: dict[bytes, bytes]) -> ChunkResult:
    kind = _text(fields.get(b"kind"))
    common = dict(job_id=_text(fields.get(b"job")), chunk=int(fields[b"chunk"]), kind=kind,
                  worker=_text(fields.get(b"worker")), model_id=_text(fields.get(b"model")))
    if kind == "dead":
        return ChunkResult(**common, encoded=None, reason=_text(fields.get(b"reason")))
    ids = json.loads(fields[b"ids"])
    dim = int(fields[b"dim"])
    mean = np.frombuffer(fields[b"mean"], dtype=np.float32).reshape(len(ids), dim).copy()      # [n, D]
    raw_logvar = fields[b"logvar"]
    logvar = (np.frombuffer(raw_logvar, dtype=np.float32).reshape(len(ids), dim).copy()  # [n, D]
              if raw_logvar or not fields[b"mean"] else None)  # empty: a deterministic model's points
    failures = [(str(item_id), str(reason)) for item_id, reason in json.loads(fields[b"failures"])]
    metadata = json.loads(fields.get(b"metadata") or b"{}")  # what the files say (absent from older workers)
    if not isinstance(metadata, dict):
        metadata = {}
    return ChunkResult(**common, encoded=EncodedChunk(ids, mean, logvar, failures, metadata), reason=None)
