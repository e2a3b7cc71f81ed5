"""Closed-form math on diagonal Gaussian embeddings, for torch tensors and NumPy arrays alike.

Every function takes means (L2-normalised, [..., D]) and log-variances (log sigma^2,
[..., D]) and works on either array type, returning the same type. Pairwise functions
take [N, D] and [M, D] and return [N, M].
``GaussianBatch`` holds N embeddings as NumPy arrays, as encoders return them.

References: ProLIP (Chun et al., ICLR 2025), eq. for the closed-form sampled distance
(CSD, from PCME++) and the inclusion test; the probabilistic pairwise contrastive loss
(PPCL) defines the match logits.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

# torch is not imported here: the index and the CLI use the NumPy path, and importing torch
# costs them seconds. A tensor can only exist once its caller has imported torch.
Array = TypeVar("Array", "torch.Tensor", np.ndarray)


def _torch_of(x: Any) -> Any:
    """The torch module when ``x`` is a tensor, else None."""
    torch = sys.modules.get("torch")
    return torch if torch is not None and isinstance(x, torch.Tensor) else None


def _exp(x: Array) -> Array:
    torch = _torch_of(x)
    return torch.exp(x) if torch is not None else np.exp(x)


def _log(x: Array) -> Array:
    torch = _torch_of(x)
    return torch.log(x) if torch is not None else np.log(x)


def _sigmoid(x: Array) -> Array:
    torch = _torch_of(x)
    return torch.sigmoid(x) if torch is not None else 1.0 / (1.0 + np.exp(-x))


def uncertainty(logvar: Array) -> Array:
    """Sum of variances over dimensions, [..., D] -> [...]: the paper's per-input uncertainty."""
    return _exp(logvar).sum(-1)


def _sum_of_variances(logvar: Array | None, mean: Array) -> Array:
    """S per row; 0 for the points of a deterministic model (logvar None)."""
    return mean.sum(-1) * 0 if logvar is None else uncertainty(logvar)


def csd(mean1: Array, logvar1: Array | None, mean2: Array, logvar2: Array | None) -> Array:
    """Pairwise closed-form sampled distance [N, M]: ||mu1 - mu2||^2 + sum(sigma1^2 + sigma2^2).

    Lower is closer. The squared distance is expanded (|a|^2 + |b|^2 - 2ab) so no
    [N, M, D] tensor is formed; it is exact for any means, unit or not. A None logvar is a
    point (a deterministic model's embedding): its variances are 0, so the CSD of two points
    is ||mu1 - mu2||^2.
    """
    sq1 = (mean1 * mean1).sum(-1)[:, None]
    sq2 = (mean2 * mean2).sum(-1)[None, :]
    squared_distance = sq1 + sq2 - 2 * (mean1 @ mean2.T)
    return squared_distance + _sum_of_variances(logvar1, mean1)[:, None] + _sum_of_variances(logvar2, mean2)[None, :]


def csd_unit(mean1: Array, logvar1: Array | None, mean2: Array, logvar2: Array | None) -> Array:
    """CSD for unit-norm means through the identity CSD = 2 - 2 mu1.mu2 + S1 + S2 (S = 0 for points).

    The identity turns CSD ranking into an inner product: for a query q and items x,
    argmin_x CSD(q, x) = argmax_x <[mu_q, 1], [mu_x, -S_x / 2]> (see ``augment_*``).
    """
    return (2 - 2 * (mean1 @ mean2.T) + _sum_of_variances(logvar1, mean1)[:, None]
            + _sum_of_variances(logvar2, mean2)[None, :])


def augment_items(mean: np.ndarray, logvar: np.ndarray | None) -> np.ndarray:
    """Item vectors [mu_x, -S_x/2] ([N, D+1], float32) whose inner product ranks by CSD.

    ``logvar`` None (a deterministic model's points) means S_x = 0: the last column is 0.
    """
    mean = np.asarray(mean, dtype=np.float32)
    if logvar is None:
        column = np.zeros(mean.shape[0])
    else:
        column = -0.5 * uncertainty(np.asarray(logvar, dtype=np.float64))
    return np.concatenate([mean, column.astype(np.float32)[:, None]], axis=1)


def augment_queries(mean: np.ndarray) -> np.ndarray:
    """Query vectors [mu_q, 1] ([N, D+1], float32) to pair with ``augment_items``."""
    mean = np.asarray(mean, dtype=np.float32)
    return np.concatenate([mean, np.ones((mean.shape[0], 1), dtype=np.float32)], axis=1)


