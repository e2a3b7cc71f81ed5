"""ONNX Runtime backend: the exported towers run on the CUDA execution provider when there is
one (and the device allows), else on the CPU provider, fp32 or int8.

Graph files come from ``models.onnx_export`` (exported once per set of weights, cached).
Sessions use every graph optimisation ORT has (constant folding, LayerNorm/GELU fusion,
MatMul+Add -> Gemm ...) and as many intra-op threads as torch uses, so the two backends are
compared on equal terms and both follow OMP_NUM_THREADS.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from .onnx_export import INPUT_NAMES, PRECISIONS, default_cache_dir, forget, tower_file, weights_key

log = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


@dataclass(frozen=True)
class ProviderChoice:
    providers: list  # what InferenceSession gets: names, or (name, options) pairs
    device: str  # "cpu" or "cuda:N"
    reason: str  # one sentence a user can act on
    explicit: bool = False  # the user named the device: failing to use it is an error, not a fallback


def cuda_provider_missing_reason() -> str | None:
    """None when this onnxruntime build offers the CUDA provider, else why not and what to do."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if CUDA_PROVIDER in available:
        return None
    return (f"this onnxruntime build has no {CUDA_PROVIDER} (it offers {', '.join(available)}); "
            "install onnxruntime-gpu in place of onnxruntime to run ONNX on a GPU")


def choose_providers(device: str = "auto", precision: str = "fp32") -> ProviderChoice:
    """Execution providers for ``device`` ("auto", "cpu", "cuda", "cuda:N"), with the reason."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown ONNX precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    device = str(device)
    if device == "cpu":
        return ProviderChoice([CPU_PROVIDER], "cpu", "device cpu was asked for", explicit=True)
    if device == "auto":
        if precision == "int8":
            # MatMulInteger/DynamicQuantizeLinear are CPU kernels; on CUDA they would fall back op by op.
            return ProviderChoice([CPU_PROVIDER], "cpu", "auto: CPU because int8 graphs run on the CPU provider")
        problem = cuda_provider_missing_reason()
        if problem is not None:
            return ProviderChoice([CPU_PROVIDER], "cpu", f"auto: CPU because {problem}")
        return ProviderChoice([(CUDA_PROVIDER, {"device_id": 0}), CPU_PROVIDER], "cuda:0",
                              f"auto: {CUDA_PROVIDER} is available")
    if device == "cuda" or device.startswith("cuda:"):
        index_text = device.partition(":")[2] or "0"
        if not index_text.isdigit():
            raise ValueError(f"bad CUDA device {device!r}; use cuda or cuda:N")
        if precision == "int8":
            raise ValueError("int8 ONNX graphs run on the CPU provider; use precision fp32 on CUDA, or device cpu")
        problem = cuda_provider_missing_reason()
        if problem is not None:
            raise RuntimeError(f"device {device!r} was asked for but {problem}")
        index = int(index_text)
        return ProviderChoice([(CUDA_PROVIDER, {"device_id": index}), CPU_PROVIDER], f"cuda:{index}",
                              f"device {device} was asked for", explicit=True)
    raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")


def default_threads() -> int:
    """Intra-op threads: torch's count (its default is the physical cores; OMP_NUM_THREADS sets it)."""
    import torch

    return torch.get_num_threads()


