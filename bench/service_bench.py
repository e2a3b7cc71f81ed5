"""End-to-end latency and throughput of POST /v1/search/text, with and without dynamic batching.

Two real uvicorn servers (child processes), one with batching off and one with it on, serve
a collection of ``--items`` Gaussian items (random unit means and log-variances, bulk-added
straight into the index; the bulk does not need to be real encodings to measure search) on
the demo model. Each is driven by 1, 8, 32 and 64 concurrent clients (aiohttp, keep-alive) sending
queries back to back for ``--seconds`` per level, alternating between the two servers in
slices. Reported: p50 / p99 latency, QPS, the QPS and p99 ratios of batching on vs off at
each concurrency (the baseline is measured in the same run), the mean batch sizes, and the
requests refused (429/503: the deadlines of the batch queues) as errors.

    python -m bench.service_bench [--items 100000] [--seconds 8] [--model SOURCE] [--json out.json]

Note: on a 2-core machine the load generator shares the cores with the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.fallback_model import service_model

COLLECTION = "bench"
WORDS = "a an the red blue green yellow purple white circle square triangle diamond large small left right".split()
CONCURRENCY = (1, 8, 32, 64)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_collection(data_dir: Path, model: str | None, items: int, seed: int = 0) -> str:
    """Fill ``data_dir`` with one text collection of random Gaussian items; returns the model id."""
    from indexer import Catalog
    from models.encoder import Encoder

    encoder = Encoder.load(model, device="cpu")
    dim = encoder.embed_dim
    catalog = Catalog(data_dir)
    try:
        index = catalog.create(COLLECTION, modality="text", dim=dim, model_id=encoder.model_id)
        rng = np.random.default_rng(seed)
        # log-variances spread like real ones: a per-item level plus per-dimension noise
        for start in range(0, items, 10_000):
            n = min(10_000, items - start)
            mean = rng.normal(size=(n, dim)).astype(np.float32)
            mean /= np.linalg.norm(mean, axis=1, keepdims=True)
            logvar = (rng.normal(-6.0, 0.5, size=(n, 1)) + rng.normal(0, 0.3, size=(n, dim))).astype(np.float32)
            ids = [f"item-{i}" for i in range(start, start + n)]
            index.add(ids, mean, logvar, [{"n": i} for i in range(start, start + n)])
        index.snapshot()
    finally:
        catalog.close()
    return encoder.model_id


def _start_server(data_dir: Path, model: str | None, port: int, batching: bool) -> subprocess.Popen:
    env = dict(os.environ, PROLIP_BATCHING=str(batching).lower(), PROLIP_DEMO="false", PROLIP_DEVICE="cpu",
               PROLIP_MAX_QUEUE="1024")
    if model is not None:
        env["PROLIP_MODEL_SOURCE"] = str(model)
    command = [sys.executable, "-m", "service.cli", "--log-level", "WARNING", "serve", "--host", "127.0.0.1",
               "--port", str(port), "--data-dir", str(data_dir)]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_ready(process: subprocess.Popen, url: str, timeout: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {process.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError("server did not become ready")


async def _drive(url: str, clients: int, seconds: float, seed: int = 1) -> tuple[list[float], dict[int, int], float]:
    """``clients`` clients sending queries back to back: (latencies s, non-200 counts by status, elapsed s).

    The clients are aiohttp's (C-accelerated HTTP parsing, keep-alive), not httpx: on a 2-core
    machine the load generator shares the cores with the server, and at 200 queries a second
    httpx's client took ~90 % of a core and put its own queueing into the tail (the same two
    servers at 32 clients: p99 ratio 1.86 with httpx, 0.77 with aiohttp, 0.78 with raw sockets).
    """
    import aiohttp

    rng = np.random.default_rng(seed)
    queries = [" ".join(rng.choice(WORDS, size=int(rng.integers(2, 7)))) for _ in range(512)]
    latencies: list[float] = []
    errors: dict[int, int] = {}
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:
        for query in queries[:2]:  # warm the connection
            async with http.post("/v1/search/text", json={"query": query, "collection": COLLECTION, "k": 10}) as r:
                await r.read()
        deadline = time.perf_counter() + seconds

        async def client(offset: int) -> None:
            i = offset
            while time.perf_counter() < deadline:
                body = {"query": queries[i % len(queries)], "collection": COLLECTION, "k": 10}
                start = time.perf_counter()
                async with http.post("/v1/search/text", json=body) as response:
                    await response.read()
                latencies.append(time.perf_counter() - start)
                if response.status != 200:
                    errors[response.status] = errors.get(response.status, 0) + 1
                i += clients

        started = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)))
        elapsed = time.perf_counter() - started
    return latencies, errors, elapsed


def _counts(url: str) -> dict[str, float]:
    """The server's batch-size histogram sums and counts per queue (from /metrics)."""
    import httpx

    values = {}
    for line in httpx.get(url + "/metrics", timeout=5).text.splitlines():
        for queue in ("text", "search"):
            for part in ("sum", "count"):
                if line.startswith(f'prolip_batch_size_{part}{{queue="{queue}"}}'):
                    values[f"{queue}_{part}"] = float(line.split()[-1])
    return values


