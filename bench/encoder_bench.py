"""Encoder throughput per backend on ViT-B/16 (random weights), beside the machine's fp32 roofline.

For every backend/precision the same synthetic images and texts are encoded in batches,
interleaved across backends after a warm-up (other processes share the CPU: their load then
falls on every backend alike); throughput is 1 / the median time per input. Each row also
says what share of the fp32 roofline it reaches (FLOPs per input, counted with
``torch.utils.flop_counter`` on the meta device, times throughput, over the fp32 matmul rate
read between the timed batches), and how well the CSD ranking of images for each text query
agrees with fp32 PyTorch eager on the same inputs: recall@k (the share of fp32's top-k that
the fast path also ranks top-k) and the mean Spearman correlation of the full rankings.
Throughput is the towers alone (backend level): tokenising and image decoding are not timed.

    python -m bench.encoder_bench [--images 32 --texts 64 --threads N --device auto --backends ...]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

log = logging.getLogger(__name__)

ARCH = "ViT-B-16-ProLIP"
CPU_BACKENDS = ("torch:fp32", "onnx:fp32", "onnx:int8")  # torch:bf16 on CPU is opt-in: emulated, ~10x slower
CUDA_BACKENDS = ("torch:fp32", "torch:fp16", "torch:bf16", "onnx:fp32")
BASELINE = "torch:fp32"


@dataclass
class Workload:
    pixels: np.ndarray  # (N_img, 3, S, S) float32, preprocessed
    ids: np.ndarray  # (N_txt, L) int64
    image_batch: int
    text_batch: int


def matmul_gflops(device: torch.device, size: int = 2048, repeats: int = 5) -> float:
    """Best fp32 matmul rate on ``device``: the roofline the encoders are compared with."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    best = float("inf")
    for _ in range(repeats + 1):  # the first call warms up the BLAS / CUDA context
        _sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def flops_per_input(arch: str = ARCH) -> tuple[float, float]:
    """FLOPs of one image and one (full-context) text through ``arch``, counted on shapes only."""
    from torch.utils.flop_counter import FlopCounterMode

    from models import ProLIP, architecture_config

    config = architecture_config(arch)
    with torch.device("meta"):
        model = ProLIP(config).eval()
    size, length = config.vision_cfg.image_size, config.text_cfg.context_length
    counts = []
    for encode, example in ((model.encode_image, torch.zeros(1, 3, size, size, device="meta")),
                            (model.encode_text, torch.zeros(1, length, dtype=torch.int64, device="meta"))):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            encode(example)
        counts.append(float(counter.get_total_flops()))
    return counts[0], counts[1]


