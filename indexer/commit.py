"""Applying encoded chunks: vectors into the collection, then the chunks' markers.

Both ways of running a job end here (the in-process runner and the Redis coordinator), so
the exactly-once rule lives in one place: a chunk whose marker is set is never added again,
and the marker is set only after ``index.add`` returned (the index's add is durable on
return and an upsert by id, so repeating a chunk after a crash leaves no duplicate).

``apply_group`` commits several chunks at once (a group commit): one ``index.add`` of all
their vectors, then one job-store transaction setting all their markers. A crash between
the two leaves every chunk of the group pending, and doing them again upserts the same
ids, so the rule holds for the group as for one chunk; what a group commit saves is the
two durable transactions (fsyncs) per chunk. ``GroupCommitter`` runs such commits on a
thread of their own, so they overlap with encoding, grouping what arrives while the last
commit ran, bounded by a size (items) and a latency (seconds since its first chunk).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass

import numpy as np

from .config import MAX_METADATA_BYTES
from .jobstore import JobStore, PlannedChunk
from .pipeline import EncodedChunk

log = logging.getLogger(__name__)


def check_result(planned: PlannedChunk, encoded: EncodedChunk) -> EncodedChunk:
    """The result restricted to what can be indexed; ValueError if it does not match the plan.

    Rows with non-finite values (an encoder overflow) fail those items instead of making the
    index refuse the whole batch.
    """
    expected = [item.item_id for item in planned.items]
    failed = [item_id for item_id, _ in encoded.failures]
    if sorted(encoded.ids + failed) != sorted(expected):
        raise ValueError(f"result for chunk {planned.chunk} does not cover its {len(expected)} planned items")
    finite = np.isfinite(encoded.mean).all(axis=1)  # [n]
    if encoded.logvar is not None:
        finite &= np.isfinite(encoded.logvar).all(axis=1)
    if finite.all():
        return encoded
    keep = np.flatnonzero(finite)
    failures = list(encoded.failures) + [(encoded.ids[i], "encoder produced non-finite values")
                                         for i in np.flatnonzero(~finite)]
    logvar = None if encoded.logvar is None else encoded.logvar[keep]
    return EncodedChunk([encoded.ids[i] for i in keep], encoded.mean[keep], logvar, failures, encoded.metadata)


def item_metadata(planned: dict, found: object) -> dict:
    """The metadata stored for an item: what its file says (``indexer.photos``) under what the plan gave.

    The plan's keys win (a manifest's own columns). What the file says is dropped when it is not a
    JSON object or would push the item over the metadata limit, so it never fails the item.
    """
    if not isinstance(found, dict) or not found:
        return planned
    merged = {**found, **planned}
    try:
        size = len(json.dumps(merged, ensure_ascii=False, allow_nan=False).encode("utf-8"))
    except (TypeError, ValueError):
        return planned
    return merged if size <= MAX_METADATA_BYTES else planned


def apply_chunk(store: JobStore, index, job_id: str, planned: PlannedChunk, encoded: EncodedChunk) -> bool:
    """Add the chunk's vectors and set its marker. False when it was already applied (a duplicate)."""
    if store.is_applied(job_id, planned.chunk):
        store.count_duplicate(job_id)
        log.info("job %s: chunk %d already applied; duplicate result dropped", job_id, planned.chunk)
        return False
    encoded = check_result(planned, encoded)
    if encoded.ids:
        metadata = [item_metadata(planned.metadata[item_id], encoded.metadata.get(item_id))
                    for item_id in encoded.ids]
        index.add(encoded.ids, encoded.mean, encoded.logvar, metadata)  # durable upsert, before the marker
    return store.apply_chunk(job_id, planned.chunk, encoded.failures)


def fail_chunk(store: JobStore, job_id: str, planned: PlannedChunk, reason: str) -> bool:
    """Mark every item of a chunk failed with ``reason`` (a dead-lettered chunk)."""
    if store.is_applied(job_id, planned.chunk):
        store.count_duplicate(job_id)
        return False
    return store.apply_chunk(job_id, planned.chunk, [(item.item_id, reason) for item in planned.items])


