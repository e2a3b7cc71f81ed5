"""Choosing where and in what precision to run, and saying why."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

DTYPES = {
    "fp32": torch.float32, "float32": torch.float32,
    "fp16": torch.float16, "float16": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
}


@dataclass(frozen=True)
class Placement:
    device: torch.device
    dtype: torch.dtype
    reason: str  # one sentence a user can act on, e.g. why no GPU is used


def cuda_unavailable_reason() -> str | None:
    """None when CUDA is usable, else the most specific reason we can find."""
    if torch.cuda.is_available():
        return None
    if torch.version.cuda is None:
        return ("this PyTorch is a CPU-only build (torch.version.cuda is None); "
                "install a CUDA build of torch to use a GPU")
    try:
        count = torch.cuda.device_count()
    except RuntimeError as error:  # driver problems surface here
        return f"CUDA runtime error: {error}"
    if count == 0:
        return ("PyTorch has CUDA support but sees no GPU: check the NVIDIA driver, "
                "CUDA_VISIBLE_DEVICES and, in Docker, --gpus / the device reservation")
    return "torch.cuda.is_available() is False"


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """'auto' -> fp32 on CPU (bf16/fp16 matmuls are emulated and slow there), fp16 on CUDA."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of auto, {', '.join(sorted(set(DTYPES)))}") from None


def select(device: str | torch.device = "auto", dtype: str | torch.dtype | None = "auto") -> Placement:
    """Pick a device ("auto": the first CUDA GPU when usable, else CPU) and dtype, with a reason."""
    if isinstance(device, torch.device) or device != "auto":
        chosen = torch.device(device)
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} was asked for but {cuda_unavailable_reason()}")
        reason = f"device {chosen} was asked for"
    else:
        problem = cuda_unavailable_reason()
        if problem is None:
            chosen = torch.device("cuda", 0)
            reason = f"auto: using GPU {torch.cuda.get_device_name(0)}"
        else:
            chosen = torch.device("cpu")
            reason = f"auto: using CPU because {problem}"
    placement = Placement(chosen, resolve_dtype(dtype, chosen), reason)
    log.info("%s (dtype %s)", placement.reason, placement.dtype)
    if chosen.type == "cpu" and placement.dtype != torch.float32:
        # Allowed because it was asked for, but never chosen by "auto": see resolve_dtype.
        log.warning("%s on CPU runs through emulated half-precision matmuls on most CPUs (no AVX512-BF16/AMX) "
                    "and is many times slower than fp32", placement.dtype)
    return placement
