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
