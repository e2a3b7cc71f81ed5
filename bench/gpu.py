"""The GPU check: one prepared command measuring, on a CUDA host, what the CPU machines cannot.

    bash bench/gpu_check.sh [ARGS]       # installs CUDA torch, torchvision, onnxruntime-gpu, faiss-gpu; then:
    python -m bench.gpu [--budget-s 420] [--n 1000000] [--json bench/results/gpu_check.json]
    python -m bench.gpu --cpu-only       # the same harness on the CPU with small sizes (the test suite runs it)

In one run, each section a group of rows in one table (also written as JSON):

1. ``tests``: the CUDA tests that skip on CPU (fp16/bf16/fp32 parity with the official
   outputs, the ONNX Runtime CUDA provider), run with pytest: passed / failed / skipped.
2. ``encoder``: ViT-B/16 image-tower throughput (random weights, batch ``--batch``): PyTorch
   fp16 eager (the baseline), ``torch.compile`` fp16, ONNX Runtime CUDA EP (fp32 graph) and
   TensorRT EP (fp16) where installed; each also as a share of the fp16 roofline (FLOPs per
   image x images/s over a measured fp16 matmul rate).
3. ``indexing``: end to end, JPEG files to a durable collection: the job pipeline as it
   ships (CPU decode on threads, then encode; the baseline), and nvJPEG decode on the GPU
   (``torchvision.io.decode_jpeg(device="cuda")``, resize, crop and normalise on the GPU),
   then the same encoder and durable adds. The GPU-decode loop lives here, not in the
   pipeline; its embeddings are compared with the pipeline's (max |delta mean|).
4. ``search``: exact (flat) and IVF CSD search over ``--n`` synthetic Gaussians (D = 768),
   batches of 64 queries and single queries, GPU FAISS against the CPU path of the same
   run (``indexer.flat_scan`` and CPU IVF), with recall@10 against the CPU exact result.

A section that cannot run (a missing package, the time budget spent) becomes a row saying
why, and the rest go on. ``--cpu-only`` runs every section on the CPU with tiny sizes and
the small reference checkpoint: it checks the harness, not GPU figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CUDA_TESTS = ("tests/models/test_precision.py::test_cuda_precisions_match_the_official_outputs",
              "tests/models/test_onnx_backend.py::test_cuda_provider_equals_torch")
SECTIONS = ("tests", "encoder", "indexing", "search")

log = logging.getLogger(__name__)


@dataclass
class Row:
    section: str
    what: str
    value: float | None = None  # the figure, in ``unit``
    unit: str = ""
    baseline: float | None = None  # the same figure for the section's baseline, same run
    status: str = "ok"  # ok | skipped | failed
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline


@dataclass
class Plan:
    """Sizes and switches of one run."""

    cpu_only: bool
    budget_s: float
    n: int  # search corpus size
    images: int  # JPEGs for the indexing section
    encode_images: int  # images per throughput measurement
    batch: int
    model: str  # encoder source: an architecture (random weights) or a checkpoint folder
    sections: tuple[str, ...]
    scratch: Path = Path(tempfile.gettempdir())  # a folder of this run's own (main sets it; removed at the end)
    started: float = field(default_factory=time.monotonic)

    @property
    def device(self) -> str:
        return "cpu" if self.cpu_only else "cuda"

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.started)


def plan_from_args(args: argparse.Namespace) -> Plan:
    small = args.cpu_only
    return Plan(cpu_only=args.cpu_only, budget_s=args.budget_s,
                n=args.n or (4000 if small else 1_000_000),
                images=args.images or (48 if small else 4096),
                encode_images=args.encode_images or (16 if small else 2048),
                batch=args.batch or (8 if small else 256),
                model=args.model or ("reference" if small else "arch:ViT-B-16-ProLIP"),
                sections=tuple(args.sections or SECTIONS))


# ----------------------------------------------------------------------------- running sections

def guarded(section: str, run: Callable[[Plan], list[Row]], plan: Plan, min_left_s: float) -> list[Row]:
    """The section's rows, or one row saying why it did not run or where it broke."""
    if plan.left() < min_left_s:
        return [Row(section, "(section)", status="skipped",
                    note=f"time budget: {plan.left():.0f} s left, needs ~{min_left_s:.0f} s")]
    try:
        return run(plan)
    except Exception as error:  # noqa: BLE001 - reported in the table; the other sections go on
        log.exception("section %s failed", section)
        return [Row(section, "(section)", status="failed", note=f"{type(error).__name__}: {error}"[:300])]


def run_tests(plan: Plan) -> list[Row]:
    """The CUDA tests that skip on a CPU machine, through pytest."""
    started = time.perf_counter()
    report = plan.scratch / "junit.xml"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                           f"--junitxml={report}", *CUDA_TESTS], cwd=ROOT, capture_output=True, text=True,
                          timeout=max(30.0, plan.left() - 60))
    counts = junit_counts(report.read_text()) if report.exists() else {}
    status = "ok" if done.returncode == 0 else "failed"
    note = f"{counts.get('passed', 0)} passed, {counts.get('failed', 0)} failed, {counts.get('skipped', 0)} skipped"
    if plan.cpu_only:
        note += " (CPU: the CUDA tests skip)"
    if done.returncode not in (0, 5):
        note += "; " + done.stdout.strip().splitlines()[-1][:200] if done.stdout.strip() else ""
    return [Row("tests", "CUDA tests skipped on CPU", float(counts.get("passed", 0)), "passed", status=status,
                note=note, extra={"seconds": time.perf_counter() - started, "returncode": done.returncode})]


