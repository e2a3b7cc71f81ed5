"""The search pipeline over one (vector table, FAISS index) pair, shared by ``GaussianIndex`` and the benchmark.

The index proposes candidates for an augmented query ([mu_q, 1] for CSD, [mu_q, 0] for cosine);
``ranking`` re-scores them exactly and orders them for the requested rank mode. Ranking by
calibrated probability fetches by cosine in growing rounds (``probability_rank``).

A ``Selection`` (the slots a metadata filter keeps) restricts the candidates *before* the top-k
is taken, so a filtered search returns the exact top-k of the filtered items (flat index; ANN
kinds: the same recall as unfiltered), never a post-filtered global top-k with fewer results:

- a filter that keeps every live item: the unfiltered search;
- few selected items (at most ``SUBSET_SCAN_FRACTION`` of the slots, and with HNSW/IVF also at
  most ``SUBSET_SCAN_MAX``): an exact scan of just those items (gathered a group at a time and
  scanned by ``flat_scan``);
- a flat index and many selected items: the flat scan of the whole table with the other slots
  masked out (exact, about the cost of an unfiltered search);
- HNSW/IVF and many selected items: FAISS's own filtered search (an ``IDSelectorBitmap`` in the
  per-call search parameters); a query that comes back short (fewer than it needs among the
  selected items) is answered by the exact scan, whatever the filter correlates with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from models.calibration import CalibrationError, Calibrator
from models.gaussian import augment_queries

from . import flat_scan, probability_rank, ranking, validation
from .config import MAX_K, MAX_SHORTLIST, IndexSpec
from .errors import InvalidInputError
from .faiss_backend import FaissIndex, LiveFilter, SearchKnobs
from .table import VectorTable
from .types import CollectionInfo

RANKS = ("csd", "cosine", "inclusion", "probability")
DIRECTIONS = ("query_in_item", "item_in_query")
SUBSET_SCAN_FRACTION = 0.25  # flat index: scan the selected items alone when they are at most this share
SUBSET_SCAN_MAX = 20_000  # HNSW/IVF: scan the selected items alone (exactly) when there are at most this many
_GATHER_FLOATS = 1 << 24  # floats of selected vectors gathered at once by the exact scan (64 MiB)
_TASK_ROWS = 8192  # rows per flat_scan task of a gathered group


@dataclass(frozen=True)
class Selection:
    """The slots a filter keeps: ``mask`` [n_slots] bool (live and matching), ``count`` of them."""

    mask: np.ndarray
    count: int

    @classmethod
    def of(cls, mask: np.ndarray) -> Selection:
        return cls(mask, int(np.count_nonzero(mask)))



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
               knobs: SearchKnobs, selection: Selection | None = None) -> np.ndarray:
    """Slots [Q, C] the FAISS index proposes for augmented queries [Q, D+1] (-1 = none).

    With a ``selection``, only selected slots, and at least min(fetch, selected) of them per query.
    """
    if index.kind == "flat":
        fetch = k + max(8, k // 4)  # a margin so float32 near-ties at rank k are settled by the exact re-rank
    else:
        fetch = k * (knobs.refine or spec.refine)  # ANN and compressed codecs: re-rank refine * k exactly
    if selection is None or selection.count == len(table):  # no filter, or one that keeps every live item
        live = LiveFilter(table.live, table.live_bitmap(), table.n_dead)
        return index.search(queries, fetch, live, knobs, rows=table.blocks() if index.kind == "flat" else None)
    return _selected_candidates(table, index, queries, fetch, knobs, selection)


def _selected_candidates(table: VectorTable, index: FaissIndex, queries: np.ndarray, fetch: int,
                         knobs: SearchKnobs, selection: Selection) -> np.ndarray:
    if selection.count == 0:
        return np.full((len(queries), 0), -1, np.int64)
    wanted = min(fetch, selection.count)
    small = selection.count <= SUBSET_SCAN_FRACTION * table.n_slots and (
        index.kind == "flat" or selection.count <= SUBSET_SCAN_MAX)
    if small or wanted == selection.count:
        return subset_scan(table, np.flatnonzero(selection.mask), queries, wanted)
    # the index's own search over the selected slots: the flat scan skips the others (exact), HNSW/IVF
    # take them as an IDSelectorBitmap in their per-call search parameters
    selected = LiveFilter(selection.mask, np.packbits(selection.mask, bitorder="little"),
                          table.n_slots - selection.count)
    labels = index.search(queries, fetch, selected, knobs, rows=table.blocks() if index.kind == "flat" else None)
    short = np.flatnonzero((labels >= 0).sum(axis=1) < wanted)
    if short.size:  # an approximate search that came back short: the selected items, scanned exactly
        scanned = subset_scan(table, np.flatnonzero(selection.mask), queries[short], wanted)
        width = max(labels.shape[1], scanned.shape[1])
        labels = _pad_labels(labels, width)
        labels[short] = _pad_labels(scanned, width)
    return labels


def subset_scan(table: VectorTable, slots: np.ndarray, queries: np.ndarray, fetch: int) -> np.ndarray:
    """Exact top-``fetch`` of ``slots`` by inner product with augmented queries [Q, D+1]: slots [Q, fetch].

    The selected vectors are gathered a group at a time (bounded memory whatever the selection)
    and each group is scanned by ``flat_scan`` (its thread pool, one BLAS thread per task); a
    running top-``fetch`` per query is kept across groups.
    """
    q, width = len(queries), table.dim + 1
    fetch = min(fetch, len(slots))
    rows = max(1024, _GATHER_FLOATS // width)
    best_scores = np.full((q, 0), -np.inf, np.float32)
    best_slots = np.full((q, 0), -1, np.int64)
    for start in range(0, len(slots), rows):
        chunk = slots[start:start + rows]
        gathered = table.vectors(chunk)  # [n, D+1]
        blocks = [(i, gathered[i:i + _TASK_ROWS]) for i in range(0, len(chunk), _TASK_ROWS)]
        scores, positions = flat_scan.top_k(blocks, queries, fetch)
        found = np.where(positions >= 0, chunk[np.maximum(positions, 0)], -1)
        scores = np.concatenate([best_scores, scores], axis=1)
        found = np.concatenate([best_slots, found], axis=1)
        if scores.shape[1] > fetch:
            top = np.argpartition(-scores, fetch - 1, axis=1)[:, :fetch]
            scores, found = np.take_along_axis(scores, top, 1), np.take_along_axis(found, top, 1)
        best_scores, best_slots = scores, found
    order = np.argsort(-best_scores, axis=1, kind="stable")
    return np.take_along_axis(best_slots, order, 1)


def _pad_labels(labels: np.ndarray, width: int) -> np.ndarray:
    if labels.shape[1] >= width:
        return labels.copy()
    return np.concatenate([labels, np.full((len(labels), width - labels.shape[1]), -1, np.int64)], axis=1)


def run(table: VectorTable, index: FaissIndex, spec: IndexSpec, mean: np.ndarray, logvar: np.ndarray,
        query_uncertainty: np.ndarray, request: Request,
        rows_for: ranking.RowFetcher | None = None, selection: Selection | None = None) -> list[ranking.Ranked]:
    """Ranked results per query for unit means [Q, D], log-variances [Q, D] and S_q [Q].

    ``rows_for`` reads candidate (mean, logvar) from the store; only the inclusion mode needs it.
    ``selection`` restricts every rank mode to the selected slots (see the module docstring).
    """
    mean64 = mean.astype(np.float64)
    available = len(table) if selection is None else selection.count

    def scored_candidates(queries: np.ndarray, wanted: int, rows: np.ndarray | None = None) -> ranking.Scored:
        picked = slice(None) if rows is None else rows
        by = "csd" if len(queries) and queries[0, -1] > 0.5 else "cosine"  # [mu_q, 1] or [mu_q, 0]
        while True:
            slots = candidates(table, index, spec, queries, wanted, request.knobs, selection)
            scored = ranking.score(table, mean64[picked], query_uncertainty[picked], slots)
            # items tied with the wanted-th may lie beyond the candidates (exact duplicates): fetch more,
            # so that ties are broken by id over all of them and pages agree (exact flat index only)
            if index.kind != "flat" or wanted >= available or not ranking.ties_cut(scored, wanted, by):
                return scored
            wanted = min(available, 2 * wanted)

    def scan(rows: np.ndarray, wanted: int, scorers: list) -> ranking.Scored:
        return ranking.scan_best(table, mean64[rows], query_uncertainty[rows], wanted,
                                 lambda i, cosine, unc: scorers[i].logit(cosine, unc),
                                 None if selection is None else np.flatnonzero(selection.mask))

    return rank_candidates(scored_candidates, mean, logvar, request, rows_for, size=available, scan=scan)


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
