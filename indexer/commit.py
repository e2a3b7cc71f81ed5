"""Applying one encoded chunk: vectors into the collection, then the chunk's marker.

Both ways of running a job end here (the in-process runner and the Redis coordinator), so
the exactly-once rule lives in one place: a chunk whose marker is set is never added again,
and the marker is set only after ``index.add`` returned (the index's add is durable on
return and an upsert by id, so repeating a chunk after a crash leaves no duplicate).
"""

from __future__ import annotations

import logging

import numpy as np

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
    return EncodedChunk([encoded.ids[i] for i in keep], encoded.mean[keep], logvar, failures)


def apply_chunk(store: JobStore, index, job_id: str, planned: PlannedChunk, encoded: EncodedChunk) -> bool:
    """Add the chunk's vectors and set its marker. False when it was already applied (a duplicate)."""
    if store.is_applied(job_id, planned.chunk):
        store.count_duplicate(job_id)
        log.info("job %s: chunk %d already applied; duplicate result dropped", job_id, planned.chunk)
        return False
    encoded = check_result(planned, encoded)
    if encoded.ids:
        metadata = [planned.metadata[item_id] for item_id in encoded.ids]
        index.add(encoded.ids, encoded.mean, encoded.logvar, metadata)  # durable upsert, before the marker
    return store.apply_chunk(job_id, planned.chunk, encoded.failures)


def fail_chunk(store: JobStore, job_id: str, planned: PlannedChunk, reason: str) -> bool:
    """Mark every item of a chunk failed with ``reason`` (a dead-lettered chunk)."""
    if store.is_applied(job_id, planned.chunk):
        store.count_duplicate(job_id)
        return False
    return store.apply_chunk(job_id, planned.chunk, [(item.item_id, reason) for item in planned.items])
