"""One process holding a large flat collection: RSS steady vs peak, snapshot, verified reopen, exact-query latency.

    python -m bench.index_memory --n 1000000 [--json out.json]

Run as its own process (``bench.index_bench --memory-n N`` starts it), so its RSS is the
collection's and nothing else's. Through the public API, on a flat (exact CSD) collection of
``--n`` synthetic Gaussians (D = 768, SQLite store):

1. durable ``add`` of every item in batches of 2048, then searches;
2. ``snapshot()``; 3. ``close`` and a verified reopen (every snapshot checksum checked), then
   searches again;

recording the RSS after each phase (steady: the largest of these resting values) and the
process's peak RSS (``VmHWM``) over all of them; the reopen time (until ``Catalog.get``
returns) and the time to the first answer (reopen plus the first search, which waits for the
background verification of a large vectors file: see ``indexer.snapshot.load``); the latency of a single
exact query (median and best of ``--singles``) and of a batch of 64. The baseline for the
single query is the memory-bandwidth bound measured in the same process: the bytes of the
vector table divided by the bandwidth of every core reading a 1 GiB array at once (see
``all_core_bandwidth``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from indexer.flat_scan import scan_threads
from indexer.synthetic import corpus_chunks, queries

DIM = 768
ADD_BATCH = 2048
K = 10

log = logging.getLogger(__name__)


def rss_mb() -> dict[str, float]:
    """This process's resident set now (VmRSS) and at its peak so far (VmHWM), in MB."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            values[line.split(":")[0]] = int(line.split()[1]) / 1024
    return {"rss_mb": values["VmRSS"], "peak_mb": values["VmHWM"]}


