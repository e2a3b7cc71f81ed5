"""What the Milvus backend's uncertainty statistics cost as a collection grows (Milvus Lite, one process).

    python -m bench.milvus_stats --n 20000 --n 200000

Items are small (D = 16: the statistics read only the ``uncertainty`` and ``sample`` columns, so
the vector size does not matter). For each N: the time of one exact percentile (three counted
range filters), of ``stats()`` (a hash-sample read, every item up to 100k) and of ``extremes(10)``
(bisection by counts), median of 5 calls each. Milvus Lite builds no scalar index, so each count
scans the column: the per-item slope is the figure to extrapolate from (docs/sizing-1e9.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import tempfile
import time
from pathlib import Path

import numpy as np

from indexer.synthetic import corpus_chunks

DIM = 16
BATCH = 20_000


def _median_ms(work, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1000)


def run(sizes: list[int]) -> list[dict]:
    from indexer.milvus import MilvusCatalog
    from indexer.milvus.lite import start_server

    rows = []
    folder = Path(tempfile.mkdtemp(prefix="milvus-stats-"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = start_server(folder / "stats.db", port)
    try:
        catalog = MilvusCatalog(f"http://127.0.0.1:{port}", prefix="stats")
        index = catalog.create("stats", "text", DIM, "synthetic")
        done = 0
        for n in sorted(sizes):
            for mean, logvar in corpus_chunks(n - done, DIM, seed=done, clusters=16):
                for start in range(0, len(mean), BATCH):
                    part = slice(start, start + BATCH)
                    index.add([str(done + i) for i in range(len(mean[part]))], mean[part], logvar[part])
                    done += len(mean[part])
            index.snapshot()
            value = float(np.median(index.uncertainties("sample < 8")))
            rows.append({"n": n, "percentile_ms": _median_ms(lambda v=value: index.uncertainty_percentile(v)),
                         "count_ms": _median_ms(index.__len__), "stats_ms": _median_ms(index.stats),
                         "extremes_ms": _median_ms(lambda: index.extremes(10))})
            print(json.dumps(rows[-1]), flush=True)
        catalog.close()
    finally:
        process.terminate()
        process.wait(60)
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, action="append", help="collection sizes (default 20000 and 200000)")
    args = parser.parse_args(argv)
    rows = run(args.n or [20_000, 200_000])
    print("\n| N | count(*) ms | exact percentile ms | stats() ms | extremes(10) ms |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']:,} | {r['count_ms']:.1f} | {r['percentile_ms']:.1f} | {r['stats_ms']:.0f} | "
              f"{r['extremes_ms']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
