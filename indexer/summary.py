"""The uncertainty summary every collection backend reports in ``stats()``: quantiles and a histogram.

One function, so the embedded FAISS collections and the Milvus ones describe their items alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np

QUANTILES = (1, 5, 10, 25, 50, 75, 90, 95, 99)
# Uncertainties spanning more than this ratio get log-spaced histogram bins: a model's
# variances can range over orders of magnitude, and equal-width bins would put nearly every
# item into the first one.
LOG_HISTOGRAM_SPAN = 100.0


def uncertainty_summary(ordered: np.ndarray, bins: int, count: int | None = None
                        ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(summary, histogram) of sorted item uncertainties ``ordered`` [N].

    ``count``: the items they stand for when ``ordered`` is a uniform sample (the histogram's
    counts are then scaled to it: estimates); default ``len(ordered)``. The histogram's bins
    are log-spaced (``scale`` "log") when the largest value is more than LOG_HISTOGRAM_SPAN
    times the smallest, equal-width ("linear") otherwise.
    """
    total = int(ordered.size) if count is None else int(count)
    summary: dict[str, Any] = {"count": total}
    histogram: dict[str, Any] = {"edges": [], "counts": [], "scale": "linear"}
    if ordered.size == 0:
        return summary, histogram
    summary.update(min=float(ordered[0]), max=float(ordered[-1]), mean=float(ordered.mean()),
                   std=float(ordered.std()),
                   quantiles={f"p{q}": float(np.quantile(ordered, q / 100)) for q in QUANTILES})
    low, high = float(ordered[0]), float(ordered[-1])
    log_scale = low > 0 and high / low > LOG_HISTOGRAM_SPAN
    counts, edges = np.histogram(ordered, bins=np.geomspace(low, high, bins + 1) if log_scale else bins)
    if total != ordered.size:  # a sample: scale its counts to the collection
        counts = np.rint(counts * (total / ordered.size)).astype(np.int64)
    histogram = {"edges": edges.tolist(), "counts": counts.tolist(), "scale": "log" if log_scale else "linear"}
    return summary, histogram
