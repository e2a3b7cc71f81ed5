"""One collection of Gaussian embeddings: durable writes, exact CSD search, uncertainty statistics.

Durability design
-----------------
The metadata store (SQLite in WAL mode with synchronous=FULL, or Redis with an fsync-always
AOF) is the source of truth. ``add``/``delete`` write their rows (id, seq, mean, logvar,
metadata, deleted) in one store transaction and return only after it commits, so a returned
call survives ``kill -9`` and power loss. Only then is the in-memory state (vector table +
FAISS index) updated; a crash between the two loses nothing, because that state is derived.

The FAISS index is persisted as a snapshot taken at one store sequence number (files +
checksummed manifest, committed by an atomic rename; see ``snapshot`` and ``persistence``).
Opening a collection loads the snapshot, verifies every checksum (``CorruptIndexError`` on any
mismatch, never a silent load), then replays the store rows with seq > snapshot seq. A large
vectors file (``snapshot.LAZY_VERIFY_BYTES``) is verified in the background after opening,
size checked at once: every search and snapshot waits for that verification first and raises
``CorruptIndexError`` if it failed, so nothing is ever answered from an unverified vector. After the
replay the live count must equal the store's, so the index and metadata can never disagree
unnoticed. ``Catalog.rebuild`` discards the snapshot and rebuilds from the store.

``snapshot()`` compacts (drops deleted slots), trains ANN indexes once there is data enough,
and switches ``kind="auto"`` collections from flat to IVF as they grow. Rebuilds run on a
frozen view of the table without holding the lock, then replay what was written meanwhile
and swap under the write lock; so searches and writes continue while a snapshot is built.
With ``auto_snapshot`` such snapshots start in a background thread when they are due.

Concurrency: a readers/writer lock; searches share it, writes and the final swap of a
snapshot take it exclusively. One process owns a collection (the catalog holds a file lock).
Deterministic collections (points, S = 0) run the same code: see the package docstring.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from models.calibration import Calibrator
from models.gaussian import augment_items

from . import filters, search, snapshot, validation
from .config import MAX_EXTREMES, IndexSpec
from .errors import CollectionDroppedError, CorruptIndexError, DiskFullError, IndexClosedError, InvalidInputError
from .faiss_backend import FLAT_OVERSAMPLE_MAX, FaissIndex, can_build, nlist_for
from .filtering import Filtering, in_total_order
from .locks import ReadWriteLock
from .metadata_index import MetadataIndex
from .persistence import discard_uncommitted
from .stores.base import ItemStore, StoredRow, Upserts, parse_metadata
from .summary import uncertainty_summary
from .table import VectorTable
from .types import CollectionInfo, Hit, Item

log = logging.getLogger(__name__)

RANKS, DIRECTIONS = search.RANKS, search.DIRECTIONS
AUTO_SNAPSHOT_CHANGES = 100_000  # auto-snapshot after this many row changes, so crash replay stays short
COMPACT_MIN_DEAD = 1024  # ANN kinds: never rebuild for fewer dead slots than this


class GaussianIndex(Filtering):
    """A collection: add/upsert/delete by external id, search by CSD, cosine, inclusion or probability.

    Get one from ``Catalog.create`` / ``Catalog.get``; it is thread-safe. Metadata filters:
    ``indexer.filtering``.
    """

    def __init__(self, info: CollectionInfo, directory: Path, store: ItemStore, *, auto_snapshot: bool = True,
                 rebuild: bool = False) -> None:
        self.info = info
        self.name = info.name
        self.dim = info.dim
        self.spec: IndexSpec = info.spec
        self._directory = Path(directory)
        self._snapshot_dir = self._directory / "snapshot"
        self._snapshot_dir.mkdir(exist_ok=True)
        self._store = store
        self._auto_snapshot = auto_snapshot
        self._lock = ReadWriteLock()
        self._snapshot_lock = threading.Lock()  # one snapshot at a time
        self._background: threading.Thread | None = None
        self._closed = False
        self._dropped = False
        self._failure: str | None = None  # set if memory fell out of step with the store
        self._version = 0  # bumped by every applied change; keys the statistics cache
        self._sorted_uncertainty: tuple[int, np.ndarray] | None = None
        self._metadata = MetadataIndex()  # built on the first filtered search (see metadata_index)
        self._metadata_build = threading.Lock()
        self._verifying = None  # snapshot.PendingVerification of the vectors file, while it runs
        self._open(rebuild)

    # ------------------------------------------------------------------ opening
    def _open(self, rebuild: bool) -> None:
        started = time.perf_counter()
        loaded = None
        if rebuild:  # forget the snapshot first: a crash from here on reopens from the store alone
            snapshot.forget(self._snapshot_dir)
        else:
            loaded = snapshot.load(self._snapshot_dir, self.spec, self.dim, self.info.uuid)
            if loaded is not None and loaded.seq > self._store.last_seq():
                raise CorruptIndexError(
                    f"collection {self.name!r}: the snapshot is at seq {loaded.seq} but the store only reaches "
                    f"{self._store.last_seq()}; the store lost writes (restored from an old backup, or Redis "
                    "without AOF?)")
        discard_uncommitted(self._snapshot_dir, loaded.manifest if loaded else None)
        if loaded is None:
            self._table = VectorTable(self.dim)
            self._index = FaissIndex.empty(self.spec, self.spec.resolve(0), self.dim + 1)
            self._seq = self._snapshot_seq = 0
        else:
            self._table, self._index = loaded.table, loaded.index
            self._seq = self._snapshot_seq = loaded.seq
            self._verifying = loaded.verifying
        replayed, self._seq = self._replay(self._table, self._index, self._seq)
        self._version += 1
        self._check_agreement()
        log.info("opened collection %r: %d items, %d rows replayed from the store, %s index, %.2fs", self.name,
                 len(self._table), replayed, self._index.kind, time.perf_counter() - started)

    def _replay(self, table: VectorTable, index: FaissIndex, after_seq: int,
                metadata: MetadataIndex | None = None) -> tuple[int, int]:
        """Apply store rows with seq > after_seq to (table, index[, metadata]); returns (rows applied, last seq)."""
        count, seq = 0, after_seq
        for page in self._store.rows_since(after_seq):
            live = [row for row in page if not row.deleted]
            table.kill([row.id for row in page])
            if live:
                logvar = None if self.info.deterministic else np.stack([row.logvar for row in live])
                vectors = augment_items(np.stack([row.mean for row in live]), logvar)
                slots = table.append([row.id for row in live], vectors, np.array([row.uncertainty for row in live]))
                index.add(vectors)
                if metadata is not None:
                    metadata.add(slots, [row.metadata for row in live])
            count += len(page)
            seq = page[-1].seq
        return count, seq

    def _check_agreement(self) -> None:
        expected = self._store.live_count()
        if len(self._table) != expected or self._index.ntotal != self._table.n_slots:
            raise CorruptIndexError(
                f"collection {self.name!r}: {len(self._table)} items in the index but {expected} live rows in the "
                f"store (FAISS holds {self._index.ntotal} of {self._table.n_slots} slots); rebuild it from the store")

    # ------------------------------------------------------------------ state checks
    def _await_verified(self) -> None:
        """Wait for the background verification of the snapshot's vectors; CorruptIndexError if it failed."""
        verifying = self._verifying
        if verifying is None:
            return
        verifying.wait()  # raises the CorruptIndexError it found, at every call
        self._verifying = None

    def _check_usable(self) -> None:
        if self._closed:
            if self._dropped:
                raise CollectionDroppedError(f"collection {self.name!r} was dropped")
            raise IndexClosedError(f"collection {self.name!r} is closed")
        if self._failure:
            raise IndexClosedError(f"collection {self.name!r} must be reopened: {self._failure}")

    def __len__(self) -> int:
        return len(self._table)

    def __contains__(self, item_id: object) -> bool:
        return isinstance(item_id, str) and item_id in self._table

    def __repr__(self) -> str:
        return f"GaussianIndex({self.name!r}, {len(self._table)} items, {self._index.kind})"

    @property
    def kind(self) -> str:
        """The index structure in use now: flat, hnsw or ivf."""
        return self._index.kind

    # ------------------------------------------------------------------ writes
    def add(self, ids: list[str], mean: np.ndarray, logvar: np.ndarray | None,
            metadata: list[dict[str, Any]] | None = None) -> None:
        """Insert or replace items (upsert by id). Durable when it returns.

        ``mean`` [N, D] unit-norm, ``logvar`` [N, D] log sigma^2 (None, and only None, in a
        deterministic collection), ``metadata`` one JSON-able dict per id (None = ``{}``). An
        existing id is replaced whole: vectors and metadata.
        """
        ids, mean, logvar, variance_sum, texts = validation.upserts(ids, mean, logvar, metadata, self.dim,
                                                                  self.info.deterministic)
        if not ids:
            return
        vectors = augment_items(mean, logvar)  # [N, D+1]
        with self._lock.write():
            self._check_usable()
            result = self._store.write(Upserts(ids, mean, logvar, variance_sum, texts), [])
            self._apply(lambda: self._apply_upserts(ids, vectors, variance_sum, texts), result.last_seq)
        self._maybe_snapshot_in_background()

    def delete(self, ids: list[str]) -> int:
        """Delete items by id; unknown ids are ignored. Returns how many were deleted. Durable on return."""
        ids = validation.item_ids(ids)
        with self._lock.write():
            self._check_usable()
            present = [item_id for item_id in ids if item_id in self._table]
            if not present:
                return 0
            result = self._store.write(Upserts.empty(self.dim), present)
            if len(result.deleted) != len(present):
                self._failure = f"the store deleted {len(result.deleted)} of {len(present)} ids the index had"
            self._apply(lambda: self._table.kill(result.deleted), result.last_seq)
        self._maybe_snapshot_in_background()
        return len(result.deleted)

    def _apply_upserts(self, ids: list[str], vectors: np.ndarray, variance_sum: np.ndarray,
                       texts: list[str]) -> None:
        self._table.kill(ids)
        slots = self._table.append(ids, vectors, variance_sum)
        self._index.add(vectors)
        self._metadata.add(slots, texts)

    def _apply(self, change: Any, seq: int) -> None:
        """Run an in-memory change after its store commit; if it fails, the index must be reopened."""
        try:
            change()
        except BaseException as error:
            # the store already holds the write: reopening replays it, so nothing is lost
            self._failure = f"in-memory update failed after the store committed ({error!r})"
            log.exception("collection %r: %s", self.name, self._failure)
            raise
        self._seq = seq
        self._version += 1

    # ------------------------------------------------------------------ reads
    def get(self, item_id: str) -> Item | None:
        """The stored item (vectors and metadata from the store), or None."""
        validation.item_id(item_id)
        with self._lock.read():
            self._check_usable()
            if item_id not in self._table:
                return None
            row = self._store.rows([item_id]).get(item_id)
        return _item(row) if row is not None else None

    def iter_items(self) -> Iterator[list[Item]]:
        """Every live item (vectors and metadata), in pages of at most a few thousand, in store order.

        Memory is bounded by one page. Items are those live when the iteration starts: an item
        written during it is either left out or given once, never twice, and never a deleted one's
        tombstone. Reads only the store, so searches and writes go on meanwhile.
        """
        with self._lock.read():
            self._check_usable()
            last = self._seq
        for page in self._store.live_rows():
            items = [_item(row) for row in page if row.seq <= last]
            if items:
                yield items
            if page[-1].seq >= last:
                return

    def search(self, query_mean: np.ndarray, query_logvar: np.ndarray | None, k: int = 10, rank: str = "csd",
               exact: bool = True, shortlist: int | None = None, inclusion_direction: str = "query_in_item", *,
               nprobe: int | None = None, ef_search: int | None = None, refine: int | None = None,
               calibrator: Calibrator | None = None, query_modality: str | None = None,
               filter: Any = None) -> list[list[Hit]]:
        """Top-k items per query; one list of hits per query row, best first (ties broken by id).

        query_mean / query_logvar: [Q, D]. rank:
          - ``csd`` (default): closed-form sampled distance, lower is closer. ``exact=True`` finds
            the top k in one FAISS search on [mu, 1] x [mu, -S/2] (exact for flat indexes);
            ``exact=False`` is the two-stage path: ``shortlist`` items by mean cosine, re-ranked by CSD.
          - ``cosine``: mean cosine only (ignores the variances), higher is closer.
          - ``inclusion``: a shortlist by CSD (by cosine if ``exact=False``), re-ranked by the
            inclusion margin (``models.gaussian.inclusion_margin``, highest first);
            ``inclusion_direction`` ``query_in_item`` finds items that include the query (broader
            ones), ``item_in_query`` items included in it (more specific ones).
          - ``probability``: calibrated match probability (``calibrator``, a
            ``models.calibration.Calibrator``; ``query_modality`` the other modality than the
            collection's), higher first; ``Hit.score`` is its logit. Exact top k with a flat index
            (``indexer.probability_rank``: cosine rounds with a stopping bound); ``exact=False``
            re-ranks a cosine shortlist.
        ``shortlist`` defaults to max(4k, 100). ``nprobe`` / ``ef_search`` / ``refine`` override the spec
        for this call only (recall against speed for IVF / HNSW indexes). Deterministic collections:
        ``query_logvar`` None, ``Hit.uncertainty`` None, no ``inclusion`` (see the package docstring).
        ``filter`` (the JSON form of ``indexer.filters``, or a parsed one) restricts every rank mode to the
        items whose metadata matches it: the top k *within* the filter (see ``indexer.search``).
        """
        condition = None if filter is None else filters.parse(filter)
        request = search.parse_request(k, rank, exact, shortlist, inclusion_direction, nprobe, ef_search, refine)
        search.check_rank_for(request, self.info)
        mean, logvar, query_unc = validation.gaussians(query_mean, query_logvar, self.dim, what="query",
                                                       deterministic=self.info.deterministic)
        validation.query_count(len(mean))
        request = search.with_scorers(request, calibrator, query_modality, self.info, query_unc)
        self._await_verified()
        with self._lock.read():
            self._check_usable()
            selection = None if condition is None else self._selection(condition)
            if len(self._table) == 0 or (selection is not None and selection.count == 0):
                return [[] for _ in range(len(mean))]
            if rank == "probability":
                ordered = self._sorted_uncertainties()
                request = replace(request, uncertainty_range=(float(ordered[0]), float(ordered[-1])))
            ranked = search.run(self._table, self._index, self.spec, mean, logvar, query_unc, request,
                                self._rows_for, selection)
            rows = [in_total_order(r, self._table.ids_at(r.slots), rank, k) for r in ranked]
            metadata = self._store.metadata(sorted({i for row in rows for _, i in row}))
        points = self.info.deterministic
        return [[Hit(item_id, float(r.score[j]), float(r.csd[j]), float(r.cosine[j]),
                     None if points else float(r.uncertainty[j]), metadata.get(item_id, {}),
                     None if r.inclusion is None else float(r.inclusion[j]))
                 for j, item_id in row]
                for r, row in zip(ranked, rows, strict=True)]

    def _rows_for(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids = self._table.ids_at(slots)
        rows = self._store.rows(ids)
        missing = [i for i in ids if i not in rows]
        if missing:
            raise CorruptIndexError(f"collection {self.name!r}: ids {missing[:3]} are in the index but not the store")
        return np.stack([rows[i].mean for i in ids]), np.stack([rows[i].logvar for i in ids])

    # ------------------------------------------------------------------ statistics
    def _sorted_uncertainties(self) -> np.ndarray:
        cached = self._sorted_uncertainty
        if cached is None or cached[0] != self._version:
            cached = (self._version, np.sort(self._table.live_uncertainty()))
            self._sorted_uncertainty = cached
        return cached[1]

    def uncertainty_percentile(self, values: np.ndarray | float) -> np.ndarray:
        """Where each uncertainty value falls among the collection's items, 0..100 (mid-rank; NaN if empty)."""
        if self.info.deterministic:
            raise InvalidInputError(f"collection {self.name!r} holds a deterministic model's points: its items have "
                                    "no uncertainty to rank against")
        values = validation.finite_values(values, "uncertainty values")
        with self._lock.read():
            self._check_usable()
            ordered = self._sorted_uncertainties()
        if ordered.size == 0:
            return np.full(values.shape, np.nan)
        below = np.searchsorted(ordered, values, side="left")
        at_or_below = np.searchsorted(ordered, values, side="right")
        return 100.0 * (below + at_or_below) / (2 * ordered.size)

    def stats(self, bins: int = 32) -> dict[str, Any]:
        """Size, configuration, uncertainty quantiles and a histogram of item uncertainties.

        The histogram's bins are log-spaced (``scale`` "log") when the largest uncertainty is
        more than LOG_HISTOGRAM_SPAN times the smallest, equal-width ("linear") otherwise; neither
        for a deterministic collection (``uncertainty`` holds the count only).
        """
        bins = validation.positive_int(bins, "bins", 1000)
        with self._lock.read():
            self._check_usable()
            ordered = self._sorted_uncertainties()
            index = self._index.describe()
            # index_bytes: what the FAISS index holds beyond the table (0 for a flat index on the CPU,
            # which scans the table's own rows); table_bytes: the vectors of every slot
            state = {"seq": self._seq, "snapshot_seq": self._snapshot_seq, "dead_slots": self._table.n_dead,
                     "index_bytes": self._index.memory_bytes(), "table_bytes": self._table.n_slots * (self.dim + 1) * 4,
                     "filter_index": {"built": self._metadata.built, "fields": self._metadata.paths,
                                      "bytes": self._metadata.nbytes()}}
        if self.info.deterministic:  # points: the count only
            summary, histogram = {"count": int(ordered.size)}, {"edges": [], "counts": [], "scale": "linear"}
        else:
            summary, histogram = uncertainty_summary(ordered, bins)
        return {"name": self.name, "size": int(ordered.size), "dim": self.dim, "kind": index["kind"],
                "modality": self.info.modality, "model_id": self.info.model_id, "model_family": self.info.model_family,
                "deterministic": self.info.deterministic, "store": self._store.kind,
                "spec": self.spec.to_dict(), "index": index, **state,
                "pending_changes": state["seq"] - state["snapshot_seq"],
                "uncertainty": summary, "histogram": histogram}

    def extremes(self, n: int = 10) -> tuple[list[Item], list[Item]]:
        """(the n most certain items, lowest S first; the n most uncertain, highest S first); ([], []) for points."""
        n = validation.positive_int(n, "n", MAX_EXTREMES)
        if self.info.deterministic:
            return [], []
        with self._lock.read():
            self._check_usable()
            slots = self._table.live_slots()
            unc = self._table.uncertainty(slots)
            n = min(n, len(slots))
            if n == 0:
                return [], []
            low = slots[_extreme_positions(unc, n, lowest=True)]
            high = slots[_extreme_positions(unc, n, lowest=False)]
            low_ids, high_ids = self._table.ids_at(low), self._table.ids_at(high)
            rows = self._store.rows(sorted(set(low_ids) | set(high_ids)))
        return [_item(rows[i]) for i in low_ids if i in rows], [_item(rows[i]) for i in high_ids if i in rows]

    # ------------------------------------------------------------------ snapshots
    def snapshot(self, rebuild: bool = False) -> dict[str, Any]:
        """Persist the FAISS snapshot at the current seq (compacting/retraining when due). Blocks until done.

        ``rebuild=True`` forces a rebuild of the FAISS index from the stored vectors.
        """
        with self._snapshot_lock:
            try:
                return self._snapshot(rebuild)
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
                raise DiskFullError(f"collection {self.name!r}: no space left to write a snapshot; the previous "
                                    "snapshot stays in use") from error

    def _wanted_kind(self) -> str:
        return self.spec.resolve(len(self._table))

    def _rebuild_reason(self) -> tuple[str | None, bool]:
        """(why the next snapshot should rebuild rather than persist the index as is, whether it is urgent)."""
        index, table = self._index, self._table
        wanted = self._wanted_kind()
        if wanted != index.kind and can_build(self.spec, wanted, len(table)):
            return f"build the {wanted} index for {len(table)} items", True
        if index.kind == "flat" and table.n_dead:
            # a flat rebuild is one memory copy; only urgent once searches over-fetch a lot
            return "drop dead slots", table.n_dead > FLAT_OVERSAMPLE_MAX // 2
        if table.n_dead >= max(COMPACT_MIN_DEAD, self.spec.compact_dead_fraction * table.n_slots):
            return f"compact {table.n_dead} dead slots", True
        if (index.kind == "ivf" and self.spec.nlist is None
                and nlist_for(self.spec, len(table)) >= 4 * index.params.get("nlist", 1)):
            return "retrain IVF with more lists for the grown collection", True
        return None, False

    def _snapshot(self, force: bool) -> dict[str, Any]:
        started = time.perf_counter()
        self._await_verified()  # a snapshot copies the vectors: never unverified ones
        with self._lock.read():
            self._check_usable()
            reason = "requested" if force else self._rebuild_reason()[0]
            seq = self._seq
            if reason is None:
                if seq == self._snapshot_seq:
                    return {"seq": seq, "rebuilt": False, "written": False, "kind": self._index.kind, "seconds": 0.0}
                # persist as is: writers wait (the index must not change while it is written), searches go on
                view = self._table.view()
                generation = snapshot.new_generation()
                files = snapshot.write_data_files(self._snapshot_dir, generation, view,
                                                  np.arange(view.n_slots, dtype=np.int64))
                files |= snapshot.write_index_file(self._snapshot_dir, generation, self._index)
                snapshot.commit(self._snapshot_dir, files, seq, self.info.uuid, self.dim, view.n_slots,
                                len(self._table), self._index)
                self._snapshot_seq = seq
            else:
                view = self._table.view()
                kind = self._wanted_kind()
        if reason is not None:
            log.info("collection %r: rebuilding the index at seq %d (%s)", self.name, seq, reason)
            table, index = self._build_aside(view, kind, seq)
            with self._lock.write():
                self._check_usable()
                metadata = self._metadata.remapped(np.flatnonzero(view.live))  # slot i is the i-th live one
                self._replay(table, index, seq, metadata)  # writes that landed while building
                self._table, self._index, self._metadata = table, index, metadata
                self._snapshot_seq = seq
                self._version += 1
        with self._lock.write():
            self._store.purge_tombstones(seq)
        seconds = time.perf_counter() - started
        log.info("collection %r: snapshot at seq %d (%s index, %d items) in %.2fs", self.name, seq,
                 self._index.kind, len(self._table), seconds)
        return {"seq": seq, "rebuilt": reason is not None, "written": True, "kind": self._index.kind,
                "seconds": seconds}

    def _build_aside(self, view: Any, kind: str, seq: int) -> tuple[VectorTable, FaissIndex]:
        """Compact a frozen view into new snapshot files, build the index over them, commit."""
        live_slots = np.flatnonzero(view.live)
        generation = snapshot.new_generation()
        files = snapshot.write_data_files(self._snapshot_dir, generation, view, live_slots)
        vectors = np.load(self._snapshot_dir / files["vectors"].name, mmap_mode="r")
        table = VectorTable(self.dim, vectors, [view.ids[s] for s in live_slots.tolist()],
                            view.uncertainty[live_slots], np.ones(len(live_slots), bool))
        index = FaissIndex.build(self.spec, kind, vectors, centroids=self._reusable_centroids(kind, len(table)))
        files |= snapshot.write_index_file(self._snapshot_dir, generation, index)
        snapshot.commit(self._snapshot_dir, files, seq, self.info.uuid, self.dim, len(live_slots), len(table), index)
        return table, index

    def _reusable_centroids(self, kind: str, size: int) -> np.ndarray | None:
        """The current IVF centroids when a rebuild keeps the same list count (compaction skips k-means)."""
        index = self._index  # read without the lock: a rebuild is the only writer of _index, and we are it
        if kind != "ivf" or index.kind != "ivf" or index.params.get("nlist") != nlist_for(self.spec, size):
            return None
        return index.centroids()

    def _maybe_snapshot_in_background(self) -> None:
        if not self._auto_snapshot or self._closed or self._failure:
            return
        if self._background is not None and self._background.is_alive():
            return
        with self._lock.read():
            if self._closed or self._failure:
                return
            due = self._seq - self._snapshot_seq >= AUTO_SNAPSHOT_CHANGES or self._rebuild_reason()[1]
        if due:
            self._background = threading.Thread(target=self._background_snapshot, name=f"snapshot-{self.name}",
                                                daemon=True)
            self._background.start()

    def _background_snapshot(self) -> None:
        try:
            self.snapshot()
        except IndexClosedError:
            pass
        except Exception:  # the next snapshot retries; the store still holds every write
            log.exception("collection %r: background snapshot failed", self.name)

    def wait_for_background(self, timeout: float | None = None) -> None:
        """Wait for a running background snapshot (tests, clean shutdown)."""
        thread = self._background
        if thread is not None:
            thread.join(timeout)

    # ------------------------------------------------------------------ lifecycle
    def close(self, snapshot: bool = True, dropped: bool = False) -> None:
        """Stop using the collection; by default persist a snapshot first when writes are pending.

        ``dropped``: it is being deleted; later calls say it no longer exists (not that it is closed).
        """
        self._dropped = self._dropped or dropped
        if self._closed:
            return
        self.wait_for_background()
        if snapshot and not self._failure and self._seq != self._snapshot_seq:
            try:
                self.snapshot()
            except Exception:  # the store is the truth; a missing snapshot only costs replay time
                log.exception("collection %r: snapshot at close failed", self.name)
        with self._lock.write():
            self._closed = True
            self._store.close()

    def __enter__(self) -> GaussianIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _item(row: StoredRow) -> Item:
    if row.logvar is None:  # a point, from a deterministic collection
        return Item(row.id, row.mean.copy(), None, None, parse_metadata(row.metadata))
    return Item(row.id, row.mean.copy(), row.logvar.copy(), float(row.uncertainty), parse_metadata(row.metadata))


def _extreme_positions(values: np.ndarray, n: int, lowest: bool) -> np.ndarray:
    keyed = values if lowest else -values
    part = np.argpartition(keyed, n - 1)[:n] if n < len(values) else np.arange(len(values))
    return part[np.argsort(keyed[part], kind="stable")]