def csd_from_inner_product(inner: Array, query_uncertainty: Array) -> Array:
    """Recover CSD [N, k] from <[mu_q, 1], [mu_x, -S_x/2]> [N, k] and S_q [N] (unit means)."""
    return 2 - 2 * inner + query_uncertainty[:, None]


def match_logits(mean1: Array, logvar1: Array | None, mean2: Array, logvar2: Array | None,
                 logit_scale: Array | float, logit_bias: Array | float) -> Array:
    """Pairwise PPCL logits [N, M]: scale * (mu1.mu2 - (S1 + S2) / 2) + bias.

    ``logit_scale`` is the multiplier itself (already exponentiated). With both log-variances
    None (a deterministic model) this is the SigLIP logit scale * mu1.mu2 + bias.
    """
    if (logvar1 is None) != (logvar2 is None):
        raise ValueError("both sides need log-variances, or neither (a deterministic model)")
    if logvar1 is None:
        return logit_scale * (mean1 @ mean2.T) + logit_bias
    variance = uncertainty(logvar1)[:, None] + uncertainty(logvar2)[None, :]
    return logit_scale * (mean1 @ mean2.T - variance / 2) + logit_bias


def match_probability(mean1: Array, logvar1: Array | None, mean2: Array, logvar2: Array | None,
                      logit_scale: Array | float, logit_bias: Array | float) -> Array:
    """Pairwise match probability [N, M]: the sigmoid of the PPCL logit, the model's own relevance."""
    return _sigmoid(match_logits(mean1, logvar1, mean2, logvar2, logit_scale, logit_bias))


@dataclass(frozen=True)
class PairLogit:
    """A model family's own match logit of a pair, from the pair's mean cosine and summed uncertainties.

    logit = cos_weight * mu1.mu2 + variance_weight * (S1 + S2) + bias, for unit means. Every family
    this project serves has a logit of this form, so the index and the service need only these three
    numbers, whatever model made the embeddings:

    * ProLIP (PPCL): scale * (mu1.mu2 - (S1 + S2) / 2) + bias  (``ppcl``; ``match_logits`` above);
    * PCME++: -a * CSD + shift with CSD = 2 - 2 mu1.mu2 + S1 + S2  (``negative_csd``);
    * deterministic CLIP / SigLIP: scale * mu1.mu2 + bias, S = 0  (``ppcl`` with no variances).

    It is the training objective's logit: how likely the pair was *the* training pair, not a
    calibrated probability that the text is true of the image.
    """

    cos_weight: float
    variance_weight: float
    bias: float

    @classmethod
    def ppcl(cls, logit_scale: float, logit_bias: float) -> PairLogit:
        """ProLIP's PPCL logit; ``logit_scale`` is the multiplier itself (already exponentiated)."""
        return cls(float(logit_scale), -0.5 * float(logit_scale), float(logit_bias))

    @classmethod
    def negative_csd(cls, negative_scale: float, shift: float) -> PairLogit:
        """PCME++'s matching logit -negative_scale * CSD + shift, expanded for unit means."""
        a = float(negative_scale)
        return cls(2 * a, -a, float(shift) - 2 * a)

    def logit(self, cosine: Array | float, uncertainty1: Array | float, uncertainty2: Array | float) -> Array:
        """Elementwise logit from cosines and the two sides' uncertainties (broadcasting, float64)."""
        cosine = np.asarray(cosine, np.float64)
        variance = np.asarray(uncertainty1, np.float64) + np.asarray(uncertainty2, np.float64)
        return self.cos_weight * cosine + self.variance_weight * variance + self.bias

    def probability(self, cosine: Array | float, uncertainty1: Array | float, uncertainty2: Array | float
                    ) -> np.ndarray:
        """sigmoid(logit), elementwise (float64, overflow-safe)."""
        return 1.0 / (1.0 + np.exp(-np.clip(self.logit(cosine, uncertainty1, uncertainty2), -500, 500)))

    def pairwise(self, mean1: np.ndarray, logvar1: np.ndarray | None, mean2: np.ndarray,
                 logvar2: np.ndarray | None) -> np.ndarray:
        """Pairwise logits [N, M] of unit means [N, D], [M, D] (float64); a None logvar is a point (S = 0)."""
        mean1, mean2 = np.asarray(mean1, np.float64), np.asarray(mean2, np.float64)
        return self.logit(mean1 @ mean2.T, _point_or_uncertainty(logvar1, len(mean1))[:, None],
                          _point_or_uncertainty(logvar2, len(mean2))[None, :])

    def to_dict(self) -> dict[str, float]:
        return {"cos_weight": self.cos_weight, "variance_weight": self.variance_weight, "bias": self.bias}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PairLogit:
        try:
            return cls(float(data["cos_weight"]), float(data["variance_weight"]), float(data["bias"]))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"a pair logit needs numeric cos_weight, variance_weight and bias: {error}") from None