def _session_options(threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # a tower is one chain of ops: nothing to run side by side
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # ORT's warnings here (unused initializers ...) are not actionable
    return options


class OnnxBackend:
    """Both towers as ONNX Runtime sessions; implements ``models.encoder.Backend``."""

    name = "onnx"

    def __init__(self, image_session, text_session, choice: ProviderChoice, precision: str, threads: int,
                 image_size: int, context_length: int, vocab_size: int, files: dict[str, Path]):
        self.image_session = image_session
        self.text_session = text_session
        self.device = choice.device
        self.reason = choice.reason
        self.precision = precision
        self.threads = threads
        self.image_size = image_size
        self.context_length = context_length
        self.vocab_size = vocab_size
        self.files = files  # tower -> the .onnx file each session runs
        self.embed_dim = int(image_session.get_outputs()[0].shape[1])
        self.deterministic = len(image_session.get_outputs()) == 1  # no logvar output

    @classmethod
    def for_model(cls, model, device: str = "auto", cache_dir: str | os.PathLike | None = None,
                  precision: str = "fp32", threads: int | None = None) -> OnnxBackend:
        """Export (or reuse from ``cache_dir``) both towers of ``model`` and open sessions on them.

        device: "auto" (CUDA provider when onnxruntime has it and precision is fp32, else CPU),
        "cpu", "cuda" or "cuda:N". precision: "fp32" (matches PyTorch to ~1e-6) or "int8"
        (dynamic quantisation, CPU only; see bench/encoder_bench.py for its accuracy).
        threads: intra-op threads, default torch's count.
        """
        choice = choose_providers(device, precision)
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        threads = threads or default_threads()
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        export_model = _float32_cpu(model)
        key = weights_key(export_model)
        files, sessions = {}, {}
        for tower in ("image", "text"):
            build = partial(tower_file, export_model, tower, precision, cache, key)
            files[tower] = build()
            sessions[tower] = _open_session(files[tower], choice, threads, rebuild=build)
            choice = _check_providers(sessions[tower], choice)
        log.info("onnx backend: %s on %s via %s (%s), %d intra-op threads, graphs in %s", precision,
                 choice.device, sessions["text"].get_providers()[0], choice.reason, threads,
                 files["image"].parent.parent)
        return cls(sessions["image"], sessions["text"], choice, precision, threads, model.image_size,
                   model.context_length, model.config.text_cfg.vocab_size, files)

    def encode_image(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """float32 [B, 3, S, S] -> (mean [B, D] unit-norm, logvar [B, D] or None) float32."""
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        expected = (3, self.image_size, self.image_size)
        if pixels.ndim != 4 or pixels.shape[1:] != expected:
            raise ValueError(f"pixels must have shape [B, {', '.join(map(str, expected))}], got {list(pixels.shape)}")
        if len(pixels) == 0:
            return self._empty()
        return self._outputs(self.image_session.run(None, {INPUT_NAMES["image"]: pixels}))

    def encode_text(self, input_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """int64 [B, context_length] -> (mean [B, D] unit-norm, logvar [B, D] or None) float32."""
        ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        if ids.ndim != 2 or ids.shape[1] != self.context_length:
            # ProLIP attends over padding: every text must be padded to exactly the context length.
            raise ValueError(f"input_ids must have shape [B, {self.context_length}], got {list(ids.shape)}")
        if len(ids) == 0:
            return self._empty()
        if ids.min() < 0 or ids.max() >= self.vocab_size:
            raise ValueError(f"token ids must lie in [0, {self.vocab_size}), got [{ids.min()}, {ids.max()}]")
        return self._outputs(self.text_session.run(None, {INPUT_NAMES["text"]: ids}))

    @staticmethod
    def _outputs(outputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """(mean, logvar) of a graph's outputs; a deterministic model's graphs output the mean only."""
        return outputs[0], outputs[1] if len(outputs) > 1 else None

    def _empty(self) -> tuple[np.ndarray, np.ndarray | None]:
        empty = np.zeros((0, self.embed_dim), dtype=np.float32)
        return empty, None if self.deterministic else empty.copy()


def _float32_cpu(model):
    """The model itself when it is float32 on CPU, else a float32 CPU copy to export from."""
    import copy

    import torch

    parameter = next(model.parameters())
    if parameter.device.type == "cpu" and parameter.dtype == torch.float32:
        return model
    log.info("onnx: exporting from a float32 CPU copy of the %s %s model", parameter.dtype, parameter.device)
    return copy.deepcopy(model).to("cpu", torch.float32)


def _open_session(path: Path, choice: ProviderChoice, threads: int, rebuild: Callable[[], Path]):
    """An InferenceSession on ``path``; a cached file that fails to load is rebuilt once."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), _session_options(threads), providers=choice.providers)
    except Exception as error:  # ORT raises its own Fail/InvalidProtobuf/... types
        log.warning("onnx: cached graph %s does not load (%s); rebuilding it", path.parent, error)
        forget(path.parent)
        return ort.InferenceSession(str(rebuild()), _session_options(threads), providers=choice.providers)


def _check_providers(session, choice: ProviderChoice) -> ProviderChoice:
    """onnxruntime-gpu silently runs on CPU when CUDA/cuDNN fail to load: an error if CUDA was asked for."""
    if not choice.device.startswith("cuda") or session.get_providers()[0] == CUDA_PROVIDER:
        return choice
    problem = (f"{CUDA_PROVIDER} is installed but failed to start (the session got {session.get_providers()}); "
               "check that the CUDA and cuDNN versions match what onnxruntime-gpu needs")
    if choice.explicit:
        raise RuntimeError(problem)
    log.warning("onnx: %s; running on CPU", problem)
    return ProviderChoice([CPU_PROVIDER], "cpu", f"auto: CPU because {problem}")