def synthetic_workload(model, n_images: int, n_texts: int, image_batch: int, text_batch: int,
                       seed: int = 0) -> Workload:
    """Smooth random colour fields of varied scale (through the real preprocessing) and token-id
    texts of varied length laid out as the SigLIP tokenizer does (tokens, EOS 1, padding 0)."""
    from PIL import Image

    from models.preprocess import ImagePreprocessor

    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n_images):
        grid = int(rng.integers(2, 17))
        coarse = rng.integers(0, 256, (grid, grid, 3), dtype=np.uint8)
        side = int(rng.integers(model.image_size, 2 * model.image_size))
        images.append(Image.fromarray(coarse).resize((side, side * 3 // 4), Image.BICUBIC))
    pixels = ImagePreprocessor(model.image_size).array(images)
    vocab, length = model.config.text_cfg.vocab_size, model.context_length
    ids = np.zeros((n_texts, length), dtype=np.int64)
    for row in range(n_texts):
        used = int(rng.integers(2, min(24, length) + 1))
        ids[row, :used - 1] = rng.integers(2, vocab, used - 1)
        ids[row, used - 1] = 1
    return Workload(pixels, ids, image_batch, text_batch)


def make_backend(name: str, model, device: torch.device, threads: int, cache_dir):
    """``kind:precision`` -> a Backend. Torch precisions other than fp32 get their own model copy."""
    import copy

    from models.encoder import TorchBackend
    from models.onnx_backend import OnnxBackend

    kind, _, precision = name.partition(":")
    if kind == "torch":
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        return TorchBackend(copy.deepcopy(model).to(device, dtype) if dtype != torch.float32 else model)
    if kind == "onnx":
        onnx_device = "cpu" if device.type == "cpu" else f"cuda:{device.index or 0}"
        return OnnxBackend.for_model(model, device=onnx_device, cache_dir=cache_dir, precision=precision,
                                     threads=threads)
    raise ValueError(f"unknown backend {name!r}; use torch:<fp32|fp16|bf16> or onnx:<fp32|int8>")


def interleaved_pass(encoders: dict, inputs: np.ndarray, batch: int,
                     probe: Callable[[], float] | None = None) -> tuple[dict, list[float]]:
    """Encode ``inputs`` with every encoder, batch by batch, rotating which encoder goes first.

    Other processes share the CPU: interleaving spreads their load over all encoders alike,
    and the median time ignores the batches a burst of theirs landed on. ``probe`` (the
    matmul rate) runs once per step, so the roofline is read under the same conditions.
    Returns per encoder (means, logvars, median seconds per input), and the probe readings.
    """
    names = list(encoders)
    for name in names:  # warm-up: first-call allocations, ORT memory planning, lazy init
        encoders[name](inputs[:batch])
    means = {name: [] for name in names}
    logvars = {name: [] for name in names}
    seconds = {name: [] for name in names}
    readings = []
    for step, begin in enumerate(range(0, len(inputs), batch)):
        if probe is not None:
            readings.append(probe())
        chunk = inputs[begin:begin + batch]
        for name in names[step % len(names):] + names[:step % len(names)]:
            start = time.perf_counter()
            mean, logvar = encoders[name](chunk)
            seconds[name].append((time.perf_counter() - start) / len(chunk))
            means[name].append(mean)
            logvars[name].append(logvar)
    results = {name: (np.concatenate(means[name]), np.concatenate(logvars[name]), float(np.median(seconds[name])))
               for name in names}
    return results, readings


def rank_agreement(reference: dict, candidate: dict, k: int) -> tuple[float, float]:
    """(recall@k, mean Spearman) of the candidate's CSD rankings of images per text vs the reference's."""
    from models.gaussian import csd

    def distances(run):  # (N_txt, N_img), lower = closer
        return csd(run["text_mean"].astype(np.float64), run["text_logvar"].astype(np.float64),
                   run["image_mean"].astype(np.float64), run["image_logvar"].astype(np.float64))

    ref, got = distances(reference), distances(candidate)
    k = min(k, ref.shape[1])
    ref_top = np.argsort(ref, axis=1)[:, :k]
    got_top = np.argsort(got, axis=1)[:, :k]
    recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(ref_top, got_top, strict=True)])
    ref_rank = np.argsort(np.argsort(ref, axis=1), axis=1).astype(np.float64)
    got_rank = np.argsort(np.argsort(got, axis=1), axis=1).astype(np.float64)
    n = ref.shape[1]
    spearman = 1 - 6 * ((ref_rank - got_rank) ** 2).sum(axis=1) / (n * (n * n - 1))
    return float(recall), float(spearman.mean())


def run(backends: Sequence[str] | None = None, device: str = "auto", threads: int | None = None,
        n_images: int | None = None, n_texts: int | None = None, image_batch: int | None = None,
        text_batch: int | None = None, k: int = 10, arch: str = ARCH, cache_dir=None) -> list[dict]:
    """One row per backend: throughput, ratio vs torch fp32 eager, share of the fp32 roofline,
    CSD rank agreement with torch fp32. Defaults fit a few minutes on a 2-core CPU."""
    from models import load_model
    from models.device import select

    placement = select(device, "fp32")
    on_gpu = placement.device.type == "cuda"
    if threads is not None:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    backends = list(backends or (CUDA_BACKENDS if on_gpu else CPU_BACKENDS))
    if BASELINE not in backends:
        backends.insert(0, BASELINE)  # every ratio and agreement is measured against it, in this run
    backends.sort(key=lambda name: name != BASELINE)

    gflops = matmul_gflops(placement.device)
    image_flops, text_flops = flops_per_input(arch)
    log.info("%s: %.1f GFLOP per image, %.1f GFLOP per text; fp32 matmul %.1f GFLOP/s on %s, %d threads",
             arch, image_flops / 1e9, text_flops / 1e9, gflops, placement.device, threads)
    model = load_model(f"arch:{arch}", device=placement.device, dtype="fp32")
    work = synthetic_workload(model, n_images or (256 if on_gpu else 32), n_texts or (1024 if on_gpu else 64),
                              image_batch or (64 if on_gpu else 8), text_batch or (256 if on_gpu else 16))
    cpu_model = model if not on_gpu else None

    runners = {}
    for name in backends:
        log.info("preparing %s", name)
        if name.startswith("onnx") and cpu_model is None:
            cpu_model = load_model(f"arch:{arch}", device="cpu", dtype="fp32")  # the export source
        runners[name] = make_backend(name, cpu_model if name.startswith("onnx") else model, placement.device,
                                     threads, cache_dir)
    log.info("timing %d images and %d texts per backend, interleaved", len(work.pixels), len(work.ids))
    probe = partial(matmul_gflops, placement.device, repeats=1)
    images, image_readings = interleaved_pass({n: r.encode_image for n, r in runners.items()}, work.pixels,
                                              work.image_batch, probe)
    texts, text_readings = interleaved_pass({n: r.encode_text for n, r in runners.items()}, work.ids,
                                            work.text_batch, probe)
    # Roofline = the matmul rate read between the timed batches (same load as they saw);
    # the best reading of the run is reported beside it as the machine's peak.
    readings = image_readings + text_readings
    roofline = float(np.median(readings))
    peak = max([gflops, *readings])

    outputs = {name: {"image_mean": images[name][0], "image_logvar": images[name][1],
                      "text_mean": texts[name][0], "text_logvar": texts[name][1]} for name in backends}
    rows = []
    for name in backends:
        images_per_s, texts_per_s = 1 / images[name][2], 1 / texts[name][2]
        recall, spearman = rank_agreement(outputs[BASELINE], outputs[name], k)
        reference = outputs[BASELINE]
        rows.append({
            "backend": name.partition(":")[0], "precision": name.partition(":")[2], "device": runners[name].device,
            "threads": threads, "images_per_s": images_per_s, "texts_per_s": texts_per_s,
            "image_ratio": images_per_s * images[BASELINE][2], "text_ratio": texts_per_s * texts[BASELINE][2],
            "image_roofline": images_per_s * image_flops / (roofline * 1e9),
            "text_roofline": texts_per_s * text_flops / (roofline * 1e9),
            f"recall@{k}": recall, "spearman": spearman,
            "max_abs_mean_error": float(max(np.abs(outputs[name]["image_mean"] - reference["image_mean"]).max(),
                                            np.abs(outputs[name]["text_mean"] - reference["text_mean"]).max())),
            "gflops_roofline": roofline, "gflops_peak": peak,
            "image_gflop": image_flops / 1e9, "text_gflop": text_flops / 1e9,
            "n_images": len(work.pixels), "n_texts": len(work.ids), "k": k, "arch": arch,
            "context_length": work.ids.shape[1],
        })
        log.info("%s: %.2f images/s, %.2f texts/s", name, images_per_s, texts_per_s)
    return rows


def markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table, with the measurement conditions underneath."""
    k = rows[0]["k"]
    lines = [
        f"| backend | precision | device | threads | images/s | texts/s | × torch eager (img / txt) "
        f"| % fp32 roofline (img / txt) | CSD R@{k} vs fp32 | CSD Spearman vs fp32 | max abs Δ mean |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['backend']} | {row['precision']} | {row['device']} | {row['threads']} "
            f"| {row['images_per_s']:.2f} | {row['texts_per_s']:.2f} "
            f"| {row['image_ratio']:.2f} / {row['text_ratio']:.2f} "
            f"| {100 * row['image_roofline']:.0f}% / {100 * row['text_roofline']:.0f}% "
            f"| {row[f'recall@{k}']:.3f} | {row['spearman']:.4f} | {row['max_abs_mean_error']:.1e} |")
    first = rows[0]
    lines.append("")
    lines.append(
        f"{first['arch']} random weights; {first['image_gflop']:.1f} GFLOP/image, {first['text_gflop']:.1f} "
        f"GFLOP/text (full {first['context_length']}-token context); roofline = fp32 matmul at "
        f"{first['gflops_roofline']:.1f} GFLOP/s (median of readings between the timed batches; best reading "
        f"{first['gflops_peak']:.1f}); "
        f"{first['n_images']} images and {first['n_texts']} texts per backend, batches interleaved across "
        f"backends after a warm-up, rate = 1 / median time per input; agreement = CSD ranking of the images "
        f"for each text vs torch fp32. int8 can pass 100% of the roofline: its matmuls are not fp32.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.encoder_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", help=f"kind:precision list (default CPU: {' '.join(CPU_BACKENDS)}; "
                                                      f"CUDA: {' '.join(CUDA_BACKENDS)})")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, help="intra-op threads (default: torch's count)")
    parser.add_argument("--images", type=int, help="images per backend (default 32 on CPU)")
    parser.add_argument("--texts", type=int, help="texts per backend (default 64 on CPU)")
    parser.add_argument("--image-batch", type=int)
    parser.add_argument("--text-batch", type=int)
    parser.add_argument("--k", type=int, default=10, help="recall@k of the CSD rankings")
    parser.add_argument("--arch", default=ARCH)
    parser.add_argument("--cache-dir", help="ONNX graph cache (default ~/.cache/prolip-retrieval/onnx)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    rows = run(args.backends, args.device, args.threads, args.images, args.texts, args.image_batch,
               args.text_batch, args.k, args.arch, args.cache_dir)
    print(markdown(rows))
    if hasattr(os, "getloadavg"):
        print(f"\nload average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())} "
              f"on {os.cpu_count()} CPUs (other processes share them)")
    return 0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    sys.exit(main())
