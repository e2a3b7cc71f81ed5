"""Export and import rates beside reading the store alone, in the same run.

    python -m bench.export_bench --n 100000 [--json out.json]

A collection of N synthetic Gaussians (D = 768, ``indexer.synthetic``, metadata of a few keys per
item) is built in a scratch folder, then, best of ``--repeats``:

- baseline: ``GaussianIndex.iter_items`` read to the end and dropped (the SQLite store's pages,
  CRC-checked and decoded): what any export must at least pay;
- ``export`` to Parquet and to the clip-retrieval .npy layout (``indexer.exchange``), with the
  peak growth of the process's resident memory while it runs (export streams page by page, so
  it must not grow with N; Arrow's mimalloc pool keeps some freed pages, ~100 MB for Parquet);
- ``import`` of the Parquet file into a new collection (two passes: validate all, then upsert),
  beside its own baseline: ``add`` of the same arrays in the same page size, nothing read.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from indexer import Catalog
from indexer.exchange import PAGE_ROWS, export_collection, import_vectors
from indexer.synthetic import corpus_chunks

DIM = 768
MODEL = "bench-model"


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class PeakRss:
    """Samples the resident set size every 5 ms while a block runs; ``growth`` = peak - start."""

    def __enter__(self):
        self.start = self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def growth(self) -> int:
        return self.peak - self.start


def best_of(repeats: int, run: Callable[[int], None]) -> tuple[float, int]:
    """(best seconds, largest RSS growth) over ``repeats`` runs of ``run(attempt)``."""
    best, growth = float("inf"), 0
    for attempt in range(repeats):
        with PeakRss() as rss:
            started = time.perf_counter()
            run(attempt)
            best = min(best, time.perf_counter() - started)
        growth = max(growth, rss.growth)
    return best, growth


def build(catalog: Catalog, n: int):
    index = catalog.create("bench", modality="image", dim=DIM, model_id=MODEL)
    start = 0
    for mean, logvar in corpus_chunks(n, DIM, seed=0, chunk=PAGE_ROWS):
        ids = [f"photo-{start + i:08d}.jpg" for i in range(len(mean))]
        metadata = [{"path": item_id, "taken_at": "2024-05-01T14:03:22", "camera_make": "Apple", "width": 4032}
                    for item_id in ids]
        index.add(ids, mean, logvar, metadata)
        start += len(mean)
    return index


def run(n: int, repeats: int, scratch: Path) -> list[dict]:
    with Catalog(scratch / "data", auto_snapshot=False) as catalog:
        index = build(catalog, n)
        baseline, base_rss = best_of(repeats, lambda _: sum(len(page) for page in index.iter_items()))
        rows = [{"what": "read the store (iter_items), baseline", "items": n, "seconds": baseline,
                 "items_per_s": n / baseline, "ratio": 1.0, "rss_growth_mb": base_rss / 2**20}]
        sizes = {}
        for fmt in ("parquet", "npy"):
            def export(attempt: int, fmt=fmt) -> None:
                report = export_collection(index, scratch / f"out-{fmt}-{attempt}", fmt)
                sizes[fmt] = report.bytes

            seconds, growth = best_of(repeats, export)
            rows.append({"what": f"export --format {fmt}", "items": n, "seconds": seconds, "items_per_s": n / seconds,
                         "ratio": baseline / seconds, "rss_growth_mb": growth / 2**20,
                         "mb": sizes[fmt] / 2**20})
        # import's own baseline: the same adds with nothing read or validated
        pages = [(([item.id for item in page]), np.stack([item.mean for item in page]),
                  np.stack([item.logvar for item in page]), [item.metadata for item in page])
                 for page in index.iter_items()]

        def add_only(attempt: int) -> None:
            target = catalog.create(f"add-{attempt}", modality="image", dim=DIM, model_id=MODEL)
            for ids, mean, logvar, metadata in pages:
                target.add(ids, mean, logvar, metadata)

        add_seconds, _ = best_of(repeats, add_only)
        pages.clear()
        import_seconds, _ = best_of(
            repeats, lambda attempt: import_vectors(catalog, f"import-{attempt}", scratch / "out-parquet-0"))
        rows.append({"what": "add the same pages (no file), import baseline", "items": n, "seconds": add_seconds,
                     "items_per_s": n / add_seconds, "ratio": 1.0})
        rows.append({"what": "import a Parquet export (validate, then upsert)", "items": n, "seconds": import_seconds,
                     "items_per_s": n / import_seconds, "ratio": add_seconds / import_seconds})
    return rows


def markdown(rows: list[dict], n: int) -> str:
    lines = [f"{n:,} items, D = {DIM}, pages of {PAGE_ROWS}; ratio = rate / baseline rate (export: reading the "
             "store; import: add alone)", "", "| what | items/s | ratio | peak RSS growth | size |",
             "|---|---:|---:|---:|---:|"]
    for row in rows:
        rss = f"{row['rss_growth_mb']:.0f} MB" if "rss_growth_mb" in row else ""
        size = f"{row['mb']:.0f} MB" if "mb" in row else ""
        lines.append(f"| {row['what']} | {row['items_per_s']:,.0f} | {row['ratio']:.2f}× | {rss} | {size} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="items in the collection (default 100000)")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs (default 2)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="prolip-export-bench-"))
    try:
        rows = run(args.n, args.repeats, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(markdown(rows, args.n))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