def junit_counts(xml: str) -> dict[str, int]:
    """passed / failed / skipped from a pytest JUnit XML report."""
    import xml.etree.ElementTree as ElementTree

    root = ElementTree.fromstring(xml)
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    total = int(suite.get("tests", 0))
    failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    skipped = int(suite.get("skipped", 0))
    return {"passed": total - failed - skipped, "failed": failed, "skipped": skipped}


def run_search(plan: Plan) -> list[Row]:
    from bench.gpu_search import search_rows

    return search_rows(plan, Row)


def run_encoder(plan: Plan) -> list[Row]:
    from bench.gpu_encode import encoder_rows

    return encoder_rows(plan, Row)


def run_indexing(plan: Plan) -> list[Row]:
    from bench.gpu_encode import indexing_rows

    return indexing_rows(plan, Row)


RUNNERS: dict[str, tuple[Callable[[Plan], list[Row]], float]] = {  # section -> (runner, seconds it needs at least)
    "tests": (run_tests, 60.0),
    "encoder": (run_encoder, 90.0),
    "indexing": (run_indexing, 60.0),
    "search": (run_search, 60.0),
}


# ----------------------------------------------------------------------------- reporting

def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                            "load_avg": os.getloadavg()[0]}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.version.cuda
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        info["torch"] = None
    for package in ("faiss", "onnxruntime", "torchvision"):
        try:
            info[package] = __import__(package).__version__
        except Exception:  # noqa: BLE001 - absent or broken: say so
            info[package] = None
    return info


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return ""
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{text} {unit}".strip()


def markdown(rows: list[Row], info: dict[str, Any], plan: Plan, seconds: float) -> str:
    lines = ["| section | what | figure | baseline (same run) | ratio | status | note |",
             "|---|---|---:|---:|---:|---|---|"]
    for row in rows:
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else ""
        lines.append(f"| {row.section} | {row.what} | {_fmt(row.value, row.unit)} | {_fmt(row.baseline, row.unit)} | "
                     f"{ratio} | {row.status} | {row.note} |")
    where = info.get("gpu") or "no GPU (CPU only)"
    lines += ["", f"{where}; torch {info.get('torch')} (CUDA {info.get('cuda')}), faiss {info.get('faiss')}, "
                  f"onnxruntime {info.get('onnxruntime')}, torchvision {info.get('torchvision')}; {info.get('cpus')} "
                  f"CPUs; {seconds:.0f} s of a {plan.budget_s:.0f} s budget"
                  + ("; --cpu-only: a check of the harness, not GPU figures" if plan.cpu_only else "")]
    return "\n".join(lines)


def write_json(path: Path, rows: list[Row], info: dict[str, Any], plan: Plan, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    plan_fields = {k: v for k, v in asdict(plan).items() if k not in ("started", "scratch")}
    document = {"machine": info, "plan": plan_fields, "seconds": seconds,
                "rows": [{**asdict(row), "ratio": row.ratio} for row in rows]}
    path.write_text(json.dumps(document, indent=1))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-only", action="store_true", help="run on the CPU with tiny sizes (a harness check)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="stop starting sections after this long")
    parser.add_argument("--n", type=int, help="search corpus size (default 1,000,000; 4,000 with --cpu-only)")
    parser.add_argument("--images", type=int, help="JPEGs indexed end to end (default 4096; 48 with --cpu-only)")
    parser.add_argument("--encode-images", type=int, help="images per encoder measurement (default 2048)")
    parser.add_argument("--batch", type=int, help="encoder batch size (default 256; 8 with --cpu-only)")
    parser.add_argument("--model", help="encoder: arch:NAME (random weights) or a checkpoint folder; "
                                        "'reference' = the small test checkpoint")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, help=f"default: all of {', '.join(SECTIONS)}")
    parser.add_argument("--json", type=Path, help="where the JSON goes (default bench/results/gpu_check.json, "
                                                  "gpu_check_cpu_only.json with --cpu-only)")
    args = parser.parse_args(argv)
    for name in ("n", "images", "encode_images", "batch"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.budget_s <= 0:
        parser.error("--budget-s must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    plan = plan_from_args(args)
    if not plan.cpu_only:
        import torch

        if not torch.cuda.is_available():
            print("no CUDA GPU is visible to torch (torch.cuda.is_available() is False); run bench/gpu_check.sh on a "
                  "GPU host, or --cpu-only to check the harness here", file=sys.stderr)
            return 2
    info = machine()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        plan.scratch = Path(scratch)
        for section in plan.sections:
            runner, needs = RUNNERS[section]
            log.info("section %s (%.0f s left)", section, plan.left())
            rows += guarded(section, runner, plan, needs if not plan.cpu_only else 0.0)
    seconds = time.monotonic() - plan.started
    print(markdown(rows, info, plan, seconds))
    out = args.json or RESULTS / ("gpu_check_cpu_only.json" if plan.cpu_only else "gpu_check.json")
    write_json(out, rows, info, plan, seconds)
    print(f"\nJSON: {out}")
    return 1 if any(row.status == "failed" for row in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
