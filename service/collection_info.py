"""Describing collections for the API: summaries, uncertainty histograms, extremes, single items."""

from __future__ import annotations

from typing import Any

import numpy as np

from .schemas import CollectionStats, CollectionSummary, HistogramBin, ItemBrief

HISTOGRAM_BINS = 20


def collection_summary(index: Any) -> CollectionSummary:
    return CollectionSummary(name=index.name, modality=index.modality, size=len(index), dim=index.dim,
                             model_id=index.model_id, index=str(index.spec))


def find_item(index: Any, item_id: str) -> Any | None:
    """The stored item, or None when the collection has no item of that id."""
    try:
        return index.get(item_id)
    except KeyError:
        return None


def _histogram(values: np.ndarray, bins: int = HISTOGRAM_BINS) -> list[HistogramBin]:
    if values.size == 0:
        return []
    counts, edges = np.histogram(values, bins=bins)
    return [HistogramBin(low=float(edges[i]), high=float(edges[i + 1]), count=int(counts[i]))
            for i in range(len(counts))]


def _briefs(items: Any) -> list[ItemBrief]:
    return [ItemBrief(id=item.id, uncertainty=float(item.uncertainty), metadata=dict(item.metadata or {}))
            for item in items]


def collection_stats(index: Any, extremes: int = 5) -> CollectionStats:
    stats = dict(index.stats())
    values = np.asarray(index.uncertainties(), dtype=np.float64)
    most_certain, most_uncertain = index.extremes(extremes) if extremes else ([], [])
    return CollectionStats(
        **collection_summary(index).model_dump(),
        uncertainty_histogram=_histogram(values),
        most_certain=_briefs(most_certain), most_uncertain=_briefs(most_uncertain),
        stats={key: value for key, value in stats.items() if isinstance(value, (int, float, str, bool))},
    )
