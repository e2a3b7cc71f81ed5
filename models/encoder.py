"""Batched encoding of texts and images into Gaussian embeddings, over a chosen backend.

``Encoder`` is what the indexer and the service use: it owns the tokenizer and the image
preprocessor, cuts inputs into batches, and hands token ids / pixels to a backend that
returns (mean, logvar) as NumPy arrays. Backends: PyTorch (CPU/CUDA, fp32/fp16/bf16) and
ONNX Runtime (see ``models.onnx_backend``).

Any model family works (``models.families``): what reaches the caller is a ``GaussianBatch``
(``logvar`` None for a deterministic model), the model's ``pair_logit``, its ``family`` and
whether it is ``deterministic``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

import numpy as np
import torch

from .calibration import Calibrator, load_for_model
from .families import DETERMINISTIC
from .gaussian import GaussianBatch, PairLogit  # beside the math, so the indexer can use them without torch
from .loading import default_model_source, load_model, model_id
from .preprocess import ImageInput, ImagePreprocessor
from .tokenizer import Tokenizer, load_tokenizer

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx")
PRECISION_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
# What ``dtype`` means for the onnx backend: graphs are exported in fp32 and optionally quantised.
ONNX_DTYPES = {"auto": "fp32", "fp32": "fp32", "float32": "fp32", "int8": "int8"}


class Backend(Protocol):
    """Runs the two towers on prepared inputs."""

    name: str
    device: str  # where it runs: "cpu", "cuda:0" ...
    precision: str  # what it computes in: "fp32", "fp16", "bf16", "int8"

    def encode_text(self, input_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """int64 [B, L] -> (mean [B, D] unit-norm, logvar [B, D] or None) float32."""

    def encode_image(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """float32 [B, 3, S, S] -> (mean [B, D] unit-norm, logvar [B, D] or None) float32."""


def _numpy(out) -> tuple[np.ndarray, np.ndarray | None]:
    return out.mean.cpu().numpy(), None if out.logvar is None else out.logvar.cpu().numpy()


class TorchBackend:
    """Eager PyTorch on the model's device and dtype."""

    name = "torch"

    def __init__(self, model):
        self.model = model
        parameter = next(model.parameters())
        self.device = str(parameter.device)
        self.dtype = parameter.dtype
        self.precision = PRECISION_NAMES[parameter.dtype]

    @torch.inference_mode()
    def encode_text(self, input_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        ids = torch.from_numpy(np.ascontiguousarray(input_ids, dtype=np.int64)).to(self.device)
        return _numpy(self.model.encode_text(ids))

    @torch.inference_mode()
    def encode_image(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        batch = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))
        return _numpy(self.model.encode_image(batch.to(self.device, self.dtype)))


ProgressCallback = Callable[[int], None]  # called with the number of inputs just encoded

# Threads other work holds back from torch's intra-op pool (``Encoder.sharing_cpu``): the
# pool is one per process, so every holder and the count to restore live here.
_cpu_lock = threading.Lock()
_cpu_holds: list[int] = []
_cpu_threads_before: int = 0


