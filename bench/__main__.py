"""Run every benchmark, or the ones named, and write one report: ``python -m bench [--quick] [NAME ...]``.

A benchmark is a module under ``bench/`` runnable as ``python -m bench.<name>`` that prints a
Markdown report of figures beside a baseline measured in the same run. Each runs in its own
process (a crash or a hung thread pool in one does not take the others down); its output is
collected into ``bench/results/latest.md`` with the machine it ran on, and into
``latest.json`` (each benchmark's rows where it writes JSON, else its Markdown).
``--quick`` uses small sizes so the whole set finishes in about ten minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

# name -> (title, baseline, full arguments, --quick arguments, writes --json)
BENCHMARKS: dict[str, tuple[str, str, list[str], list[str], bool]] = {
    "encoder_bench": ("Encoder (ViT-B/16, random weights)", "PyTorch eager fp32",
                      [], ["--images", "8", "--texts", "16"], False),
    "index_bench": ("Index search (synthetic Gaussians, D=768)", "brute-force NumPy CSD; memory-bandwidth bound",
                    ["--memory-n", "1000000"], ["--n", "20000", "--queries", "64", "--brute-batches", "1",
                                                "--api-max-n", "20000", "--memory-n", "100000"], True),
    "indexing": ("Batch indexing (images through the job pipeline)", "decode-then-encode loop",
                 [], ["--images", "512", "--side", "128", "--repeats", "2"], True),
    "service_bench": ("Search API end to end (/v1/search/text)", "un-batched service",
                      ["--seconds", "12", "--rounds", "12"], ["--items", "20000", "--seconds", "6", "--rounds", "6"],
                      True),
    "export_bench": ("Export and import (synthetic, D=768)", "reading the store alone; add alone",
                     [], ["--n", "20000"], True),
    "load": ("Load (mixed requests, real uvicorn)", "one client",
             [], ["--clients", "8", "--seconds", "10", "--items", "20000"], True),
}


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown CPU")
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = os.getloadavg()[0]
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, {mem_gib:.0f} GiB, {gpu}; Python {platform.python_version()}, "
            f"torch {torch.__version__}; load average {load:.1f} at start (shared machine)")


def run_one(name: str, argv: list[str], writes_json: bool, scratch: Path) -> dict:
    out = scratch / f"{name}.json"
    shown = [f"bench.{name}", *argv]
    command = [sys.executable, "-m", *shown, *(["--json", str(out)] if writes_json else [])]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True)
    result = {"command": " ".join(shown), "returncode": done.returncode,
              "seconds": round(time.perf_counter() - started, 1), "markdown": done.stdout.strip()}
    if done.returncode != 0:
        result["stderr_tail"] = done.stderr[-2000:]
    if writes_json and out.exists():
        result["rows"] = json.loads(out.read_text())
    return result


def report(results: dict[str, dict], quick: bool, where: str) -> str:
    lines = [f"# Benchmarks ({'quick' if quick else 'full'} run)", "",
             f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {where}.", "",
             "Every figure stands beside its baseline measured in the same run; on a shared machine only the "
             "ratios are comparable between runs.", "",
             "| benchmark | baseline | status | time |", "|---|---|---|---:|"]
    for name, result in results.items():
        title, baseline = BENCHMARKS[name][:2]
        status = "ok" if result["returncode"] == 0 else f"failed ({result['returncode']})"
        lines.append(f"| {title} (`bench.{name}`) | {baseline} | {status} | {result['seconds']:.0f} s |")
    for name, result in results.items():
        lines += ["", f"## {BENCHMARKS[name][0]}", "", f"`python -m {result['command']}`, "
                  f"baseline: {BENCHMARKS[name][1]}", "", result["markdown"] or "(no output)"]
        if "stderr_tail" in result:
            lines += ["", "```", result["stderr_tail"].strip()[-800:], "```"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default all: {', '.join(BENCHMARKS)})")
    parser.add_argument("--quick", action="store_true", help="small sizes: about ten minutes on 2 cores")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for latest.md and latest.json")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(BENCHMARKS)}")
    where = machine()
    results = {}
    with tempfile.TemporaryDirectory(prefix="prolip-bench-") as scratch:
        for name in args.names or list(BENCHMARKS):
            _, _, full, quick, writes_json = BENCHMARKS[name]
            print(f"running {name} ...", file=sys.stderr, flush=True)
            results[name] = run_one(name, quick if args.quick else full, writes_json, Path(scratch))
            print(f"  {name}: exit {results[name]['returncode']} in {results[name]['seconds']:.0f} s",
                  file=sys.stderr, flush=True)
    text = report(results, args.quick, where)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.md").write_text(text)
    (args.out / "latest.json").write_text(json.dumps({"machine": where, "quick": args.quick,
                                                      "results": results}, indent=2))
    print(text)
    return 1 if any(r["returncode"] != 0 for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
