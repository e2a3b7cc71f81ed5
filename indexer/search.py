"""The search pipeline over one (vector table, FAISS index) pair, shared by ``GaussianIndex`` and the benchmark.

FAISS proposes candidates for an augmented query ([mu_q, 1] for CSD, [mu_q, 0] for cosine);
``ranking`` re-scores them exactly and orders them for the requested rank mode.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from models.gaussian import augment_queries

from . import ranking
from .config import IndexSpec
from .faiss_backend import FaissIndex, LiveFilter, SearchKnobs
from .table import VectorTable


@dataclass(frozen=True)
class Request:
    k: int
    rank: str = "csd"  # csd | cosine | inclusion
    exact: bool = True  # False: two-stage (cosine shortlist, CSD re-rank)
    shortlist: int = 100  # candidates re-ranked by the two-stage and inclusion paths
    direction: str = "query_in_item"
    knobs: SearchKnobs = field(default_factory=SearchKnobs)


def candidates(table: VectorTable, index: FaissIndex, spec: IndexSpec, queries: np.ndarray, k: int,
               knobs: SearchKnobs) -> np.ndarray:
    """Slots [Q, C] the FAISS index proposes for augmented queries [Q, D+1] (-1 = none)."""
    if index.kind == "flat":
        fetch = k + max(8, k // 4)  # a margin so float32 near-ties at rank k are settled by the exact re-rank
    else:
        fetch = k * (knobs.refine or spec.refine)  # ANN and compressed codecs: re-rank refine * k exactly
    live = LiveFilter(table.live, table.live_bitmap(), table.n_dead)
    return index.search(queries, fetch, live, knobs, rows=table.blocks() if index.kind == "flat" else None)


def run(table: VectorTable, index: FaissIndex, spec: IndexSpec, mean: np.ndarray, logvar: np.ndarray,
        query_uncertainty: np.ndarray, request: Request,
        rows_for: ranking.RowFetcher | None = None) -> list[ranking.Ranked]:
    """Ranked results per query for unit means [Q, D], log-variances [Q, D] and S_q [Q].

    ``rows_for`` reads candidate (mean, logvar) from the store; only the inclusion mode needs it.
    """
    mean64 = mean.astype(np.float64)
    by_csd = augment_queries(mean)  # [Q, D+1]: [mu_q, 1]
    by_cosine = by_csd.copy()
    by_cosine[:, -1] = 0.0  # [mu_q, 0]: the extra column drops out, leaving the mean cosine
    k, shortlist = request.k, request.shortlist

    def scored_candidates(queries: np.ndarray, wanted: int) -> ranking.Scored:
        slots = candidates(table, index, spec, queries, wanted, request.knobs)
        return ranking.score(table, mean64, query_uncertainty, slots)

    if request.rank == "cosine":
        return ranking.by_cosine(scored_candidates(by_cosine, k), k)
    if request.exact:
        scored = scored_candidates(by_csd, k if request.rank == "csd" else shortlist)
        if request.rank == "csd":
            return ranking.by_csd(scored, k)
        scored = ranking.keep_best(scored, shortlist, "csd")
    else:  # two-stage: exactly ``shortlist`` items by mean cosine, then the variances decide
        scored = ranking.keep_best(scored_candidates(by_cosine, shortlist), shortlist, "cosine")
        if request.rank == "csd":
            return ranking.by_csd(scored, k)
    if rows_for is None:
        raise ValueError("rank='inclusion' needs rows_for to read the candidates' log-variances")
    return ranking.by_inclusion(scored, mean, logvar, k, request.direction, rows_for)
