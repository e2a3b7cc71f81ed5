"""Persistent job state in SQLite (``<data dir>/jobs.sqlite3``).

Three tables. ``jobs``: one row per job with its counters. ``items``: the plan, one row per
item found in the source, with its state (pending / done / failed) and failure reason.
``chunks``: the unit of work and of commit, with its applied marker. A fourth,
``synced_files``, is what folder sync (``indexer.sync``) knows of the files a collection holds
from a folder: size, mtime and SHA-256 when indexed. A file's row is written in the same
transaction as its chunk's marker, so it is recorded exactly when its vectors are committed.

The invariant that makes jobs resumable without indexing anything twice: a chunk's
vectors are upserted into the index first, and only then, in one transaction, its marker
is set, its items marked done or failed and the job's counters moved. A crash between the
two leaves the chunk pending; doing it again upserts the same ids, so the index never holds
an item twice, and a chunk whose marker is set is never applied again.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from .leases import LOCK_DIR, FileLease
from .pipeline import ChunkItem

log = logging.getLogger(__name__)

DB_FILE = "jobs.sqlite3"

PENDING, DONE, FAILED = 0, 1, 2  # items.state
ACTIVE_STATES = ("queued", "planning", "running")
FINAL_STATES = ("completed", "cancelled")
STATES = ("queued", "planning", "running", "paused", "failed", "completed", "cancelled", "interrupted")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    collection TEXT NOT NULL,
    source TEXT NOT NULL,
    format TEXT NOT NULL,
    modality TEXT NOT NULL,
    model_id TEXT NOT NULL,
    mode TEXT NOT NULL,                 -- 'local' (in-process) or 'redis' (workers)
    chunk_size INTEGER NOT NULL,
    state TEXT NOT NULL,
    planned INTEGER NOT NULL DEFAULT 0, -- 1 once the whole source is listed in items
    total INTEGER,                      -- items found in the source (NULL while planning)
    done INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0, -- chunk results dropped because already applied
    cancel_requested INTEGER NOT NULL DEFAULT 0, -- set by any process; the runner stops at a chunk boundary
    error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    run_started_at REAL,                -- this run's start, for items/s and ETA
    run_start_processed INTEGER NOT NULL DEFAULT 0,
    options TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS items (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    item_id TEXT,
    location TEXT NOT NULL,
    ref TEXT,
    metadata TEXT,
    chunk INTEGER,                      -- NULL for items rejected while planning
    state INTEGER NOT NULL,
    reason TEXT,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS items_by_chunk ON items (job_id, chunk);
CREATE INDEX IF NOT EXISTS items_by_state ON items (job_id, state);
CREATE INDEX IF NOT EXISTS items_by_item_id ON items (job_id, item_id);  -- item images
CREATE TABLE IF NOT EXISTS synced_files (
    collection TEXT NOT NULL,           -- the collection's uuid (a dropped and re-created one starts afresh)
    root TEXT NOT NULL,                 -- the synced folder, absolute
    item_id TEXT NOT NULL,              -- the file's path relative to root
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    seen_by TEXT,                       -- the last sync job that found the file in the folder
    PRIMARY KEY (collection, root, item_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chunks (
    job_id TEXT NOT NULL,
    chunk INTEGER NOT NULL,
    state TEXT NOT NULL,                -- 'pending' or 'applied'
    PRIMARY KEY (job_id, chunk)
) WITHOUT ROWID;
"""


@dataclass
class JobStatus:
    """What the API and the CLI show about a job."""

    job_id: str
    collection: str
    source: str
    format: str
    modality: str
    model_id: str
    mode: str
    state: str
    total: int | None        # None while the source is still being listed
    done: int                # items whose vectors are committed to the index
    failed: int              # items skipped with a recorded reason
    pending: int | None
    items_per_s: float | None
    eta_s: float | None
    duplicates: int
    error: str | None
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    sync: bool = False       # a folder sync: total counts new and changed files only
    unchanged: int = 0       # sync: files found as they were indexed (not encoded again)
    removed: int = 0         # sync: items deleted because their file is gone
    note: str | None = None  # why a running job is not moving (e.g. no encoder worker alive); not stored

    @property
    def finished(self) -> bool:
        return self.state in ("completed", "cancelled", "failed")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ItemFailure:
    item_id: str | None
    location: str
    reason: str