class Encoder:
    """Texts and images in, ``GaussianBatch`` out, ``batch_size`` inputs per backend call."""

    def __init__(self, model, tokenizer: Tokenizer, backend: Backend, model_id: str,
                 batch_size: int = 64, calibrator: Calibrator | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.backend = backend
        self.model_id = model_id
        self.batch_size = batch_size
        self.preprocessor = ImagePreprocessor(model.image_size)
        self.family: str = model.family  # "prolip", "pcmepp" or "clip" (models.families)
        self.deterministic: bool = DETERMINISTIC[model.family]  # True: logvar is None, no uncertainty
        self.pair_logit: PairLogit = model.pair_logit()  # the model's own match logit
        # the raw parameters behind it (exponentiated scale; bias 0 when the model has none)
        self.logit_scale = float(model.logit_scale.detach().float().exp())
        bias = getattr(model, "logit_bias", None)
        self.logit_bias = 0.0 if bias is None else float(bias.detach().float())
        self.calibrator = calibrator  # P(text true of image), when the model has one (models.calibration)

    @classmethod
    def load(cls, source: str | os.PathLike | None = None, backend: str = "torch", device: str = "auto",
             dtype: str = "auto", batch_size: int = 64, onnx_dir: str | os.PathLike | None = None,
             threads: int | None = None, calibration: str | os.PathLike | None = None,
             load_calibration: bool = True, family: str | None = None) -> Encoder:
        """Load model, tokenizer and backend.

        backend "torch": device "auto" (first CUDA GPU when usable, else CPU) or a torch device;
        dtype "auto" (fp16 on CUDA, fp32 on CPU), fp32, fp16 or bf16 (on CPU only when asked:
        emulated and slow without AVX512-BF16/AMX). backend "onnx": device "auto" (CUDA provider
        when onnxruntime has one), "cpu" or "cuda[:N]"; dtype "auto"/fp32 or int8 (CPU).
        ``onnx_dir`` caches the exported ONNX graphs. ``threads``: intra-op threads (default:
        torch's count, i.e. physical cores or OMP_NUM_THREADS). ``calibration``: the calibrator file
        (default: ``calibration.json`` in the model's folder, if there is one; a file fitted for
        other weights is refused); ``load_calibration=False`` reads none (e.g. to fit a new one).
        ``family`` overrides the model family detected from the checkpoint's config (``models.families``).
        """
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if backend == "onnx" and dtype not in ONNX_DTYPES:
            raise ValueError(f"the onnx backend runs {', '.join(ONNX_DTYPES)}, not dtype {dtype!r}; "
                             "use backend torch for fp16/bf16")
        source = default_model_source() if source is None else source
        if backend == "torch":
            model = load_model(source, device=device, dtype=dtype, family=family)
        else:
            # The torch model is only exported (once per weights, then cached): fp32 on CPU.
            model = load_model(source, device="cpu", dtype="fp32", family=family)
        tokenizer = load_tokenizer(source, family=family)  # before exporting: a missing tokenizer should fail fast
        if backend == "torch":
            if threads is not None:
                torch.set_num_threads(threads)  # process-wide: torch has no per-model thread pool
            runner: Backend = TorchBackend(model)
        else:
            from .onnx_backend import OnnxBackend

            runner = OnnxBackend.for_model(model, device=device, cache_dir=onnx_dir, precision=ONNX_DTYPES[dtype],
                                           threads=threads)
        identity = model_id(source)
        calibrator = load_for_model(model.source_dir, identity, calibration) if load_calibration else None
        log.info("encoder: %s backend, %s on %s, %s model %s, %s", runner.name, runner.precision, runner.device,
                 model.family, source, "calibrated" if calibrator else "no calibrator")
        return cls(model, tokenizer, runner, model_id=identity, batch_size=batch_size, calibrator=calibrator)

    @property
    def embed_dim(self) -> int:
        return self.model.embed_dim

    @property
    def image_size(self) -> int:
        return self.model.image_size

    @property
    def context_length(self) -> int:
        return self.model.context_length

    def encode_texts(self, texts: Sequence[str], progress: ProgressCallback | None = None) -> GaussianBatch:
        parts = []
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start:start + self.batch_size]
            ids = self.tokenizer(list(chunk)).numpy()
            parts.append(GaussianBatch(*self.backend.encode_text(ids)))
            if progress:
                progress(len(chunk))
        return GaussianBatch.concat(parts, self.embed_dim, self.deterministic)

    def encode_images(self, images: Sequence[ImageInput], progress: ProgressCallback | None = None
                      ) -> GaussianBatch:
        """Images (PIL, bytes or paths) -> Gaussians. Undecodable inputs raise ``ImageDecodeError``."""
        parts = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start:start + self.batch_size]
            parts.append(self.encode_pixels(self.preprocessor.array(chunk)))
            if progress:
                progress(len(chunk))
        return GaussianBatch.concat(parts, self.embed_dim, self.deterministic)

    @contextmanager
    def sharing_cpu(self, threads: int) -> Iterator[None]:
        """While inside, torch on the CPU leaves ``threads`` cores to other work of this process.

        Batch indexing decodes images on threads of its own while the encoder runs: on a CPU,
        torch's intra-op threads and the decode threads then contend for the same cores, and
        the encoder calls slow down more than decoding gains (2 cores: a job pipeline at 0.74x
        of a decode-then-encode loop with torch on both cores, 0.91x with torch on one;
        ``bench.indexing``). Torch's pool is process-wide, so this lowers it for everything in
        the process (the service's queries included) until the last holder leaves, then
        restores it. A no-op for other backends and devices (ONNX Runtime sessions fix their
        threads when created) and for ``threads`` < 1.
        """
        global _cpu_threads_before
        if threads < 1 or self.backend.name != "torch" or self.backend.device != "cpu":
            yield
            return
        with _cpu_lock:
            if not _cpu_holds:
                _cpu_threads_before = torch.get_num_threads()
            _cpu_holds.append(threads)
            torch.set_num_threads(max(1, _cpu_threads_before - max(_cpu_holds)))
        try:
            yield
        finally:
            with _cpu_lock:
                _cpu_holds.remove(threads)
                torch.set_num_threads(max(1, _cpu_threads_before - max(_cpu_holds)) if _cpu_holds
                                      else _cpu_threads_before)

    def encode_pixels(self, pixels: np.ndarray) -> GaussianBatch:
        """Already preprocessed pixels [B, 3, S, S] -> Gaussians (one backend call)."""
        return GaussianBatch(*self.backend.encode_image(pixels))
