"""Scores the API reports, computed from Gaussian embeddings: no HTTP here.

* pair probability: the model's own relevance, the sigmoid of its pair logit
  (``models.gaussian.PairLogit``; for ProLIP sigmoid(scale * (mu_q.mu_x - (S_q + S_x)/2) + bias),
  the PPCL logit); for unit means it is a decreasing function of CSD. It is not the probability
  that a text is true of an image; the calibrated one (``models.calibration``) is.
* zero-shot ranking of candidates with prompt ensembles, optionally filtered by uncertainty as
  the ProLIP paper's prompt analysis does, or re-weighted from a few labelled example images
  (BPRW, ``models.prompt_weighting``).
* the HierarCaps traversal (ProLIP, Sec. on hierarchical retrieval): from the caption that
  fits an image best, walk towards the most inclusive caption and collect what is met.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models import gaussian
from models.calibration import Calibrator
from models.encoder import GaussianBatch
from models.gaussian import PairLogit
from models.prompt_weighting import ALPHA, SAMPLES_PER_IMAGE, STABLE_EPS, reweight_class

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
                      item_uncertainty: np.ndarray | float, pair_logit: PairLogit) -> np.ndarray:
    """sigmoid of the model's pair logit, elementwise (for ProLIP: sigmoid(scale * (cos - (S_q + S_x) / 2) + bias))."""
    return pair_logit.probability(cosine, query_uncertainty, item_uncertainty)


@dataclass
class CandidateScores:
    """Scores of one query against M candidates, each array [M]."""

    csd: np.ndarray
    cosine: np.ndarray
    pair_probability: np.ndarray  # sigmoid of the model's pair logit
    inclusion: np.ndarray | None  # inclusion margin (INCLUSION_MEANING); None for a deterministic model's points
    uncertainty: np.ndarray | None  # None (like inclusion) for a deterministic model's points
    class_probability: np.ndarray  # softmax of the match logits over the candidates
    probability_logit: np.ndarray | None = None  # calibrated log-odds (text-image pairs with a calibrator)

    @property
    def probability(self) -> np.ndarray | None:
        """Calibrated P(text true of image) per candidate, or None."""
        if self.probability_logit is None:
            return None
        return 1.0 / (1.0 + np.exp(-np.clip(self.probability_logit, -500, 500)))

    def order(self, rank: str) -> np.ndarray:
        """Candidate indices best first: lowest CSD, highest cosine, inclusion or calibrated probability."""
        if rank == "csd":
            return np.argsort(self.csd, kind="stable")
        if rank == "cosine":
            return np.argsort(-self.cosine, kind="stable")
        if rank == "inclusion":
            if self.inclusion is None:
                raise ValueError("rank 'inclusion' needs variances; a deterministic model has none")
            return np.argsort(-self.inclusion, kind="stable")
        if rank == "probability":
            if self.probability_logit is None:
                raise ValueError("no calibrated probability to rank by")
            return np.argsort(-self.probability_logit, kind="stable")
        raise ValueError(f"unknown rank {rank!r}")


