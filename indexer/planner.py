"""Planning a job: list its source into the job store, cut into numbered chunks.

Planning writes in batches, so a source of millions of items never sits in memory; the job
is marked planned only after the last batch. A crash while planning leaves ``planned = 0``
and the next run plans again from a clean slate (``JobStore.reset_plan``).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

from .config import MAX_ID_BYTES, MAX_METADATA_BYTES  # over them the index refuses a whole batch
from .jobstore import FAILED, PENDING, JobStore
from .roots import Confinement
from .sources import PlannedItem, RejectedItem, scan
from .sync import SyncTarget, select_changed

log = logging.getLogger(__name__)

PLAN_BATCH = 5000


class PlanningStopped(Exception):
    """Planning was interrupted by a cancel or a shutdown."""


def check_indexable(item: PlannedItem) -> str | None:
    """Why the index would refuse this item, or None."""
    if len(item.item_id.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        return f"id longer than {MAX_ID_BYTES} bytes"
    try:
        item.item_id.encode("utf-8")
        text = json.dumps(item.metadata, ensure_ascii=False, allow_nan=False)
    except UnicodeEncodeError:
        return "id is not valid Unicode"
    except (TypeError, ValueError) as error:
        return f"metadata is not JSON ({error})"
    if len(text.encode("utf-8", "surrogatepass")) > MAX_METADATA_BYTES:
        return f"metadata larger than {MAX_METADATA_BYTES} bytes"
    return None


def plan_job(store: JobStore, job_id: str, *, source: str, fmt: str, modality: str, chunk_size: int,
             confinement: Confinement, stop: threading.Event | None = None, sync: SyncTarget | None = None,
             previous: str | None = None, present: Callable[[str], bool] | None = None) -> tuple[int, int, int]:
    """List ``source`` into the store; returns (items planned, items rejected, chunks).

    With ``sync`` (a folder sync, ``indexer.sync``) only new and changed files are planned.
    Else ``previous``: an earlier completed job of the same source and collection; items it indexed
    that are unchanged and still in the collection (``present``) are marked done, not encoded again.
    """
    store.reset_plan(job_id)
    if sync is not None:
        store.unsee(sync.collection, sync.root, job_id)
    rows: list[tuple] = []
    waiting: list[PlannedItem] = []  # sync: files waiting to be compared with their records, a batch at a time
    seq = accepted = rejected = unchanged = 0

    def plan(item: PlannedItem) -> None:
        nonlocal seq, accepted
        rows.append((seq, item.item_id, item.location, json.dumps(item.ref),
                     json.dumps(item.metadata, ensure_ascii=False), accepted // chunk_size, PENDING, None))
        seq += 1
        accepted += 1

    def compare_waiting() -> None:
        nonlocal unchanged
        changed, same = select_changed(store, job_id, sync, waiting)
        unchanged += same
        waiting.clear()
        for item in changed:
            plan(item)

    for found in scan(source, fmt, modality, confinement):
        if isinstance(found, PlannedItem) and (reason := check_indexable(found)) is not None:
            found = RejectedItem(found.item_id, found.location, reason)
        if isinstance(found, RejectedItem):
            rows.append((seq, found.item_id, found.location, None, None, None, FAILED, found.reason))
            seq += 1
            rejected += 1
        elif sync is not None:
            waiting.append(found)
            if len(waiting) >= PLAN_BATCH:
                compare_waiting()
        else:
            plan(found)
        if len(rows) >= PLAN_BATCH:
            store.add_plan_rows(job_id, rows)
            rows = []
            if stop is not None and stop.is_set():
                raise PlanningStopped()
    if waiting:
        compare_waiting()
    if rows:
        store.add_plan_rows(job_id, rows)
    chunks = -(-accepted // chunk_size)
    if sync is not None:
        store.set_unchanged(job_id, unchanged)
    elif previous:
        unchanged = store.mark_unchanged(job_id, previous, present or (lambda item_id: True))
    store.finish_plan(job_id, total=seq, rejected=rejected, chunks=chunks, done=0 if sync is not None else unchanged)
    log.info("job %s: planned %d items (%d rejected) in %d chunks; %d unchanged%s", job_id, seq, rejected, chunks,
             unchanged, "" if sync is not None or not previous else f" since job {previous}")
    return seq, rejected, chunks
