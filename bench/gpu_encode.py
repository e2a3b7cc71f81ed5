"""The GPU check's encoder and indexing sections (see ``bench.gpu``).

Encoder: ViT-B/16 image-tower throughput per runtime, as a share of the fp16 roofline.
Indexing: JPEG files to a durable collection, CPU decode (the job pipeline) against nvJPEG
decode on the GPU (``torchvision.io.decode_jpeg``), same encoder, same durable adds.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "fixtures" / "prolip-reference" / "b16like"


def model_source(name: str, scratch: Path) -> str:
    """An encoder source: ``reference`` is the small test checkpoint, given a word-level tokenizer."""
    if name != "reference":
        return name
    from tests.conftest import write_wordlevel_tokenizer

    folder = scratch / "reference-b16like"
    if not folder.exists():
        shutil.copytree(REFERENCE, folder)
        write_wordlevel_tokenizer(folder / "tokenizer.json", ["a", "photo"])
    return str(folder)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_tflops(device: str, dtype_name: str, size: int = 8192, repeats: int = 5) -> float:
    """Best dense matmul rate (TFLOP/s) in ``dtype_name`` on ``device``: the roofline."""
    import torch

    dtype = {"fp16": torch.float16, "fp32": torch.float32}[dtype_name]
    size = size if device.startswith("cuda") else 1024
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 1):
        _sync(device)
        started = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - started)
    return 2 * size ** 3 / best / 1e12


def image_flops(model, device: str) -> float:
    """FLOPs of one image through the image tower (counted by torch on one real forward)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    parameter = next(model.parameters())
    example = torch.zeros(1, 3, model.image_size, model.image_size, device=device, dtype=parameter.dtype)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.encode_image(example)
    return float(counter.get_total_flops())


def _throughput(run, batches: list, device: str) -> float:
    """Images per second over ``batches`` after one warm-up batch."""
    run(batches[0])
    _sync(device)
    started = time.perf_counter()
    for batch in batches:
        run(batch)
    _sync(device)
    return sum(len(batch) for batch in batches) / (time.perf_counter() - started)


