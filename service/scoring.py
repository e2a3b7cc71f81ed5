"""Scores the API reports, computed from Gaussian embeddings: no HTTP here.

* match probability: the model's own relevance, sigmoid(scale * (mu_q.mu_x - (S_q + S_x)/2) + bias)
  (the PPCL logit, ``models.gaussian.match_logits``); for unit means it is a decreasing
  function of CSD, so ranking by CSD ranks by probability and a probability threshold is
  an absolute relevance cut that a cosine score cannot give.
* zero-shot ranking of candidates with prompt ensembles filtered by uncertainty, as the
  ProLIP paper's prompt analysis does (keep the certain prompts of each class).
* the HierarCaps traversal (ProLIP, Sec. on hierarchical retrieval): from the caption that
  fits an image best, walk towards the most inclusive caption and collect what is met.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models import gaussian
from models.encoder import GaussianBatch

INCLUSION_MEANING = (
    "how far the image lies inside the text (ProLIP's inclusion test, image ⊂ text, the relation it is trained "
    "on): the mean over the D dimensions of log-inclusion(image in text) - log-inclusion(text in image). Positive: "
    "the image is an instance of the text (the higher, the more clearly); negative: it is not; 0: neither "
    "includes the other. Between two texts or two images: how far the query lies inside the item. Higher is "
    "more included, in every route")


def inclusion_direction(query_modality: str, item_modality: str) -> str:
    """The index's direction for ``INCLUSION_MEANING``: the image inside the text, else the query inside the item."""
    return "item_in_query" if (query_modality, item_modality) == ("text", "image") else "query_in_item"


def match_probability(cosine: np.ndarray | float, query_uncertainty: np.ndarray | float,
                      item_uncertainty: np.ndarray | float, logit_scale: float, logit_bias: float) -> np.ndarray:
    """sigmoid(scale * (cos - (S_q + S_x) / 2) + bias), elementwise; the same logit as match_logits."""
    logit = logit_scale * (np.asarray(cosine, np.float64) - 0.5 * (np.asarray(query_uncertainty, np.float64)
                                                                     + np.asarray(item_uncertainty, np.float64)))
    logit = logit + logit_bias
    return 1.0 / (1.0 + np.exp(-np.clip(logit, -500, 500)))


@dataclass
class CandidateScores:
    """Scores of one query against M candidates, each array [M]."""

    csd: np.ndarray
    cosine: np.ndarray
    probability: np.ndarray
    inclusion: np.ndarray  # inclusion margin (INCLUSION_MEANING): > 0, the image sits inside the text
    uncertainty: np.ndarray
    class_probability: np.ndarray  # softmax of the match logits over the candidates

    def order(self, rank: str) -> np.ndarray:
        """Candidate indices best first: lowest CSD, highest cosine, or highest inclusion."""
        if rank == "csd":
            return np.argsort(self.csd, kind="stable")
        if rank == "cosine":
            return np.argsort(-self.cosine, kind="stable")
        if rank == "inclusion":
            return np.argsort(-self.inclusion, kind="stable")
        raise ValueError(f"unknown rank {rank!r}")


def score_candidates(query: GaussianBatch, candidates: GaussianBatch, logit_scale: float, logit_bias: float,
                     direction: str = "query_in_item") -> CandidateScores:
    """One query (row 0 of ``query``) against every candidate; ``inclusion`` in ``direction``
    (``inclusion_direction``: the image inside the text)."""
    q_mean, q_logvar = query.mean[:1].astype(np.float64), query.logvar[:1].astype(np.float64)
    c_mean, c_logvar = candidates.mean.astype(np.float64), candidates.logvar.astype(np.float64)
    logits = gaussian.match_logits(q_mean, q_logvar, c_mean, c_logvar, logit_scale, logit_bias)[0]  # [M]
    shifted = np.exp(logits - logits.max())
    return CandidateScores(
        csd=gaussian.csd_unit(q_mean, q_logvar, c_mean, c_logvar)[0],
        cosine=(q_mean @ c_mean.T)[0],
        probability=1.0 / (1.0 + np.exp(-np.clip(logits, -500, 500))),
        inclusion=(gaussian.inclusion_margin(q_mean, q_logvar, c_mean, c_logvar)[0] if direction == "query_in_item"
                   else gaussian.inclusion_margin(c_mean, c_logvar, q_mean, q_logvar)[:, 0]),
        uncertainty=gaussian.uncertainty(c_logvar),
        class_probability=shifted / shifted.sum(),
    )