def all_core_bandwidth(size_bytes: int = 1 << 30, repeats: int = 3) -> float:
    """GB/s read by every core at once: each thread streams its share of a ``size_bytes`` array.

    Two streaming kernels, best of ``repeats`` each, the faster one counts (the tighter bound):
    ``max`` (SIMD, no arithmetic to speak of) and a product with a vector of ones (a BLAS gemv
    on one thread, the memory-bound kernel the exact scan itself runs).
    """
    from indexer.flat_scan import single_threaded_blas

    threads = scan_threads()
    block = np.ones((size_bytes // 4 // 1024, 1024), np.float32)
    ones = np.ones(1024, np.float32)
    parts = np.array_split(block, threads)
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool, single_threaded_blas():
        for kernel in (np.max, lambda part: part @ ones):
            for _ in range(repeats):
                started = time.perf_counter()
                list(pool.map(kernel, parts))
                best = min(best, time.perf_counter() - started)
    del block, parts
    return size_bytes / best / 1e9


def _latencies(index, query_mean: np.ndarray, query_logvar: np.ndarray, singles: int) -> dict[str, float]:
    index.search(query_mean[:1], query_logvar[:1], k=K)  # warm-up
    one = []
    for i in range(singles):
        started = time.perf_counter()
        index.search(query_mean[i:i + 1], query_logvar[i:i + 1], k=K)
        one.append(time.perf_counter() - started)
    batch = []
    for _ in range(2):
        started = time.perf_counter()
        index.search(query_mean[:64], query_logvar[:64], k=K)
        batch.append(time.perf_counter() - started)
    return {"single_p50_s": float(np.median(one)), "single_best_s": min(one), "batch64_best_s": min(batch)}


def run(n: int, seed: int = 0, clusters: int = 1024, singles: int = 20, folder: Path | None = None) -> dict[str, Any]:
    from indexer import Catalog, IndexSpec

    own_folder = folder is None
    folder = Path(tempfile.mkdtemp(prefix="index-memory-")) if own_folder else folder
    result: dict[str, Any] = {"n": n, "dim": DIM, "threads": scan_threads(), "load_avg_start": os.getloadavg()[0]}
    phases: dict[str, dict[str, float]] = {"start": rss_mb()}
    # the query set comes from a separate small draw: holding the corpus would double the RSS measured
    sample_mean, _ = next(iter(corpus_chunks(4096, DIM, seed, clusters)))
    query_mean, query_logvar = queries(sample_mean, 64, seed=seed + 1)
    del sample_mean
    try:
        with Catalog(folder, auto_snapshot=False) as catalog:
            index = catalog.create("bench", "image", DIM, "synthetic", spec=IndexSpec(kind="flat"))
            started, done = time.perf_counter(), 0
            for mean, logvar in corpus_chunks(n, DIM, seed, clusters, chunk=ADD_BATCH):
                index.add([str(i) for i in range(done, done + len(mean))], mean, logvar)
                done += len(mean)
                del mean, logvar
            result["add_items_per_s"] = n / (time.perf_counter() - started)
            result["after_adds"] = _latencies(index, query_mean, query_logvar, singles)
            phases["after adds and searches"] = rss_mb()
            started = time.perf_counter()
            index.snapshot()
            result["snapshot_s"] = time.perf_counter() - started
            phases["after snapshot"] = rss_mb()
            catalog.unload("bench", snapshot=False)
            phases["after close"] = rss_mb()
            started = time.perf_counter()
            index = catalog.get("bench")
            result["open_s"] = time.perf_counter() - started
            index.search(query_mean[:1], query_logvar[:1], k=K)
            result["first_answer_s"] = time.perf_counter() - started
            phases["after reopen"] = rss_mb()
            result["after_reopen"] = _latencies(index, query_mean, query_logvar, singles)
            phases["after reopen and searches"] = rss_mb()
            result["store_bytes"] = sum(p.stat().st_size for p in (folder / "bench").rglob("*") if p.is_file())
    finally:
        if own_folder:
            shutil.rmtree(folder, ignore_errors=True)
    resting = ("after adds and searches", "after snapshot", "after reopen and searches")
    result["phases"] = phases
    result["steady_mb"] = max(phases[name]["rss_mb"] for name in resting)
    result["peak_mb"] = max(p["peak_mb"] for p in phases.values())
    result["peak_over_steady"] = result["peak_mb"] / result["steady_mb"]
    result["bandwidth_gbs"] = all_core_bandwidth()
    table_bytes = n * (DIM + 1) * 4
    result["bandwidth_bound_s"] = table_bytes / (result["bandwidth_gbs"] * 1e9)
    for phase in ("after_adds", "after_reopen"):
        result[phase]["single_p50_over_bound"] = result[phase]["single_p50_s"] / result["bandwidth_bound_s"]
        result[phase]["single_best_over_bound"] = result[phase]["single_best_s"] / result["bandwidth_bound_s"]
    result["load_avg_end"] = os.getloadavg()[0]
    return result


def markdown(result: dict[str, Any]) -> str:
    lines = [f"Flat collection of {result['n']:,} x D={result['dim']} in one process "
             f"({result['threads']} scan threads):",
             "", "| phase | RSS MB | peak so far MB |", "|---|---:|---:|"]
    for name, values in result["phases"].items():
        lines.append(f"| {name} | {values['rss_mb']:,.0f} | {values['peak_mb']:,.0f} |")
    lines += ["", f"steady {result['steady_mb']:,.0f} MB, peak {result['peak_mb']:,.0f} MB: peak / steady "
                  f"{result['peak_over_steady']:.2f}; durable add {result['add_items_per_s']:,.0f} items/s, snapshot "
                  f"{result['snapshot_s']:.1f} s, reopen {result['open_s']:.2f} s, first answer after "
                  f"{result['first_answer_s']:.2f} s (every checksum verified by then)",
              "", "| when | 1 query p50 s | 1 query best s | bandwidth bound s | p50 / bound | best / bound | "
                  "64 queries s |", "|---|---:|---:|---:|---:|---:|---:|"]
    for phase in ("after_adds", "after_reopen"):
        r = result[phase]
        lines.append(f"| {phase.replace('_', ' ')} | {r['single_p50_s']:.3f} | {r['single_best_s']:.3f} | "
                     f"{result['bandwidth_bound_s']:.3f} | {r['single_p50_over_bound']:.2f} | "
                     f"{r['single_best_over_bound']:.2f} | {r['batch64_best_s']:.2f} |")
    lines.append(f"\nbandwidth (all cores) {result['bandwidth_gbs']:.1f} GB/s; load average "
                 f"{result['load_avg_start']:.1f} at start, {result['load_avg_end']:.1f} at end on "
                 f"{os.cpu_count()} CPUs")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--singles", type=int, default=20, help="single-query searches timed per phase")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folder", type=Path, help="where the collection goes (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = run(args.n, args.seed, singles=args.singles, folder=args.folder)
    print(markdown(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
