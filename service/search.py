"""Searching a collection with an encoded query and shaping what the API returns (no HTTP here)."""

from __future__ import annotations

from typing import Any

import numpy as np

from models.encoder import GaussianBatch

from .schemas import SearchHit, SearchResponse, UncertaintyInfo
from .scoring import match_probability


def percentile(index: Any, uncertainty: float) -> float | None:
    """Percentage of the collection's items with lower uncertainty; None for an empty collection."""
    if index is None or len(index) == 0:
        return None
    return float(np.asarray(index.uncertainty_percentile(np.asarray([uncertainty], np.float64)))[0])


def search(index: Any, query: GaussianBatch, k: int, rank: str, logit_scale: float, logit_bias: float,
           min_probability: float | None = None, model_id: str = "") -> SearchResponse:
    """Top-``k`` items of ``index`` for the single query in ``query``, with every score."""
    query_uncertainty = float(query.uncertainty[0])
    hits = index.search(query.mean[:1], query.logvar[:1], k, rank=rank)[0] if len(index) else []
    results = []
    for hit in hits:
        probability = float(match_probability(hit.cosine, query_uncertainty, hit.uncertainty,
                                               logit_scale, logit_bias))
        if min_probability is not None and probability < min_probability:
            continue
        results.append(SearchHit(
            id=hit.id, score=float(hit.score), csd=float(hit.csd), cosine=float(hit.cosine), probability=probability,
            uncertainty=float(hit.uncertainty),
            inclusion=None if getattr(hit, "inclusion", None) is None else float(hit.inclusion),
            metadata=dict(hit.metadata or {})))
    return SearchResponse(
        collection=index.name, rank=rank,
        query=UncertaintyInfo(uncertainty=query_uncertainty, percentile=percentile(index, query_uncertainty)),
        results=results, model_id=model_id)
