"""Job records, plans, chunk markers and leases in Redis: the ``JobStore`` interface, shared by every replica.

Used when API replicas keep no state of their own (``PROLIP_MILVUS_URI`` and ``REDIS_URL``): a
job submitted through one replica is listed, steered and taken over by any other. Keys of one
job share a hash tag, so a job's keys sit in one Redis Cluster slot and its scripts stay atomic:

- ``<ns>:jobs``                     sorted set job id -> created_at (listing, newest first)
- ``<ns>:job:{<id>}``               hash: the job's fields (as the SQLite ``jobs`` row)
- ``<ns>:job:{<id>}:chunk:<n>``     list of JSON plan rows [seq, item id, location, ref, metadata]
- ``<ns>:job:{<id>}:pending``       set of chunk numbers not yet applied
- ``<ns>:job:{<id>}:applied``       set of applied chunk numbers (the markers)
- ``<ns>:job:{<id>}:failures``      sorted set seq -> JSON [seq, item id, location, reason]
- ``<ns>:job:{<id>}:where``         hash item id -> chunk (item images read back from shards)
- ``<ns>:job:{<id>}:failed-ids``    set of failed item ids
- ``<ns>:job:{<id>}:unchanged``     set of item ids found unchanged since the last completed run (done, not encoded)
- ``<ns>:job-lease:{<id>}``         the run's lease (``indexer.leases.RedisLease``)
- ``<ns>:synced:{<collection>}:<root digest>``  hash item id -> JSON [size, mtime_ns, sha256, seen by job]:
  folder sync's record of the files whose vectors are in the collection (``indexer.sync``)

The exactly-once rule is the SQLite store's: ``apply_chunk`` moves a chunk from pending to
applied, records its failures and moves the counters in one Lua script (atomic), only after the
chunk's vectors were upserted into the index; a chunk already applied only counts a duplicate.
``apply_chunks`` (a group commit) applies its chunks one script each: a crash between two of
them leaves the later ones pending, and doing them again upserts the same ids. A sync job's file
records are written just before a chunk's marker, once its vectors are in the index, so a crash
between the two at worst makes the next sync find those files unchanged, which they are.
Durability is Redis's: run it with ``appendonly yes`` and ``appendfsync always`` (as Compose does).

Cost: a plan holds about 150-300 bytes per item (its reference and metadata as JSON, plus the
item -> chunk entry), the same information ``jobs.sqlite3`` holds on disk: 10^6 items ~ 0.3 GB
of Redis memory while the job's record is kept.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from typing import Any

import redis

from .jobstore import (
    DONE,
    FAILED,
    FINAL_STATES,
    PENDING,
    STATES,
    ItemFailure,
    JobStatus,
    PlannedChunk,
    _status_from_row,
)
from .leases import RedisLease
from .pipeline import ChunkItem

_INT_FIELDS = ("chunk_size", "planned", "total", "done", "failed", "duplicates", "cancel_requested",
               "run_start_processed", "plan_chunks")
_FLOAT_FIELDS = ("created_at", "updated_at", "started_at", "finished_at", "run_started_at")

_START_RUN = """
local started = redis.call('HGET', KEYS[1], 'started_at')
if not started or started == '' then redis.call('HSET', KEYS[1], 'started_at', ARGV[1]) end
local processed = tonumber(redis.call('HGET', KEYS[1], 'done') or '0')
    + tonumber(redis.call('HGET', KEYS[1], 'failed') or '0')
redis.call('HSET', KEYS[1], 'state', 'running', 'error', '', 'finished_at', '', 'updated_at', ARGV[1],
           'run_started_at', ARGV[1], 'run_start_processed', processed)
return 1
"""

# KEYS: job, pending, applied, failures, failed-ids. ARGV: chunk, now, done, n failures, then (score, member, id)*
_APPLY_CHUNK = """
if redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'duplicates', 1)
  return 0
