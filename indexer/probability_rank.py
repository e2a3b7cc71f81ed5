"""Top-k by calibrated match probability with only a cosine search: the same algorithm for every backend.

For one query, a calibrator's logit is ``slope(S_x) * cos + g(S_x)`` with a slope that is
positive on the calibrator's uncertainty range (``models.calibration.PairScorer``). So an item
whose mean cosine is at most c can never score above ``PairScorer.bound(c, S_min, S_max)``, the
largest logit of cosine c over the collection's range of item uncertainties. The search fetches
the best n items by cosine, scores them, and stops as soon as the k-th best logit reaches the
bound at the smallest cosine it fetched: no item it has not seen can beat it. Otherwise n grows
(x4) and it fetches again. With an exact cosine search the result is the exact top k by
probability; with an approximate one (HNSW, IVF) it inherits that search's recall, as every
other rank mode does, and every candidate is still scored exactly.

What a backend provides (``fetch`` and, optionally, ``scan``):

* ``fetch(rows, n)``: for the query rows ``rows``, the n best live items by mean cosine, as an
  object with ``cosine`` and ``uncertainty`` arrays [len(rows), C] (float64, NaN where there is
  no candidate; C >= n unless fewer items are live) and whatever keys the backend needs;
* the collection's uncertainty range (min and max S over the live items);
* ``scan(rows, k, scorers)`` (optional): an exhaustive pass over the live items in bounded
  memory that returns each row's k best by calibrated logit in the same shape. It takes over
  once n would pass ``max_fetch``, so a general query (whose matches are everywhere) never makes
  the backend hold the whole collection as candidates at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from models.calibration import PairScorer

COSINE_TOLERANCE = 1e-5  # float32 cosines of unit vectors err by ~1e-7: unseen items may tie the last by this much
GROWTH = 4
MAX_FETCH = 10_000  # candidates per query before an exhaustive scan takes over (when the backend has one)


class Candidates(Protocol):
    cosine: np.ndarray  # [q, C] float64, NaN = none
    uncertainty: np.ndarray  # [q, C] float64


Fetch = Callable[[np.ndarray, int], Candidates]
Scan = Callable[[np.ndarray, int, Sequence[PairScorer]], Candidates]


@dataclass(frozen=True)
class Choice:
    """One query's result: ``columns`` of row ``row`` of ``block``, best first, with their calibrated logits."""

    block: Any
    row: int
    columns: np.ndarray
    logit: np.ndarray
    rounds: int  # fetches made (a scan counts as one)


def _best(logit: np.ndarray, k: int) -> np.ndarray:
    valid = np.flatnonzero(~np.isnan(logit))
    return valid[np.argsort(-logit[valid], kind="stable")[:k]]


def _logits(block: Candidates, row: int, scorer: PairScorer) -> np.ndarray:
    cosine, uncertainty = block.cosine[row], block.uncertainty[row]
    out = np.full(cosine.shape, np.nan)
    valid = ~np.isnan(cosine)
    if valid.any():
        out[valid] = scorer.logit(cosine[valid], uncertainty[valid])
    return out


def top_k(fetch: Fetch, scorers: Sequence[PairScorer], k: int, size: int,
          uncertainty_range: tuple[float, float] | None, *, scan: Scan | None = None, first: int | None = None,
          exact: bool = True, max_fetch: int | None = None) -> list[Choice]:
    """The k best live items by calibrated logit for each query (one ``PairScorer`` per query row).

    ``size``: live items in the collection. ``exact=False`` makes one round of ``first`` candidates
    by cosine and ranks them (the two-stage path: a shortlist by cosine, re-ranked).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    max_fetch = MAX_FETCH if max_fetch is None else max_fetch
    n = min(max(size, 1), first or max(4 * k, 64))
    low, high = uncertainty_range if uncertainty_range is not None else (None, None)
    pending = np.arange(len(scorers))
    out: list[Choice | None] = [None] * len(scorers)
    rounds = 0
    while pending.size:
        if exact and scan is not None and n > max_fetch:
            block = scan(pending, k, [scorers[q] for q in pending])
            for row, q in enumerate(pending.tolist()):
                logit = _logits(block, row, scorers[q])
                best = _best(logit, k)
                out[q] = Choice(block, row, best, logit[best], rounds + 1)
            break
        block = fetch(pending, n)
        rounds += 1
        still = []
        for row, q in enumerate(pending.tolist()):
            logit = _logits(block, row, scorers[q])
            best = _best(logit, k)
            found = int((~np.isnan(block.cosine[row])).sum())
            done = not exact or n >= size or found < n
            if not done and best.size == k:
                floor = float(np.nanmin(block.cosine[row]))  # no unseen item has a larger cosine
                done = logit[best[-1]] >= scorers[q].bound(floor + COSINE_TOLERANCE, low, high)
            if done:
                out[q] = Choice(block, row, best, logit[best], rounds)
            else:
                still.append(q)
        pending = np.asarray(still, dtype=np.int64)
        n = min(size, n * GROWTH)
    return out  # type: ignore[return-value]
