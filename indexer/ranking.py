"""Exact re-ranking of FAISS candidates: CSD, mean cosine, calibrated probability and the inclusion test.

FAISS proposes candidate slots; these functions score them exactly from the stored
vectors and order them. The exact CSD of a unit-mean pair is 2 - 2 mu_q.mu_x + S_q + S_x, which
is ``models.gaussian.csd_from_inner_product`` applied to <[mu_q, 1], [mu_x, -S_x/2]>.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from models.gaussian import csd_from_inner_product, inclusion

from .table import VectorTable

_MAX_GATHER = 4_000_000  # floats gathered per block, so a 10k shortlist x 4096 queries stays bounded


@dataclass(frozen=True)
class Ranked:
    """One query's results, best first."""

    slots: np.ndarray  # [n] int64 table slots
    score: np.ndarray  # [n] the ranking value (CSD: lower is better; cosine, probability logit, inclusion: higher)
    csd: np.ndarray  # [n] exact CSD
    cosine: np.ndarray  # [n] mean cosine
    uncertainty: np.ndarray  # [n] item uncertainty S_x
    inclusion: np.ndarray | None = None  # [n] signed inclusion margin in the chosen direction


@dataclass(frozen=True)
class Scored:
    """Exact scores of a candidate block [Q, C]; invalid cells (label -1) are NaN."""

    slots: np.ndarray  # [Q, C] int64, -1 = no candidate
    cosine: np.ndarray  # [Q, C] float64
    csd: np.ndarray  # [Q, C] float64
    uncertainty: np.ndarray  # [Q, C] float64