def _point_or_uncertainty(logvar: np.ndarray | None, n: int) -> np.ndarray:
    """S per row [n] (float64): 0 for the points of a deterministic model (logvar None)."""
    return np.zeros(n) if logvar is None else uncertainty(np.asarray(logvar, np.float64))


def inclusion_test(mean1: Array, logvar1: Array, mean2: Array, logvar2: Array, eps: float = 0.0) -> Array:
    """Per-dimension inclusion score of Gaussian 1 in Gaussian 2 (broadcasting, [..., D]).

    Large when N(mean1, var1) lies inside N(mean2, var2). It is the log of
    integral p1(x)^2 p2(x) dx up to constants: it rewards a narrow Gaussian 1 whose mass
    sits where Gaussian 2 is dense. ``eps`` shifts the inverse variances as the official
    loss does (-10 there); the test itself uses 0.
    """
    inv1 = _exp(-logvar1 + eps)
    inv2 = _exp(-logvar2 + eps)
    a = inv1 + 0.5 * inv2
    b = 2 * mean1 * inv1 + mean2 * inv2
    c = mean1 ** 2 * inv1 + 0.5 * mean2 ** 2 * inv2
    return -2 * logvar1 - logvar2 - 0.5 * _log(a) + b ** 2 / (4 * a) - c


def inclusion(mean1: Array, logvar1: Array, mean2: Array, logvar2: Array) -> Array:
    """Pairwise inclusion [N, M]: "row i is included in column j", averaged over dimensions."""
    return inclusion_test(mean1[:, None], logvar1[:, None], mean2[None, :], logvar2[None, :]).mean(-1)


def inclusion_margin(mean1: Array, logvar1: Array, mean2: Array, logvar2: Array) -> Array:
    """Pairwise [N, M]: inclusion(1 in 2) - inclusion(2 in 1); positive means 1 sits inside 2.

    This antisymmetric difference is what the inclusion loss trains, so its sign is the
    model's own answer to "is 1 a special case of 2?".
    """
    forward = inclusion_test(mean1[:, None], logvar1[:, None], mean2[None, :], logvar2[None, :])
    backward = inclusion_test(mean2[None, :], logvar2[None, :], mean1[:, None], logvar1[:, None])
    return (forward - backward).mean(-1)


@dataclass
class GaussianBatch:
    """Gaussian embeddings of N inputs: unit-norm ``mean`` [N, D] and ``logvar`` [N, D], float32.

    ``logvar`` is None when a deterministic model (CLIP) made them: N points, zero variance.
    That None travels unchanged through every layer (encoders, remote workers, the index),
    so "this model has no uncertainty" is never mistaken for "these inputs are certain".
    """

    mean: np.ndarray
    logvar: np.ndarray | None

    def __len__(self) -> int:
        return self.mean.shape[0]

    @property
    def deterministic(self) -> bool:
        return self.logvar is None

    @property
    def uncertainty(self) -> np.ndarray:
        """Sum of variances per input [N] (float64, to keep small variances exact); 0 for points."""
        return _point_or_uncertainty(self.logvar, len(self))

    def rows(self, start: int, stop: int) -> GaussianBatch:
        """Rows ``start:stop`` as a contiguous batch."""
        logvar = None if self.logvar is None else np.ascontiguousarray(self.logvar[start:stop])
        return GaussianBatch(np.ascontiguousarray(self.mean[start:stop]), logvar)

    @classmethod
    def concat(cls, parts: Sequence[GaussianBatch], dim: int, deterministic: bool = False) -> GaussianBatch:
        """Stack batches (all with log-variances, or all without); ``deterministic`` shapes an empty result."""
        if not parts:
            empty = np.zeros((0, dim), dtype=np.float32)
            return cls(empty, None if deterministic else empty.copy())
        kinds = {p.logvar is None for p in parts}
        if len(kinds) > 1:
            raise ValueError("cannot concatenate Gaussian batches with batches of deterministic points")
        logvar = None if kinds == {True} else np.concatenate([p.logvar for p in parts])
        return cls(np.concatenate([p.mean for p in parts]), logvar)
