"""Describing collections for the API: summaries, uncertainty histograms, extremes, single items."""

from __future__ import annotations

from typing import Any

from .schemas import CollectionStats, CollectionSummary, HistogramBin, ItemBrief

HISTOGRAM_BINS = 20


def collection_summary(name: str, index: Any) -> CollectionSummary:
    info = index.info
    return CollectionSummary(name=name, modality=info.modality, size=len(index), dim=index.dim,
                             model_id=info.model_id, model_family=getattr(info, "model_family", None),
                             deterministic=bool(getattr(info, "deterministic", False)), index=index.kind)


def find_item(index: Any, item_id: str) -> Any | None:
    """The stored item, or None when the collection has no item of that id."""
    return index.get(item_id)


def _briefs(items: Any) -> list[ItemBrief]:
    return [ItemBrief(id=item.id, uncertainty=None if item.uncertainty is None else float(item.uncertainty),
                      metadata=dict(item.metadata or {})) for item in items]


def collection_stats(name: str, index: Any, extremes: int = 5) -> CollectionStats:
    stats = index.stats(bins=HISTOGRAM_BINS)
    edges, counts = stats["histogram"]["edges"], stats["histogram"]["counts"]
    histogram = [HistogramBin(low=float(edges[i]), high=float(edges[i + 1]), count=int(counts[i]))
                 for i in range(len(counts))]
    most_certain, most_uncertain = index.extremes(extremes) if extremes and len(index) else ([], [])
    summary = {key: value for key, value in stats["uncertainty"].items() if isinstance(value, (int, float))}
    return CollectionStats(
        **collection_summary(name, index).model_dump(), uncertainty_histogram=histogram,
        uncertainty_histogram_scale=stats["histogram"].get("scale", "linear"),
        most_certain=_briefs(most_certain), most_uncertain=_briefs(most_uncertain),
        stats={"uncertainty": summary, "quantiles": stats["uncertainty"].get("quantiles", {}),
               "store": stats.get("store"), "pending_changes": stats.get("pending_changes"),
               # Milvus: whether the histogram and quantiles cover every item or a uniform hash sample
               "sample": stats["uncertainty"].get("sample")})
