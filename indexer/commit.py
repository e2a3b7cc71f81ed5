"""Applying one encoded chunk: vectors into the collection, then the chunk's marker.

Both ways of running a job end here (the in-process runner and the Redis coordinator), so
the exactly-once rule lives in one place: a chunk whose marker is set is never added again,
and the marker is set only after ``index.add`` returned (the index's add is durable on
return and an upsert by id, so repeating a chunk after a crash leaves no duplicate).
"""

from __future__ import annotations

import json
import logging

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
    finite = np.isfinite(encoded.mean).all(axis=1) & np.isfinite(encoded.logvar).all(axis=1)  # [n]
    if finite.all():
        return encoded
    keep = np.flatnonzero(finite)
    failures = list(encoded.failures) + [(encoded.ids[i], "encoder produced non-finite values")
                                         for i in np.flatnonzero(~finite)]
    return EncodedChunk([encoded.ids[i] for i in keep], encoded.mean[keep], encoded.logvar[keep], failures,
                        encoded.metadata)


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
