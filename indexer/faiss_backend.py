"""FAISS indexes over augmented Gaussian vectors: building, searching, GPU placement, (de)serialising.

Every index stores item vectors [mu_x, -S_x/2] ([D+1], ``models.gaussian.augment_items``) under
maximum inner product, so a query [mu_q, 1] ranks items by CSD in a single search and a query
[mu_q, 0] ranks them by mean cosine. FAISS labels are table slots (insertion order); dead slots
(deleted or replaced items) are excluded per call: an ``IDSelectorBitmap`` in the search
parameters for HNSW/IVF. Search-time knobs (efSearch, nprobe, selector) always travel in
per-call ``SearchParameters``; nothing shared is mutated per request.

A flat index holds no vectors on the CPU: the vector table already has every row, and
``indexer.flat_scan`` scans the table's blocks in place, sharded across threads (a FAISS
``IndexFlatIP`` would hold a second copy and scan one query on one thread). On a GPU a flat
index is a FAISS GPU index fed the same rows.

Kinds: ``flat`` (exact, BLAS), ``hnsw`` (graph; codec flat/sq8/fp16), ``ivf`` (inverted lists;
codec flat/sq8/fp16/pq). Compressed codecs get zero columns appended (inner products are
unchanged): scalar quantizers to a multiple of 16 dimensions, which FAISS's SIMD kernels need
(769 columns would run its scalar fallback, 7.6x slower), PQ to a multiple of its
sub-quantizers. An ANN kind whose codec needs training starts as a flat index and is trained
when a snapshot rebuilds it with enough data (``pending``).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Before FAISS's OpenMP runtime starts: idle OpenMP threads sleep instead of spinning, which
# matters when a service runs many searches from Python threads on few cores (FAISS wiki,
# "Troubleshooting": spinning OpenMP threads and OpenBLAS threads slow each other down).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import faiss  # noqa: E402

from . import flat_scan  # noqa: E402
from .config import IndexSpec  # noqa: E402

log = logging.getLogger(__name__)

# FAISS 1.15 switches to BLAS only above 128000 queries, so a batch of 64 queries runs the
# per-pair kernel, ~7x slower than one sgemm (measured on this project's CPU box). Batches of
# 16+ queries gain from BLAS at any corpus size; this is a process-wide FAISS setting.
BLAS_THRESHOLD = 16
faiss.cvar.distance_compute_blas_threshold = BLAS_THRESHOLD
# FAISS's BLAS search takes database blocks of 1024 rows, each block a fork/join of its OpenMP
# threads; on a busy 2-core box a 1M-row search then spends most of its time at barriers
# (measured: 1.1 s vs 0.44 s per 64 queries at 100k rows). 65536-row blocks keep the
# barriers rare; 1024-query blocks cap the score block at 64k x 1k x 4 B = 256 MiB.
faiss.cvar.distance_compute_blas_database_bs = 65536
faiss.cvar.distance_compute_blas_query_bs = 1024

FLAT_OVERSAMPLE_MAX = 4096  # dead slots a flat search tolerates before a compaction is urgent
GPU_MAX_K = 2048  # FAISS GPU's k limit
_ADD_CHUNK = 65536
_SQ_TYPES = {"sq8": faiss.ScalarQuantizer.QT_8bit, "fp16": faiss.ScalarQuantizer.QT_fp16}
# k-means points per IVF list: coarse lists only partition the data (candidates are re-scored
# exactly), so 24 is plenty and keeps training at 1M x 769 to about a minute on 2 cores
_TRAIN_POINTS_PER_LIST = 24
_MIN_TRAIN = 256
_SQ_ALIGN = 16
_PQ_TRAIN_POINTS = 16 * 256  # 4-bit PQ: 16 centroids per sub-quantizer


@dataclass(frozen=True)
class LiveFilter:
    """Which FAISS labels are live, in the two forms the search paths need."""

    live: np.ndarray  # [n_slots] bool
    bitmap: np.ndarray  # packed little-endian bits of ``live``
    n_dead: int


@dataclass(frozen=True)
class SearchKnobs:
    """Per-call search parameters (None = the collection's IndexSpec value)."""

    nprobe: int | None = None
    ef_search: int | None = None
    refine: int | None = None  # ANN kinds: candidates re-ranked exactly = refine * k


def gpu_count() -> int:
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def nlist_for(spec: IndexSpec, size: int) -> int:
    """IVF list count for ``size`` vectors, never more than the data can train (40 points per list)."""
    wanted = spec.nlist_for(size)
    if spec.nlist is not None:
        return wanted
    trainable = 2 ** int(math.log2(max(size // _TRAIN_POINTS_PER_LIST, 1)))
    return max(1, min(wanted, trainable))


def sq_dim(dim: int) -> int:
    """Scalar-quantizer width: FAISS's SIMD SQ kernels need d % 8 == 0 (16 for AVX-512) and fall
    back to scalar code otherwise, 7.6x slower for d = 769 (measured); zero columns fix that."""
    return math.ceil(dim / _SQ_ALIGN) * _SQ_ALIGN


def pq_layout(spec: IndexSpec, dim: int) -> tuple[int, int]:
    """(sub-quantizers m, padded dimension) for 4-bit fast-scan PQ.

    m defaults to one sub-quantizer per 4 dimensions and is rounded up to even (fast-scan packs
    codes in pairs); the dimension is padded with zero columns to a multiple of m.
    """
    m = spec.pq_m or math.ceil(dim / 4)
    m += m % 2
    return m, math.ceil(dim / m) * m


def can_build(spec: IndexSpec, kind: str, size: int) -> bool:
    """Whether ``size`` vectors are enough to build ``kind`` now (IVF and SQ/PQ codecs need training data)."""
    if kind == "flat" or (kind == "hnsw" and spec.codec == "flat"):
        return True
    if kind == "hnsw":
        return size >= _MIN_TRAIN
    return size >= max(_MIN_TRAIN, _TRAIN_POINTS_PER_LIST * nlist_for(spec, size) // 2)


class FaissIndex:
    """One FAISS index over [N, D+1] augmented vectors; labels are table slots 0..N-1."""

    def __init__(self, cpu_index: faiss.Index, kind: str, spec: IndexSpec, dim: int, pending: str | None = None,
                 padded_dim: int | None = None, params: dict[str, Any] | None = None) -> None:
        self.cpu_index = cpu_index
        self.kind = kind  # the structure actually in use: flat, hnsw or ivf
        self.pending = pending  # the ANN kind this flat index waits to become, if any
        self.spec = spec
        self.dim = dim  # augmented dimension D+1
        self.padded_dim = padded_dim or dim
        self.params = params or {}
        self._flat_rows = 0  # flat: rows the table holds for this index (the CPU index stays empty)
        self._gpu_index = self._to_gpu(cpu_index) if spec.gpu and kind in ("flat", "ivf") and gpu_count() else None

    # --- construction
    @classmethod
    def empty(cls, spec: IndexSpec, kind: str, dim: int) -> FaissIndex:
        """An index with no vectors; kinds that need training start flat and pend."""
        if kind == "hnsw" and spec.codec == "flat":
            return cls(_new_hnsw(spec, dim), "hnsw", spec, dim, params=_hnsw_params(spec))
        if kind == "flat":
            return cls(faiss.IndexFlatIP(dim), "flat", spec, dim)
        return cls(faiss.IndexFlatIP(dim), "flat", spec, dim, pending=kind)

    @classmethod
    def build(cls, spec: IndexSpec, kind: str, vectors: np.ndarray, seed: int = 0,
              centroids: np.ndarray | None = None) -> FaissIndex:
        """Build (train if needed, then add) an index of ``kind`` over ``vectors`` [N, D+1] float32.

        ``centroids`` [nlist, D+1] reuses an IVF coarse quantizer (e.g. from the index being
        compacted), skipping k-means; only the codec is trained.
        """
        n, dim = vectors.shape
        if kind == "flat":
            index = cls(faiss.IndexFlatIP(dim), "flat", spec, dim)
        elif kind == "hnsw":
            index = cls._build_hnsw(spec, vectors, seed)
        elif kind == "ivf":
            index = cls._build_ivf(spec, vectors, seed, centroids)
        else:
            raise ValueError(f"unknown index kind {kind!r}")
        if index is None:  # not enough data to train: stay flat until a later snapshot
            index = cls(faiss.IndexFlatIP(dim), "flat", spec, dim, pending=kind)
        index.add(vectors)
        return index

    @classmethod
    def _build_hnsw(cls, spec: IndexSpec, vectors: np.ndarray, seed: int) -> FaissIndex | None:
        dim = vectors.shape[1]
        if not can_build(spec, "hnsw", len(vectors)):
            return None
        padded = dim if spec.codec == "flat" else sq_dim(dim)
        cpu_index = _new_hnsw(spec, padded)
        if not cpu_index.is_trained:
            cpu_index.train(_pad(_sample(vectors, 65536, seed), padded))
        return cls(cpu_index, "hnsw", spec, dim, padded_dim=padded, params=_hnsw_params(spec))

    @classmethod
    def _build_ivf(cls, spec: IndexSpec, vectors: np.ndarray, seed: int,
                   centroids: np.ndarray | None) -> FaissIndex | None:
        n, dim = vectors.shape
        nlist = nlist_for(spec, n) if centroids is None else len(centroids)
        if not can_build(spec, "ivf", n):
            log.info("IVF with %d lists needs more than %d vectors to train; staying flat for now", nlist, n)
            return None
        padded = dim
        quantizer_dim = dim
        if spec.codec == "pq":
            # 4-bit PQ scanned with SIMD lookups ("fast scan"): ~m/2 bytes per vector and several
            # times faster to scan than 8-bit PQ; the exact re-rank of refine * k repairs its precision
            m, padded = pq_layout(spec, dim)
            quantizer_dim = padded
            cpu_index = faiss.IndexIVFPQFastScan(faiss.IndexFlatIP(quantizer_dim), padded, nlist, m, 4,
                                                 faiss.METRIC_INNER_PRODUCT)
        elif spec.codec == "flat":
            cpu_index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            # vectors encoded directly, not as residuals from their centroid: scanning skips a
            # per-list term (~20 % faster) and the exact re-rank makes up for the coarser codes
            padded = quantizer_dim = sq_dim(dim)
            cpu_index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(padded), padded, nlist,
                                                      _SQ_TYPES[spec.codec], faiss.METRIC_INNER_PRODUCT, False)
        cpu_index.cp.niter = 10  # k-means iterations: 10 is FAISS's usual IVF setting, 25 buys little
        cpu_index.cp.seed = seed
        cpu_index.cp.min_points_per_centroid = _TRAIN_POINTS_PER_LIST // 2  # we sample fewer than FAISS's 39 on purpose
        points = _TRAIN_POINTS_PER_LIST * nlist
        if spec.codec == "pq":
            points = max(points, _PQ_TRAIN_POINTS)
        sample = _sample(vectors, points, seed)
        if centroids is not None:  # FAISS skips k-means when the quantizer already holds nlist centroids
            cpu_index.quantizer.add(_pad(np.ascontiguousarray(centroids[:, :dim], dtype=np.float32), quantizer_dim))
        log.info("training IVF (%d lists%s, codec %s) on %d vectors", nlist,
                 ", reused centroids" if centroids is not None else "", spec.codec, len(sample))
        cpu_index.train(_pad(sample, padded))
        return cls(cpu_index, "ivf", spec, dim, padded_dim=padded,
                   params={"nlist": nlist, "codec": spec.codec, "nprobe": spec.nprobe})

    def _to_gpu(self, cpu_index: faiss.Index) -> Any:
        try:
            return faiss.index_cpu_to_all_gpus(cpu_index)
        except (RuntimeError, AttributeError) as error:  # e.g. an index type the GPU build lacks
            log.warning("FAISS GPU available but the %s index stays on CPU: %s", self.kind, error)
            return None

    # --- state
    @property
    def ntotal(self) -> int:
        return self._flat_rows if self.kind == "flat" else int(self.cpu_index.ntotal)

    @property
    def on_gpu(self) -> bool:
        return self._gpu_index is not None

    def centroids(self) -> np.ndarray | None:
        """The IVF coarse centroids [nlist, D+1] (None for other kinds), to reuse in a rebuild."""
        if self.kind != "ivf":
            return None
        quantizer = self.cpu_index.quantizer
        return quantizer.reconstruct_n(0, quantizer.ntotal)[:, :self.dim]

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "pending": self.pending, "gpu": self.on_gpu, "ntotal": self.ntotal,
                "codec": self.params.get("codec", "flat"), **self.params}

    def add(self, vectors: np.ndarray) -> None:
        """Append vectors [N, D+1]; they get labels ntotal .. ntotal+N-1.

        A flat index only counts them on the CPU: the caller's vector table holds the rows and
        is passed to ``search``.
        """
        if self.kind == "flat":
            self._flat_rows += len(vectors)
            if self._gpu_index is None:
                return
        for start in range(0, len(vectors), _ADD_CHUNK):
            chunk = _pad(np.ascontiguousarray(vectors[start:start + _ADD_CHUNK], dtype=np.float32), self.padded_dim)
            if self.kind != "flat":
                self.cpu_index.add(chunk)
            if self._gpu_index is not None:
                self._gpu_index.add(chunk)

    # --- search
    def search(self, queries: np.ndarray, k: int, live: LiveFilter, knobs: SearchKnobs | None = None,
               rows: list[tuple[int, np.ndarray]] | None = None) -> np.ndarray:
        """Labels [Q, k'] (k' >= k unless the index is smaller) of the best live items; -1 pads.

        ``queries`` are augmented queries [Q, D+1] float32; results are sorted by inner product.
        ``rows``: the vector table's blocks (``VectorTable.blocks()``), which a flat index scans.
        """
        knobs = knobs or SearchKnobs()
        queries = _pad(np.ascontiguousarray(queries, dtype=np.float32), self.padded_dim)
        if self.ntotal == 0:
            return np.full((len(queries), 0), -1, np.int64)
        if self.kind == "flat":
            labels = self._search_flat(queries, k, live, rows)
        else:
            labels = self._search_ann(queries, k, live, knobs)
        return labels

    def _search_flat(self, queries: np.ndarray, k: int, live: LiveFilter,
                     rows: list[tuple[int, np.ndarray]] | None) -> np.ndarray:
        fetch = min(self.ntotal, k + live.n_dead)
        if self._gpu_index is not None and fetch <= GPU_MAX_K:
            _, labels = self._gpu_index.search(queries, fetch)
            return _drop_dead(labels, live)
        if rows is None:
            raise ValueError("a flat index scans the vector table: pass its blocks as rows")
        _, labels = flat_scan.top_k(rows, queries, k, live.live if live.n_dead else None)
        return labels

    def _search_ann(self, queries: np.ndarray, k: int, live: LiveFilter, knobs: SearchKnobs) -> np.ndarray:
        k = min(k, self.ntotal)
        selector = None
        if live.n_dead:
            selector = faiss.IDSelectorBitmap(live.live.size, faiss.swig_ptr(live.bitmap))
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW()
            params.efSearch = max(knobs.ef_search or self.spec.ef_search, k)
        else:
            params = faiss.SearchParametersIVF()
            params.nprobe = min(knobs.nprobe or self.spec.nprobe, self.params["nlist"])
        if self._gpu_index is not None and k + live.n_dead <= GPU_MAX_K:
            # GPU indexes take no selectors: over-fetch by the dead count and drop them
            _, labels = self._gpu_index.search(queries, k + live.n_dead, params=params)
            return _drop_dead(labels, live)
        if selector is not None:
            params.sel = selector
        _, labels = self.cpu_index.search(queries, k, params=params)
        return labels

    # --- persistence
    def write(self, stream: Any) -> None:
        """Serialise the CPU index into a writable stream (``stream.write(bytes)``)."""
        faiss.write_index(self.cpu_index, faiss.PyCallbackIOWriter(stream.write))

    @classmethod
    def read(cls, path: Path, spec: IndexSpec, kind: str, dim: int, pending: str | None,
             params: dict[str, Any]) -> FaissIndex:
        cpu_index = faiss.read_index(str(path))
        padded = cpu_index.d
        if padded < dim:
            raise ValueError(f"index dimension {padded} < vector dimension {dim}")
        return cls(cpu_index, kind, spec, dim, pending=pending, padded_dim=padded, params=params)

    def memory_bytes(self) -> int:
        """Approximate bytes held by the index (vector storage plus graph/lists)."""
        if self.kind == "flat":
            return self.ntotal * self.dim * 4 if self.on_gpu else 0  # on the CPU the table holds the rows
        if self.kind == "hnsw":
            hnsw = self.cpu_index.hnsw
            links = faiss.vector_to_array(hnsw.offsets)[-1] * 4 if hnsw.offsets.size() else 0
            code_size = self.cpu_index.storage.sa_code_size() if hasattr(self.cpu_index.storage, "sa_code_size") \
                else self.dim * 4
            return int(links + self.ntotal * code_size)
        # codes + 8-byte ids per vector, plus the coarse centroids
        return int(self.ntotal * (self.cpu_index.code_size + 8) + self.params["nlist"] * self.padded_dim * 4)


def _new_hnsw(spec: IndexSpec, dim: int) -> faiss.Index:
    if spec.codec == "flat":
        index = faiss.IndexHNSWFlat(dim, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    else:
        index = faiss.IndexHNSWSQ(dim, _SQ_TYPES[spec.codec], spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = spec.ef_construction
    return index


def _hnsw_params(spec: IndexSpec) -> dict[str, Any]:
    return {"M": spec.hnsw_m, "ef_construction": spec.ef_construction, "ef_search": spec.ef_search,
            "codec": spec.codec}


def _sample(vectors: np.ndarray, count: int, seed: int) -> np.ndarray:
    if len(vectors) <= count:
        return np.ascontiguousarray(vectors, dtype=np.float32)
    rows = np.sort(np.random.default_rng(seed).choice(len(vectors), count, replace=False))
    return np.ascontiguousarray(vectors[rows], dtype=np.float32)


def _pad(vectors: np.ndarray, width: int) -> np.ndarray:
    """Append zero columns up to ``width`` (inner products are unchanged)."""
    if vectors.shape[1] == width:
        return vectors
    out = np.zeros((len(vectors), width), np.float32)
    out[:, :vectors.shape[1]] = vectors
    return out


def _drop_dead(labels: np.ndarray, live: LiveFilter) -> np.ndarray:
    """Replace labels of dead slots by -1 (order of the rest is kept)."""
    if live.n_dead == 0:
        return labels
    dead = labels >= 0
    dead[dead] = ~live.live[labels[dead]]
    return np.where(dead, -1, labels)