def encoder_rows(plan: Any, Row: type) -> list:
    import torch

    from models.loading import load_model

    device, rows = plan.device, []
    precision = "fp32" if plan.cpu_only else "fp16"
    scratch = plan.scratch / "encoder"
    scratch.mkdir(parents=True, exist_ok=True)
    source = model_source(plan.model, scratch)
    model = load_model(source, device=device, dtype=precision)
    size = model.image_size
    count = max(plan.batch, plan.encode_images // plan.batch * plan.batch)
    rng = np.random.default_rng(0)
    host = rng.standard_normal((plan.batch, 3, size, size)).astype(np.float32)  # one batch, reused
    on_device = torch.from_numpy(host).to(device, next(model.parameters()).dtype)
    batches = [on_device] * (count // plan.batch)
    flops = image_flops(model, device)
    peak = matmul_tflops(device, precision) * 1e12
    roof = f"{precision} matmul {peak / 1e12:.3g} TFLOP/s, {flops / 1e9:.3g} GFLOP/image"

    def encode(batch):
        with torch.inference_mode():
            return model.encode_image(batch)

    eager = _throughput(encode, batches, device)
    rows.append(Row("encoder", f"image tower, torch {precision} eager (batch {plan.batch})", eager, "images/s",
                    eager, note=f"{100 * eager * flops / peak:.0f} % of the roofline ({roof})",
                    extra={"roofline_fraction": eager * flops / peak, "gflop_per_image": flops / 1e9}))
    if plan.cpu_only:
        rows.append(Row("encoder", "image tower, torch.compile", status="skipped",
                        note="--cpu-only: compiling for the CPU would spend the budget"))
    elif plan.left() > 120:
        started = time.perf_counter()
        compiled = torch.compile(model.encode_image)

        def run_compiled(batch):
            with torch.inference_mode():
                return compiled(batch)

        run_compiled(batches[0])
        compile_s = time.perf_counter() - started
        rate = _throughput(run_compiled, batches, device)
        rows.append(Row("encoder", f"image tower, torch.compile {precision}", rate, "images/s", eager,
                        note=f"{100 * rate * flops / peak:.0f} % of the roofline; compile {compile_s:.0f} s",
                        extra={"roofline_fraction": rate * flops / peak, "compile_s": compile_s}))
    else:
        rows.append(Row("encoder", "image tower, torch.compile", status="skipped", note="time budget"))
    rows += _onnx_rows(plan, Row, model, host, count, eager, flops, peak, scratch)
    if device.startswith("cuda"):
        batches.clear()
        torch.cuda.empty_cache()
    return rows


def _onnx_rows(plan: Any, Row: type, model, host: np.ndarray, count: int, eager: float, flops: float,
               peak: float, scratch: Path) -> list:
    """ONNX Runtime: the CUDA provider (fp32 graph), and TensorRT (fp16) where installed."""
    try:
        import onnxruntime as ort
    except ImportError as error:
        return [Row("encoder", "image tower, ONNX Runtime", status="skipped", note=str(error))]
    from models.onnx_backend import INPUT_NAMES, OnnxBackend

    cpu_model = load_cpu_copy(model)
    backend = OnnxBackend.for_model(cpu_model, device="cpu" if plan.cpu_only else "cuda", cache_dir=scratch / "onnx")
    batches = [host] * (count // plan.batch)
    rows = []
    rate = _throughput(lambda batch: backend.encode_image(batch), batches, "cpu")
    rows.append(Row("encoder", f"image tower, ONNX Runtime {backend.device} fp32 (host arrays in and out)", rate,
                    "images/s", eager, note=f"{100 * rate * flops / peak:.0f} % of the roofline; {backend.reason}"))
    if plan.cpu_only or "TensorrtExecutionProvider" not in ort.get_available_providers():
        rows.append(Row("encoder", "image tower, ONNX Runtime TensorRT EP fp16", status="skipped",
                        note="--cpu-only" if plan.cpu_only else "onnxruntime has no TensorRT provider here"))
        return rows
    if plan.left() < 150:
        rows.append(Row("encoder", "image tower, TensorRT EP", status="skipped", note="time budget"))
        return rows
    started = time.perf_counter()
    options = {"trt_fp16_enable": True, "trt_engine_cache_enable": True,
               "trt_engine_cache_path": str(scratch / "trt")}
    session = ort.InferenceSession(str(backend.files["image"]),
                                   providers=[("TensorrtExecutionProvider", options), "CUDAExecutionProvider"])
    name = INPUT_NAMES["image"]
    session.run(None, {name: host})  # builds the engine
    build_s = time.perf_counter() - started
    rate = _throughput(lambda batch: session.run(None, {name: batch}), batches, "cpu")
    rows.append(Row("encoder", "image tower, ONNX Runtime TensorRT EP fp16 (host arrays)", rate, "images/s", eager,
                    note=f"{100 * rate * flops / peak:.0f} % of the roofline; engine build {build_s:.0f} s"))
    return rows


def load_cpu_copy(model):
    import copy

    import torch

    return copy.deepcopy(model).to("cpu", torch.float32)


# ----------------------------------------------------------------------------- indexing


def gpu_pixels(datas: list[bytes], size: int, device: str):
    """JPEG bytes -> normalised pixels [n, 3, size, size] float32 on ``device``: nvJPEG decode, then the
    evaluation transform of ``models.preprocess`` (shorter side to ``size`` bicubic, centre crop,
    CLIP normalisation) in torch on the same device."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    from models.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, resized_size

    encoded = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in datas]
    images = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)
    out = torch.empty((len(images), 3, size, size), device=device, dtype=torch.float32)
    for i, image in enumerate(images):
        height, width = image.shape[1:]
        new_width, new_height = resized_size(width, height, size)
        image = image.float()  # antialiased bicubic resizing of uint8 is not on every device; float is
        if (new_width, new_height) != (width, height):
            image = F.resize(image, [new_height, new_width], interpolation=InterpolationMode.BICUBIC, antialias=True)
            image = image.round().clamp(0, 255)  # as PIL's uint8 result
        left, top = int(round((new_width - size) / 2.0)), int(round((new_height - size) / 2.0))
        out[i] = image[:, top:top + size, left:left + size] / 255.0
    mean = torch.tensor(OPENAI_CLIP_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD, device=device).view(1, 3, 1, 1)
    return (out - mean) / std


def indexing_rows(plan: Any, Row: type) -> list:
    import torch

    from bench.indexing import write_corpus
    from indexer import Catalog
    from indexer.jobs import JobManager, JobSettings
    from models.encoder import Encoder

    scratch = plan.scratch / "indexing"
    scratch.mkdir(parents=True, exist_ok=True)
    source = model_source(plan.model, scratch)
    side = 96 if plan.cpu_only else 256
    paths = write_corpus(scratch / "corpus", plan.images, side)
    encoder = Encoder.load(source, device=plan.device, batch_size=plan.batch)
    encoder.encode_images([paths[0]])  # warm-up
    workers = os.cpu_count() or 1
    settings = JobSettings(chunk_size=plan.batch, batch_size=plan.batch, decode_workers=workers)
    manager = JobManager(scratch / "pipeline", encoder=encoder, settings=settings)
    started = time.perf_counter()
    status = manager.wait(manager.submit(scratch / "corpus", "bench"))
    pipeline = status.done / (time.perf_counter() - started)
    reference = manager.catalog().get("bench")
    rows = [Row("indexing", f"job pipeline, CPU decode ({workers} threads), {plan.images} JPEGs of {side}px", pipeline,
                "images/s", pipeline, note=f"{status.state}, {status.done} done; durable group commits")]
    try:
        import torchvision  # noqa: F401
    except ImportError:
        manager.close()
        return rows + [Row("indexing", "nvJPEG decode on the GPU", status="skipped",
                           note="torchvision is not installed")]

    model = encoder.model
    dtype = next(model.parameters()).dtype
    with Catalog(scratch / "gpu-decode", auto_snapshot=False) as catalog, ThreadPoolExecutor(workers) as readers:
        index = catalog.create("bench", "image", encoder.embed_dim, encoder.model_id)
        started = time.perf_counter()
        delta = 0.0
        for first in range(0, len(paths), plan.batch):
            chunk = paths[first:first + plan.batch]
            datas = list(readers.map(Path.read_bytes, chunk))
            pixels = gpu_pixels(datas, encoder.image_size, plan.device)
            with torch.inference_mode():
                out = model.encode_image(pixels.to(dtype))
            mean, logvar = out.mean.float().cpu().numpy(), out.logvar.float().cpu().numpy()
            ids = [path.name for path in chunk]
            index.add(ids, mean, logvar)
            if first == 0:
                delta = max(float(np.abs(reference.get(i).mean - mean[j]).max()) for j, i in enumerate(ids))
        rate = len(paths) / (time.perf_counter() - started)
    manager.close()
    where = "GPU" if not plan.cpu_only else "CPU (torchvision; --cpu-only)"
    rows.append(Row("indexing", f"decode_jpeg on the {where}, encode, durable add", rate, "images/s", pipeline,
                    note=f"max |delta mean| vs the pipeline's embeddings {delta:.1e} (bicubic resize in torch vs PIL)",
                    extra={"max_abs_delta_mean": delta}))
    return rows
