"""Exact maximum-inner-product top-k over the vector table's blocks, sharded across threads.

A flat collection keeps its vectors once, in the table (``indexer.table``); this module scans
them in place with FAISS's brute-force kernel (``faiss.knn``: no index, no copy). FAISS's own
flat index would hold a second copy of every vector, and it scans a lone query on one thread.
Here the rows are cut into tasks (the table's blocks of ``BLOCK_ROWS``); for a few queries
(memory-bound) the tasks run on a process-wide thread pool, FAISS releasing the GIL, so one
query uses every core; for a batch of ``PARALLEL_BELOW`` queries or more (compute-bound) the
tasks run one after another, each a BLAS call that already uses every core. Each task keeps
its own top-k and a merge keeps the global one. Dead slots are over-fetched and dropped, or,
in a block with many of them, masked out of a NumPy score block.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# as in faiss_backend: idle OpenMP threads sleep instead of spinning (set before FAISS loads)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import faiss  # noqa: E402

PARALLEL_BELOW = 16  # query batches smaller than this are memory-bound: shard the rows across threads
MAX_OVERFETCH = 1024  # a block with more dead slots than this is masked in NumPy instead

_pool: ThreadPoolExecutor | None = None
_pool_pid = 0
_pool_lock = threading.Lock()


def scan_threads() -> int:
    """Threads the scan uses: the CPUs this process may run on (``PROLIP_SCAN_THREADS`` overrides)."""
    configured = os.environ.get("PROLIP_SCAN_THREADS")
    if configured:
        return max(1, int(configured))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _executor() -> ThreadPoolExecutor:
    """The shared pool, created on first use (and again in a forked child, which inherits no threads)."""
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(max_workers=scan_threads(), thread_name_prefix="flat-scan")
            _pool_pid = os.getpid()
        return _pool


def _block_top(queries: np.ndarray, first: int, rows: np.ndarray, k: int,
               live: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, slots) [Q, <=k] of one block, dead slots excluded."""
    dead = 0 if live is None else len(rows) - int(np.count_nonzero(live[first:first + len(rows)]))
    if dead > MAX_OVERFETCH:
        scores = queries @ rows.T  # [Q, n]
        scores[:, ~live[first:first + len(rows)]] = -np.inf
        keep = min(k, len(rows))
        columns = np.argpartition(scores, len(rows) - keep, axis=1)[:, len(rows) - keep:]
        return np.take_along_axis(scores, columns, axis=1), columns.astype(np.int64) + first
    fetch = min(k + dead, len(rows))
    scores, columns = faiss.knn(queries, np.ascontiguousarray(rows), fetch, metric=faiss.METRIC_INNER_PRODUCT)
    slots = np.where(columns >= 0, columns + first, -1)
    if dead:
        scores[(slots < 0) | ~live[np.maximum(slots, 0)]] = -np.inf
    return scores, slots


def top_k(blocks: list[tuple[int, np.ndarray]], queries: np.ndarray, k: int,
          live: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Inner products [Q, k'] and slots [Q, k'] of the best live rows per query, best first.

    ``blocks``: (first slot, rows [n, W]) in any order; ``queries`` [Q, W] float32; ``live``
    [n_slots] bool, None when every slot is live. k' = min(k, live slots); ties go to the lower
    slot. Pads with slot -1 (score -inf) when fewer live rows exist than asked for.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    n_queries = len(queries)
    total = sum(len(block) for _, block in blocks)
    k = min(k, total)
    if k <= 0 or n_queries == 0:
        return np.zeros((n_queries, 0), np.float32), np.zeros((n_queries, 0), np.int64)

    def one(block: tuple[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return _block_top(queries, block[0], block[1], k, live)

    blocks = [block for block in blocks if len(block[1])]
    if n_queries < PARALLEL_BELOW and len(blocks) > 1:
        parts = list(_executor().map(one, blocks))
    else:
        parts = [one(block) for block in blocks]
    scores = np.concatenate([part[0] for part in parts], axis=1)
    slots = np.concatenate([part[1] for part in parts], axis=1)
    # best first; among equal scores the lower slot first (deterministic whatever the task order)
    order = np.lexsort((slots, -scores), axis=1)[:, :k]
    scores = np.take_along_axis(scores, order, axis=1)
    slots = np.take_along_axis(slots, order, axis=1)
    slots[np.isneginf(scores) | (slots < 0)] = -1
    return scores, slots
