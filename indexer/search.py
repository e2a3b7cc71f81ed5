"""The search pipeline over one (vector table, FAISS index) pair, shared by ``GaussianIndex`` and the benchmark.

FAISS proposes candidates for an augmented query ([mu_q, 1] for CSD, [mu_q, 0] for cosine);
``ranking`` re-scores them exactly and orders them for the requested rank mode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from models.gaussian import augment_queries

from . import ranking, validation
from .config import MAX_K, MAX_SHORTLIST, IndexSpec
from .errors import InvalidInputError
from .faiss_backend import FaissIndex, LiveFilter, SearchKnobs
from .table import VectorTable

RANKS = ("csd", "cosine", "inclusion")
DIRECTIONS = ("query_in_item", "item_in_query")


@dataclass(frozen=True)
class Request:
    k: int
    rank: str = "csd"  # csd | cosine | inclusion
    exact: bool = True  # False: two-stage (cosine shortlist, CSD re-rank)
    shortlist: int = 100  # candidates re-ranked by the two-stage and inclusion paths
    direction: str = "query_in_item"
    knobs: SearchKnobs = field(default_factory=SearchKnobs)


def parse_request(k: int, rank: str, exact: bool, shortlist: int | None, inclusion_direction: str,
                  nprobe: int | None = None, ef_search: int | None = None, refine: int | None = None) -> Request:
    """A checked ``Request`` from the arguments of ``search`` (every backend's); InvalidInputError otherwise.

    ``shortlist`` defaults to max(4k, 100) capped at MAX_SHORTLIST; the knobs override the
    collection's spec for one call.
    """
    k = validation.positive_int(k, "k", MAX_K)
    if rank not in RANKS:
        raise InvalidInputError(f"rank must be one of {', '.join(RANKS)}, not {rank!r}")
    if inclusion_direction not in DIRECTIONS:
        raise InvalidInputError(f"inclusion_direction must be one of {', '.join(DIRECTIONS)}")
    if shortlist is None:
        shortlist = min(MAX_SHORTLIST, max(4 * k, 100))
    shortlist = validation.positive_int(shortlist, "shortlist", MAX_SHORTLIST)
    if shortlist < k:
        raise InvalidInputError(f"shortlist ({shortlist}) must be at least k ({k})")
    knobs = SearchKnobs(
        nprobe=None if nprobe is None else validation.positive_int(nprobe, "nprobe", 65536),
        ef_search=None if ef_search is None else validation.positive_int(ef_search, "ef_search", 65536),
        refine=None if refine is None else validation.positive_int(refine, "refine", 1000))
    return Request(k, rank, bool(exact), shortlist, inclusion_direction, knobs)


def candidates(table: VectorTable, index: FaissIndex, spec: IndexSpec, queries: np.ndarray, k: int,
               knobs: SearchKnobs) -> np.ndarray:
    """Slots [Q, C] the FAISS index proposes for augmented queries [Q, D+1] (-1 = none)."""
    if index.kind == "flat":
        fetch = k + max(8, k // 4)  # a margin so float32 near-ties at rank k are settled by the exact re-rank
    else:
        fetch = k * (knobs.refine or spec.refine)  # ANN and compressed codecs: re-rank refine * k exactly
    live = LiveFilter(table.live, table.live_bitmap(), table.n_dead)
    return index.search(queries, fetch, live, knobs)


def run(table: VectorTable, index: FaissIndex, spec: IndexSpec, mean: np.ndarray, logvar: np.ndarray,
        query_uncertainty: np.ndarray, request: Request,
        rows_for: ranking.RowFetcher | None = None) -> list[ranking.Ranked]:
    """Ranked results per query for unit means [Q, D], log-variances [Q, D] and S_q [Q].

    ``rows_for`` reads candidate (mean, logvar) from the store; only the inclusion mode needs it.
    """
    mean64 = mean.astype(np.float64)

    def scored_candidates(queries: np.ndarray, wanted: int) -> ranking.Scored:
        slots = candidates(table, index, spec, queries, wanted, request.knobs)
        return ranking.score(table, mean64, query_uncertainty, slots)

    return rank_candidates(scored_candidates, mean, logvar, request, rows_for)


# scored_candidates(augmented queries [Q, D+1], wanted) -> exact scores of at least ``wanted`` candidates per query
CandidateSource = Callable[[np.ndarray, int], ranking.Scored]


def rank_candidates(scored_candidates: CandidateSource, mean: np.ndarray, logvar: np.ndarray, request: Request,
                    rows_for: ranking.RowFetcher | None = None) -> list[ranking.Ranked]:
    """The rank modes over any candidate source (the FAISS table here, a Milvus collection elsewhere).

    ``scored_candidates`` is asked for [mu_q, 1] (CSD order) or [mu_q, 0] (cosine order) queries.
    """
    by_csd = augment_queries(mean)  # [Q, D+1]: [mu_q, 1]
    by_cosine = by_csd.copy()
    by_cosine[:, -1] = 0.0  # [mu_q, 0]: the extra column drops out, leaving the mean cosine
    k, shortlist = request.k, request.shortlist
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
