"""Child process for the kill -9 test: writes batches and prints each acknowledgement.

Usage: python -m tests.indexer.crash_writer DATA_DIR ROUND

Prints ``add R I`` after ``add`` of batch I returned, ``del R I`` after its delete returned and
``snap R I`` before a snapshot starts; the parent kills it with SIGKILL at some point.
"""

from __future__ import annotations

import sys

import numpy as np

from indexer import Catalog, IndexSpec, UnknownCollectionError

DIM = 16
BATCH = 20
DELETED_PER_BATCH = 5


def batch_ids(round_: int, batch: int) -> list[str]:
    return [f"r{round_}-b{batch}-{j}" for j in range(BATCH)]


def batch_vectors(round_: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(round_ * 100_000 + batch)
    mean = rng.standard_normal((BATCH, DIM)).astype(np.float32)
    mean /= np.linalg.norm(mean, axis=1, keepdims=True)
    return mean, (rng.standard_normal((BATCH, DIM)) - 4).astype(np.float32)


def main(data_dir: str, round_: int) -> None:
    catalog = Catalog(data_dir, auto_snapshot=True)
    try:
        index = catalog.get("crash")
    except UnknownCollectionError:
        index = catalog.create("crash", "image", DIM, "crash-test", spec=IndexSpec(kind="hnsw", codec="flat"))
    for batch in range(10_000):
        mean, logvar = batch_vectors(round_, batch)
        ids = batch_ids(round_, batch)
        index.add(ids, mean, logvar, [{"round": round_, "batch": batch, "j": j} for j in range(BATCH)])
        print(f"add {round_} {batch}", flush=True)
        if batch % 3 == 2:
            index.delete(ids[:DELETED_PER_BATCH])
            print(f"del {round_} {batch}", flush=True)
        if batch % 10 == 9:
            print(f"snap {round_} {batch}", flush=True)
            index.snapshot(rebuild=batch % 20 == 19)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
