"""`prolip-retrieval doctor`: what this machine offers for encoding and search, and why a GPU is or isn't used."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass


@dataclass
class Finding:
    topic: str
    status: str  # "ok", "info" or "warn"
    detail: str


def _torch_findings() -> list[Finding]:
    import torch

    from .device import cuda_unavailable_reason

    findings = [Finding("torch", "ok", f"{torch.__version__} (CUDA build: {torch.version.cuda or 'no'})")]
    problem = cuda_unavailable_reason()
    if problem is None:
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        bf16 = torch.cuda.is_bf16_supported()
        findings.append(Finding("torch CUDA", "ok", f"{names}; bf16 {'supported' if bf16 else 'not supported'}"))
    else:
        findings.append(Finding("torch CUDA", "warn", f"not used: {problem}"))
    findings.append(Finding("torch threads", "info",
                            f"{torch.get_num_threads()} intra-op threads on {os.cpu_count()} CPUs "
                            f"(set OMP_NUM_THREADS / torch.set_num_threads to change)"))
    if problem is None:
        choice = "cuda:0 in fp16 (fp32 and bf16 on request)"
    else:
        choice = "CPU in fp32 (bf16/fp16 only on request: emulated and slow on most CPUs)"
    findings.append(Finding("torch backend", "info", f"device auto runs on {choice}"))
    return findings


SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def _cpu_findings() -> list[Finding]:
    """The SIMD extensions that decide CPU speed: fp32 GEMM (AVX2/AVX-512), int8 (VNNI), bf16 (AMX)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    name = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:  # not Linux: no flags to report
        pass
    present = [flag for flag in SIMD_FLAGS if flag in flags]
    detail = f"{name}; SIMD: {', '.join(present) or 'unknown'}"
    if flags and not {"avx512_vnni", "avx_vnni"} & flags:
        detail += " (no VNNI: int8 matmuls use the slower AVX2 path)"
    return [Finding("cpu", "info", detail)]


def _onnxruntime_findings() -> list[Finding]:
    try:
        import onnxruntime as ort
    except ImportError as error:
        return [Finding("onnxruntime", "warn", f"not installed ({error}); the onnx backend is unavailable")]
    from .onnx_backend import choose_providers, cuda_provider_missing_reason, default_threads

    providers = ort.get_available_providers()
    findings = [Finding("onnxruntime", "ok", f"{ort.__version__}, providers: {', '.join(providers)}")]
    problem = cuda_provider_missing_reason()
    if problem is not None:
        findings.append(Finding("onnxruntime CUDA", "warn",
                                f"not used: {problem} (the two packages conflict: uninstall onnxruntime first)"))
    choice = choose_providers("auto", "fp32")
    why = "" if problem is not None else f" ({choice.reason})"  # the CPU reason is the warning above
    findings.append(Finding("onnx backend", "info",
                            f"device auto runs fp32 on {choice.device}{why} with {default_threads()} intra-op "
                            f"threads; int8 (CPU only) on request"))
    return findings


def _faiss_findings() -> list[Finding]:
    try:
        import faiss
    except ImportError as error:
        return [Finding("faiss", "warn", f"not installed ({error})")]
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    findings = [Finding("faiss", "ok", f"{faiss.__version__}, {faiss.omp_get_max_threads()} OpenMP threads")]
    if gpus:
        findings.append(Finding("faiss GPU", "ok", f"{gpus} GPU(s) visible"))
    else:
        findings.append(Finding("faiss GPU", "warn",
                                "no GPU index support: this is faiss-cpu, or faiss-gpu sees no device; "
                                "search runs on CPU"))
    return findings


def diagnose() -> list[Finding]:
    machine = f"{platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs"
    findings = [Finding("python", "info", machine)]
    for probe in (_cpu_findings, _torch_findings, _onnxruntime_findings, _faiss_findings):
        findings.extend(probe())
    return findings


def render(findings: list[Finding]) -> str:
    width = max(len(f.topic) for f in findings)
    marks = {"ok": "ok  ", "info": "info", "warn": "WARN"}
    return "\n".join(f"[{marks[f.status]}] {f.topic.ljust(width)}  {f.detail}" for f in findings)
