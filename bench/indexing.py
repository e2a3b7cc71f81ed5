"""Indexing throughput: the job pipeline against a plain decode-then-encode loop, same run, same data.

    python -m bench.indexing [--images 1024] [--side 128] [--model demo --model reference ...] [--repeats 3]
                             [--chunk-size 64] [--json out.json]

For each model (default: the embedded demo model and the small B/16-shaped reference
checkpoint of the parity tests), on the same folder of JPEGs:

- baseline: read and decode every image in one thread, then ``Encoder.encode_images`` in
  batches; nothing is stored;
- pipeline: a ``JobManager`` job (planning the source into the job store, reading and
  decoding on threads, encoding, durable group commits into a SQLite collection and the job
  store), timed from ``submit`` to completion: the setup (plan, collection) included;
- with ``--variants``, the pipeline again with decoding and encoding in turn
  (``overlap_decode=False``) instead of overlapped.

Runs are interleaved (baseline, pipeline, ... per repeat) and each figure is the best of
``--repeats``: on a shared machine the best run is the least disturbed one. The ratio is
pipeline / baseline: the cost of everything the pipeline does beyond encoding.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "models" / "demo"
REFERENCE = ROOT / "tests" / "fixtures" / "prolip-reference" / "b16like"
NAMED = {"demo": DEMO, "reference": REFERENCE}


def write_corpus(folder: Path, count: int, side: int) -> list[Path]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        # smooth random images compress like photos, unlike white noise
        small = rng.integers(0, 256, (side // 16, side // 16, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((side, side), Image.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        path = folder / f"{i:06d}.jpg"
        path.write_bytes(buffer.getvalue())
        paths.append(path)
    return paths


def model_folder(name: str, scratch: Path) -> str:
    """A loadable model source for ``name`` (demo, reference, a folder or arch:NAME)."""
    if name.startswith("arch:"):
        return name
    folder = NAMED.get(name, Path(name))
    if (folder / "tokenizer.json").exists():
        return str(folder)
    from tests.conftest import write_wordlevel_tokenizer  # the reference checkpoints ship no tokenizer

    copy = scratch / f"model-{folder.name}"
    if not copy.exists():
        shutil.copytree(folder, copy)
        write_wordlevel_tokenizer(copy / "tokenizer.json", ["a", "photo"])
    return str(copy)


def measure(name: str, paths: list[Path], scratch: Path, args: argparse.Namespace) -> dict:
    from indexer.jobs import JobManager, JobSettings
    from models.encoder import Encoder

    encoder = Encoder.load(model_folder(name, scratch), device="auto", batch_size=args.batch_size)
    encoder.encode_images([paths[0]])  # warm-up

    def baseline() -> float:
        start = time.perf_counter()
        for first in range(0, len(paths), args.batch_size):
            encoder.encode_images(paths[first:first + args.batch_size])
        return len(paths) / (time.perf_counter() - start)

    def pipeline(attempt: str, overlap: bool) -> float:
        settings = JobSettings(chunk_size=args.chunk_size, batch_size=args.batch_size, overlap_decode=overlap)
        manager = JobManager(scratch / f"data-{name.replace('/', '_')}-{attempt}", encoder=encoder, settings=settings)
        try:
            start = time.perf_counter()
            status = manager.wait(manager.submit(paths[0].parent, "bench"))
            if status.done != len(paths):
                raise RuntimeError(f"the job indexed {status.done} of {len(paths)} images ({status.state})")
            return status.done / (time.perf_counter() - start)
        finally:
            manager.close()

    variants = {"pipeline": True, **({"pipeline, decode then encode": False} if args.variants else {})}
    rates: dict[str, list[float]] = {"baseline": [], **{v: [] for v in variants}}
    for attempt in range(args.repeats):
        rates["baseline"].append(baseline())
        for variant, overlap in variants.items():
            rates[variant].append(pipeline(f"{attempt}-{overlap}", overlap))
    best = {key: max(values) for key, values in rates.items()}
    return {"model": name, "device": encoder.backend.device, "images": len(paths), "side": args.side,
            "chunk_size": args.chunk_size, "batch_size": args.batch_size, "repeats": args.repeats,
            "rates": rates, "best": best,
            "ratio": {variant: best[variant] / best["baseline"] for variant in variants},
            "ratio_median_of_pairs": {variant: float(np.median([p / b for p, b in zip(rates[variant],
                                                                                       rates["baseline"],
                                                                                       strict=True)]))
                                      for variant in variants}}


def markdown(results: list[dict]) -> str:
    lines = ["| model | device | baseline images/s | pipeline | images/s | ratio (best vs best) | "
             "ratio (median of pairs) |", "|---|---|---:|---|---:|---:|---:|"]
    for result in results:
        for variant, ratio in result["ratio"].items():
            lines.append(f"| {result['model']} | {result['device']} | {result['best']['baseline']:,.0f} | {variant} | "
                         f"{result['best'][variant]:,.0f} | {ratio:.2f} | "
                         f"{result['ratio_median_of_pairs'][variant]:.2f} |")
    first = results[0]
    lines.append(f"\n{first['images']} JPEG images of {first['side']}px, chunk {first['chunk_size']}, batch "
                 f"{first['batch_size']}, best of {first['repeats']} interleaved runs; baseline: decode in one thread, "
                 f"then encode, nothing stored; load average {os.getloadavg()[0]:.1f} at the end on {os.cpu_count()} "
                 f"CPUs.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--side", type=int, default=128)
    parser.add_argument("--model", action="append",
                        help="demo, reference, a model folder or arch:NAME (repeatable; default demo and reference)")
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", action="store_true", help="also time the pipeline without the overlap")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if min(args.images, args.side, args.chunk_size, args.batch_size, args.repeats) < 1:
        parser.error("sizes and --repeats must be >= 1")
    logging.basicConfig(level="WARNING")
    models = args.model or ([name for name in ("demo", "reference") if (NAMED[name] / "config.json").exists()])
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        paths = write_corpus(scratch / "corpus", args.images, args.side)
        results = [measure(name, paths, scratch, args) for name in models]
    print(markdown(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
