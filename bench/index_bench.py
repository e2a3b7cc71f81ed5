"""Benchmark of the Gaussian index: exact CSD search, ANN indexes and the two-stage path against brute force.

    python -m bench.index_bench --n 100000 --n 1000000 [--json artifacts/index_bench.json]

For each corpus size N (synthetic Gaussians, D = 768, ``indexer.synthetic``: clustered means,
log-normal uncertainties; ``--clusters 0`` for isotropic means) it measures, on batches of 64
queries:

- brute force the way the research code ranks (ProLIP ``zero_shot_unc.py``): the full score
  matrix mu_q . mu_x - S_x / 2, then a stable argsort of every row;
- the exact path (flat index: one FAISS inner-product search of [mu_q, 1] x [mu_x, -S_x/2], then
  the exact re-score ``GaussianIndex.search`` does) with its recall@10, QPS and the speed-up;
- the roofline for that path: one pass over the N x (D+1) float32 vectors cannot beat
  max(bytes / memory bandwidth, 2 Q N (D+1) / matmul rate); both rates are measured in the
  same run (a big NumPy sum, a square sgemm), best of three, right before the flat timing;
- ANN indexes (IVF-SQ8 / IVF-PQ over nprobe, HNSW over efSearch): build time, memory, QPS and
  recall@10 against exact CSD;
- the two-stage path (mean-cosine shortlist of k', CSD re-rank) recall@10 for several k';
- metadata filters (``indexer.search.Selection``): the exact path and IVF-SQ8 with 1 %, 10 % and
  100 % of the items selected at random, beside the same index unfiltered in the same run, with
  recall@10 against brute force *within* the filter;
- with ``--api-max-n`` >= N, the public API end to end: durable ``add`` throughput into
  SQLite (items carry a small metadata dict), snapshot, reopen (checksum verification) and
  ``search`` QPS, unfiltered and with a metadata filter of each selectivity (the filter evaluated
  per call from the in-memory metadata index, whose one-off build is timed too);
- with ``--milvus-max-n`` >= N, the Milvus backend through the same public API, on Milvus Lite's
  server started for the run (one local process: FLAT and IVF_FLAT only; not the speed of a
  Milvus Distributed cluster, whose query nodes share the work): insert rate, recall@10 against
  exact CSD and QPS for FLAT and for IVF_FLAT over nprobe, the server's memory and file size per
  item, and the cost of an exact uncertainty percentile (three counted range filters);
- with ``--memory-n M``, a flat collection of M items alone in a child process
  (``bench.index_memory``): steady vs peak RSS over adds, snapshot and reopen, the reopen
  time, and single-query latency against the all-core memory-bandwidth bound.

Recall is tie-aware: a returned item counts when its exact (float64) CSD is within 1e-6 of the
10th best. The machine is shared, so every speed-up is a ratio of timings from the same run.
``run(sizes)`` returns the rows as dicts for a combined benchmark entry point.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from indexer import search
from indexer.config import IndexSpec
from indexer.faiss_backend import FaissIndex, SearchKnobs
from indexer.synthetic import corpus_chunks, queries
from indexer.table import VectorTable
from models.gaussian import augment_items, uncertainty

log = logging.getLogger(__name__)

DIM = 768
BATCH = 64
K = 10
TIE_TOLERANCE = 1e-6
SHORTLISTS = (10, 20, 50, 100, 200, 500, 1000)
FILTER_FRACTIONS = (0.01, 0.1, 1.0)  # share of the items a filter selects
FILTER_KNOBS = SearchKnobs(nprobe=16)  # the IVF-SQ8 setting measured with filters
ADD_BATCH = 2048  # items per durable add call in the API run


@dataclass(frozen=True)
class Config:
    """One ANN index configuration and the per-call settings swept on it."""

    name: str
    kind: str
    spec: IndexSpec
    sweep: tuple[SearchKnobs, ...]

    def label(self, knobs: SearchKnobs) -> str:
        refine = knobs.refine or self.spec.refine
        if self.kind == "hnsw":
            return f"M={self.spec.hnsw_m} efC={self.spec.ef_construction} efSearch={knobs.ef_search} refine={refine}"
        return f"nlist auto, nprobe={knobs.nprobe} refine={refine}"


def ann_configs(n: int, skip_hnsw_above: int) -> list[Config]:
    configs = [
        Config("ivf-sq8", "ivf", IndexSpec(kind="ivf", codec="sq8", refine=4),
               tuple(SearchKnobs(nprobe=p) for p in (8, 16, 32, 64))),
        Config("ivf-pq4fs", "ivf", IndexSpec(kind="ivf", codec="pq"),
               tuple(SearchKnobs(nprobe=p, refine=r) for p, r in ((16, 8), (16, 32), (32, 32), (64, 64)))),
    ]
    if n <= skip_hnsw_above:
        configs.append(Config("hnsw", "hnsw", IndexSpec(kind="hnsw", codec="flat", hnsw_m=32, ef_construction=64),
                              tuple(SearchKnobs(ef_search=e) for e in (16, 32, 64, 128))))
    return configs


# ----------------------------------------------------------------------------- machine rates

def _best_seconds(work: Callable[[], Any], repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def machine_rates(sum_bytes: int = 1 << 30, matmul_size: int = 3072) -> dict[str, float]:
    """Memory bandwidth of every core at once (GB/s, NumPy sums over ``sum_bytes``) and fp32 matmul rate (GFLOP/s)."""
    from bench.index_memory import all_core_bandwidth

    bandwidth = all_core_bandwidth(sum_bytes)
    square = np.random.default_rng(0).standard_normal((matmul_size, matmul_size), dtype=np.float32)
    gflops = 2 * matmul_size ** 3 / _best_seconds(lambda: square @ square) / 1e9
    return {"bandwidth_gbs": bandwidth, "gflops": gflops}


def load_average() -> float:
    return os.getloadavg()[0]


# ----------------------------------------------------------------------------- data and ground truth

@dataclass
class Data:
    vectors: np.ndarray  # [N, D+1] float32 augmented items [mu, -S/2]
    item_uncertainty: np.ndarray  # [N] float64
    query_mean: np.ndarray  # [Q, D] float32
    query_logvar: np.ndarray  # [Q, D] float32
    query_uncertainty: np.ndarray  # [Q] float64
    truth_kth: np.ndarray | None = None  # [Q] exact 10th-best CSD
    truth_ids: np.ndarray | None = None  # [Q, K]

    @property
    def means(self) -> np.ndarray:
        return self.vectors[:, :DIM]  # a strided view: BLAS reads it in place


def make_data(n: int, n_queries: int, seed: int, clusters: int) -> Data:
    vectors = np.empty((n, DIM + 1), np.float32)
    unc = np.empty(n, np.float64)
    start = 0
    for mean, logvar in tqdm(corpus_chunks(n, DIM, seed, clusters), total=-(-n // 65536), desc=f"data N={n}",
                             leave=False):
        vectors[start:start + len(mean)] = augment_items(mean, logvar)
        unc[start:start + len(mean)] = uncertainty(logvar.astype(np.float64))
        start += len(mean)
    query_mean, query_logvar = queries(vectors[:, :DIM], n_queries, seed=seed + 1)
    return Data(vectors, unc, query_mean, query_logvar, uncertainty(query_logvar.astype(np.float64)))


def exact_csd(data: Data, rows: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """Float64 CSD of queries ``rows`` against item ``slots`` [len(rows), C]."""
    items = data.vectors[slots][..., :DIM].astype(np.float64)  # [q, C, D]
    cosine = np.einsum("qcd,qd->qc", items, data.query_mean[rows].astype(np.float64))
    return 2 - 2 * cosine + data.query_uncertainty[rows][:, None] + data.item_uncertainty[slots]


def ground_truth(data: Data, pool: int = 64) -> None:
    """Exact top-K by CSD for every query: float32 scores pick a pool, float64 orders it."""
    kth, ids = [], []
    half_unc = (data.item_uncertainty / 2).astype(np.float32)
    for start in tqdm(range(0, len(data.query_mean), BATCH), desc="ground truth", leave=False):
        rows = np.arange(start, min(start + BATCH, len(data.query_mean)))
        scores = data.query_mean[rows] @ data.means.T - half_unc  # [q, N], higher = lower CSD
        candidates = np.argpartition(-scores, pool, axis=1)[:, :pool]
        values = exact_csd(data, rows, candidates)
        order = np.argsort(values, axis=1)[:, :K]
        ids.append(np.take_along_axis(candidates, order, 1))
        kth.append(np.take_along_axis(values, order, 1)[:, -1])
    data.truth_kth, data.truth_ids = np.concatenate(kth), np.concatenate(ids)


def recall_at_k(data: Data, rows: np.ndarray, found: list[np.ndarray], truth_kth: np.ndarray | None = None) -> float:
    """Share of the K slots found per query whose exact CSD is within tolerance of the true K-th
    (``truth_kth``: of a filtered set; default the whole corpus's)."""
    kth = data.truth_kth if truth_kth is None else truth_kth
    hits = 0
    for row, slots in zip(rows, found, strict=True):
        slots = np.asarray(slots[:K], dtype=np.int64)
        if len(slots):
            values = exact_csd(data, np.array([row]), slots[None, :])[0]
            hits += int((values <= kth[row] + TIE_TOLERANCE).sum())
    return hits / (K * len(rows))


def filtered_kth(data: Data, selected: np.ndarray) -> np.ndarray:
    """The exact K-th best CSD [Q] among the ``selected`` slots only (brute force, float64 re-score)."""
    kth = []
    half_unc = (data.item_uncertainty[selected] / 2).astype(np.float32)
    for start in range(0, len(data.query_mean), BATCH):
        rows = np.arange(start, min(start + BATCH, len(data.query_mean)))
        scores = data.query_mean[rows] @ data.means[selected].T - half_unc  # [q, M]
        pool = min(64, len(selected) - 1)
        candidates = selected[np.argpartition(-scores, pool, axis=1)[:, :pool + 1]]
        kth.append(np.sort(exact_csd(data, rows, candidates), axis=1)[:, K - 1])
    return np.concatenate(kth)


# ----------------------------------------------------------------------------- timed searches

def brute_force(data: Data, rows: np.ndarray) -> np.ndarray:
    """Research-code ranking: the whole score matrix, then a stable argsort of each row."""
    logits = data.query_mean[rows] @ data.means.T  # [q, N]
    logits -= (data.item_uncertainty / 2).astype(np.float32)[None, :]
    return np.argsort(-logits, axis=1, kind="stable")[:, :K]


def timed_batches(data: Data, batches: Iterable[np.ndarray],
                  find: Callable[[np.ndarray], list[np.ndarray]], truth_kth: np.ndarray | None = None
                  ) -> dict[str, float]:
    """QPS from the median and the best batch time, and recall@K, of ``find``; one warm-up batch is not counted.

    The machine is shared, so a batch can lose its cores to another process: the median is
    the typical speed, the best batch the speed this code reaches when it has the cores.
    """
    batches = list(batches)
    find(batches[0])
    seconds, found_all, rows_all = [], [], []
    for rows in batches:
        started = time.perf_counter()
        found = find(rows)
        seconds.append((time.perf_counter() - started) / len(rows))
        found_all.extend(found)
        rows_all.extend(rows.tolist())
    return {"qps": 1 / float(np.median(seconds)), "qps_best": 1 / min(seconds),
            "recall_at_10": recall_at_k(data, np.array(rows_all), found_all, truth_kth)}


def searcher(table: VectorTable, index: FaissIndex, spec: IndexSpec, data: Data,
             request: search.Request, selection: search.Selection | None = None
             ) -> Callable[[np.ndarray], list[np.ndarray]]:
    """The exact code path of ``GaussianIndex.search`` minus locking and metadata (and the filter's evaluation:
    ``selection`` is the slots a filter kept)."""
    def find(rows: np.ndarray) -> list[np.ndarray]:
        ranked = search.run(table, index, spec, data.query_mean[rows], data.query_logvar[rows],
                            data.query_uncertainty[rows], request, selection=selection)
        return [r.slots for r in ranked]
    return find


def random_selections(n: int, seed: int) -> dict[float, search.Selection]:
    """Uncorrelated filters selecting each of FILTER_FRACTIONS of the n slots."""
    draw = np.random.default_rng(seed + 7).random(n)
    return {fraction: search.Selection.of(draw < fraction) for fraction in FILTER_FRACTIONS}


def paired_batches(data: Data, batches: list[np.ndarray], baseline: Callable[[np.ndarray], list[np.ndarray]],
                   find: Callable[[np.ndarray], list[np.ndarray]], truth_kth: np.ndarray) -> dict[str, float]:
    """``find`` and ``baseline`` timed on the same batches, alternately (one warm-up each, not counted).

    On a shared machine the load drifts between two separate timings; alternating batch by batch
    lets both see the same conditions, and the ratio is the median of the per-batch ratios.
    """
    baseline(batches[0])
    find(batches[0])
    base_s, seconds, ratios, found_all, rows_all = [], [], [], [], []
    for rows in batches:
        started = time.perf_counter()
        baseline(rows)
        base = (time.perf_counter() - started) / len(rows)
        started = time.perf_counter()
        found = find(rows)
        took = (time.perf_counter() - started) / len(rows)
        base_s.append(base)
        seconds.append(took)
        ratios.append(base / took)
        found_all.extend(found)
        rows_all.extend(rows.tolist())
    return {"qps": 1 / float(np.median(seconds)), "qps_best": 1 / min(seconds),
            "unfiltered_qps": 1 / float(np.median(base_s)), "vs_unfiltered": float(np.median(ratios)),
            "recall_at_10": recall_at_k(data, np.array(rows_all), found_all, truth_kth)}


def bench_filters(data: Data, table: VectorTable, index: FaissIndex, spec: IndexSpec, request: search.Request,
                  selections: dict[float, search.Selection], truths: dict[float, np.ndarray],
                  batches: list[np.ndarray], brute_qps: float, method: str, emit: Callable[..., None]) -> None:
    """One row per selectivity: QPS within the filter beside the unfiltered QPS of the same index, timed alternately."""
    baseline = searcher(table, index, spec, data, request)
    for fraction, selection in selections.items():
        timing = paired_batches(data, batches, baseline, searcher(table, index, spec, data, request, selection),
                                truths[fraction])
        emit(method=method, setting=f"{fraction:.0%} selected", selected=selection.count, filter_fraction=fraction,
             speedup_vs_brute=timing["qps"] / brute_qps, **timing)


def _batches(n_queries: int, limit: int | None = None) -> list[np.ndarray]:
    batches = [np.arange(s, min(s + BATCH, n_queries)) for s in range(0, n_queries, BATCH)]
    return batches[:limit] if limit else batches


# ----------------------------------------------------------------------------- one corpus size

def bench_size(n: int, n_queries: int, seed: int, clusters: int, brute_batches: int, skip_hnsw_above: int,
               api_max_n: int, milvus_max_n: int = 0) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def emit(**row: Any) -> None:
        row = {"n": n, "dim": DIM, "batch": BATCH, "clusters": clusters, "load_avg": round(load_average(), 2),
               **row}
        rows.append(row)
        log.info("%s", json.dumps(row))

    data = make_data(n, n_queries, seed, clusters)
    ground_truth(data)
    batches = _batches(n_queries)

    brute = timed_batches(data, _batches(n_queries, brute_batches + 1), lambda r: list(brute_force(data, r)))
    brute_qps = brute["qps"]
    emit(method="brute-force", setting="numpy score matrix + stable argsort", **brute)

    ids = [str(i) for i in range(n)]
    table = VectorTable(DIM, data.vectors, ids, data.item_uncertainty, np.ones(n, bool))

    # exact path, with the roofline measured just before
    started = time.perf_counter()
    flat_spec = IndexSpec(kind="flat")
    flat = FaissIndex.build(flat_spec, "flat", data.vectors)
    build = time.perf_counter() - started
    rates = machine_rates()
    exact = searcher(table, flat, flat_spec, data, search.Request(k=K))
    timing = timed_batches(data, batches, exact)
    bytes_per_pass = n * (DIM + 1) * 4
    flops_per_batch = 2 * BATCH * n * (DIM + 1)
    roofline_s = max(bytes_per_pass / (rates["bandwidth_gbs"] * 1e9), flops_per_batch / (rates["gflops"] * 1e9))
    achieved_s = BATCH / timing["qps_best"]  # best against best: the rates are best-of-three too
    emit(method="exact (flat)", setting="sharded scan of [mu,1]x[mu,-S/2] over the table + exact re-score",
         build_s=build,
         index_bytes=bytes_per_pass, speedup_vs_brute=timing["qps"] / brute_qps, **timing,
         roofline_s_per_batch=roofline_s, achieved_s_per_batch=achieved_s, roofline_fraction=roofline_s / achieved_s,
         **rates)
    selections = random_selections(n, seed)
    truths = {fraction: (data.truth_kth if fraction == 1.0 else filtered_kth(data, np.flatnonzero(sel.mask)))
              for fraction, sel in selections.items()}
    bench_filters(data, table, flat, flat_spec, search.Request(k=K), selections, truths, batches, brute_qps,
                  "exact (flat) + filter", emit)

    for shortlist in SHORTLISTS:
        request = search.Request(k=K, exact=False, shortlist=shortlist)
        timing = timed_batches(data, batches[:3], searcher(table, flat, flat_spec, data, request))
        emit(method="two-stage (flat)", setting=f"k'={shortlist}", speedup_vs_brute=timing["qps"] / brute_qps,
             **timing)
    del flat, exact
    gc.collect()

    centroids = None  # IVF indexes after the first reuse its coarse centroids (k-means at 1M takes minutes)
    for config in ann_configs(n, skip_hnsw_above):
        started = time.perf_counter()
        index = FaissIndex.build(config.spec, config.kind, data.vectors, centroids=centroids)
        build = time.perf_counter() - started
        if config.kind == "ivf" and centroids is None:
            centroids = index.centroids()
            build_note = "incl. k-means"
        else:
            build_note = "reused centroids" if config.kind == "ivf" else ""
        for knobs in config.sweep:
            request = search.Request(k=K, knobs=knobs)
            timing = timed_batches(data, batches, searcher(table, index, config.spec, data, request))
            emit(method=config.name, setting=config.label(knobs), build_s=build, build_note=build_note,
                 index_bytes=index.memory_bytes(), speedup_vs_brute=timing["qps"] / brute_qps, **timing,
                 **index.describe())
            if config.name == "ivf-sq8" and knobs == FILTER_KNOBS:
                bench_filters(data, table, index, config.spec, request, selections, truths, batches, brute_qps,
                              f"{config.name} + filter ({config.label(knobs)})", emit)
        del index
        gc.collect()
    if n > skip_hnsw_above:
        emit(method="hnsw", setting=f"skipped above N={skip_hnsw_above} (build time on 2 shared cores)")

    if n <= api_max_n:
        rows.extend(bench_api(n, seed, clusters, data, brute_qps, emit, truths))
    if n <= milvus_max_n:
        bench_milvus(n, seed, clusters, data, brute_qps, emit)
    return rows


def bench_api(n: int, seed: int, clusters: int, data: Data, brute_qps: float, emit: Callable[..., None],
              truths: dict[float, np.ndarray]) -> list:
    """The public API end to end: durable adds into SQLite, snapshot, verified reopen, search (also filtered)."""
    from indexer import Catalog

    folder = Path(tempfile.mkdtemp(prefix="index-bench-"))
    try:
        with Catalog(folder, auto_snapshot=False) as catalog:
            index = catalog.create("bench", "image", DIM, "synthetic", spec=IndexSpec(kind="flat"))
            started, done = time.perf_counter(), 0
            progress = tqdm(total=n, desc="API add", unit="item", leave=False)
            draw = np.random.default_rng(seed + 7).random(n)  # the draw random_selections makes: the same subsets
            for chunk_mean, chunk_logvar in corpus_chunks(n, DIM, seed, clusters):  # same draws as make_data
                for start in range(0, len(chunk_mean), ADD_BATCH):
                    mean, logvar = chunk_mean[start:start + ADD_BATCH], chunk_logvar[start:start + ADD_BATCH]
                    ids = range(done, done + len(mean))
                    index.add([str(i) for i in ids], mean, logvar, [{"selector": float(draw[i])} for i in ids])
                    done += len(mean)
                    progress.update(len(mean))
            progress.close()
            add_s = time.perf_counter() - started
            started = time.perf_counter()
            index.snapshot()
            snapshot_s = time.perf_counter() - started
            catalog.unload("bench", snapshot=False)
            started = time.perf_counter()
            index = catalog.get("bench")
            open_s = time.perf_counter() - started

            def find(rows: np.ndarray) -> list[np.ndarray]:
                hits = index.search(data.query_mean[rows], data.query_logvar[rows], k=K)
                return [np.array([int(h.id) for h in q]) for q in hits]

            timing = timed_batches(data, _batches(len(data.query_mean)), find)
            emit(method="API GaussianIndex.search (flat, SQLite)", setting="csd, exact, k=10, metadata fetched",
                 speedup_vs_brute=timing["qps"] / brute_qps, **timing, add_items_per_s=n / add_s,
                 snapshot_s=snapshot_s, open_s=open_s,
                 store_bytes=sum(p.stat().st_size for p in (folder / "bench").rglob("*") if p.is_file()))
            started = time.perf_counter()
            index.count_matching({"field": "selector", "range": {"lt": 0.5}})  # the first filter builds the index
            build_s = time.perf_counter() - started
            for fraction in FILTER_FRACTIONS:
                where = {"field": "selector", "range": {"lt": fraction}}

                def find_filtered(rows: np.ndarray, where=where) -> list[np.ndarray]:
                    hits = index.search(data.query_mean[rows], data.query_logvar[rows], k=K, filter=where)
                    return [np.array([int(h.id) for h in q]) for q in hits]

                filtered = paired_batches(data, _batches(len(data.query_mean)), find, find_filtered, truths[fraction])
                emit(method="API GaussianIndex.search + filter (flat, SQLite)", setting=f"{fraction:.0%} selected",
                     filter_fraction=fraction, speedup_vs_brute=filtered["qps"] / brute_qps,
                     metadata_index_build_s=build_s, metadata_index_bytes=index.stats()["filter_index"]["bytes"],
                     **filtered)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return []


MILVUS_NPROBES = (8, 32, 128)


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def bench_milvus(n: int, seed: int, clusters: int, data: Data, brute_qps: float, emit: Callable[..., None]) -> None:
    """The Milvus backend (``indexer.milvus``) on a Milvus Lite server: FLAT (exact) and IVF_FLAT."""
    import socket

    from indexer.milvus import MilvusCatalog
    from indexer.milvus.lite import start_server

    folder = Path(tempfile.mkdtemp(prefix="milvus-bench-"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = start_server(folder / "bench.db", port)
    try:
        catalog = MilvusCatalog(f"http://127.0.0.1:{port}", prefix="bench")
        nlist = max(16, min(1024, 2 ** round(np.log2(4 * np.sqrt(n)))))
        for kind, spec, sweep in (("flat", IndexSpec(kind="flat"), (None,)),
                                  ("ivf", IndexSpec(kind="ivf", codec="flat", nlist=nlist, refine=4), MILVUS_NPROBES)):
            rss_before = _rss_bytes(process.pid)
            index = catalog.create(f"bench-{kind}", "image", DIM, "synthetic", spec=spec)
            started, done = time.perf_counter(), 0
            for chunk_mean, chunk_logvar in corpus_chunks(n, DIM, seed, clusters):  # the draws of make_data
                for start in range(0, len(chunk_mean), ADD_BATCH):
                    mean, logvar = chunk_mean[start:start + ADD_BATCH], chunk_logvar[start:start + ADD_BATCH]
                    index.add([str(i) for i in range(done, done + len(mean))], mean, logvar)
                    done += len(mean)
            add_s = time.perf_counter() - started
            started = time.perf_counter()
            index.snapshot()  # flush: seal the segments (Milvus builds the index on sealed segments)
            flush_s = time.perf_counter() - started
            value = float(np.median(data.item_uncertainty))
            started = time.perf_counter()
            for _ in range(5):
                index.uncertainty_percentile(value)
            percentile_ms = (time.perf_counter() - started) / 5 * 1000
            for nprobe in sweep:
                def find(rows: np.ndarray, nprobe: int | None = nprobe, index: Any = index) -> list[np.ndarray]:
                    hits = index.search(data.query_mean[rows], data.query_logvar[rows], k=K, nprobe=nprobe)
                    return [np.array([int(h.id) for h in q]) for q in hits]

                timing = timed_batches(data, _batches(len(data.query_mean)), find)
                setting = "exact CSD, k=10" if nprobe is None else f"nlist={nlist}, nprobe={nprobe}, refine=4"
                emit(method=f"Milvus Lite {index.index_choice.index_type} (API)", setting=setting,
                     speedup_vs_brute=timing["qps"] / brute_qps, **timing, add_items_per_s=n / add_s,
                     milvus_flush_s=flush_s, milvus_percentile_ms=percentile_ms,
                     milvus_rss_growth_bytes=_rss_bytes(process.pid) - rss_before,
                     milvus_file_bytes=sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()))
            catalog.drop(f"bench-{kind}")
        catalog.close()
    finally:
        process.terminate()
        process.wait(60)
        shutil.rmtree(folder, ignore_errors=True)


# ----------------------------------------------------------------------------- reporting

def run(sizes: Iterable[int], n_queries: int = 256, seed: int = 0, clusters: int = 1024, brute_batches: int = 2,
        skip_hnsw_above: int = 200_000, api_max_n: int = 100_000, milvus_max_n: int = 0) -> list[dict[str, Any]]:
    """Benchmark every size; returns one dict per measured row (see ``markdown`` for the columns)."""
    rows: list[dict[str, Any]] = []
    for n in sizes:
        rows.extend(bench_size(n, n_queries, seed, clusters, brute_batches, skip_hnsw_above, api_max_n,
                               milvus_max_n))
        gc.collect()
    return rows


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| N | method | setting | build s | index MB | QPS median | QPS best | x brute | recall@10 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mb = r.get("index_bytes")
        build = _fmt(r.get("build_s")) + (f" ({r['build_note']})" if r.get("build_note") else "")
        lines.append(f"| {r['n']:,} | {r['method']} | {r['setting']} | {build} | "
                     f"{_fmt(mb / 1e6 if mb else None)} | {_fmt(r.get('qps'))} | {_fmt(r.get('qps_best'))} | "
                     f"{_fmt(r.get('speedup_vs_brute'))} | {_fmt(r.get('recall_at_10'), 4)} |")
    roof = [r for r in rows if "roofline_s_per_batch" in r]
    if roof:
        lines += ["", "| N | memory GB/s | matmul GFLOP/s | roofline s/batch | exact path s/batch (best) | achieved |",
                  "|---|---|---|---|---|---|"]
        for r in roof:
            lines.append(f"| {r['n']:,} | {r['bandwidth_gbs']:.1f} | {r['gflops']:.1f} | "
                         f"{r['roofline_s_per_batch']:.3f} | {r['achieved_s_per_batch']:.3f} | "
                         f"{100 * r['roofline_fraction']:.0f} % |")
    filtered = [r for r in rows if "vs_unfiltered" in r]
    if filtered:
        lines += ["", "Metadata filters (random subsets; recall@10 against brute force within the filter; each batch "
                      "timed right after the same batch unfiltered; ratio = median of the per-batch ratios):", "",
                  "| N | path | selected | QPS median | unfiltered QPS (same batches) | ratio | recall@10 |",
                  "|---|---|---|---|---|---|---|"]
        for r in filtered:
            lines.append(f"| {r['n']:,} | {r['method']} | {r['setting']} | {_fmt(r['qps'])} | "
                         f"{_fmt(r['unfiltered_qps'])} | {r['vs_unfiltered']:.2f}x | {_fmt(r['recall_at_10'], 4)} |")
        build = next((r for r in filtered if "metadata_index_build_s" in r), None)
        if build:
            lines += ["", f"Metadata index at N={build['n']:,}: built in {build['metadata_index_build_s']:.2f} s on "
                          f"the first filtered call, {build['metadata_index_bytes'] / 1e6:.1f} MB."]
    api = [r for r in rows if "add_items_per_s" in r and "milvus_flush_s" not in r]
    for r in api:
        lines += ["", f"API at N={r['n']:,}: durable add {r['add_items_per_s']:,.0f} items/s, snapshot "
                      f"{r['snapshot_s']:.1f} s, verified reopen {r['open_s']:.1f} s, store+snapshot "
                      f"{r['store_bytes'] / 1e9:.2f} GB on disk"]
    seen = set()
    for r in (r for r in rows if "milvus_flush_s" in r):
        if (r["n"], r["method"]) in seen:
            continue
        seen.add((r["n"], r["method"]))
        rss, disk = r["milvus_rss_growth_bytes"], r["milvus_file_bytes"]
        lines += ["", f"{r['method']} at N={r['n']:,}: insert {r['add_items_per_s']:,.0f} items/s (upserts of "
                      f"{ADD_BATCH}), flush {r['milvus_flush_s']:.1f} s, server memory +{rss / 1e6:,.0f} MB "
                      f"({rss / r['n']:,.0f} B/item), data file {disk / 1e6:,.0f} MB ({disk / r['n']:,.0f} B/item), "
                      f"exact percentile {r['milvus_percentile_ms']:.1f} ms"]
    loads = [r["load_avg"] for r in rows]
    lines += ["", f"1-minute load average during the run: {min(loads):.1f} to {max(loads):.1f} on "
                  f"{os.cpu_count()} CPUs (the machine is shared)."]
    return "\n".join(lines)


def memory_run(n: int) -> dict[str, Any]:
    """``bench.index_memory`` for ``n`` items in a child process (so the RSS is the collection's alone)."""
    with tempfile.TemporaryDirectory(prefix="index-memory-json-") as folder:
        out = Path(folder) / "memory.json"
        subprocess.run([sys.executable, "-m", "bench.index_memory", "--n", str(n), "--json", str(out)],
                       cwd=Path(__file__).resolve().parents[1], check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, action="append", help="corpus size (repeatable; default 100000)")
    parser.add_argument("--queries", type=int, default=256, help="queries per size (default 256)")
    parser.add_argument("--clusters", type=int, default=1024, help="synthetic clusters; 0 = isotropic means")
    parser.add_argument("--brute-batches", type=int, default=2, help="timed brute-force batches (slow at 1M)")
    parser.add_argument("--skip-hnsw-above", type=int, default=200_000, help="HNSW build limit (N)")
    parser.add_argument("--api-max-n", type=int, default=100_000, help="largest N for the end-to-end API run")
    parser.add_argument("--milvus-max-n", type=int, default=100_000,
                        help="largest N for the Milvus backend on Milvus Lite (0: skip)")
    parser.add_argument("--memory-n", type=int, default=0,
                        help="also measure RSS, reopen and single-query latency of a flat collection of this many "
                             "items in a child process (0: skip)")
    parser.add_argument("--threads", type=int, help="FAISS OpenMP threads (default: FAISS's own, all cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    rows = run(args.n or [100_000], args.queries, args.seed, args.clusters, args.brute_batches,
               args.skip_hnsw_above, args.api_max_n, args.milvus_max_n)
    text = markdown(rows)
    if args.memory_n:
        from bench.index_memory import markdown as memory_markdown

        memory = memory_run(args.memory_n)
        rows.append({"method": "memory (flat, one process)", "setting": "adds, snapshot, verified reopen",
                     **{k: v for k, v in memory.items() if k != "n"}, "n": memory["n"]})
        text += "\n\n" + memory_markdown(memory)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
