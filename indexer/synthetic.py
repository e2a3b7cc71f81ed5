"""Seeded synthetic Gaussian embeddings for tests and benchmarks.

Real ProLIP embeddings are clustered (semantic groups) and their uncertainties vary by item,
so uniform random means would make every ANN index look hopeless and every item an equal
neighbour. ``corpus`` draws unit means around ``clusters`` random centres (cosine to the centre
~ 1 / sqrt(1 + spread^2); ``clusters=0`` gives isotropic means, the hardest case for ANN) and
per-item uncertainties S ~ LogNormal(log s_median, s_spread) spread over the dimensions.
``queries`` are noisy copies of random items (like a caption near its image). With the
defaults (S around 0.1 +- 0.03) the uncertainty term reorders cosine neighbours without
dominating them: CSD and cosine top-10 overlap only partly, as the two-stage numbers show.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

_CHUNK = 65536


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _logvar(rng: np.random.Generator, n: int, dim: int, s_median: float, s_spread: float,
            jitter: float) -> np.ndarray:
    """[n, dim] log-variances whose per-row sum of variances is ~ LogNormal(log s_median, s_spread)."""
    level = np.log(s_median / dim) + s_spread * rng.standard_normal((n, 1)) - jitter ** 2 / 2
    return (level + jitter * rng.standard_normal((n, dim))).astype(np.float32)


def corpus_chunks(n: int, dim: int, seed: int = 0, clusters: int = 1024, spread: float = 1.0,
                  s_median: float = 0.1, s_spread: float = 0.3, jitter: float = 0.5,
                  chunk: int = _CHUNK) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(mean [c, dim] float32 unit rows, logvar [c, dim] float32) blocks of at most ``chunk`` rows."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((max(clusters, 1), dim))).astype(np.float32)
    for start in range(0, n, chunk):
        rows = min(chunk, n - start)
        noise = rng.standard_normal((rows, dim), dtype=np.float32)
        if clusters:
            noise *= spread / math.sqrt(dim)  # |noise| ~ spread, so cos(item, centre) ~ 1 / sqrt(1 + spread^2)
            noise += centres[rng.integers(0, clusters, rows)]
        yield _unit(noise), _logvar(rng, rows, dim, s_median, s_spread, jitter)


def corpus(n: int, dim: int, seed: int = 0, clusters: int = 1024, **shape: float) -> tuple[np.ndarray, np.ndarray]:
    """(mean [n, dim] float32 unit rows, logvar [n, dim] float32); see ``corpus_chunks`` for the knobs."""
    mean = np.empty((n, dim), np.float32)
    logvar = np.empty((n, dim), np.float32)
    start = 0
    for block_mean, block_logvar in corpus_chunks(n, dim, seed, clusters, **shape):
        mean[start:start + len(block_mean)] = block_mean
        logvar[start:start + len(block_mean)] = block_logvar
        start += len(block_mean)
    return mean, logvar


def queries(mean: np.ndarray, count: int, seed: int = 1, noise: float = 1.0, s_median: float = 0.1,
            s_spread: float = 0.3, jitter: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Queries near random corpus items (like a caption near its image): (mean [count, D], logvar [count, D])."""
    rng = np.random.default_rng(seed)
    dim = mean.shape[1]
    source = mean[rng.integers(0, len(mean), count)]
    query_mean = _unit(source + noise / math.sqrt(dim) * rng.standard_normal((count, dim))).astype(np.float32)
    return query_mean, _logvar(rng, count, dim, s_median, s_spread, jitter)
