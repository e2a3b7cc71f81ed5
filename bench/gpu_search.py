"""The GPU check's search section: flat and IVF CSD search on GPU FAISS against the CPU path (see ``bench.gpu``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

DIM = 768
K = 10
BATCH = 64
N_QUERIES = 256

log = logging.getLogger(__name__)


def _timed(find: Callable[[np.ndarray], list[np.ndarray]], batches: list[np.ndarray]) -> tuple[float, list]:
    """(median seconds per query, slots found per query) over ``batches``; the first batch warms up."""
    find(batches[0])
    per_query, found = [], []
    for rows in batches:
        started = time.perf_counter()
        result = find(rows)
        per_query.append((time.perf_counter() - started) / len(rows))
        found.extend(result)
    return float(np.median(per_query)), found


def _recall(found: list[np.ndarray], truth: list[np.ndarray]) -> float:
    hits = sum(len(set(f[:K].tolist()) & set(t[:K].tolist())) for f, t in zip(found, truth, strict=True))
    return hits / (K * len(truth))


def search_rows(plan: Any, Row: type) -> list:
    from indexer import search
    from indexer.config import IndexSpec
    from indexer.faiss_backend import FaissIndex, gpu_count
    from indexer.synthetic import corpus_chunks, queries
    from indexer.table import VectorTable
    from models.gaussian import augment_items, uncertainty

    n = plan.n
    started = time.perf_counter()
    vectors = np.empty((n, DIM + 1), np.float32)
    unc = np.empty(n, np.float64)
    done = 0
    for mean, logvar in corpus_chunks(n, DIM, seed=0, clusters=min(1024, max(1, n // 64))):
        vectors[done:done + len(mean)] = augment_items(mean, logvar)
        unc[done:done + len(mean)] = uncertainty(logvar.astype(np.float64))
        done += len(mean)
    query_mean, query_logvar = queries(vectors[:, :DIM], N_QUERIES, seed=1)
    query_unc = uncertainty(query_logvar.astype(np.float64))
    table = VectorTable(DIM, vectors, [str(i) for i in range(n)], unc, np.ones(n, bool))
    log.info("search: %d x %d synthetic items in %.1f s", n, DIM, time.perf_counter() - started)

    def finder(index: FaissIndex, spec: IndexSpec, request: search.Request):
        def find(rows: np.ndarray) -> list[np.ndarray]:
            ranked = search.run(table, index, spec, query_mean[rows], query_logvar[rows], query_unc[rows], request)
            return [r.slots for r in ranked]
        return find

    batches = [np.arange(s, s + BATCH) for s in range(0, N_QUERIES, BATCH)]
    singles = [np.array([i]) for i in range(16)]
    gpu_ready = not plan.cpu_only and gpu_count() > 0
    why_not = "--cpu-only" if plan.cpu_only else "FAISS has no GPU here (install faiss-gpu)"
    rows = []

    exact = search.Request(k=K)
    cpu_spec = IndexSpec(kind="flat")
    cpu_flat = FaissIndex.build(cpu_spec, "flat", vectors)
    cpu_batch_s, truth = _timed(finder(cpu_flat, cpu_spec, exact), batches)
    cpu_single_s, _ = _timed(finder(cpu_flat, cpu_spec, exact), singles)
    if gpu_ready:
        gpu_spec = IndexSpec(kind="flat", gpu=True)
        gpu_flat = FaissIndex.build(gpu_spec, "flat", vectors)
        gpu_batch_s, found = _timed(finder(gpu_flat, gpu_spec, exact), batches)
        gpu_single_s, _ = _timed(finder(gpu_flat, gpu_spec, exact), singles)
        recall = _recall(found, truth)
        rows += [Row("search", f"flat exact CSD, {n:,} items, {BATCH} queries a batch", 1 / gpu_batch_s, "QPS",
                     1 / cpu_batch_s, note=f"GPU vs CPU flat scan; recall@10 vs CPU exact {recall:.4f}",
                     extra={"on_gpu": gpu_flat.on_gpu}),
                 Row("search", f"flat exact CSD, {n:,} items, 1 query", 1 / gpu_single_s, "QPS", 1 / cpu_single_s,
                     note=f"GPU {1000 * gpu_single_s:.2f} ms vs CPU {1000 * cpu_single_s:.1f} ms per query")]
        del gpu_flat
    else:
        rows.append(Row("search", f"flat exact CSD, {n:,} items", None, "QPS", 1 / cpu_batch_s, status="skipped",
                        note=f"GPU: {why_not}; CPU baseline {1 / cpu_batch_s:,.0f} QPS in batches of {BATCH}, "
                             f"{1000 * cpu_single_s:.1f} ms for one query"))

    if plan.left() < 30:
        rows.append(Row("search", "IVF-SQ8", status="skipped", note="time budget spent"))
        return rows
    ivf_spec = IndexSpec(kind="ivf", codec="sq8", nprobe=16, refine=4, gpu=gpu_ready)
    started = time.perf_counter()
    ivf = FaissIndex.build(ivf_spec, "ivf", vectors)
    build_s = time.perf_counter() - started
    cpu_ivf_spec = IndexSpec(kind="ivf", codec="sq8", nprobe=16, refine=4)
    cpu_ivf = FaissIndex(ivf.cpu_index, ivf.kind, cpu_ivf_spec, ivf.dim, padded_dim=ivf.padded_dim, params=ivf.params)
    approx = search.Request(k=K)
    cpu_ivf_s, cpu_found = _timed(finder(cpu_ivf, cpu_ivf_spec, approx), batches)
    label = f"IVF-SQ8 ({ivf.params.get('nlist')} lists, nprobe 16, refine 4), {n:,} items, {BATCH} queries a batch"
    if gpu_ready and ivf.on_gpu:
        gpu_ivf_s, found = _timed(finder(ivf, ivf_spec, approx), batches)
        rows.append(Row("search", label, 1 / gpu_ivf_s, "QPS", 1 / cpu_ivf_s,
                        note=f"recall@10 vs exact: GPU {_recall(found, truth):.4f}, CPU "
                             f"{_recall(cpu_found, truth):.4f}; build {build_s:.0f} s", extra={"build_s": build_s}))
    else:
        rows.append(Row("search", label, None, "QPS", 1 / cpu_ivf_s, status="skipped",
                        note=f"GPU: {why_not if not gpu_ready else 'the IVF index stayed on the CPU'}; CPU recall@10 "
                             f"{_recall(cpu_found, truth):.4f}, build {build_s:.1f} s"))
    return rows
