"""Load test: N concurrent clients for a fixed time against a real uvicorn on loopback.

    python -m bench.load [--clients 16] [--seconds 20] [--items 20000] [--max-requests 200000] [--json out.json]

A server (`prolip-retrieval serve`, batching on, the demo model) holds one text collection of
``--items`` random Gaussian items. Clients send a mix of requests back to back: text searches
(CSD and cosine ranking), uncertainty queries, collection stats and small adds of new texts,
each bounded by a client timeout; the run stops at ``--seconds`` or ``--max-requests``.
Reported per phase: requests, QPS, p50 / p99 latency, errors (any non-2xx or transport
error), and the server's RSS (from /proc) before and after. The baseline is one client, run
first in the same process on the same server, so the headline is the ratio N clients / 1.
RSS growth above ``--rss-bound-mb`` makes the run fail (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.fallback_model import service_model
from bench.service_bench import COLLECTION, WORDS, _free_port, _start_server, _wait_ready, build_collection


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _request(rng: np.random.Generator, serial: int) -> tuple[str, str, dict | None]:
    """One request of the mix: (method, path, JSON body)."""
    query = " ".join(rng.choice(WORDS, size=int(rng.integers(2, 7))))
    kind = rng.random()
    if kind < 0.55:
        return "POST", "/v1/search/text", {"query": query, "collection": COLLECTION, "k": 10}
    if kind < 0.75:
        return "POST", "/v1/search/text", {"query": query, "collection": COLLECTION, "k": 50, "rank": "cosine"}
    if kind < 0.85:
        return "POST", "/v1/uncertainty/text", {"texts": [query], "collection": COLLECTION}
    if kind < 0.95:
        return "GET", f"/v1/collections/{COLLECTION}", None
    return "POST", f"/v1/collections/{COLLECTION}/items", {"items": [{"id": f"load-{serial}", "text": query}]}


async def drive(url: str, clients: int, seconds: float, max_requests: int, seed: int) -> dict:
    import aiohttp  # a light client: it shares the machine's cores with the server (bench.service_bench)

    rng = np.random.default_rng(seed)
    latencies: list[float] = []
    errors = 0
    issued = 0
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as http:
        deadline = time.perf_counter() + seconds

        async def client() -> None:
            nonlocal errors, issued
            while time.perf_counter() < deadline and issued < max_requests:
                issued += 1
                method, path, body = _request(rng, seed * 10_000_000 + issued)
                start = time.perf_counter()
                try:
                    async with http.request(method, path, json=body) as response:
                        await response.read()
                    errors += not 200 <= response.status < 300
                except (aiohttp.ClientError, TimeoutError):
                    errors += 1
                latencies.append(time.perf_counter() - start)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    ms = np.asarray(latencies) * 1000.0
    return {"clients": clients, "requests": len(ms), "errors": errors, "seconds": elapsed,
            "qps": len(ms) / elapsed, "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def run(clients: int = 16, seconds: float = 20.0, items: int = 20_000, max_requests: int = 200_000,
        model: str | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="prolip-load-") as tmp:
        model, note = service_model(model, Path(tmp))
        data_dir = Path(tmp) / "data"
        build_collection(data_dir, model, items)
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        process = _start_server(data_dir, model, port, batching=True)
        try:
            _wait_ready(process, url)
            asyncio.run(drive(url, 2, 1.0, 50, seed=0))  # warm-up: first calls load lazily
            rss_before = rss_mb(process.pid)
            baseline = asyncio.run(drive(url, 1, seconds / 4, max_requests, seed=1))
            loaded = asyncio.run(drive(url, clients, seconds, max_requests, seed=2))
            rss_after = rss_mb(process.pid)
        finally:
            process.terminate()
            process.wait(30)
    return {"model": note, "items": items, "baseline": baseline, "load": loaded, "rss_before_mb": rss_before,
            "rss_after_mb": rss_after, "qps_vs_one_client": loaded["qps"] / baseline["qps"]}


def markdown(result: dict, bound_mb: float) -> str:
    lines = ["| clients | requests | errors | QPS | p50 ms | p99 ms | QPS vs 1 client |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for phase in ("baseline", "load"):
        row = result[phase]
        ratio = row["qps"] / result["baseline"]["qps"]
        lines.append(f"| {row['clients']} | {row['requests']} | {row['errors']} | {row['qps']:.1f} | "
                     f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {ratio:.2f}x |")
    growth = result["rss_after_mb"] - result["rss_before_mb"]
    lines.append(f"\nServer RSS {result['rss_before_mb']:.0f} MB before, {result['rss_after_mb']:.0f} MB after "
                 f"({growth:+.0f} MB; bound {bound_mb:.0f} MB); {result['items']} items, {result['model']}; "
                 "mix: 55% CSD search, 20% cosine search k=50, 10% uncertainty, 10% stats, 5% adds.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0, help="time with N clients (1 client: a quarter)")
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--max-requests", type=int, default=200_000, help="stop a phase after this many requests")
    parser.add_argument("--rss-bound-mb", type=float, default=200.0, help="largest acceptable RSS growth")
    parser.add_argument("--model", default=None, help="model source (default: the embedded demo model)")
    parser.add_argument("--json", default=None, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    result = run(args.clients, args.seconds, args.items, args.max_requests, args.model)
    result["rss_bound_mb"] = args.rss_bound_mb
    print(markdown(result, args.rss_bound_mb))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if result["rss_after_mb"] - result["rss_before_mb"] <= args.rss_bound_mb else 1


if __name__ == "__main__":
    sys.exit(main())
