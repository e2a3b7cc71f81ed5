"""Folder sync: index what is new or changed in a folder, remove what is gone, leave the rest.

A sync job (``JobManager.submit(folder, name, sync=True)``, ``index DIR --sync``) is a folder job
whose plan holds only the files that need encoding. The job store's ``synced_files`` table keeps,
per collection (by uuid) and folder, each indexed file's size, mtime and SHA-256. Planning
compares every file of the folder with its record:

* same size and mtime: unchanged, nothing read;
* size or mtime differ: the file is hashed; the same SHA-256 means the same picture (a copy, a
  ``touch``): the record takes the new size and mtime, nothing is encoded;
* no record, or another hash: planned, with its fingerprint, like any folder item.

Each file found is marked seen by the job. A planned file's record is written in the same
transaction as its chunk's marker (``JobStore.apply_chunk``), so it is recorded exactly when its
vectors are committed; a file that fails to decode keeps its old record and is tried again by the
next sync. When every chunk is applied, items whose recorded files the job did not see are
deleted from the collection, then their records dropped (deleting twice is harmless, so a crash
in between is repaired by resuming). Resuming an interrupted sync job follows the same rules as
any job: nothing is encoded twice, nothing is lost.

Limits: a file rewritten within the filesystem's mtime resolution with its size unchanged looks
unchanged (hashing every file on every sync would be the only cure); a collection first filled
by a plain (non-sync) job has no records, so its first sync encodes every file once.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass

from .jobstore import JobStore
from .roots import Confinement
from .sources import PlannedItem, scan

log = logging.getLogger(__name__)

DELETE_BATCH = 1024
HASH_BLOCK = 1 << 20


@dataclass(frozen=True)
class SyncTarget:
    collection: str  # the collection's uuid
    root: str        # the folder, as the job names its source


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def select_changed(store: JobStore, job_id: str, target: SyncTarget,
                   items: list[PlannedItem]) -> tuple[list[PlannedItem], int]:
    """The items of ``items`` that need encoding (their ref carries the fingerprint), and how many do not."""
    recorded = store.synced(target.collection, target.root, [item.item_id for item in items])
    seen: list[str] = []
    restat: list[tuple[str, int, int]] = []
    changed: list[PlannedItem] = []
    for item in items:
        record = recorded.get(item.item_id)
        try:
            stat = os.stat(item.ref["path"])
            fingerprint = (stat.st_size, stat.st_mtime_ns)
            if record is not None and fingerprint == record[:2]:
                seen.append(item.item_id)
                continue
            digest = sha256_file(item.ref["path"])
        except OSError as error:  # vanished or unreadable since it was listed: reading it will say why
            log.info("sync: cannot fingerprint %s (%s)", item.location, error)
            changed.append(item)
            continue
        if record is not None and digest == record[2]:
            restat.append((item.item_id, *fingerprint))
            continue
        if record is not None:
            seen.append(item.item_id)  # still in the folder: kept if its new content fails to decode
        changed.append(PlannedItem(item.item_id, {**item.ref, "fingerprint": [*fingerprint, digest]},
                                   item.location, item.metadata))
    store.mark_seen(target.collection, target.root, job_id, seen, restat)
    unchanged = len(items) - len(changed)
    return changed, unchanged


def remove_gone(store: JobStore, job_id: str, target: SyncTarget, index, signal) -> str | None:
    """Delete the items whose files the job did not find; returns a stop reason, or None when done."""
    while True:
        reason = signal.reason()
        if reason is not None:
            return reason
        gone = store.unseen(target.collection, target.root, job_id, DELETE_BATCH)
        if not gone:
            return None
        index.delete(gone)  # durable first; a crash before the records go is repaired by deleting again
        store.forget_synced(target.collection, target.root, job_id, gone)
        log.info("job %s: removed %d items whose files are gone", job_id, len(gone))


def folder_signature(source: str, confinement: Confinement) -> int:
    """A hash of every indexable file's (path, size, mtime): it changes when the folder does (watch mode)."""
    state = []
    for found in scan(source, "directory", "image", confinement):
        path = found.ref["path"] if isinstance(found, PlannedItem) else found.location
        try:
            stat = os.stat(path)
            state.append((found.item_id, stat.st_size, stat.st_mtime_ns))
        except OSError:
            state.append((found.item_id, -1, -1))
    return hash(tuple(state))
