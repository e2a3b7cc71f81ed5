"""Exporting the two towers to ONNX (fp32, optionally int8), cached on disk by a hash of the weights.

Each tower becomes one graph with a dynamic batch axis: pixels [B, 3, S, S] float32, or
token ids [B, context_length] int64, in; ``mean`` [B, D] (unit norm) and ``logvar`` [B, D]
float32 out (``mean`` only for a deterministic model: its graphs have one output). The text
length is fixed on purpose: ProLIP attends over padding, so a text's
embedding depends on being padded to exactly the context length.

Exporter: torch's dynamo-based ``torch.onnx.export(dynamo=True)`` (the default since torch
2.9; the TorchScript exporter is deprecated). On the ViT-B/16 towers it emits half the nodes
of the TorchScript one (SDPA comes out as plain MatMul/Softmax either way) with the same
outputs, and it writes weights as external data, so towers over protobuf's 2 GiB limit
(ViT-H/14's image tower) export too.

Cache layout, one folder per (weights, variant), each created by an atomic rename so a
crash never leaves a half-written model where a reader looks::

    <cache_dir>/<key>/image-fp32/{model.onnx, model.onnx.data, export.json}
    <cache_dir>/<key>/text-int8/...

``key`` hashes the config, every weight, the opset and the exporter/quantiser versions:
changed weights export again, unchanged ones are reused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

TOWERS = ("image", "text")
PRECISIONS = ("fp32", "int8")
INPUT_NAMES = {"image": "pixels", "text": "input_ids"}
OUTPUT_NAMES = ("mean", "logvar")  # a deterministic model's graphs have the first only
OPSET = 18
# Bump when the exported graph changes meaning (wrapper outputs, input names, options).
EXPORT_FORMAT = 1
MODEL_FILE = "model.onnx"
STALE_TEMP_SECONDS = 3600  # temp folders older than this belong to a crashed export

# int8 = dynamic quantisation of the weight matmuls (activations quantised per batch at run
# time). reduce_range keeps weights in 7 bits: on AVX2 CPUs without VNNI, ORT's u8*s8 kernel
# (vpmaddubsw) can saturate at full 8-bit range. Per-channel scales win back the accuracy.
# The patch-embedding Conv and the token Gather stay fp32 (little time, much error).
INT8_OPTIONS = {
    "per_channel": True,
    "reduce_range": True,
    "op_types_to_quantize": ["MatMul", "Gemm"],
    "extra_options": {"MatMulConstBOnly": True},  # never quantise activation x activation (attention)
}


def default_cache_dir() -> Path:
    """``$PROLIP_CACHE_DIR/onnx``, else ``$XDG_CACHE_HOME/prolip-retrieval/onnx`` (~/.cache by default)."""
    root = os.environ.get("PROLIP_CACHE_DIR")
    if root:
        return Path(root).expanduser() / "onnx"
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "prolip-retrieval" / "onnx"


def output_names(model) -> list[str]:
    return list(OUTPUT_NAMES[:1] if model.deterministic else OUTPUT_NAMES)


def weights_key(model) -> str:
    """Hash of what the exported graphs depend on: config, weights, opset, tool versions."""
    import onnxruntime

    digest = hashlib.sha256()
    header = {"config": model.config.to_dict(), "format": EXPORT_FORMAT, "opset": OPSET,
              "torch": torch.__version__, "onnxruntime": onnxruntime.__version__}
    digest.update(json.dumps(header, sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{name}:{tuple(data.shape)}".encode())
        digest.update(data.numpy().data)
    return digest.hexdigest()[:32]


class _TowerGraph(nn.Module):
    """One tower as a graph: input -> (normalised mean, logvar), or mean alone, through the model's encode_*."""

    def __init__(self, model, tower: str):
        super().__init__()
        self.model = model
        self.tower = tower

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        encode = self.model.encode_image if self.tower == "image" else self.model.encode_text
        out = encode(inputs)
        return (out.mean,) if out.logvar is None else (out.mean, out.logvar)