def score(table: VectorTable, query_mean: np.ndarray, query_uncertainty: np.ndarray, slots: np.ndarray) -> Scored:
    """Exact cosine and CSD of each query [Q, D] against its candidate slots [Q, C] (float64 results)."""
    q, c = slots.shape
    valid = slots >= 0
    safe = np.where(valid, slots, 0)
    cosine = np.empty((q, c), np.float64)
    dim = table.dim
    rows = max(1, _MAX_GATHER // max(1, c * (dim + 1)))
    unc = table.uncertainty(safe)  # [Q, C]
    query32 = query_mean.astype(np.float32)
    for start in range(0, q, rows):
        block = table.vectors(safe[start:start + rows])[..., :dim]  # [q', C, D] float32 means
        # one batched float32 BLAS matvec per query; float32 dots of unit vectors err by ~1e-7
        cosine[start:start + rows] = np.matmul(block, query32[start:start + rows, :, None])[..., 0]
    inner = cosine - unc / 2  # <[mu_q, 1], [mu_x, -S_x/2]> with the exact float64 S_x
    csd = csd_from_inner_product(inner, query_uncertainty)
    nan = np.where(valid, 0.0, np.nan)
    return Scored(slots, cosine + nan, csd + nan, unc + nan)


def _best(values: np.ndarray, k: int, lowest: bool) -> np.ndarray:
    """Column indices of the k best non-NaN values of one row, best first (stable on ties).

    Candidates tied with the k-th value are kept too (so more than k may come back): the caller
    breaks those ties by id, which makes the order total and pages of a result list consistent.
    """
    valid = np.flatnonzero(~np.isnan(values))
    keyed = values[valid] if lowest else -values[valid]
    order = np.argsort(keyed, kind="stable")
    if len(order) > k:
        ordered = keyed[order]
        order = order[:k + int(np.searchsorted(ordered[k:], ordered[k - 1], side="right"))]
    return valid[order]


def ties_cut(scored: Scored, n: int, by: str) -> bool:
    """Whether, in some row, the last candidate is tied with the n-th best by ``csd`` or ``cosine``
    (so more tied items may exist beyond the candidates)."""
    keys = np.sort(scored.csd if by == "csd" else -scored.cosine, axis=1)  # NaN (no candidate) last
    valid = np.count_nonzero(~np.isnan(keys), axis=1)
    rows = np.flatnonzero(valid > n)
    return bool(rows.size) and bool(np.any(keys[rows, n - 1] == keys[rows, valid[rows] - 1]))


def keep_best(scored: Scored, n: int, by: str) -> Scored:
    """Each row's ``n`` best candidates by ``csd`` (lowest) or ``cosine`` (highest); the rest become -1/NaN.

    FAISS is asked for a few more candidates than a shortlist holds (to settle float32 near-ties);
    this cuts the shortlist back to exactly ``n`` by the exact score.
    """
    key = scored.csd if by == "csd" else -scored.cosine
    order = np.argsort(np.where(np.isnan(key), np.inf, key), axis=1, kind="stable")[:, :n]  # NaN last

    def take(values: np.ndarray) -> np.ndarray:
        return np.take_along_axis(values, order, axis=1)

    return Scored(take(scored.slots), take(scored.cosine), take(scored.csd), take(scored.uncertainty))


def by_csd(scored: Scored, k: int) -> list[Ranked]:
    out = []
    for i in range(len(scored.slots)):
        best = _best(scored.csd[i], k, lowest=True)
        out.append(Ranked(scored.slots[i, best], scored.csd[i, best], scored.csd[i, best], scored.cosine[i, best],
                          scored.uncertainty[i, best]))
    return out


def by_cosine(scored: Scored, k: int) -> list[Ranked]:
    out = []
    for i in range(len(scored.slots)):
        best = _best(scored.cosine[i], k, lowest=False)
        out.append(Ranked(scored.slots[i, best], scored.cosine[i, best], scored.csd[i, best],
                          scored.cosine[i, best], scored.uncertainty[i, best]))
    return out


def by_logit(choices: list) -> list[Ranked]:
    """Ranked results from ``indexer.probability_rank`` choices over ``Scored`` blocks (score = calibrated logit)."""
    out = []
    for choice in choices:
        block, row, columns = choice.block, choice.row, choice.columns
        out.append(Ranked(block.slots[row, columns], choice.logit, block.csd[row, columns],
                          block.cosine[row, columns], block.uncertainty[row, columns]))
    return out


def scan_best(table: VectorTable, query_mean: np.ndarray, query_uncertainty: np.ndarray, k: int,
              logit_of: Callable[[int, np.ndarray, np.ndarray], np.ndarray],
              slots: np.ndarray | None = None) -> Scored:
    """Every live slot (or ``slots``: a filter's), a block at a time: each query's k best by
    ``logit_of(query, cosine, S)``, scored exactly.

    Memory stays at one block of vectors plus k candidates per query, whatever the table's size.
    """
    slots = table.live_slots() if slots is None else slots
    q = len(query_mean)
    kept_slots = [np.zeros(0, np.int64) for _ in range(q)]
    kept_logit = [np.zeros(0) for _ in range(q)]
    query32 = query_mean.astype(np.float32)
    rows = max(1, _MAX_GATHER // (table.dim + 1))
    for start in range(0, len(slots), rows):
        chunk = slots[start:start + rows]
        cosine = (table.vectors(chunk)[:, :table.dim] @ query32.T).T.astype(np.float64)  # [q, c]
        uncertainty = table.uncertainty(chunk)
        for i in range(q):
            both_slots = np.concatenate([kept_slots[i], chunk])
            both_logit = np.concatenate([kept_logit[i], logit_of(i, cosine[i], uncertainty)])
            if both_slots.size > k:
                top = np.argpartition(-both_logit, k - 1)[:k]
                both_slots, both_logit = both_slots[top], both_logit[top]
            kept_slots[i], kept_logit[i] = both_slots, both_logit
    width = max(1, max(len(s) for s in kept_slots) if kept_slots else 1)
    block = np.full((q, width), -1, np.int64)
    for i, chosen in enumerate(kept_slots):
        block[i, :len(chosen)] = chosen
    return score(table, query_mean, query_uncertainty, block)


# rows_for(slots) -> (mean [n, D], logvar [n, D]) of live candidates, read from the store
RowFetcher = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def by_inclusion(scored: Scored, query_mean: np.ndarray, query_logvar: np.ndarray, k: int, direction: str,
                 rows_for: RowFetcher) -> list[Ranked]:
    """Order each query's candidates by the inclusion test in ``direction``.

    ``query_in_item``: how much the query lies inside the item (items that *include* the query,
    i.e. more general ones); ``item_in_query``: how much the item lies inside the query. Both the
    order and ``Ranked.score`` / ``Ranked.inclusion`` are the signed margin inclusion(direction) -
    inclusion(reverse), the quantity of ``models.gaussian.inclusion_margin`` (the one the inclusion
    loss trains): positive when the relation holds, highest first.
    """
    out = []
    for i in range(len(scored.slots)):
        columns = np.flatnonzero(scored.slots[i] >= 0)
        if columns.size == 0:
            empty = np.zeros(0)
            out.append(Ranked(np.zeros(0, np.int64), empty, empty, empty, empty, inclusion=empty))
            continue
        mean, logvar = rows_for(scored.slots[i, columns])  # [C, D] each
        qm = query_mean[i:i + 1].astype(np.float64)
        ql = query_logvar[i:i + 1].astype(np.float64)
        query_in_item = inclusion(qm, ql, mean.astype(np.float64), logvar.astype(np.float64))[0]  # [C]
        item_in_query = inclusion(mean.astype(np.float64), logvar.astype(np.float64), qm, ql)[:, 0]  # [C]
        forward, backward = ((query_in_item, item_in_query) if direction == "query_in_item"
                             else (item_in_query, query_in_item))
        margin = forward - backward
        best = _best(margin, k, lowest=False)
        chosen = columns[best]
        out.append(Ranked(scored.slots[i, chosen], margin[best], scored.csd[i, chosen], scored.cosine[i, chosen],
                          scored.uncertainty[i, chosen], inclusion=margin[best]))
    return out