@dataclass(frozen=True)
class PlannedChunk:
    """A pending chunk's items with their metadata, as the coordinator applies them."""

    chunk: int
    items: list[ChunkItem]
    metadata: dict[str, dict]


class JobStore:
    """Jobs, plans and markers in one SQLite file; safe across threads and processes.

    ``indexer.jobstore_redis.RedisJobStore`` is the same interface in Redis, for replicas that
    share their jobs.
    """

    takeover_interval_s: float | None = None  # one data dir, one host: unfinished jobs resume at start-up

    def __init__(self, data_dir: str | os.PathLike):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.data_dir / DB_FILE
        self._local = threading.local()
        self.quarantined: str | None = None  # what happened to a damaged job history, if one was found
        try:
            self._open_schema()
        except sqlite3.DatabaseError as error:
            if type(error) is not sqlite3.DatabaseError:
                raise  # locked, unreadable folder, disk I/O ...: not damage, so not set aside
            self._quarantine(error)  # "file is not a database", "database disk image is malformed"
            self._open_schema()

    def _open_schema(self) -> None:
        db = self._connection()
        db.executescript(_SCHEMA)  # idempotent; executescript manages its own transaction
        db.execute("SELECT count(*), max(updated_at) FROM jobs").fetchone()  # reads every page of the job list

    def _quarantine(self, error: Exception) -> None:
        """Move a damaged job history aside and start an empty one: collections never depend on it."""
        self.close()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        moved = self.path.with_name(f"{DB_FILE}.damaged-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{self.path}{suffix}")
            if source.exists():
                os.replace(source, f"{moved}{suffix}")
        self.quarantined = (f"the job history {self.path} was damaged ({error}); it was moved to {moved.name} "
                            "and a new, empty one started (collections are not affected)")
        log.error("%s", self.quarantined)

    # --- connections --------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")    # readers never wait for the writer
            db.execute("PRAGMA synchronous=FULL")    # a committed marker survives power loss
            self._local.db = db
        return db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def lease(self, job_id: str) -> FileLease:
        """Who runs the job: a flock on ``<data dir>/job-locks/<job>.lock``, freed by the kernel if we die."""
        return FileLease(self.data_dir / LOCK_DIR / f"{job_id}.lock")

    def close(self) -> None:
        """Close this thread's connection."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # --- jobs -----------------------------------------------------------------------------------

    def create_job(self, job_id: str, *, collection: str, source: str, fmt: str, modality: str, model_id: str,
                   mode: str, chunk_size: int, options: dict | None = None) -> None:
        now = time.time()
        with self._write() as db:
            db.execute(
                "INSERT INTO jobs (job_id, collection, source, format, modality, model_id, mode, chunk_size, state,"
                " created_at, updated_at, options) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?)",
                (job_id, collection, source, fmt, modality, model_id, mode, chunk_size, now, now,
                 json.dumps(options or {})))

    def job(self, job_id: str) -> sqlite3.Row:
        row = self._connection().execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise KeyError(job_id)
        return row

    def job_ids(self, states: Iterable[str] | None = None) -> list[str]:
        db = self._connection()
        if states is None:
            rows = db.execute("SELECT job_id FROM jobs ORDER BY created_at").fetchall()
        else:
            states = list(states)
            marks = ", ".join("?" * len(states))
            rows = db.execute(f"SELECT job_id FROM jobs WHERE state IN ({marks}) ORDER BY created_at",
                              states).fetchall()
        return [row["job_id"] for row in rows]

    def find_unfinished(self, source: str, collection: str) -> str | None:
        """The newest job for this source and collection that has not completed or been cancelled."""
        marks = ", ".join("?" * len(FINAL_STATES))
        row = self._connection().execute(
            f"SELECT job_id FROM jobs WHERE source = ? AND collection = ? AND state NOT IN ({marks})"
            " ORDER BY created_at DESC LIMIT 1", (source, collection, *FINAL_STATES)).fetchone()
        return row["job_id"] if row else None

    def set_state(self, job_id: str, state: str, error: str | None = None) -> None:
        if state not in STATES:
            raise ValueError(f"unknown job state {state!r}")
        now = time.time()
        finished = now if state in ("completed", "cancelled", "failed") else None
        with self._write() as db:
            db.execute("UPDATE jobs SET state = ?, error = ?, updated_at = ?, finished_at = ? WHERE job_id = ?",
                       (state, error, now, finished, job_id))

    def request_cancel(self, job_id: str, requested: bool) -> None:
        with self._write() as db:
            db.execute("UPDATE jobs SET cancel_requested = ?, updated_at = ? WHERE job_id = ?",
                       (int(requested), time.time(), job_id))

    def cancel_requested(self, job_id: str) -> bool:
        row = self._connection().execute("SELECT cancel_requested FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return bool(row and row["cancel_requested"])

    def start_run(self, job_id: str) -> None:
        """A run (first or resumed) begins: the reference point for items/s and ETA."""
        now = time.time()
        with self._write() as db:
            db.execute("UPDATE jobs SET state = 'running', error = NULL, finished_at = NULL, updated_at = ?,"
                       " started_at = COALESCE(started_at, ?), run_started_at = ?,"
                       " run_start_processed = done + failed WHERE job_id = ?", (now, now, now, job_id))

    def status(self, job_id: str) -> JobStatus:
        return _status_from_row(self.job(job_id), time.time())

    # --- planning -------------------------------------------------------------------------------

    def reset_plan(self, job_id: str) -> None:
        """Forget a half-written plan (a crash while planning); planning starts over."""
        with self._write() as db:
            db.execute("DELETE FROM items WHERE job_id = ?", (job_id,))
            db.execute("DELETE FROM chunks WHERE job_id = ?", (job_id,))
            db.execute("UPDATE jobs SET planned = 0, total = NULL, done = 0, failed = 0, updated_at = ?"
                       " WHERE job_id = ?", (time.time(), job_id))

    def add_plan_rows(self, job_id: str, rows: list[tuple]) -> None:
        """Rows of (seq, item_id, location, ref, metadata, chunk, state, reason), in one transaction."""
        with self._write() as db:
            db.executemany("INSERT INTO items (job_id, seq, item_id, location, ref, metadata, chunk, state, reason)"
                           " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [(job_id, *row) for row in rows])
            db.execute("UPDATE jobs SET updated_at = ? WHERE job_id = ?", (time.time(), job_id))

    def finish_plan(self, job_id: str, total: int, rejected: int, chunks: int, done: int = 0) -> None:
        """The plan is complete; ``done`` items were marked done while planning (``mark_unchanged``)."""
        with self._write() as db:
            db.executemany("INSERT INTO chunks (job_id, chunk, state) VALUES (?, ?, 'pending')",
                           [(job_id, chunk) for chunk in range(chunks)])
            if done:  # a chunk with nothing left to encode is applied already
                db.execute("UPDATE chunks SET state = 'applied' WHERE job_id = ? AND chunk NOT IN (SELECT chunk FROM"
                           " items WHERE job_id = ? AND state = ? AND chunk IS NOT NULL)", (job_id, job_id, PENDING))
            db.execute("UPDATE jobs SET planned = 1, total = ?, failed = ?, done = ?, updated_at = ? WHERE job_id = ?",
                       (total, rejected, done, time.time(), job_id))

    def last_completed(self, source: str, collection: str, other_than: str) -> str | None:
        """The newest completed job, besides ``other_than``, that indexed this source into this collection."""
        row = self._connection().execute(
            "SELECT job_id FROM jobs WHERE source = ? AND collection = ? AND state = 'completed' AND job_id != ?"
            " ORDER BY created_at DESC LIMIT 1", (source, collection, other_than)).fetchone()
        return row["job_id"] if row else None

    def mark_unchanged(self, job_id: str, previous: str, present) -> int:
        """Mark done, without encoding, the planned items ``previous`` indexed with the same reference and
        metadata (the same file, size and modification time) that the collection still holds
        (``present(item_id)``); returns how many."""
        rows = self._connection().execute(
            "SELECT n.seq, n.item_id FROM items AS n JOIN items AS o ON o.job_id = ? AND o.item_id = n.item_id"
            " AND o.state = ? AND o.ref = n.ref AND o.metadata = n.metadata"
            " WHERE n.job_id = ? AND n.state = ? ORDER BY n.seq", (previous, DONE, job_id, PENDING)).fetchall()
        seqs = [(row["seq"],) for row in rows if present(row["item_id"])]
        with self._write() as db:
            db.executemany(f"UPDATE items SET state = {DONE}, reason = ? WHERE job_id = ? AND seq = ?",
                           [(f"unchanged since job {previous}", job_id, seq) for (seq,) in seqs])
        return len(seqs)

    def unchanged(self, job_id: str) -> int:
        """Items of this job that were not encoded because an earlier completed job had indexed them."""
        row = self._connection().execute("SELECT count(*) FROM items WHERE job_id = ? AND state = ? AND reason IS "
                                         "NOT NULL", (job_id, DONE)).fetchone()
        return int(row[0])

    # --- chunks ---------------------------------------------------------------------------------

    def pending_chunks(self, job_id: str) -> list[int]:
        rows = self._connection().execute(
            "SELECT chunk FROM chunks WHERE job_id = ? AND state = 'pending' ORDER BY chunk", (job_id,)).fetchall()
        return [row["chunk"] for row in rows]

    def is_applied(self, job_id: str, chunk: int) -> bool:
        row = self._connection().execute("SELECT state FROM chunks WHERE job_id = ? AND chunk = ?",
                                         (job_id, chunk)).fetchone()
        if row is None:
            raise KeyError(f"job {job_id} has no chunk {chunk}")
        return row["state"] == "applied"

    def chunk(self, job_id: str, chunk: int) -> PlannedChunk:
        """The chunk's items still to encode (items found unchanged while planning are left out)."""
        rows = self._connection().execute(
            "SELECT item_id, ref, metadata FROM items WHERE job_id = ? AND chunk = ? AND state = ? ORDER BY seq",
            (job_id, chunk, PENDING)).fetchall()
        items = [ChunkItem(row["item_id"], json.loads(row["ref"])) for row in rows]
        return PlannedChunk(chunk, items, {row["item_id"]: json.loads(row["metadata"]) for row in rows})

    def apply_chunk(self, job_id: str, chunk: int, failures: list[tuple[str, str]]) -> bool:
        """Set the chunk's applied marker: its failures failed, every other item done.

        Call only after the chunk's vectors are durably in the index. Returns False (and
        changes nothing) when the chunk was already applied: a duplicate delivery.
        """
        return self.apply_chunks(job_id, [(chunk, failures)])[0]

    def apply_chunks(self, job_id: str, chunks: list[tuple[int, list[tuple[str, str]]]]) -> list[bool]:
        """``apply_chunk`` for several (chunk, failures) in one transaction (a group commit).

        One result per chunk: False for a chunk that was already applied (changed nothing).
        """
        applied = []
        with self._write() as db:
            done = failed = duplicates = 0
            for chunk, failures in chunks:
                row = db.execute("SELECT state FROM chunks WHERE job_id = ? AND chunk = ?", (job_id, chunk)).fetchone()
                if row is None:
                    raise KeyError(f"job {job_id} has no chunk {chunk}")
                if row["state"] == "applied":
                    duplicates += 1
                    applied.append(False)
                    continue
                db.executemany("UPDATE items SET state = ?, reason = ? WHERE job_id = ? AND chunk = ? AND item_id = ?",
                               [(FAILED, reason, job_id, chunk, item_id) for item_id, reason in failures])
                done += db.execute("UPDATE items SET state = ? WHERE job_id = ? AND chunk = ? AND state = ?",
                                   (DONE, job_id, chunk, PENDING)).rowcount
                db.execute("UPDATE chunks SET state = 'applied' WHERE job_id = ? AND chunk = ?", (job_id, chunk))
                # folder sync: the files whose vectors were just committed, with the fingerprint planned for them
                db.execute(
                    "INSERT OR REPLACE INTO synced_files (collection, root, item_id, size, mtime_ns, sha256, seen_by)"
                    " SELECT json_extract(j.options, '$.sync.collection'), j.source, i.item_id,"
                    " json_extract(i.ref, '$.fingerprint[0]'), json_extract(i.ref, '$.fingerprint[1]'),"
                    " json_extract(i.ref, '$.fingerprint[2]'), i.job_id"
                    " FROM items i JOIN jobs j ON j.job_id = i.job_id"
                    " WHERE i.job_id = ? AND i.chunk = ? AND i.state = ?"
                    " AND json_extract(i.ref, '$.fingerprint') IS NOT NULL"
                    " AND json_extract(j.options, '$.sync.collection') IS NOT NULL", (job_id, chunk, DONE))
                failed += len(failures)
                applied.append(True)
            db.execute("UPDATE jobs SET done = done + ?, failed = failed + ?, duplicates = duplicates + ?,"
                       " updated_at = ? WHERE job_id = ?", (done, failed, duplicates, time.time(), job_id))
        return applied

    # --- folder sync (indexer.sync) ----------------------------------------------------------

    def synced(self, collection: str, root: str, item_ids: list[str]) -> dict[str, tuple[int, int, str]]:
        """item id -> (size, mtime_ns, sha256) recorded for these files of ``root`` in ``collection``."""
        found = {}
        db = self._connection()
        for start in range(0, len(item_ids), 500):
            part = item_ids[start:start + 500]
            marks = ", ".join("?" * len(part))
            for row in db.execute(f"SELECT item_id, size, mtime_ns, sha256 FROM synced_files WHERE collection = ?"
                                  f" AND root = ? AND item_id IN ({marks})", (collection, root, *part)):
                found[row["item_id"]] = (row["size"], row["mtime_ns"], row["sha256"])
        return found

    def mark_seen(self, collection: str, root: str, job_id: str, item_ids: list[str],
                  restat: list[tuple[str, int, int]] = ()) -> None:
        """These files are still in the folder (``restat``: and their new size and mtime, same content)."""
        with self._write() as db:
            db.executemany("UPDATE synced_files SET seen_by = ? WHERE collection = ? AND root = ? AND item_id = ?",
                           [(job_id, collection, root, item_id) for item_id in item_ids])
            db.executemany("UPDATE synced_files SET seen_by = ?, size = ?, mtime_ns = ? WHERE collection = ?"
                           " AND root = ? AND item_id = ?",
                           [(job_id, size, mtime, collection, root, item_id) for item_id, size, mtime in restat])

    def unsee(self, collection: str, root: str, job_id: str) -> None:
        """Forget what an interrupted planning of ``job_id`` saw (it plans again from the folder as it is)."""
        with self._write() as db:
            db.execute("UPDATE synced_files SET seen_by = NULL WHERE collection = ? AND root = ? AND seen_by = ?",
                       (collection, root, job_id))

    def unseen(self, collection: str, root: str, job_id: str, limit: int) -> list[str]:
        """Files recorded for ``root`` that sync job ``job_id`` did not find: gone from the folder."""
        rows = self._connection().execute(
            "SELECT item_id FROM synced_files WHERE collection = ? AND root = ? AND seen_by IS NOT ?"
            " ORDER BY item_id LIMIT ?", (collection, root, job_id, limit)).fetchall()
        return [row["item_id"] for row in rows]

    def forget_synced(self, collection: str, root: str, job_id: str, item_ids: list[str]) -> None:
        """Their items were deleted from the collection: drop the records and count them removed."""
        with self._write() as db:
            removed = sum(db.execute("DELETE FROM synced_files WHERE collection = ? AND root = ? AND item_id = ?",
                                     (collection, root, item_id)).rowcount for item_id in item_ids)
            db.execute("UPDATE jobs SET options = json_set(options, '$.sync.removed',"
                       " COALESCE(json_extract(options, '$.sync.removed'), 0) + ?), updated_at = ? WHERE job_id = ?",
                       (removed, time.time(), job_id))

    def set_unchanged(self, job_id: str, unchanged: int) -> None:
        with self._write() as db:
            db.execute("UPDATE jobs SET options = json_set(options, '$.sync.unchanged', ?) WHERE job_id = ?",
                       (unchanged, job_id))

    def count_duplicate(self, job_id: str) -> None:
        with self._write() as db:
            db.execute("UPDATE jobs SET duplicates = duplicates + 1 WHERE job_id = ?", (job_id,))

    # --- failures -------------------------------------------------------------------------------

    def failures(self, job_id: str, limit: int = 100, offset: int = 0) -> list[ItemFailure]:
        self.job(job_id)  # KeyError for an unknown job, not an empty list
        rows = self._connection().execute(
            "SELECT item_id, location, reason FROM items WHERE job_id = ? AND state = ? ORDER BY seq"
            " LIMIT ? OFFSET ?", (job_id, FAILED, limit, offset)).fetchall()
        return [ItemFailure(row["item_id"], row["location"], row["reason"]) for row in rows]

    def indexed_ref(self, job_id: str, item_id: str) -> dict | None:
        """How this job read ``item_id`` (its source reference), if the job indexed it; else None."""
        row = self._connection().execute(
            "SELECT ref FROM items WHERE job_id = ? AND item_id = ? AND state = ? ORDER BY seq DESC LIMIT 1",
            (job_id, item_id, DONE)).fetchone()
        return json.loads(row["ref"]) if row is not None and row["ref"] else None

    def item_states(self, job_id: str) -> dict[str, int]:
        """item id -> state for every planned item (tests and diagnostics)."""
        rows = self._connection().execute(
            "SELECT item_id, state FROM items WHERE job_id = ? AND chunk IS NOT NULL", (job_id,)).fetchall()
        return {row["item_id"]: row["state"] for row in rows}