def example_input(model, tower: str, batch: int = 2) -> torch.Tensor:
    """A valid input of ``batch`` rows (batch 2: torch.export specialises sizes 0 and 1)."""
    if tower == "image":
        return torch.zeros(batch, 3, model.image_size, model.image_size)  # (B, 3, S, S)
    return torch.ones(batch, model.context_length, dtype=torch.int64)  # (B, L)


@contextlib.contextmanager
def _quiet(*logger_names: str) -> Iterator[None]:
    """Silence chatty tools below ERROR while they run: the exporter logs every optimiser pass at
    INFO and optional-package notices (torchvision) per call; the quantiser gives advice on root."""
    loggers = [logging.getLogger(name) for name in logger_names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def export_tower(model, tower: str, path: Path) -> None:
    """Write ``tower`` of a float32 CPU ``model`` to ``path`` (+ ``path.data``), batch axis dynamic."""
    graph = _TowerGraph(model, tower).eval()
    with _quiet("torch.onnx", "onnxscript", "onnx_ir"), torch.no_grad():
        program = torch.onnx.export(
            graph, (example_input(model, tower),), None, dynamo=True, opset_version=OPSET,
            input_names=[INPUT_NAMES[tower]], output_names=output_names(model),
            dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    program.save(str(path), external_data=True)


def quantize_tower(fp32_path: Path, path: Path) -> None:
    """Dynamic int8 quantisation of an exported fp32 tower (see INT8_OPTIONS)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet(""):
        quantize_dynamic(fp32_path, path, weight_type=QuantType.QInt8, use_external_data_format=True,
                         **INT8_OPTIONS)


def tower_file(model, tower: str, precision: str, cache_dir: Path, key: str | None = None) -> Path:
    """Path of ``tower`` at ``precision`` in the cache, exporting (and quantising) it on a miss."""
    if tower not in TOWERS:
        raise ValueError(f"unknown tower {tower!r}; choose one of {', '.join(TOWERS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown ONNX precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    key = key or weights_key(model)
    folder = Path(cache_dir) / key / f"{tower}-{precision}"
    if (folder / MODEL_FILE).is_file():
        log.info("onnx: reusing %s", folder)
        return folder / MODEL_FILE
    if precision == "fp32":
        def build(tmp: Path) -> None:
            export_tower(model, tower, tmp / MODEL_FILE)
    else:
        source = tower_file(model, tower, "fp32", cache_dir, key)

        def build(tmp: Path) -> None:
            quantize_tower(source, tmp / MODEL_FILE)
    started = time.perf_counter()
    log.info("onnx: building %s %s graph in %s", tower, precision, folder)
    publish_folder(folder, build, {"tower": tower, "precision": precision, "opset": OPSET,
                                   "format": EXPORT_FORMAT, "torch": torch.__version__})
    log.info("onnx: %s %s graph ready in %.1f s", tower, precision, time.perf_counter() - started)
    return folder / MODEL_FILE


def forget(folder: Path) -> None:
    """Remove a cached variant (e.g. one that fails to load) so the next call rebuilds it."""
    shutil.rmtree(folder, ignore_errors=True)


def publish_folder(final: Path, build: Callable[[Path], None], info: dict) -> Path:
    """Build into a temp folder beside ``final``, fsync it, then rename it into place.

    Readers only ever see a complete folder. When another process published ``final``
    first, its copy wins and ours is discarded.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        build(tmp)
        (tmp / "export.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        for file in tmp.iterdir():
            _fsync(file)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / MODEL_FILE).is_file():
                raise
            log.info("onnx: %s was published by another process; using it", final)
            shutil.rmtree(tmp, ignore_errors=True)
        _fsync(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _remove_stale_temps(final: Path) -> None:
    cutoff = time.time() - STALE_TEMP_SECONDS
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        with contextlib.suppress(OSError):
            if stale.stat().st_mtime < cutoff:
                shutil.rmtree(stale, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