@dataclass
class PromptEnsemble:
    """Per class: the Gaussian of its kept prompts and which prompts were kept."""

    embeddings: GaussianBatch  # [C, D]
    kept: list[list[int]]  # template indices kept per class


PROMPT_FILTERS = ("none", "mean_std", "most_certain")


def ensemble_prompts(prompts: GaussianBatch, n_classes: int, n_templates: int, method: str = "mean_std",
                     coeff: float = 0.0) -> PromptEnsemble:
    """Combine ``n_templates`` prompt embeddings per class into one Gaussian per class.

    ``prompts`` rows are class-major ([class 0 template 0, class 0 template 1, ...]).
    Filtering follows the paper's analysis: ``mean_std`` keeps a class's prompts whose
    uncertainty is at most mean + coeff * std of that class's prompts; ``most_certain``
    keeps the ``int(coeff)`` least uncertain ones; ``none`` keeps all. At least the most
    certain prompt is always kept. Kept means are averaged and renormalised, kept
    log-variances averaged.
    """
    if method not in PROMPT_FILTERS:
        raise ValueError(f"unknown prompt filter {method!r}; choose one of {', '.join(PROMPT_FILTERS)}")
    dim = prompts.mean.shape[1]
    means = prompts.mean.reshape(n_classes, n_templates, dim)  # (C, T, D)
    logvars = prompts.logvar.reshape(n_classes, n_templates, dim)
    scores = prompts.uncertainty.reshape(n_classes, n_templates)  # (C, T)
    out_mean, out_logvar, kept = [], [], []
    for c in range(n_classes):
        s = scores[c]
        if method == "mean_std":
            keep = np.flatnonzero(s <= s.mean() + coeff * s.std())
        elif method == "most_certain":
            keep = np.argsort(s, kind="stable")[:max(1, int(coeff))]
        else:
            keep = np.arange(n_templates)
        if keep.size == 0:
            keep = np.array([int(np.argmin(s))])
        keep = np.sort(keep)
        mean = means[c, keep].mean(0)
        out_mean.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
        out_logvar.append(logvars[c, keep].mean(0))
        kept.append([int(i) for i in keep])
    return PromptEnsemble(GaussianBatch(np.stack(out_mean).astype(np.float32),
                                        np.stack(out_logvar).astype(np.float32)), kept)


def walk_queries(start: np.ndarray, root: np.ndarray, steps: int) -> np.ndarray:
    """Unit vectors [steps, D] on the straight line from ``start`` towards ``root`` (start first).

    The paper's HierarCaps traversal: step i queries normalise(start - (start - root) * i / steps).
    """
    if steps < 1:
        raise ValueError("steps must be >= 1")
    start = np.asarray(start, np.float64)
    root = np.asarray(root, np.float64)
    fractions = np.arange(steps, dtype=np.float64)[:, None] / steps  # (steps, 1)
    points = start[None, :] - (start - root)[None, :] * fractions  # (steps, D)
    norms = np.linalg.norm(points, axis=1, keepdims=True)
    return (points / np.maximum(norms, 1e-12)).astype(np.float32)


def unique_in_order(ids: list[str]) -> list[str]:
    seen: set[str] = set()
    return [i for i in ids if not (i in seen or seen.add(i))]