def _status_from_row(row: sqlite3.Row, now: float) -> JobStatus:
    total, done, failed = row["total"], row["done"], row["failed"]
    pending = None if total is None else max(total - done - failed, 0)
    rate = eta = None
    if row["run_started_at"]:
        # the latest run's average: up to now while running, up to its last update once stopped
        end = now if row["state"] == "running" else (row["finished_at"] or row["updated_at"])
        elapsed = end - row["run_started_at"]
        processed = done + failed - row["run_start_processed"]
        if elapsed > 0 and processed > 0:
            rate = processed / elapsed
            if row["state"] == "running" and pending is not None:
                eta = pending / rate
    sync = json.loads(row["options"] or "{}").get("sync") or {}
    return JobStatus(
        sync=bool(sync), unchanged=int(sync.get("unchanged", 0)), removed=int(sync.get("removed", 0)),
        job_id=row["job_id"], collection=row["collection"], source=row["source"], format=row["format"],
        modality=row["modality"], model_id=row["model_id"], mode=row["mode"], state=row["state"],
        total=total, done=done, failed=failed, pending=pending, items_per_s=rate, eta_s=eta,
        duplicates=row["duplicates"], error=row["error"], created_at=row["created_at"],
        updated_at=row["updated_at"], started_at=row["started_at"], finished_at=row["finished_at"])
