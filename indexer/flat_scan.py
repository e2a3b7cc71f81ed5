"""Exact maximum-inner-product top-k over the vector table's blocks, sharded across threads.

A flat collection keeps its vectors once, in the table (``indexer.table``); this module scans
them in place. FAISS's flat index would hold a second copy of every vector and scans a lone
query on one thread. The rows are cut into tasks (the table's blocks of ``BLOCK_ROWS``, fewer
rows for big query batches so a task's score block stays under ``SCORE_FLOATS``); each task
takes the inner products of every query with its rows in one float32 BLAS call (NumPy's
OpenBLAS, which releases the GIL), drops dead slots and keeps its own top-k; the tasks run
on a process-wide pool of one thread per core, and a merge keeps the global top-k. So one
query uses every core.

While scans run, NumPy's BLAS is held to one thread per call (``threadpoolctl``): the pool
is the parallelism, and OpenBLAS splitting each call over the same cores again made a
1M-row scan several times slower (measured on 2 cores: 1.4 s against 0.1-0.25 s). FAISS's
brute-force kernel (``faiss.knn``) lost to this at every batch size measured (1-64 queries).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

SCORE_FLOATS = 1 << 22  # most float32 scores one task holds at once (16 MiB)
_MIN_TASK_ROWS = 256

_pool: ThreadPoolExecutor | None = None
_pool_pid = 0
_pool_lock = threading.Lock()
_blas_lock = threading.Lock()
_blas_users = 0
_blas_limiter = None
_blas_controller = None


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


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """BLAS calls run on one thread each while any scan is running (process-wide, reference counted)."""
    global _blas_users, _blas_limiter, _blas_controller
    with _blas_lock:
        if _blas_controller is None:
            _blas_controller = _numpy_blas()
        if _blas_users == 0:
            # the libraries' own setters (microseconds; threadpoolctl's limit() takes milliseconds)
            _blas_limiter = [(lib, lib.num_threads) for lib in _blas_controller.lib_controllers]
            for lib, _ in _blas_limiter:
                lib.set_num_threads(1)
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0 and _blas_limiter is not None:
                for lib, threads in _blas_limiter:
                    lib.set_num_threads(threads)
                _blas_limiter = None


def _numpy_blas():
    """threadpoolctl's handle on the BLAS NumPy links (wheels ship it in numpy.libs), else on every BLAS."""
    from pathlib import Path

    from threadpoolctl import ThreadpoolController

    controller = ThreadpoolController()
    numpy_dir = Path(np.__file__).resolve().parent
    mine = [c.filepath for c in controller.lib_controllers if c.user_api == "blas"
            and (Path(c.filepath).resolve().parent.name == "numpy.libs"
                 or numpy_dir in Path(c.filepath).resolve().parents)]
    return controller.select(filepath=mine) if mine else controller.select(user_api="blas")


def _tasks(blocks: list[tuple[int, np.ndarray]], n_queries: int) -> list[tuple[int, np.ndarray]]:
    rows = max(_MIN_TASK_ROWS, SCORE_FLOATS // max(1, n_queries))
    return [(first + start, block[start:start + rows]) for first, block in blocks if len(block)
            for start in range(0, len(block), rows)]


def _block_top(queries: np.ndarray, first: int, rows: np.ndarray, k: int,
               live: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, slots) [Q, <=k] of one task's rows, dead slots scored -inf."""
    scores = queries @ rows.T  # [Q, n] float32
    if live is not None:
        alive = live[first:first + len(rows)]
        if not alive.all():
            scores[:, ~alive] = -np.inf
    keep = min(k, len(rows))
    if keep < len(rows):
        columns = np.argpartition(scores, len(rows) - keep, axis=1)[:, len(rows) - keep:]
        scores = np.take_along_axis(scores, columns, axis=1)
    else:
        columns = np.broadcast_to(np.arange(len(rows)), scores.shape)
    return scores, columns.astype(np.int64) + first


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

    def one(task: tuple[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return _block_top(queries, task[0], task[1], k, live)

    tasks = _tasks(blocks, n_queries)
    with single_threaded_blas():
        parts = list(_executor().map(one, tasks)) if len(tasks) > 1 else [one(tasks[0])]
    scores = np.concatenate([part[0] for part in parts], axis=1)
    slots = np.concatenate([part[1] for part in parts], axis=1)
    # best first; among equal scores the lower slot first (deterministic whatever the task order)
    order = np.lexsort((slots, -scores), axis=1)[:, :k]
    scores = np.take_along_axis(scores, order, axis=1)
    slots = np.take_along_axis(slots, order, axis=1)
    slots[np.isneginf(scores) | (slots < 0)] = -1
    return scores, slots