def score_candidates(query: GaussianBatch, candidates: GaussianBatch, pair_logit: PairLogit,
                     calibrator: Calibrator | None = None, query_modality: str | None = None,
                     candidate_modality: str | None = None, direction: str = "query_in_item") -> CandidateScores:
    """One query (row 0 of ``query``) against every candidate; the calibrated probability too when a
    calibrator is given and query and candidates are one text and one image modality; ``inclusion``
    in ``direction`` (``inclusion_direction``: the image inside the text).

    Points of a deterministic model (logvar None) get CSD = ||mu_q - mu_c||^2 and no inclusion or
    uncertainty (None).
    """
    q_mean, c_mean = query.mean[:1].astype(np.float64), candidates.mean.astype(np.float64)
    points = query.logvar is None or candidates.logvar is None
    q_logvar = None if points else query.logvar[:1].astype(np.float64)
    c_logvar = None if points else candidates.logvar.astype(np.float64)
    logits = pair_logit.pairwise(q_mean, q_logvar, c_mean, c_logvar)[0]  # [M]
    shifted = np.exp(logits - logits.max())
    cosine = (q_mean @ c_mean.T)[0]  # [M]
    uncertainty = None if points else gaussian.uncertainty(c_logvar)
    calibrated = None
    if calibrator is not None and query_modality is not None and candidate_modality not in (None, query_modality):
        query_uncertainty = None if points else float(gaussian.uncertainty(q_logvar)[0])
        scorer = calibrator.for_query(query_modality, candidate_modality, query_uncertainty)
        calibrated = scorer.logit(cosine, uncertainty)
    return CandidateScores(
        csd=gaussian.csd_unit(q_mean, q_logvar, c_mean, c_logvar)[0],  # ||mu_q - mu_c||^2 for points
        cosine=cosine,
        pair_probability=1.0 / (1.0 + np.exp(-np.clip(logits, -500, 500))),
        inclusion=None if points else (
            gaussian.inclusion_margin(q_mean, q_logvar, c_mean, c_logvar)[0] if direction == "query_in_item"
            else gaussian.inclusion_margin(c_mean, c_logvar, q_mean, q_logvar)[:, 0]),
        uncertainty=uncertainty,
        class_probability=shifted / shifted.sum(),
        probability_logit=calibrated,
    )


@dataclass
class PromptEnsemble:
    """Per class: the Gaussian of its kept prompts, which prompts were kept, and (BPRW) their weights."""

    embeddings: GaussianBatch  # [C, D]
    kept: list[list[int]]  # template indices kept per class
    weights: list[list[float]] | None = None  # bprw: mixing weight of each template, per class


PROMPT_FILTERS = ("none", "mean_std", "most_certain", "bprw")


def ensemble_prompts(prompts: GaussianBatch, n_classes: int, n_templates: int, method: str = "none",
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
    if method not in PROMPT_FILTERS or method == "bprw":
        raise ValueError(f"unknown prompt filter {method!r}; choose one of none, mean_std, most_certain "
                         "(bprw needs example images: reweight_prompts)")
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


def reweight_prompts(prompts: GaussianBatch, n_classes: int, n_templates: int, examples: dict[int, GaussianBatch],
                     alpha: float = ALPHA, samples_per_image: int = SAMPLES_PER_IMAGE, stable_eps: float = STABLE_EPS,
                     seed: int = 0) -> PromptEnsemble:
    """BPRW (``models.prompt_weighting``): each class's prompts weighted by how well their Gaussians
    explain samples of that class's example images (``examples``: class index -> image Gaussians).

    The class embedding is the weighted mixture: mean sum w_t mu_t, renormalised to unit length
    (the scores here, CSD and cosine, are for unit means; the official code leaves it as is and
    scores by inner product), variance sum w_t^2 sigma_t^2. A class without examples keeps uniform
    weights (the plain mean of its prompts). The sample draws are seeded, so a request always
    gets the same answer.
    """
    dim = prompts.mean.shape[1]
    means = prompts.mean.astype(np.float64).reshape(n_classes, n_templates, dim)
    variances = np.exp(prompts.logvar.astype(np.float64)).reshape(n_classes, n_templates, dim)
    out_mean, out_logvar, weights = [], [], []
    for c in range(n_classes):
        shots = examples.get(c)
        if shots is None or len(shots) == 0:
            w = np.full(n_templates, 1.0 / n_templates)
            mean, variance = w @ means[c], (w ** 2) @ variances[c]
        else:
            result = reweight_class(means[c], variances[c], shots.mean, shots.logvar,
                                    samples_per_image=samples_per_image, rng=np.random.default_rng([seed, c]),
                                    alpha=alpha, stable_eps=stable_eps)
            w, mean, variance = result.weights, result.mean, result.variance
        out_mean.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
        out_logvar.append(np.log(np.maximum(variance, 1e-30)))
        weights.append([float(v) for v in w])
    return PromptEnsemble(GaussianBatch(np.stack(out_mean).astype(np.float32), np.stack(out_logvar).astype(np.float32)),
                          [list(range(n_templates)) for _ in range(n_classes)], weights)


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