end
if redis.call('SREM', KEYS[2], ARGV[1]) == 0 then return -1 end
redis.call('SADD', KEYS[3], ARGV[1])
local n = tonumber(ARGV[4])
for i = 0, n - 1 do
  redis.call('ZADD', KEYS[4], ARGV[5 + 3 * i], ARGV[6 + 3 * i])
  redis.call('SADD', KEYS[5], ARGV[7 + 3 * i])
end
redis.call('HINCRBY', KEYS[1], 'done', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'failed', n)
redis.call('HSET', KEYS[1], 'updated_at', ARGV[2])
return 1
"""


class RedisJobStore:
    """The ``JobStore`` interface over Redis (see the module docstring). Thread-safe."""

    def __init__(self, client: redis.Redis, namespace: str = "prolip", lease_ttl_s: float = 15.0):
        if not namespace or any(c in namespace for c in " \n{}"):
            raise ValueError(f"invalid job namespace {namespace!r}")
        if lease_ttl_s <= 0:
            raise ValueError("lease_ttl_s must be positive")
        self.redis = client
        self.ns = namespace
        self.lease_ttl_s = lease_ttl_s
        self.takeover_interval_s = lease_ttl_s / 3  # how often a replica looks for jobs whose runner died
        self._index = f"{namespace}:jobs"
        self._start_run = client.register_script(_START_RUN)
        self._apply = client.register_script(_APPLY_CHUNK)

    @classmethod
    def from_url(cls, url: str, namespace: str = "prolip", lease_ttl_s: float = 15.0) -> RedisJobStore:
        return cls(redis.Redis.from_url(url, decode_responses=True, health_check_interval=30), namespace, lease_ttl_s)

    # --- keys -----------------------------------------------------------------------------------

    def _job_key(self, job_id: str, part: str = "") -> str:
        return f"{self.ns}:job:{{{job_id}}}" + (f":{part}" if part else "")

    def _chunk_key(self, job_id: str, chunk: int) -> str:
        return self._job_key(job_id, f"chunk:{chunk}")

    def lease(self, job_id: str) -> RedisLease:
        return RedisLease(self.redis, f"{self.ns}:job-lease:{{{job_id}}}", self.lease_ttl_s)

    def close(self) -> None:
        """Nothing per thread to close (one pooled client)."""

    # --- jobs -----------------------------------------------------------------------------------

    def create_job(self, job_id: str, *, collection: str, source: str, fmt: str, modality: str, model_id: str,
                   mode: str, chunk_size: int, options: dict | None = None) -> None:
        now = time.time()
        fields = {"job_id": job_id, "collection": collection, "source": source, "format": fmt, "modality": modality,
                  "model_id": model_id, "mode": mode, "chunk_size": chunk_size, "state": "queued", "planned": 0,
                  "total": "", "done": 0, "failed": 0, "duplicates": 0, "cancel_requested": 0, "error": "",
                  "created_at": repr(now), "updated_at": repr(now), "started_at": "", "finished_at": "",
                  "run_started_at": "", "run_start_processed": 0, "options": json.dumps(options or {}),
                  "plan_chunks": 0}
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._job_key(job_id), mapping=fields)
            pipe.zadd(self._index, {job_id: now})
            pipe.execute()

    def job(self, job_id: str) -> dict[str, Any]:
        raw = self.redis.hgetall(self._job_key(job_id))
        if not raw:
            raise KeyError(job_id)
        row: dict[str, Any] = dict(raw)
        for name in _INT_FIELDS:
            row[name] = int(raw[name]) if raw.get(name) not in (None, "") else None
        for name in _FLOAT_FIELDS:
            row[name] = float(raw[name]) if raw.get(name) not in (None, "") else None
        row["error"] = raw.get("error") or None
        for name in ("done", "failed", "duplicates", "run_start_processed", "planned", "cancel_requested"):
            row[name] = row[name] or 0
        return row

    def job_ids(self, states: Iterable[str] | None = None) -> list[str]:
        ids = self.redis.zrange(self._index, 0, -1)
        if states is None:
            return list(ids)
        wanted = set(states)
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(self._job_key(job_id), "state")
        return [job_id for job_id, state in zip(ids, pipe.execute(), strict=True) if state in wanted]

    def find_unfinished(self, source: str, collection: str) -> str | None:
        """The newest job for this source and collection that has not completed or been cancelled."""
        ids = self.redis.zrevrange(self._index, 0, -1)
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(self._job_key(job_id), ("source", "collection", "state"))
        for job_id, (found_source, found_collection, state) in zip(ids, pipe.execute(), strict=True):
            if found_source == source and found_collection == collection and state not in FINAL_STATES:
                return job_id
        return None

    def set_state(self, job_id: str, state: str, error: str | None = None) -> None:
        if state not in STATES:
            raise ValueError(f"unknown job state {state!r}")
        now = time.time()
        finished = repr(now) if state in ("completed", "cancelled", "failed") else ""
        self.redis.hset(self._job_key(job_id), mapping={"state": state, "error": error or "", "updated_at": repr(now),
                                                        "finished_at": finished})

    def request_cancel(self, job_id: str, requested: bool) -> None:
        self.redis.hset(self._job_key(job_id), mapping={"cancel_requested": int(requested),
                                                        "updated_at": repr(time.time())})

    def cancel_requested(self, job_id: str) -> bool:
        return self.redis.hget(self._job_key(job_id), "cancel_requested") == "1"

    def start_run(self, job_id: str) -> None:
        self._start_run(keys=[self._job_key(job_id)], args=[repr(time.time())])

    def status(self, job_id: str) -> JobStatus:
        return _status_from_row(self.job(job_id), time.time())

    # --- planning -------------------------------------------------------------------------------

    def reset_plan(self, job_id: str) -> None:
        chunks = int(self.redis.hget(self._job_key(job_id), "plan_chunks") or 0)
        with self.redis.pipeline(transaction=True) as pipe:
            for chunk in range(chunks + 1):
                pipe.delete(self._chunk_key(job_id, chunk))
            for part in ("pending", "applied", "failures", "where", "failed-ids", "unchanged"):
                pipe.delete(self._job_key(job_id, part))
            pipe.hset(self._job_key(job_id), mapping={"planned": 0, "total": "", "done": 0, "failed": 0,
                                                      "plan_chunks": 0, "updated_at": repr(time.time())})
            pipe.execute()

    def add_plan_rows(self, job_id: str, rows: list[tuple]) -> None:
        """Rows of (seq, item_id, location, ref, metadata, chunk, state, reason), in one transaction."""
        top = -1
        with self.redis.pipeline(transaction=True) as pipe:
            for seq, item_id, location, ref, metadata, chunk, state, reason in rows:
                if chunk is None or state == FAILED:
                    pipe.zadd(self._job_key(job_id, "failures"),
                              {json.dumps([seq, item_id, location, reason]): seq})
                    continue
                pipe.rpush(self._chunk_key(job_id, chunk), json.dumps([seq, item_id, location, ref, metadata]))
                pipe.hset(self._job_key(job_id, "where"), item_id, chunk)
                top = max(top, chunk)
            if top >= 0:
                pipe.hset(self._job_key(job_id), "plan_chunks", top + 1)  # rows arrive in chunk order
            pipe.hset(self._job_key(job_id), "updated_at", repr(time.time()))
            pipe.execute()

    def finish_plan(self, job_id: str, total: int, rejected: int, chunks: int, done: int = 0) -> None:
        """The plan is complete; ``done`` items were marked done while planning (``mark_unchanged``): a
        chunk with nothing left to encode is applied at once."""
        unchanged = self.redis.smembers(self._job_key(job_id, "unchanged")) if done else set()
        empty = [chunk for chunk in range(chunks)
                 if unchanged and all(row[1] in unchanged for row in self._plan_rows(job_id, chunk))]
        pending = sorted(set(range(chunks)) - set(empty))
        with self.redis.pipeline(transaction=True) as pipe:
            for start in range(0, len(pending), 10_000):
                pipe.sadd(self._job_key(job_id, "pending"), *pending[start:start + 10_000])
            if empty:
                pipe.sadd(self._job_key(job_id, "applied"), *empty)
            pipe.hset(self._job_key(job_id), mapping={"planned": 1, "total": total, "failed": rejected, "done": done,
                                                      "updated_at": repr(time.time())})
            pipe.execute()

    def last_completed(self, source: str, collection: str, other_than: str) -> str | None:
        """The newest completed job, besides ``other_than``, that indexed this source into this collection."""
        for job_id in self.redis.zrevrange(self._index, 0, -1):
            if job_id == other_than:
                continue
            fields = self.redis.hmget(self._job_key(job_id), ["source", "collection", "state"])
            if fields == [source, collection, "completed"]:
                return job_id
        return None

    def mark_unchanged(self, job_id: str, previous: str, present) -> int:
        """Mark done, without encoding, the planned items ``previous`` indexed with the same reference and
        metadata (the same file, size and modification time) that the collection still holds
        (``present(item_id)``); returns how many."""
        applied = {int(chunk) for chunk in self.redis.smembers(self._job_key(previous, "applied"))}
        failed = self.redis.smembers(self._job_key(previous, "failed-ids"))
        before: dict[int, dict[str, tuple[str, str]]] = {}  # previous chunk -> item id -> (ref, metadata)
        found = []
        chunks = int(self.redis.hget(self._job_key(job_id), "plan_chunks") or 0)
        for chunk in range(chunks):
            rows = self._plan_rows(job_id, chunk)
            where = self.redis.hmget(self._job_key(previous, "where"), [row[1] for row in rows]) if rows else []
            for (_, item_id, _, ref, metadata), old_chunk in zip(rows, where, strict=True):
                if old_chunk is None or int(old_chunk) not in applied or item_id in failed:
                    continue
                if int(old_chunk) not in before:
                    before[int(old_chunk)] = {row[1]: (row[3], row[4]) for row in self._plan_rows(previous,
                                                                                                   int(old_chunk))}
                if before[int(old_chunk)].get(item_id) == (ref, metadata) and present(item_id):
                    found.append(item_id)
        if found:
            self.redis.sadd(self._job_key(job_id, "unchanged"), *found)
        return len(found)

    def unchanged(self, job_id: str) -> int:
        """Items of this job that were not encoded because an earlier completed job had indexed them."""
        return int(self.redis.scard(self._job_key(job_id, "unchanged")))

    # --- chunks ---------------------------------------------------------------------------------

    def pending_chunks(self, job_id: str) -> list[int]:
        return sorted(int(chunk) for chunk in self.redis.smembers(self._job_key(job_id, "pending")))

    def is_applied(self, job_id: str, chunk: int) -> bool:
        pipe = self.redis.pipeline(transaction=False)
        pipe.sismember(self._job_key(job_id, "applied"), chunk)
        pipe.sismember(self._job_key(job_id, "pending"), chunk)
        applied, pending = pipe.execute()
        if not applied and not pending:
            raise KeyError(f"job {job_id} has no chunk {chunk}")
        return bool(applied)

    def _plan_rows(self, job_id: str, chunk: int) -> list[list]:
        return [json.loads(text) for text in self.redis.lrange(self._chunk_key(job_id, chunk), 0, -1)]

    def _rows_to_encode(self, job_id: str, chunk: int) -> list[list]:
        """The chunk's plan rows without the items found unchanged while planning."""
        rows = self._plan_rows(job_id, chunk)
        unchanged = self.redis.smembers(self._job_key(job_id, "unchanged"))
        return [row for row in rows if row[1] not in unchanged] if unchanged else rows

    def chunk(self, job_id: str, chunk: int) -> PlannedChunk:
        """The chunk's items still to encode (items found unchanged while planning are left out)."""
        rows = self._rows_to_encode(job_id, chunk)
        items = [ChunkItem(item_id, json.loads(ref)) for _, item_id, _, ref, _ in rows]
        return PlannedChunk(chunk, items, {item_id: json.loads(metadata) for _, item_id, _, _, metadata in rows})

    def apply_chunk(self, job_id: str, chunk: int, failures: list[tuple[str, str]]) -> bool:
        """Set the chunk's applied marker, record its failures and move the counters, atomically.

        Call only after the chunk's vectors are in the index. False (a duplicate counted) when
        the chunk was already applied.
        """
        planned = {item_id: (seq, location) for seq, item_id, location, _, _ in self._rows_to_encode(job_id, chunk)}
        failed = [(item_id, reason) for item_id, reason in failures if item_id in planned]
        args: list[Any] = [chunk, repr(time.time()), len(planned) - len(failed), len(failed)]
        for item_id, reason in failed:
            seq, location = planned[item_id]
            args += [seq, json.dumps([seq, item_id, location, reason]), item_id]
        keys = [self._job_key(job_id), self._job_key(job_id, "pending"), self._job_key(job_id, "applied"),
                self._job_key(job_id, "failures"), self._job_key(job_id, "failed-ids")]
        if not self.redis.sismember(self._job_key(job_id, "applied"), chunk):
            self._record_synced(job_id, chunk, failed)  # the vectors are in the index: before the marker
        outcome = self._apply(keys=keys, args=args)
        if outcome == -1:
            raise KeyError(f"job {job_id} has no chunk {chunk}")
        return outcome == 1

    def apply_chunks(self, job_id: str, chunks: list[tuple[int, list[tuple[str, str]]]]) -> list[bool]:
        """``apply_chunk`` for each (chunk, failures) of a group commit, in order (see the module docstring)."""
        return [self.apply_chunk(job_id, chunk, failures) for chunk, failures in chunks]

    def count_duplicate(self, job_id: str) -> None:
        self.redis.hincrby(self._job_key(job_id), "duplicates", 1)

    # --- folder sync (indexer.sync) -------------------------------------------------------------

    def _synced_key(self, collection: str, root: str) -> str:
        digest = hashlib.sha256(root.encode("utf-8")).hexdigest()[:24]
        return f"{self.ns}:synced:{{{collection}}}:{digest}"

    def _record_synced(self, job_id: str, chunk: int, failures: list[tuple[str, str]]) -> None:
        """A sync job's chunk: record the fingerprints planned for its files that did not fail."""
        fields = self.redis.hmget(self._job_key(job_id), ["options", "source"])
        target = json.loads(fields[0] or "{}").get("sync") or {}
        if not target.get("collection"):
            return
        failed = {item_id for item_id, _ in failures}
        records = {}
        for _, item_id, _, ref, _ in self._plan_rows(job_id, chunk):
            fingerprint = json.loads(ref).get("fingerprint") if ref else None
            if fingerprint and item_id not in failed:
                records[item_id] = json.dumps([*fingerprint[:3], job_id])
        if records:
            self.redis.hset(self._synced_key(target["collection"], fields[1]), mapping=records)

    def _synced_entries(self, collection: str, root: str) -> Iterable[tuple[str, list]]:
        for item_id, text in self.redis.hscan_iter(self._synced_key(collection, root), count=1000):
            yield item_id, json.loads(text)

    def synced(self, collection: str, root: str, item_ids: list[str]) -> dict[str, tuple[int, int, str]]:
        """item id -> (size, mtime_ns, sha256) recorded for these files of ``root`` in ``collection``."""
        found = {}
        key = self._synced_key(collection, root)
        for start in range(0, len(item_ids), 1000):
            part = item_ids[start:start + 1000]
            for item_id, text in zip(part, self.redis.hmget(key, part), strict=True):
                if text is not None:
                    size, mtime_ns, sha256, _ = json.loads(text)
                    found[item_id] = (size, mtime_ns, sha256)
        return found

    def mark_seen(self, collection: str, root: str, job_id: str, item_ids: list[str],
                  restat: list[tuple[str, int, int]] = ()) -> None:
        """These files are still in the folder (``restat``: and their new size and mtime, same content)."""
        key = self._synced_key(collection, root)
        changes = {item_id: None for item_id in item_ids}
        changes.update({item_id: (size, mtime) for item_id, size, mtime in restat})
        ids = list(changes)
        for start in range(0, len(ids), 1000):
            part = ids[start:start + 1000]
            updated = {}
            for item_id, text in zip(part, self.redis.hmget(key, part), strict=True):
                if text is None:
                    continue
                size, mtime_ns, sha256, _ = json.loads(text)
                if changes[item_id] is not None:
                    size, mtime_ns = changes[item_id]
                updated[item_id] = json.dumps([size, mtime_ns, sha256, job_id])
            if updated:
                self.redis.hset(key, mapping=updated)

    def unsee(self, collection: str, root: str, job_id: str) -> None:
        """Forget what an interrupted planning of ``job_id`` saw (it plans again from the folder as it is)."""
        key = self._synced_key(collection, root)
        updated = {item_id: json.dumps([*entry[:3], None])
                   for item_id, entry in self._synced_entries(collection, root) if entry[3] == job_id}
        if updated:
            self.redis.hset(key, mapping=updated)

    def unseen(self, collection: str, root: str, job_id: str, limit: int) -> list[str]:
        """Files recorded for ``root`` that sync job ``job_id`` did not find: gone from the folder."""
        gone = sorted(item_id for item_id, entry in self._synced_entries(collection, root) if entry[3] != job_id)
        return gone[:limit]

    def _update_sync_options(self, job_id: str, change) -> None:
        """Read-modify-write of the job's sync figures (only the job's lease holder writes them)."""
        options = json.loads(self.redis.hget(self._job_key(job_id), "options") or "{}")
        sync = options.setdefault("sync", {})
        change(sync)
        self.redis.hset(self._job_key(job_id), mapping={"options": json.dumps(options),
                                                        "updated_at": repr(time.time())})

    def forget_synced(self, collection: str, root: str, job_id: str, item_ids: list[str]) -> None:
        """Their items were deleted from the collection: drop the records and count them removed."""
        removed = self.redis.hdel(self._synced_key(collection, root), *item_ids) if item_ids else 0
        self._update_sync_options(job_id, lambda sync: sync.update(removed=int(sync.get("removed") or 0) + removed))

    def set_unchanged(self, job_id: str, unchanged: int) -> None:
        self._update_sync_options(job_id, lambda sync: sync.update(unchanged=unchanged))

    # --- failures -------------------------------------------------------------------------------

    def failures(self, job_id: str, limit: int = 100, offset: int = 0) -> list[ItemFailure]:
        self.job(job_id)  # KeyError for an unknown job, not an empty list
        entries = self.redis.zrange(self._job_key(job_id, "failures"), offset, offset + limit - 1)
        return [ItemFailure(item_id, location, reason) for _, item_id, location, reason in map(json.loads, entries)]

    def indexed_ref(self, job_id: str, item_id: str) -> dict | None:
        """How this job read ``item_id`` (its source reference), if the job indexed it; else None."""
        chunk = self.redis.hget(self._job_key(job_id, "where"), item_id)
        if chunk is None:
            return None
        if not (self.redis.sismember(self._job_key(job_id, "applied"), chunk)
                or self.redis.sismember(self._job_key(job_id, "unchanged"), item_id)):
            return None
        if self.redis.sismember(self._job_key(job_id, "failed-ids"), item_id):
            return None
        for _, planned_id, _, ref, _ in self._plan_rows(job_id, int(chunk)):
            if planned_id == item_id and ref:
                return json.loads(ref)
        return None

    def item_states(self, job_id: str) -> dict[str, int]:
        """item id -> state for every planned item (tests and diagnostics)."""
        chunks = int(self.redis.hget(self._job_key(job_id), "plan_chunks") or 0)
        applied = {int(c) for c in self.redis.smembers(self._job_key(job_id, "applied"))}
        failed = set(self.redis.smembers(self._job_key(job_id, "failed-ids")))
        unchanged = set(self.redis.smembers(self._job_key(job_id, "unchanged")))
        states = {}
        for chunk in range(chunks):
            for _, item_id, _, _, _ in self._plan_rows(job_id, chunk):
                states[item_id] = (FAILED if item_id in failed
                                   else DONE if chunk in applied or item_id in unchanged else PENDING)
        return states
