"""Bayesian prompt re-weighting (BPRW, ProLIP Sec. 4): few-shot class embeddings from prompt Gaussians.

Each class has T prompts ("a photo of a {}", "a drawing of a {}", ...), each a Gaussian
N(mu_t, diag sigma_t^2) from the text tower. A few labelled images of the class give samples:
S draws from each image's own Gaussian. The prompts are taken as the components of a mixture
with known means and variances, and EM fits only the mixing weights pi under a symmetric
Dirichlet(alpha) prior (MAP: pi_t ∝ N_t + alpha - 1). The class embedding is the mixture's
mean sum_t pi_t mu_t with variance sum_t pi_t^2 sigma_t^2 (a weighted sum of independent
Gaussians); a prompt whose Gaussian explains the class's images gets more weight.

This follows the official analysis code (naver-ai/prolip, ``src/analysis/unc_zeroshot_prompts.py``,
``estimate_mixing_proportions`` and ``bprw``), whose few-shot setting for the paper's Table 3 is
alpha 2, 5 images per class, 20 samples per image, variances widened by 0.02 and the weights
started at 1 / mean variance; ``tests/fixtures/bprw`` holds its outputs on synthetic inputs, which
this module reproduces. Two details as there: the EM loop stops when the weights move less than
``tol`` (returning the weights before that last step), and variances get ``stable_eps`` added
before the component densities are computed. The component log-densities do not depend on the
weights, so they are computed once here rather than at every iteration (the same numbers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ALPHA = 2.0  # Dirichlet concentration of the paper's few-shot setting
SAMPLES_PER_IMAGE = 20
STABLE_EPS = 0.02
INITS = ("uniform", "inverse", "inverse_sq")
MAX_ITER = 1000
TOL = 1e-12


def mixing_weights(samples: np.ndarray, means: np.ndarray, variances: np.ndarray, alpha: float = ALPHA,
                   stable_eps: float = STABLE_EPS, init: str = "inverse", tol: float = TOL,
                   max_iter: int = MAX_ITER) -> np.ndarray:
    """MAP mixing weights [K] of K known diagonal Gaussians (means, variances [K, D]) for samples [N, D]."""
    samples = np.asarray(samples, np.float64)
    means = np.asarray(means, np.float64)
    variances = np.asarray(variances, np.float64)
    if means.shape != variances.shape or means.ndim != 2 or samples.ndim != 2 or samples.shape[1] != means.shape[1]:
        raise ValueError(f"samples [N, D], means and variances [K, D] expected; got {samples.shape}, "
                         f"{means.shape}, {variances.shape}")
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")
    if alpha < 1:
        raise ValueError(f"alpha must be >= 1 (a Dirichlet prior whose MAP weights stay >= 0), got {alpha}")
    k, dim = means.shape
    if init == "uniform":
        pi = np.full(k, 1.0 / k)
    else:
        power = 1 if init == "inverse" else 2
        pi = 1.0 / (variances ** power).mean(axis=1)
        pi /= pi.sum()
    widened = variances + stable_eps
    # log N(x_n | mu_k, diag v_k), [N, K]: fixed while the weights change. sum_d (x - mu)^2 / v is
    # expanded into matrix products so no [N, K, D] array is formed.
    inverse = 1.0 / widened
    squared = (samples ** 2) @ inverse.T - 2 * samples @ (means * inverse).T + ((means ** 2) * inverse).sum(-1)[None]
    log_density = -0.5 * squared - 0.5 * np.log(widened).sum(-1)[None] - 0.5 * dim * np.log(2 * np.pi)
    n = len(samples)
    for _ in range(max_iter):
        log_responsibility = log_density + np.log(pi)[None]
        log_responsibility -= log_responsibility.max(axis=1, keepdims=True)
        responsibility = np.exp(log_responsibility)
        responsibility /= responsibility.sum(axis=1, keepdims=True)
        updated = (responsibility.sum(axis=0) + alpha - 1) / (n + k * (alpha - 1))
        updated = np.clip(updated, 0, None)
        updated /= updated.sum()
        if np.linalg.norm(updated - pi) < tol:
            break
        pi = updated
    return pi


@dataclass(frozen=True)
class ReweightedClass:
    weights: np.ndarray  # [T] mixing weight of each prompt
    mean: np.ndarray  # [D] sum_t w_t mu_t (not normalised)
    variance: np.ndarray  # [D] sum_t w_t^2 sigma_t^2


def draw_samples(image_mean: np.ndarray, image_logvar: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """[n * S, D] samples mu + eps * sigma of n image Gaussians, from standard-normal ``noise`` [n, S, D]."""
    image_mean = np.asarray(image_mean, np.float64)
    sigma = np.exp(np.asarray(image_logvar, np.float64) / 2)
    return (np.asarray(noise, np.float64) * sigma[:, None, :] + image_mean[:, None, :]).reshape(-1, image_mean.shape[1])


def reweight_class(prompt_mean: np.ndarray, prompt_variance: np.ndarray, image_mean: np.ndarray,
                   image_logvar: np.ndarray, *, samples_per_image: int = SAMPLES_PER_IMAGE,
                   rng: np.random.Generator | None = None, noise: np.ndarray | None = None, alpha: float = ALPHA,
                   stable_eps: float = STABLE_EPS, init: str = "inverse") -> ReweightedClass:
    """One class: prompt Gaussians [T, D] (means, variances), its example images [n, D] (means, log-variances).

    ``noise`` [n, S, D] fixes the standard-normal draws (tests); otherwise ``rng`` draws them.
    """
    image_mean = np.atleast_2d(np.asarray(image_mean, np.float64))
    if noise is None:
        rng = rng if rng is not None else np.random.default_rng(0)
        noise = rng.standard_normal((len(image_mean), samples_per_image, image_mean.shape[1]))
    samples = draw_samples(image_mean, np.atleast_2d(image_logvar), noise)
    weights = mixing_weights(samples, prompt_mean, prompt_variance, alpha, stable_eps, init)
    prompt_mean = np.asarray(prompt_mean, np.float64)
    return ReweightedClass(weights, weights @ prompt_mean, (weights ** 2) @ np.asarray(prompt_variance, np.float64))
