"""Scores the API reports, computed from Gaussian embeddings: no HTTP here.

* match probability: the model's own relevance, the sigmoid of its pair logit
  (``models.gaussian.PairLogit``; for ProLIP sigmoid(scale * (mu_q.mu_x - (S_q + S_x)/2) + bias),
  the PPCL logit); for unit means it is a decreasing function of CSD.
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
from models.gaussian import PairLogit


def match_probability(cosine: np.ndarray | float, query_uncertainty: np.ndarray | float,
                      item_uncertainty: np.ndarray | float, pair_logit: PairLogit) -> np.ndarray:
    """sigmoid of the model's pair logit, elementwise (for ProLIP: sigmoid(scale * (cos - (S_q + S_x) / 2) + bias))."""
    return pair_logit.probability(cosine, query_uncertainty, item_uncertainty)


@dataclass
class CandidateScores:
    """Scores of one query against M candidates, each array [M]."""

    csd: np.ndarray
    cosine: np.ndarray
    probability: np.ndarray
    inclusion: np.ndarray | None  # inclusion margin of the query in the candidate; > 0: query sits inside
    uncertainty: np.ndarray | None  # None (like inclusion) for a deterministic model's points
    class_probability: np.ndarray  # softmax of the match logits over the candidates

    def order(self, rank: str) -> np.ndarray:
        """Candidate indices best first: lowest CSD, highest cosine, or highest inclusion."""
        if rank == "csd":
            return np.argsort(self.csd, kind="stable")
        if rank == "cosine":
            return np.argsort(-self.cosine, kind="stable")
        if rank == "inclusion":
            if self.inclusion is None:
                raise ValueError("rank 'inclusion' needs variances; a deterministic model has none")
            return np.argsort(-self.inclusion, kind="stable")
        raise ValueError(f"unknown rank {rank!r}")


def score_candidates(query: GaussianBatch, candidates: GaussianBatch, pair_logit: PairLogit) -> CandidateScores:
    """One query (row 0 of ``query``) against every candidate.

    Points of a deterministic model (logvar None) get CSD = ||mu_q - mu_c||^2 and no inclusion or
    uncertainty (None).
    """
    q_mean, c_mean = query.mean[:1].astype(np.float64), candidates.mean.astype(np.float64)
    cosine = (q_mean @ c_mean.T)[0]  # [M]
    points = query.logvar is None or candidates.logvar is None
    q_logvar = None if points else query.logvar[:1].astype(np.float64)
    c_logvar = None if points else candidates.logvar.astype(np.float64)
    logits = pair_logit.pairwise(q_mean, q_logvar, c_mean, c_logvar)[0]  # [M]
    shifted = np.exp(logits - logits.max())
    return CandidateScores(
        csd=gaussian.csd_unit(q_mean, q_logvar, c_mean, c_logvar)[0],  # ||mu_q - mu_c||^2 for points
        cosine=cosine,
        probability=1.0 / (1.0 + np.exp(-np.clip(logits, -500, 500))),
        inclusion=None if points else gaussian.inclusion_margin(q_mean, q_logvar, c_mean, c_logvar)[0],
        uncertainty=None if points else gaussian.uncertainty(c_logvar),
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
    log-variances averaged. A deterministic model's prompts (logvar None) have no
    uncertainty to filter by: every prompt is kept, whatever ``method`` says.
    """
    if method not in PROMPT_FILTERS:
        raise ValueError(f"unknown prompt filter {method!r}; choose one of {', '.join(PROMPT_FILTERS)}")
    points = prompts.logvar is None
    if points:
        method = "none"
    dim = prompts.mean.shape[1]
    means = prompts.mean.reshape(n_classes, n_templates, dim)  # (C, T, D)
    logvars = None if points else prompts.logvar.reshape(n_classes, n_templates, dim)
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
        if not points:
            out_logvar.append(logvars[c, keep].mean(0))
        kept.append([int(i) for i in keep])
    return PromptEnsemble(GaussianBatch(np.stack(out_mean).astype(np.float32),
                                        None if points else np.stack(out_logvar).astype(np.float32)), kept)


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
