"""A collection stored in Milvus, behind the same contract as ``GaussianIndex``.

Writes go straight to Milvus (``upsert`` by primary key, ``delete`` by ids); this process keeps
nothing but the collection's settings, so any number of API replicas can open the same
collection. Milvus acknowledges a write once its WAL (the message queue of Standalone and
Distributed, the local database file of Milvus Lite) holds it.

Searches ask Milvus for candidates and re-rank them here with the code the FAISS path uses
(``indexer.search.rank_candidates`` and ``indexer.ranking``), so every rank mode means the same
on both backends:

- CSD order: one inner-product search of [mu_q, 1] against the stored [mu_x, -S_x/2]. With a
  FLAT index Milvus returns the exact top ``k + margin`` by float32 inner product; the margin of
  at least 8 lets the float64 re-score settle near-ties at rank k, so the top k is the exact CSD
  top k (the same items as the FAISS flat path). ANN indexes (IVF, HNSW, DiskANN, CAGRA) are
  asked for ``refine * k`` candidates that are re-scored exactly: "shortlist by mean, re-rank
  by CSD with the variances" with a recall measured in ``bench.index_bench``.
- cosine order: [mu_q, 0], the extra column drops out.
- inclusion: a CSD (or cosine) shortlist whose log-variances come back with the candidates.

Candidate vectors come back with the search (output fields) and are scored from a small
``VectorTable`` built per call; metadata is read for the final hits only.

Metadata filters (``indexer.filters``) are pushed down: the JSON form is compiled to a Milvus
boolean expression over the ``metadata`` JSON field (``filters.to_milvus``) and given to every
search, count and scan, so Milvus ranks only the matching items (FLAT: the exact top k within
the filter, as the FAISS path). Milvus Lite 2.5.1 does not evaluate ``not (...)``, which a negated
range, prefix or contains compiles to: such a filter is refused there with a message saying so.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any, TypeVar

import numpy as np

from models.calibration import Calibrator
from models.gaussian import augment_items, csd_from_inner_product

from .. import ranking, search, validation
from ..config import IndexSpec
from ..errors import IndexClosedError, InvalidInputError, StoreError
from ..filtering import in_total_order
from ..table import VectorTable
from ..types import CollectionInfo, Hit, Item
from . import schema, statistics
from .client import CollectionNotLoaded, milvus_call, quiet_pymilvus
from .filtering import MilvusFiltering
from .schema import ID, LOGVAR, METADATA, SAMPLE, UNCERTAINTY, VECTOR, IndexChoice

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_TOPK = 16384  # Milvus' largest limit per query
REQUEST_BYTES = 16 * 1024 * 1024  # vectors per upsert call and per search answer, so no message nears gRPC limits
ID_CHUNK = 1000  # ids per "id in [...]" expression


class MilvusCollection(MilvusFiltering):
    """One collection in Milvus (get it from ``MilvusCatalog``); thread-safe, holds no items in memory.

    Metadata filters: ``indexer.milvus.filtering``."""

    def __init__(self, client: Any, info: CollectionInfo, index: IndexChoice, milvus_name: str,
                 consistency: str) -> None:
        self.info = info
        self.name = info.name
        self.dim = info.dim
        self.spec: IndexSpec = info.spec
        self.milvus_name = milvus_name
        self.index_choice = index
        self._client = client
        self._consistency = consistency
        self._stored_dim = schema.stored_dim(info.dim)
        self._closed = False

    # ------------------------------------------------------------------ plumbing
    def _check_open(self) -> None:
        if self._closed:
            raise IndexClosedError(f"collection {self.name!r} is closed")

    def _call(self, what: str, operation: Callable[[], T]) -> T:
        """Run one Milvus operation; a collection found unloaded (Milvus Lite restarted) is loaded once and retried."""
        self._check_open()
        try:
            return milvus_call(f"{what} {self.name!r}")(operation)()
        except CollectionNotLoaded:
            log.warning("collection %r was not loaded in Milvus (server restarted?); loading it", self.name)
            milvus_call(f"load {self.name!r}")(self._client.load_collection)(self.milvus_name)
            return milvus_call(f"{what} {self.name!r}")(operation)()

    def _query(self, expression: str, fields: list[str], limit: int | None = None) -> list[dict[str, Any]]:
        extra = {} if limit is None else {"limit": limit}
        # a plain list of materialised rows: pymilvus' lazy result list breaks when extended or sliced
        return list(self._call("query", lambda: self._client.query(
            self.milvus_name, filter=expression, output_fields=fields, consistency_level=self._consistency, **extra)))

    def count(self, expression: str = "") -> int:
        """Items matching a Milvus boolean expression ('' = all), at this catalog's consistency level."""
        rows = self._query(expression, ["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def _rows(self, ids: list[str], fields: list[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), ID_CHUNK):
            chunk = ids[start:start + ID_CHUNK]
            for row in self._query(self._id_filter(chunk), [ID, *fields]):
                found[row[ID]] = row
        return found

    @staticmethod
    def _id_filter(ids: list[str]) -> str:
        return f"{ID} in [{', '.join(schema.quote(i) for i in ids)}]"

    # ------------------------------------------------------------------ size and membership
    def __len__(self) -> int:
        return self.count()

    def __contains__(self, item_id: object) -> bool:
        return isinstance(item_id, str) and bool(item_id) and bool(self._rows([validation.item_id(item_id)], []))

    def __repr__(self) -> str:
        return f"MilvusCollection({self.name!r} in {self.milvus_name}, {self.index_choice.index_type})"

    @property
    def kind(self) -> str:
        """The index structure: flat, ivf, hnsw, diskann or cagra."""
        return self.index_choice.kind

    # ------------------------------------------------------------------ writes
    def add(self, ids: list[str], mean: np.ndarray, logvar: np.ndarray,
            metadata: list[dict[str, Any]] | None = None) -> None:
        """Insert or replace items (upsert by id); acknowledged by Milvus' WAL when it returns.

        Checked exactly as ``GaussianIndex.add`` checks. One call of more than ~2,500 items at
        D=768 is sent as several upserts (gRPC message size): a crash between them leaves a
        prefix written; repeating the call is safe (an upsert by id).
        """
        ids, mean, logvar, variance_sum, texts = validation.upserts(ids, mean, logvar, metadata, self.dim,
                                                                  self.info.deterministic)
        if not ids:
            return
        vectors = self._pad(augment_items(mean, logvar))  # [N, stored_dim]
        if logvar is None:  # a deterministic collection's points: the field holds zeros, never read back
            logvar = np.zeros_like(mean)
        rows = [{ID: item_id, VECTOR: vectors[i], LOGVAR: logvar[i], UNCERTAINTY: float(variance_sum[i]),
                 SAMPLE: schema.sample_bucket(item_id), METADATA: json.loads(texts[i])}
                for i, item_id in enumerate(ids)]
        step = max(1, REQUEST_BYTES // (4 * (self._stored_dim + self.dim) + 64))
        for start in range(0, len(rows), step):
            self._call("upsert into", lambda part=rows[start:start + step]: self._client.upsert(self.milvus_name, part))

    def _pad(self, vectors: np.ndarray) -> np.ndarray:
        out = np.zeros((len(vectors), self._stored_dim), np.float32)
        out[:, :vectors.shape[1]] = vectors
        return out

    def delete(self, ids: list[str]) -> int:
        """Delete items by id; unknown ids are ignored. Returns how many of them were present just before."""
        ids = validation.item_ids(ids)
        if not ids:
            return 0
        present = list(self._rows(ids, []))
        if present:
            for start in range(0, len(present), ID_CHUNK):
                chunk = present[start:start + ID_CHUNK]
                # our own quoting: pymilvus' ids= form breaks on a backslash in an id
                self._call("delete from", lambda chunk=chunk: self._client.delete(self.milvus_name,
                                                                                   filter=self._id_filter(chunk)))
        return len(present)

    # ------------------------------------------------------------------ reads
    def get(self, item_id: str) -> Item | None:
        """The stored item (vectors, S and metadata), or None."""
        validation.item_id(item_id)
        row = self._rows([item_id], [VECTOR, LOGVAR, UNCERTAINTY, METADATA]).get(item_id)
        return None if row is None else self._item(row)

    def _item(self, row: dict[str, Any]) -> Item:
        mean = np.asarray(row[VECTOR], np.float32)[:self.dim].copy()
        if self.info.deterministic:  # a point: no variances (as GaussianIndex reads them back)
            return Item(row[ID], mean, None, None, dict(row.get(METADATA) or {}))
        return Item(row[ID], mean, np.asarray(row[LOGVAR], np.float32), float(row[UNCERTAINTY]),
                    dict(row.get(METADATA) or {}))

    def search(self, query_mean: np.ndarray, query_logvar: np.ndarray, k: int = 10, rank: str = "csd",
               exact: bool = True, shortlist: int | None = None, inclusion_direction: str = "query_in_item", *,
               nprobe: int | None = None, ef_search: int | None = None, refine: int | None = None,
               calibrator: Calibrator | None = None, query_modality: str | None = None,
               filter: Any = None) -> list[list[Hit]]:
        """Top-k items per query; the arguments and results of ``GaussianIndex.search`` (ties broken by id).

        ``nprobe`` feeds IVF kinds, ``ef_search`` HNSW (``ef``), DiskANN (``search_list``) and
        CAGRA (``itopk_size``); ``refine`` the candidates re-scored per result on ANN kinds.
        ``rank="probability"`` runs ``indexer.probability_rank`` over Milvus' cosine search, with the
        collection's exact uncertainty range and, past 10,000 candidates, an exhaustive pass.
        """
        expression = self._expression(filter)
        request = search.parse_request(k, rank, exact, shortlist, inclusion_direction, nprobe, ef_search, refine)
        search.check_rank_for(request, self.info)
        mean, logvar, query_unc = validation.gaussians(query_mean, query_logvar, self.dim, what="query",
                                                       deterministic=self.info.deterministic)
        validation.query_count(len(mean))
        self._check_open()
        request = search.with_scorers(request, calibrator, query_modality, self.info, query_unc)
        size = 0
        if request.rank == "probability":
            size = self._count(expression)
            if size == 0:
                return [[] for _ in range(len(mean))]
            request = replace(request, uncertainty_range=self._uncertainty_range())
        # Vectors come back with the candidates only where the distances Milvus returns are not exact
        # (quantized IVF codes) or where the inclusion test needs log-variances; otherwise the exact
        # float32 inner product Milvus computed and the float64 S give the scores directly.
        with_vectors = request.rank == "inclusion" or self.index_choice.approximate_distances
        pool = _CandidatePool(self.dim, with_vectors=with_vectors, with_logvar=request.rank == "inclusion")
        mean64 = mean.astype(np.float64)

        def scored_candidates(queries: np.ndarray, wanted: int, rows: np.ndarray | None = None) -> ranking.Scored:
            picked = slice(None) if rows is None else rows
            slots, inner = self._candidates(queries, wanted, request, pool, expression)
            if with_vectors:
                return ranking.score(pool.table(), mean64[picked], query_unc[picked], slots)
            return _scored_from_inner(slots, inner, queries[:, -1].astype(np.float64), pool.uncertainty(slots),
                                      query_unc[picked])

        def scan(rows: np.ndarray, wanted: int, scorers: list) -> ranking.Scored:
            return self._scan_best(pool, mean64[rows], query_unc[rows], wanted, scorers, expression)

        ranked = search.rank_candidates(scored_candidates, mean, logvar, request, pool.rows_for, size=size,
                                        scan=scan)
        rows = [in_total_order(r, pool.ids_at(r.slots), request.rank, request.k) for r in ranked]
        wanted = sorted({i for row in rows for _, i in row})
        metadata = {item_id: dict(row.get(METADATA) or {}) for item_id, row in self._rows(wanted, [METADATA]).items()}
        points = self.info.deterministic
        return [[Hit(item_id, float(r.score[j]), float(r.csd[j]), float(r.cosine[j]),
                     None if points else float(r.uncertainty[j]), metadata.get(item_id, {}),
                     None if r.inclusion is None else float(r.inclusion[j]))
                 for j, item_id in row]
                for r, row in zip(ranked, rows, strict=True)]

    def _uncertainty_range(self) -> tuple[float, float]:
        """(min S, max S) over the items, exact (a bisection on counts; see ``statistics.extreme_rows``)."""
        low = statistics.extreme_rows(self, 1, lowest=True, fields=[UNCERTAINTY])
        high = statistics.extreme_rows(self, 1, lowest=False, fields=[UNCERTAINTY])
        if not low or not high:
            return 0.0, 0.0
        return float(low[0][UNCERTAINTY]), float(high[0][UNCERTAINTY])

    def _scan_best(self, pool: _CandidatePool, query_mean: np.ndarray, query_unc: np.ndarray, k: int,
                   scorers: list, expression: str = "") -> ranking.Scored:
        """Every item (matching ``expression``), a page at a time: each query's k best by calibrated logit,
        scored exactly.

        Memory stays at one page plus k candidates per query (``ranking.scan_best`` on Milvus pages).
        """
        q = len(query_mean)
        kept: list[list[tuple[float, dict[str, Any]]]] = [[] for _ in range(q)]
        query32 = query_mean.astype(np.float32)
        with quiet_pymilvus():
            iterator = self._call("scan", lambda: self._client.query_iterator(
                self.milvus_name, batch_size=8192, filter=expression, output_fields=[ID, VECTOR, UNCERTAINTY],
                consistency_level=self._consistency))
        try:
            while True:
                page = self._call("scan", iterator.next)
                if not page:
                    break
                vectors = np.asarray([row[VECTOR] for row in page], np.float32)[:, :self.dim]
                unc = np.asarray([row[UNCERTAINTY] for row in page], np.float64)
                cosine = (vectors @ query32.T).T.astype(np.float64)  # [q, page]
                for i in range(q):
                    logit = scorers[i].logit(cosine[i], unc)
                    top = np.argsort(-logit, kind="stable")[:k]
                    merged = kept[i] + [(float(logit[j]), {"id": page[j][ID], "entity": page[j]}) for j in top]
                    kept[i] = sorted(merged, key=lambda pair: -pair[0])[:k]
        finally:
            iterator.close()
        width = max(1, max((len(row) for row in kept), default=1))
        slots = np.full((q, width), -1, np.int64)
        for i, row in enumerate(kept):
            for j, (_, hit) in enumerate(row):
                slots[i, j] = pool.slot(hit)
        if pool.with_vectors:
            return ranking.score(pool.table(), query_mean, query_unc, slots)
        item_unc = pool.uncertainty(slots)
        cosine = np.full(slots.shape, np.nan)
        for i, row in enumerate(kept):
            for j, (_, hit) in enumerate(row):
                cosine[i, j] = float(np.asarray(hit["entity"][VECTOR], np.float64)[:self.dim] @ query_mean[i])
        csd = csd_from_inner_product(cosine - item_unc / 2, query_unc)
        nan = np.where(slots >= 0, 0.0, np.nan)
        return ranking.Scored(slots, cosine + nan, csd + nan, item_unc + nan)

    def iter_items(self) -> Iterator[list[Item]]:
        """Every item (vectors, S and metadata), in pages of at most 2,048, as Milvus' iterator reads them.

        Memory is bounded by one page. At Strong consistency the iterator reads the items acknowledged
        when it starts; an item written during the iteration may be left out, never given twice.
        """
        self._check_open()
        with quiet_pymilvus():
            iterator = self._call("read items of", lambda: self._client.query_iterator(
                self.milvus_name, batch_size=2048, filter="", output_fields=[ID, VECTOR, LOGVAR, UNCERTAINTY, METADATA],
                consistency_level=self._consistency))
        try:  # the iterator pages by primary key (id > the last one read), so no item comes twice
            while True:
                page = self._call("read items of", iterator.next)
                if not page:
                    break
                yield [self._item(row) for row in page]
        finally:
            iterator.close()

    def _candidates(self, queries: np.ndarray, wanted: int, request: search.Request, pool: _CandidatePool,
                    expression: str = "") -> tuple[np.ndarray, np.ndarray]:
        """Pool slots [Q, C] of the candidates Milvus proposes for augmented queries [Q, D+1] (-1 = none),
        and their inner products [Q, C] as Milvus computed them (float32 values; NaN pads); only items
        matching ``expression`` (a Milvus boolean expression, '' = all)."""
        if self.index_choice.kind == "flat":
            fetch = wanted + max(8, wanted // 4)  # the margin the FAISS flat path uses
        else:
            fetch = wanted * (request.knobs.refine or self.spec.refine)
        fetch = min(fetch, MAX_TOPK)
        fields = [UNCERTAINTY] + ([VECTOR] if pool.with_vectors else []) + ([LOGVAR] if pool.with_logvar else [])
        params = self.index_choice.search_params(self.spec, request.knobs, fetch)
        row_bytes = 4 * ((self._stored_dim if pool.with_vectors else 0) + (self.dim if pool.with_logvar else 0)) + 64
        per_call = max(1, REQUEST_BYTES // (fetch * row_bytes))
        padded = self._pad(queries)
        answers: list[list[dict[str, Any]]] = []
        for start in range(0, len(padded), per_call):
            block = [row for row in padded[start:start + per_call]]
            try:
                answers.extend(self._call("search", lambda block=block: self._client.search(
                    self.milvus_name, block, anns_field=VECTOR, limit=fetch, output_fields=fields,
                    search_params=params, filter=expression, consistency_level=self._consistency)))
            except StoreError as error:
                raise self._refused(expression, error) from error
        width = max((len(hits) for hits in answers), default=0)
        slots = np.full((len(answers), width), -1, np.int64)
        inner = np.full((len(answers), width), np.nan)
        for q, hits in enumerate(answers):
            for j, hit in enumerate(hits):
                slots[q, j] = pool.slot(hit)
                inner[q, j] = hit["distance"]
        return slots, inner

    # ------------------------------------------------------------------ statistics
    def uncertainty_percentile(self, values: np.ndarray | float) -> np.ndarray:
        """Where each value falls among the items' uncertainties, 0..100 (mid-rank; NaN if empty).

        Exact and as fresh as the consistency level: counted by range filters in Milvus, three
        counts per value (see ``indexer.milvus.statistics``).
        """
        if self.info.deterministic:
            raise InvalidInputError(f"collection {self.name!r} holds a deterministic model's points: its items have "
                                    "no uncertainty to rank against")
        values = validation.finite_values(values, "uncertainty values")
        self._check_open()
        return statistics.percentiles(self.count, values)

    def stats(self, bins: int = 32) -> dict[str, Any]:
        """Size, configuration, uncertainty quantiles and histogram (``GaussianIndex.stats``' keys).

        ``uncertainty.sample`` says whether the figures cover every item or a hash sample.
        """
        bins = validation.positive_int(bins, "bins", 1000)
        self._check_open()
        summary, histogram = statistics.summary(self, bins)
        if self.info.deterministic:  # points: the count only, as GaussianIndex.stats gives it
            summary = {"count": summary["count"], "sample": summary["sample"]}
            histogram = {"edges": [], "counts": [], "scale": "linear"}
        return {"name": self.name, "size": summary["count"], "dim": self.dim, "kind": self.kind,
                "modality": self.info.modality, "model_id": self.info.model_id, "store": "milvus",
                "model_family": self.info.model_family, "deterministic": self.info.deterministic,
                "spec": self.spec.to_dict(), "index": {"kind": self.kind, **self.index_choice.to_dict()},
                "milvus_collection": self.milvus_name, "consistency": self._consistency,
                "pending_changes": None, "uncertainty": summary, "histogram": histogram}

    def extremes(self, n: int = 10) -> tuple[list[Item], list[Item]]:
        """(the n most certain items, lowest S first; the n most uncertain, highest S first). Exact."""
        from ..config import MAX_EXTREMES

        n = validation.positive_int(n, "n", MAX_EXTREMES)
        self._check_open()
        if self.info.deterministic:
            return [], []
        fields = [VECTOR, LOGVAR, UNCERTAINTY, METADATA]
        low = statistics.extreme_rows(self, n, lowest=True, fields=fields)
        high = statistics.extreme_rows(self, n, lowest=False, fields=fields)
        return [self._item(row) for row in low], [self._item(row) for row in high]

    def uncertainties(self, expression: str = "") -> np.ndarray:
        """The S of every item matching ``expression``, streamed in pages (statistics, tests)."""
        values: list[float] = []
        with quiet_pymilvus():  # Milvus Lite has no server-side iterator timestamp; pymilvus warns and copes
            iterator = self._call("read uncertainties of", lambda: self._client.query_iterator(
                self.milvus_name, batch_size=8192, filter=expression, output_fields=[UNCERTAINTY],
                consistency_level=self._consistency))
        try:
            while True:
                page = self._call("read uncertainties of", iterator.next)
                if not page:
                    break
                values.extend(float(row[UNCERTAINTY]) for row in page)
        finally:
            iterator.close()
        return np.asarray(values, np.float64)

    def rows_where(self, expression: str, fields: Iterable[str], limit: int) -> list[dict[str, Any]]:
        return self._query(expression, [ID, *fields], limit=limit)

    # ------------------------------------------------------------------ persistence and lifecycle
    def snapshot(self, rebuild: bool = False) -> dict[str, Any]:
        """Flush: Milvus seals the growing segments and writes them to object storage (``rebuild``: compact too)."""
        started = time.perf_counter()
        self._call("flush", lambda: self._client.flush(self.milvus_name))
        if rebuild:
            self._call("compact", lambda: self._client.compact(self.milvus_name))
        return {"seq": None, "rebuilt": bool(rebuild), "written": True, "kind": self.kind,
                "seconds": time.perf_counter() - started}

    def wait_for_background(self, timeout: float | None = None) -> None:
        """Nothing runs in the background here (contract parity with ``GaussianIndex``)."""

    def close(self, snapshot: bool = True) -> None:
        """Forget the collection in this process; Milvus keeps serving it to the other replicas."""
        self._closed = True

    def __enter__(self) -> MilvusCollection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _scored_from_inner(slots: np.ndarray, inner: np.ndarray, last: np.ndarray, item_unc: np.ndarray,
                       query_unc: np.ndarray) -> ranking.Scored:
    """Exact scores from Milvus' inner products [Q, C] of queries [mu_q, last] with items [mu_x, -S_x/2].

    last = 1 (CSD order): inner = cos - S_x/2; last = 0 (cosine order): inner = cos. With float64 S_x
    the cosine and CSD are those ``ranking.score`` computes from the vectors, up to float32 rounding of
    the inner product (~1e-7 relative).
    """
    cosine = inner + last[:, None] * item_unc / 2  # [Q, C]
    csd = csd_from_inner_product(cosine - item_unc / 2, query_unc)
    nan = np.where(slots >= 0, 0.0, np.nan)
    return ranking.Scored(slots, cosine + nan, csd + nan, item_unc + nan)


class _CandidatePool:
    """The distinct candidates of one search call, as a ``VectorTable`` the ranking code can score."""

    def __init__(self, dim: int, with_vectors: bool, with_logvar: bool) -> None:
        self.dim = dim
        self.with_vectors = with_vectors
        self.with_logvar = with_logvar
        self._slot_of: dict[str, int] = {}
        self._ids: list[str] = []
        self._vectors: list[np.ndarray] = []
        self._uncertainty: list[float] = []
        self._logvar: list[np.ndarray] = []
        self._table: VectorTable | None = None

    def slot(self, hit: dict[str, Any]) -> int:
        item_id = hit["id"]
        slot = self._slot_of.get(item_id)
        if slot is None:
            entity = hit["entity"]
            slot = self._slot_of[item_id] = len(self._ids)
            self._ids.append(item_id)
            if self.with_vectors:
                self._vectors.append(np.asarray(entity[VECTOR], np.float32)[:self.dim + 1])
            self._uncertainty.append(float(entity[UNCERTAINTY]))
            if self.with_logvar:
                self._logvar.append(np.asarray(entity[LOGVAR], np.float32))
            self._table = None
        return slot

    def table(self) -> VectorTable:
        if self._table is None:
            n = len(self._ids)
            vectors = np.stack(self._vectors) if n else np.zeros((0, self.dim + 1), np.float32)
            self._table = VectorTable(self.dim, vectors, self._ids, np.asarray(self._uncertainty, np.float64),
                                      np.ones(n, bool))
        return self._table

    def uncertainty(self, slots: np.ndarray) -> np.ndarray:
        """S of the candidates at ``slots`` (any shape; -1 reads as 0, masked by the caller)."""
        values = np.asarray(self._uncertainty + [0.0], np.float64)
        return values[np.where(slots >= 0, slots, len(self._uncertainty))]

    def ids_at(self, slots: np.ndarray) -> list[str]:
        return [self._ids[s] for s in np.asarray(slots).ravel().tolist()]

    def rows_for(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        slots = np.asarray(slots, np.int64)
        vectors = np.stack([self._vectors[s] for s in slots.tolist()])
        return vectors[:, :self.dim], np.stack([self._logvar[s] for s in slots.tolist()])