def _mean(before: dict[str, float], after: dict[str, float], queue: str) -> float | None:
    """Mean inputs per batched call between two metric readings."""
    calls = after.get(f"{queue}_count", 0) - before.get(f"{queue}_count", 0)
    inputs = after.get(f"{queue}_sum", 0) - before.get(f"{queue}_sum", 0)
    return inputs / calls if calls else None


def run(items: int = 100_000, seconds: float = 8.0, model: str | None = None,
        concurrency: tuple[int, ...] = CONCURRENCY, rounds: int = 8) -> list[dict]:
    """Measure every (batching, concurrency) pair; returns one dict per pair.

    Both servers (batching off and on) run at once over the same data, and each
    concurrency level alternates between them in ``rounds`` slices, each server first in every
    other round, so a drift in what else the machine is doing hits both sides alike.
    """
    rows = []
    with tempfile.TemporaryDirectory(prefix="prolip-service-bench-") as tmp:
        model, note = service_model(model, Path(tmp))
        started = time.perf_counter()
        build_collection(Path(tmp) / "off", model, items)
        shutil.copytree(Path(tmp) / "off", Path(tmp) / "on")  # one process owns a collection: two copies
        build_s = time.perf_counter() - started
        servers = {}
        try:
            for batching in (False, True):
                port = _free_port()
                url = f"http://127.0.0.1:{port}"
                servers[batching] = (url, _start_server(Path(tmp) / ("on" if batching else "off"), model, port,
                                                        batching))
            for url, process in servers.values():
                _wait_ready(process, url)
            for clients in concurrency:
                totals = {b: {"latencies": [], "errors": {}, "elapsed": 0.0, "before": _counts(server_url)}
                          for b, (server_url, _) in servers.items()}
                for round_ in range(rounds):
                    order = list(servers.items())
                    for batching, (url, _) in (order if round_ % 2 == 0 else order[::-1]):  # neither always first
                        latencies, errors, elapsed = asyncio.run(_drive(url, clients, seconds / rounds))
                        totals[batching]["latencies"] += latencies
                        for status, count in errors.items():
                            totals[batching]["errors"][status] = totals[batching]["errors"].get(status, 0) + count
                        totals[batching]["elapsed"] += elapsed
                for batching, (url, _) in servers.items():
                    total = totals[batching]
                    after = _counts(url)
                    values = np.asarray(total["latencies"]) * 1000.0
                    rows.append({"batching": batching, "clients": clients, "requests": len(values),
                                 "errors": sum(total["errors"].values()), "error_statuses": total["errors"],
                                 "qps": len(values) / total["elapsed"],
                                 "p50_ms": float(np.percentile(values, 50)), "p99_ms": float(np.percentile(values, 99)),
                                 "items": items, "build_s": build_s, "model": note,
                                 "mean_text_batch": _mean(total["before"], after, "text"),
                                 "mean_search_batch": _mean(total["before"], after, "search")})
        finally:
            for _, process in servers.values():
                process.terminate()
                process.wait(30)
    baseline = {row["clients"]: row for row in rows if not row["batching"]}
    for row in rows:
        base = baseline.get(row["clients"])
        row["qps_vs_unbatched"] = row["qps"] / base["qps"] if base and base["qps"] else None
        row["p99_vs_unbatched"] = row["p99_ms"] / base["p99_ms"] if base and base["p99_ms"] else None
    return sorted(rows, key=lambda row: (row["batching"], row["clients"]))


def markdown(rows: list[dict]) -> str:
    lines = ["| batching | clients | requests | errors | QPS | p50 ms | p99 ms | QPS vs unbatched | "
             "p99 vs unbatched | texts/encode | queries/search |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {'on' if row['batching'] else 'off'} | {row['clients']} | {row['requests']} | "
                     f"{row['errors']} | {row['qps']:.1f} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | "
                     f"{row['qps_vs_unbatched']:.2f}x | {row['p99_vs_unbatched']:.2f}x | "
                     f"{row['mean_text_batch'] or 0:.2f} | {row['mean_search_batch'] or 0:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=8.0, help="measurement time per concurrency level")
    parser.add_argument("--clients", type=int, nargs="+", default=list(CONCURRENCY),
                        help=f"concurrency levels (default {' '.join(map(str, CONCURRENCY))})")
    parser.add_argument("--rounds", type=int, default=8,
                        help="slices each level alternates in between the two servers (more: fairer on a busy host)")
    parser.add_argument("--model", default=None, help="model source (default: the embedded demo model)")
    parser.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    if min(args.clients) < 1:
        parser.error("--clients must be >= 1")
    rows = run(args.items, args.seconds, args.model, tuple(args.clients), max(1, args.rounds))
    print(markdown(rows))
    print(f"\n{args.items} items, {rows[0]['model']}; {', '.join(map(str, args.clients))} concurrent clients, "
          f"{args.seconds:g} s each, alternating between the two servers; load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} at the end on {os.cpu_count()} CPUs.")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