def apply_group(store: JobStore, index, job_id: str, group: list[tuple[PlannedChunk, EncodedChunk]]) -> list[bool]:
    """``apply_chunk`` for several chunks with one index write and one marker transaction.

    Returns, per chunk, False when it was already applied (a duplicate, dropped).
    """
    fresh = [(planned, check_result(planned, encoded)) for planned, encoded in group
             if not store.is_applied(job_id, planned.chunk)]
    duplicates = len(group) - len(fresh)
    ids = [item_id for _, encoded in fresh for item_id in encoded.ids]
    if len(set(ids)) != len(ids):  # an id in two chunks: one add per chunk keeps upsert order
        return [apply_chunk(store, index, job_id, planned, encoded) for planned, encoded in group]
    if ids:
        metadata = [item_metadata(planned.metadata[item_id], encoded.metadata.get(item_id))
                    for planned, encoded in fresh for item_id in encoded.ids]
        index.add(ids, np.concatenate([encoded.mean for _, encoded in fresh if encoded.ids]),
                  np.concatenate([encoded.logvar for _, encoded in fresh if encoded.ids]), metadata)
    applied = store.apply_chunks(job_id, [(planned.chunk, encoded.failures) for planned, encoded in fresh])
    if duplicates:
        for _ in range(duplicates):
            store.count_duplicate(job_id)
        log.info("job %s: %d chunks already applied; duplicate results dropped", job_id, duplicates)
    by_chunk = dict(zip([planned.chunk for planned, _ in fresh], applied, strict=True))
    return [by_chunk.get(planned.chunk, False) for planned, _ in group]


@dataclass(frozen=True)
class CommitPolicy:
    """When a group commit closes: at ``max_items`` items, or ``max_delay_s`` after its first chunk arrived.

    With the default ``max_delay_s`` of 0 a group is whatever arrived while the previous commit
    ran: nothing waits, and groups grow by themselves when commits are slower than encoding.
    A positive delay lets a group wait that long for more chunks (fewer, larger transactions).
    """

    max_items: int = 2048
    max_delay_s: float = 0.0

    def __post_init__(self):
        if self.max_items < 1 or self.max_delay_s < 0:
            raise ValueError("max_items must be >= 1 and max_delay_s >= 0")


_END = object()


class GroupCommitter:
    """Commits encoded chunks in groups on a thread of its own (see the module docstring).

    ``submit`` hands over one encoded chunk (it blocks while ``max_chunks_waiting`` chunks wait,
    so memory stays bounded); ``close`` commits what is left and waits. An error in a commit
    (a full disk, a closed collection) is raised by the next ``submit`` or by ``close``; the
    chunks not committed stay pending, to be done again by the next run.
    """

    def __init__(self, store: JobStore, index, job_id: str, policy: CommitPolicy | None = None,
                 max_chunks_waiting: int = 8):
        self.store, self.index, self.job_id = store, index, job_id
        self.policy = policy or CommitPolicy()
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, max_chunks_waiting))
        self._error: BaseException | None = None
        self.groups: list[int] = []  # chunks per group committed (tests and diagnostics)
        self._thread = threading.Thread(target=self._run, name=f"commit-{job_id[:8]}", daemon=True)
        self._thread.start()

    def submit(self, planned: PlannedChunk, encoded: EncodedChunk) -> None:
        self._raise_if_failed()
        while True:
            try:
                self._queue.put((time.monotonic(), planned, encoded), timeout=0.1)
                return
            except queue.Full:
                self._raise_if_failed()  # a failed committer takes nothing more: do not wait forever

    def close(self, reraise: bool = True) -> None:
        """Commit what was submitted, stop the thread; raises the error a commit met, if any (``reraise``)."""
        if self._thread.is_alive():
            while self._thread.is_alive():
                try:
                    self._queue.put(_END, timeout=0.1)
                    break
                except queue.Full:
                    continue
            self._thread.join()
        if reraise:
            self._raise_if_failed()
        elif self._error is not None:
            log.error("job %s: a group commit failed: %r", self.job_id, self._error)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            ended = False
            while not ended:
                entry = self._queue.get()
                if entry is _END:
                    return
                first_at, planned, encoded = entry
                group, items = [(planned, encoded)], len(planned.items)
                deadline = first_at + self.policy.max_delay_s
                while items < self.policy.max_items:
                    try:
                        entry = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                    except queue.Empty:
                        break
                    if entry is _END:
                        ended = True
                        break
                    group.append(entry[1:])
                    items += len(entry[1].items)
                apply_group(self.store, self.index, self.job_id, group)
                self.groups.append(len(group))
        except BaseException as error:  # handed to the runner by submit/close
            self._error = error
        finally:
            self.store.close()  # this thread's job-store connection
