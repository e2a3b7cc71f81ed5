"""The benchmark's accuracy measure: CSD rank agreement behaves as a ranking metric should."""

import numpy as np

from bench.encoder_bench import markdown, rank_agreement
from models.gaussian import csd


def gaussians(seed: int, n: int, dim: int = 16) -> dict:
    rng = np.random.default_rng(seed)
    mean = rng.standard_normal((n, dim)).astype(np.float32)
    return {"mean": mean / np.linalg.norm(mean, axis=1, keepdims=True),
            "logvar": rng.uniform(-6, -2, (n, dim)).astype(np.float32)}


def run_of(texts: dict, images: dict) -> dict:
    return {"text_mean": texts["mean"], "text_logvar": texts["logvar"],
            "image_mean": images["mean"], "image_logvar": images["logvar"]}


def test_identical_rankings_agree_fully_and_unrelated_ones_do_not():
    texts, images = gaussians(0, 20), gaussians(1, 40)
    reference = run_of(texts, images)
    assert rank_agreement(reference, reference, k=10) == (1.0, 1.0)
    recall, spearman = rank_agreement(reference, run_of(texts, gaussians(2, 40)), k=10)
    assert recall < 0.6 and abs(spearman) < 0.3


def test_uncertainty_alone_can_change_the_ranking():
    """CSD adds sum(sigma^2): raising one image's variances pushes it down every text's ranking."""
    texts, images = gaussians(3, 8), gaussians(4, 12)
    noisy = {"mean": images["mean"], "logvar": images["logvar"].copy()}
    reference = run_of(texts, images)
    best = np.argmin(csd(texts["mean"], texts["logvar"], images["mean"], images["logvar"]), axis=1)
    noisy["logvar"][best] = 2.0  # sum of variances ~ 16 * e^2: far beyond any mean distance
    recall, spearman = rank_agreement(reference, run_of(texts, noisy), k=1)
    assert recall == 0.0 and spearman < 1.0


def test_markdown_has_one_row_per_backend():
    row = {"backend": "torch", "precision": "fp32", "device": "cpu", "threads": 2, "images_per_s": 1.0,
           "texts_per_s": 4.0, "image_ratio": 1.0, "text_ratio": 1.0, "image_roofline": 0.5, "text_roofline": 0.6,
           "recall@10": 1.0, "spearman": 1.0, "max_abs_mean_error": 0.0, "gflops_roofline": 55.0,
           "gflops_peak": 60.0, "image_gflop": 35.3,
           "text_gflop": 11.4, "n_images": 32, "n_texts": 64, "k": 10, "arch": "ViT-B-16-ProLIP",
           "context_length": 64}
    table = markdown([row, {**row, "backend": "onnx", "precision": "int8"}])
    assert table.count("\n| ") == 2 and "| onnx | int8 | cpu | 2 |" in table
