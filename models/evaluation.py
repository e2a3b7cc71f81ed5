"""Retrieval and correlation metrics, NumPy only, for multi-positive ground truth.

Scores are "higher is better" [Q, G] (pass ``-csd`` for CSD); ``positives`` is a boolean
[Q, G] matrix where any number of gallery items can be correct for a query, as in the
ECCV Caption protocol (Chun et al., 2022):

* R@K: share of queries with at least one positive in the top K;
* R-Precision: share of positives among the top R, R = the query's number of positives;
* mAP@R: average precision truncated at R (mean over the positives' ranks i <= R of
  precision@i, divided by R), which rewards putting all positives first.

Queries without any positive are left out (and counted).
"""

from __future__ import annotations

import numpy as np


def retrieval_metrics(scores: np.ndarray, positives: np.ndarray, ks: tuple[int, ...] = (1, 5, 10)
                      ) -> dict[str, float]:
    """R@K, mAP@R and R-Precision averaged over queries, as fractions in [0, 1]."""
    scores = np.asarray(scores, dtype=np.float64)
    positives = np.asarray(positives, dtype=bool)
    if scores.shape != positives.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and positives {positives.shape} must be the same [Q, G] shape")
    counts = positives.sum(axis=1)  # R per query
    keep = counts > 0
    scores, positives, counts = scores[keep], positives[keep], counts[keep]
    if not len(counts):
        raise ValueError("no query has a positive in the gallery")
    order = np.argsort(-scores, axis=1, kind="stable")  # (Q, G) best first
    hits = np.take_along_axis(positives, order, axis=1)  # (Q, G) positive at rank
    gallery = scores.shape[1]
    within_r = np.arange(gallery)[None, :] < counts[:, None]  # (Q, G) rank < R
    precision_at = np.cumsum(hits, axis=1) / np.arange(1, gallery + 1)[None, :]
    metrics = {f"R@{k}": float(hits[:, :k].any(axis=1).mean()) for k in ks}
    metrics["R-Precision"] = float(((hits & within_r).sum(axis=1) / counts).mean())
    metrics["mAP@R"] = float(((precision_at * (hits & within_r)).sum(axis=1) / counts).mean())
    metrics["queries"] = int(len(counts))
    metrics["queries_without_positive"] = int((~keep).sum())
    return metrics


def rank_average(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 with ties given their average rank (as scipy.stats.rankdata, minus one)."""
    values = np.asarray(values)
    unique, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    starts = np.cumsum(counts) - counts
    return (starts + (counts - 1) / 2.0)[inverse.reshape(-1)]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (Pearson correlation of average ranks); NaN when a side is constant."""
    x, y = np.asarray(x).reshape(-1), np.asarray(y).reshape(-1)
    if x.shape != y.shape or x.size < 2:
        raise ValueError(f"spearman needs two equally long series of >= 2 values, got {x.size} and {y.size}")
    rx, ry = rank_average(x), rank_average(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / denominator) if denominator > 0 else float("nan")


def risk_coverage(errors: np.ndarray, confidence: np.ndarray, coverages: tuple[float, ...] = (0.5, 0.8)
                  ) -> dict[str, float]:
    """Selective prediction: answer the most confident queries first, abstain on the rest.

    ``errors`` [Q] bool (the answer was wrong), ``confidence`` [Q] (higher = answer first; ties
    keep the given order). Returns the area under the risk-coverage curve (``aurc``, the mean
    over k of the error rate among the k most confident; lower is better, and a confidence
    that knows nothing has an expected AURC equal to the overall error rate), the error rate at
    the given coverages (``risk@50%`` ...) and at full coverage (``risk@100%``).
    """
    errors = np.asarray(errors, dtype=np.float64).reshape(-1)
    confidence = np.asarray(confidence, dtype=np.float64).reshape(-1)
    if errors.shape != confidence.shape or errors.size == 0:
        raise ValueError(f"errors and confidence must be equally long and non-empty, got {errors.size} and "
                         f"{confidence.size}")
    order = np.argsort(-confidence, kind="stable")
    risk = np.cumsum(errors[order]) / np.arange(1, errors.size + 1)  # [Q]: error rate among the k first
    out = {"aurc": float(risk.mean())}
    for coverage in coverages:
        out[f"risk@{round(100 * coverage)}%"] = float(risk[max(1, int(np.ceil(coverage * errors.size))) - 1])
    out["risk@100%"] = float(risk[-1])
    return out


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` separating ``positive`` from the rest (ties count half);
    the probability that a random positive scores above a random negative. NaN without both kinds."""
    scores, positive = np.asarray(scores, np.float64).reshape(-1), np.asarray(positive, bool).reshape(-1)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return float("nan")
    ranks = rank_average(scores) + 1  # 1-based average ranks
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
