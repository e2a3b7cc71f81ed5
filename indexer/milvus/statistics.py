"""Uncertainty statistics of a Milvus collection that stay correct while other replicas write.

Nothing is cached in the replica: every figure is read from Milvus at the catalog's consistency
level (Strong by default), so it includes every write acknowledged before the call, from any
replica. What each costs, with N items:

- ``percentiles``: exact. Per value, three ``count(*)`` queries (all items, S < v, S <= v): the
  mid-rank percentile the FAISS path computes with two binary searches. Milvus evaluates a range
  filter over the ``uncertainty`` column of every segment (a scan of 8 bytes per item; with the
  STL_SORT scalar index Standalone and Distributed build, two binary searches per segment plus
  a bitset): no data leaves the query nodes.
- ``summary`` (count, min, max, mean, std, quantiles, histogram): from the S values of the items
  whose hash bucket (``sample``, crc32(id) mod 1024) is below b = ceil(1024 * SAMPLE_TARGET / N):
  every item (exact) up to SAMPLE_TARGET = 10^5 items, a uniform hash sample of ~10^5 values
  above (at 10^8 items: 2 of 1024 buckets, ~2 * 10^5 values, 1.6 MB read). A p-quantile from m
  sampled values is off by about sqrt(p(1-p)/m) in rank: <= 0.16 percentage points at m = 10^5.
  ``sample`` in the answer says which it is.
- ``extreme_rows``: exact. Bisection on the threshold t until ``count(S <= t)`` is between n and
  a few n (seeded from the sample, so usually one or two counts), then the rows below t are
  read and sorted.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..summary import uncertainty_summary
from .schema import SAMPLE, SAMPLE_BUCKETS, UNCERTAINTY

if TYPE_CHECKING:
    from .collection import MilvusCollection

SAMPLE_TARGET = 100_000
MAX_BISECTION_STEPS = 80
EXTREME_SLACK = 4  # read at most this many times n rows (or n + 1000) when ties or coarse steps allow


def _number(value: float) -> str:
    return repr(float(value))


def percentiles(count: Callable[[str], int], values: np.ndarray) -> np.ndarray:
    """Mid-rank percentiles 0..100 of ``values`` among the collection's uncertainties (NaN if empty)."""
    total = count("")
    out = np.full(values.shape, np.nan)
    if total == 0:
        return out
    flat = out.reshape(-1)
    for i, value in enumerate(values.reshape(-1).tolist()):
        below = count(f"{UNCERTAINTY} < {_number(value)}")
        at_or_below = count(f"{UNCERTAINTY} <= {_number(value)}")
        flat[i] = min(100.0, 100.0 * (below + at_or_below) / (2 * total))
    return out


def sample_buckets(total: int) -> int:
    """Hash buckets (of 1024) to read for about SAMPLE_TARGET items; 1024 = every item."""
    if total <= SAMPLE_TARGET:
        return SAMPLE_BUCKETS
    return max(1, min(SAMPLE_BUCKETS, math.ceil(SAMPLE_BUCKETS * SAMPLE_TARGET / total)))


def sampled_uncertainties(collection: MilvusCollection) -> tuple[np.ndarray, int, int]:
    """(sorted S of the sampled items, buckets read, total items)."""
    total = collection.count()
    buckets = sample_buckets(total)
    expression = "" if buckets == SAMPLE_BUCKETS else f"{SAMPLE} < {buckets}"
    return np.sort(collection.uncertainties(expression)), buckets, total


def summary(collection: MilvusCollection, bins: int) -> tuple[dict[str, Any], dict[str, Any]]:
    ordered, buckets, total = sampled_uncertainties(collection)
    exact = buckets == SAMPLE_BUCKETS
    stats, histogram = uncertainty_summary(ordered, bins, None if exact else total)
    stats["sample"] = {"exact": exact, "size": int(ordered.size), "fraction": buckets / SAMPLE_BUCKETS}
    return stats, histogram


def extreme_rows(collection: MilvusCollection, n: int, lowest: bool, fields: list[str]) -> list[dict[str, Any]]:
    """The n rows of lowest (or highest) S, ordered from the extreme inward; ties broken by id.

    Works on keys k = S (lowest) or k = -S (highest), so "extreme" is always "smallest key":
    find a threshold t with n <= count(k <= t) <= a few n by bisection, then read those rows.
    """
    ordered, _, total = sampled_uncertainties(collection)
    n = min(n, total)
    if n == 0 or ordered.size == 0:
        return []
    at_most = max(EXTREME_SLACK * n, n + 1000)
    sign = 1.0 if lowest else -1.0
    keys = ordered if lowest else -ordered[::-1]  # ascending: the extreme first

    def where(low: float | None, high: float) -> str:  # items with low < key <= high, written on S
        if lowest:
            text = f"{UNCERTAINTY} <= {_number(high)}"
            return text if low is None else f"{UNCERTAINTY} > {_number(low)} and {text}"
        text = f"{UNCERTAINTY} >= {_number(-high)}"
        return text if low is None else f"{UNCERTAINTY} < {_number(-low)} and {text}"

    # seed: the sample's estimate of the n-th smallest key (exact when the sample is every item)
    threshold = float(keys[min(len(keys) - 1, int(n * len(keys) / total))])
    below: float | None = None  # a key with count(k <= key) < n
    above: float | None = None  # a key with count(k <= key) >= n
    step = max(abs(threshold), 1.0)
    for _ in range(MAX_BISECTION_STEPS):
        found = collection.count(where(None, threshold))
        if found < n:
            below = threshold
        else:
            above = threshold
            if found <= at_most:
                break
        if above is None:
            threshold, step = threshold + step, 2 * step
        elif below is None:
            threshold, step = threshold - step, 2 * step
        else:
            middle = (below + above) / 2
            if middle in (below, above):  # adjacent floats: a tie at ``above`` holds more than at_most items
                break
            threshold = middle
    if above is None:  # the steps ran out below the n-th key (writes racing the search): take everything above
        above = sys.float_info.max
    rows = [] if below is None else collection.rows_where(where(None, below), fields, limit=n)
    rows += collection.rows_where(where(below, above), fields, limit=at_most)
    rows.sort(key=lambda row: (sign * float(row[UNCERTAINTY]), row["id"]))
    return rows[:n]
