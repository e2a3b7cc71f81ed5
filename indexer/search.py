"""The search pipeline over one (vector table, FAISS index) pair, shared by ``GaussianIndex`` and the benchmark.

FAISS proposes candidates for an augmented query ([mu_q, 1] for CSD, [mu_q, 0] for cosine);
``ranking`` re-scores them exactly and orders them for the requested rank mode. Ranking by
calibrated probability fetches by cosine in growing rounds (``probability_rank``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from models.calibration import CalibrationError, Calibrator
from models.gaussian import augment_queries

from . import probability_rank, ranking, validation
from .config import MAX_K, MAX_SHORTLIST, IndexSpec
from .errors import InvalidInputError
from .faiss_backend import FaissIndex, LiveFilter, SearchKnobs
from .table import VectorTable
from .types import CollectionInfo

RANKS = ("csd", "cosine", "inclusion", "probability")
DIRECTIONS = ("query_in_item", "item_in_query")


@dataclass(frozen=True)
class Request:
    k: int
    rank: str = "csd"  # csd | cosine | inclusion | probability
    exact: bool = True  # False: two-stage (cosine shortlist, CSD / probability re-rank)
    shortlist: int = 100  # candidates re-ranked by the two-stage and inclusion paths
    direction: str = "query_in_item"
    knobs: SearchKnobs = field(default_factory=SearchKnobs)
    scorers: tuple = ()  # probability: one models.calibration.PairScorer per query
    uncertainty_range: tuple[float, float] | None = None  # probability: min and max S of the live items


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


def check_rank_for(request: Request, info: CollectionInfo) -> None:
    """Refuse what a collection cannot answer: the inclusion test needs variances a deterministic model lacks."""
    if request.rank == "inclusion" and info.deterministic:
        raise InvalidInputError(f"collection {info.name!r} holds a deterministic model's points (no variances): "
                                "the inclusion test needs them; rank by csd or cosine")


def with_scorers(request: Request, calibrator: Calibrator | None, query_modality: str | None,
                 info: CollectionInfo, query_uncertainty: np.ndarray) -> Request:
    """For rank="probability": the request with one calibrated ``PairScorer`` per query (else unchanged).

    ``query_modality`` is the queries' modality (the other one than the collection's for a
    cross-modal search); the calibrator must cover that pair of modalities.
    """
    if request.rank != "probability":
        return request
    if calibrator is None:
        raise InvalidInputError("rank='probability' needs the model's calibrator (models.calibration.Calibrator)")
    try:
        scorers = tuple(calibrator.for_query(query_modality, info.modality, float(s)) for s in query_uncertainty)
    except CalibrationError as error:
        raise InvalidInputError(f"rank='probability' on {info.modality} collection {info.name!r}: {error}") from None
    return replace(request, scorers=scorers)


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

    def scored_candidates(queries: np.ndarray, wanted: int, rows: np.ndarray | None = None) -> ranking.Scored:
        slots = candidates(table, index, spec, queries, wanted, request.knobs)
        picked = slice(None) if rows is None else rows
        return ranking.score(table, mean64[picked], query_uncertainty[picked], slots)

    def scan(rows: np.ndarray, wanted: int, scorers: list) -> ranking.Scored:
        return ranking.scan_best(table, mean64[rows], query_uncertainty[rows], wanted,
                                 lambda i, cosine, unc: scorers[i].logit(cosine, unc))

    return rank_candidates(scored_candidates, mean, logvar, request, rows_for, size=len(table), scan=scan)


# scored_candidates(augmented queries [q, D+1], wanted, rows) -> exact scores of at least ``wanted``
# candidates for each of those queries; ``rows`` (None = all) are the positions of the q queries among
# the request's Q, so the source can pair them with their means and uncertainties.
CandidateSource = Callable[[np.ndarray, int, np.ndarray | None], ranking.Scored]


def rank_candidates(scored_candidates: CandidateSource, mean: np.ndarray, logvar: np.ndarray, request: Request,
                    rows_for: ranking.RowFetcher | None = None, *, size: int = 0,
                    scan: probability_rank.Scan | None = None) -> list[ranking.Ranked]:
    """The rank modes over any candidate source (the FAISS table here, a Milvus collection elsewhere).

    ``scored_candidates`` is asked for [mu_q, 1] (CSD order) or [mu_q, 0] (cosine order) queries.
    ``size`` (live items) and ``scan`` (an exhaustive pass, optional) serve rank="probability"
    (``indexer.probability_rank``).
    """
    by_csd = augment_queries(mean)  # [Q, D+1]: [mu_q, 1]
    by_cosine = by_csd.copy()
    by_cosine[:, -1] = 0.0  # [mu_q, 0]: the extra column drops out, leaving the mean cosine
    k, shortlist = request.k, request.shortlist
    if request.rank == "cosine":
        return ranking.by_cosine(scored_candidates(by_cosine, k, None), k)
    if request.rank == "probability":
        def fetch(rows: np.ndarray, n: int) -> ranking.Scored:
            scored = scored_candidates(by_cosine[rows], n, rows)
            # two-stage: exactly ``shortlist`` items by cosine, as the CSD two-stage path re-ranks
            return scored if request.exact else ranking.keep_best(scored, n, "cosine")

        choices = probability_rank.top_k(fetch, request.scorers, k, size, request.uncertainty_range,
                                         scan=scan, first=None if request.exact else shortlist, exact=request.exact)
        return ranking.by_logit(choices)
    if request.exact:
        scored = scored_candidates(by_csd, k if request.rank == "csd" else shortlist, None)
        if request.rank == "csd":
            return ranking.by_csd(scored, k)
        scored = ranking.keep_best(scored, shortlist, "csd")
    else:  # two-stage: exactly ``shortlist`` items by mean cosine, then the variances decide
        scored = ranking.keep_best(scored_candidates(by_cosine, shortlist, None), shortlist, "cosine")
        if request.rank == "csd":
            return ranking.by_csd(scored, k)
    if rows_for is None:
        raise ValueError("rank='inclusion' needs rows_for to read the candidates' log-variances")
    return ranking.by_inclusion(scored, mean, logvar, k, request.direction, rows_for)
