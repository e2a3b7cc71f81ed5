"""Searching a collection with encoded queries, and shaping what the API returns (no HTTP here).

``SearchBatcher`` batches single-query searches: concurrent requests against the same
collection and rank mode become one ``index.search`` call with many query rows, which
the index answers far more cheaply per query than one call each (one FAISS pass, one
metadata read). It runs on threads of its own (``search_batches_in_flight`` batches at
once), so encoding the next queries and searching the previous ones overlap.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from indexer.filters import canonical
from models.calibration import Calibrator, PairScorer
from models.encoder import GaussianBatch
from models.gaussian import PairLogit

from .batching import BatchPolicy, BatchQueue, split_list
from .errors import NotCalibrated
from .metrics import ServiceMetrics
from .schemas import QueryUncertainty, SearchHit, SearchResponse
from .scoring import match_probability

RANKS = ("csd", "cosine", "inclusion", "probability")


def percentile(index: Any, uncertainty: float | None) -> float | None:
    """Percentage of the collection's items with lower uncertainty; None for an empty collection, and
    without uncertainty (a deterministic model's query or collection)."""
    if index is None or uncertainty is None or getattr(index.info, "deterministic", False) or len(index) == 0:
        return None
    value = float(np.asarray(index.uncertainty_percentile(np.asarray([uncertainty], np.float64)))[0])
    return None if np.isnan(value) else value


def probability_scorer(calibrator: Calibrator | None, query_modality: str, item_modality: str,
                       query_uncertainty: float | None) -> PairScorer | None:
    """The calibrated probability of this query against the collection's items; None when there is none
    (no calibrator, or query and items of one modality: the calibrator knows text-image pairs only)."""
    if calibrator is None or query_modality == item_modality:
        return None
    return calibrator.for_query(query_modality, item_modality, query_uncertainty)


def check_probability_request(calibrator: Calibrator | None, query_modality: str, index: Any, rank: str,
                              min_probability: float | None) -> None:
    """Refuse (409) rank=probability and min_probability where there is no calibrated probability to use."""
    if rank != "probability" and min_probability is None:
        return
    asked = "rank=probability" if rank == "probability" else "min_probability"
    require_calibration(calibrator, query_modality, index.info.modality, asked,
                        f"collection {index.info.name!r} holds {index.info.modality}s")


def require_calibration(calibrator: Calibrator | None, query_modality: str, item_modality: str, asked: str,
                        what: str) -> None:
    if calibrator is None:
        raise NotCalibrated(f"{asked} needs the model's calibrator, and this model has none: fit one with "
                            "`prolip-retrieval calibrate --model MODEL --pairs labelled.jsonl` (the raw "
                            "pair_probability is no probability of a match)")
    if item_modality == query_modality:
        raise NotCalibrated(f"{asked} needs a text query on images or an image query on texts: the calibrator is "
                            f"fitted on text-image pairs, and {what}")


@dataclass(frozen=True)
class _Query:
    index: Any
    mean: np.ndarray  # (D,)
    logvar: np.ndarray | None  # (D,); None from a deterministic model
    k: int
    modality: str | None = None  # the query's; rank=probability only
    calibrator: Calibrator | None = None
    direction: str = "query_in_item"  # rank=inclusion: see scoring.inclusion_direction
    filter: Any = None  # a checked indexer.filters filter, or None
    filter_key: str = ""  # its canonical text: queries batch together only with the same filter


def _search_many(rank: str, queries: list[_Query]) -> list[list[Any]]:
    """One index.search per distinct (index, query modality, direction, filter) in the batch; each query gets its
    own top-k."""
    out: list[list[Any]] = [[] for _ in queries]
    by_index: dict[tuple[int, str | None, str, str], list[int]] = {}
    for position, query in enumerate(queries):
        by_index.setdefault((id(query.index), query.modality, query.direction, query.filter_key), []).append(position)
    for positions in by_index.values():
        first = queries[positions[0]]
        index = first.index
        if len(index) == 0:
            continue
        k = max(queries[p].k for p in positions)
        means = np.stack([queries[p].mean for p in positions])  # (Q, D)
        # one index holds one model's embeddings: all its queries have log-variances, or none do
        logvars = None if first.logvar is None else np.stack([queries[p].logvar for p in positions])
        extra = {"calibrator": first.calibrator, "query_modality": first.modality} if rank == "probability" else {}
        found = index.search(means, logvars, k, rank=rank, inclusion_direction=first.direction, filter=first.filter,
                             **extra)
        for position, hits in zip(positions, found, strict=True):
            out[position] = hits[:queries[position].k]
    return out


class SearchBatcher:
    """Single-query searches, batched per rank mode (see the module docstring)."""

    def __init__(self, *, policy: BatchPolicy | None = None, metrics: ServiceMetrics | None = None, **options: Any):
        """``options``: ``BatchPolicy`` fields overriding ``policy`` (e.g. ``max_batch_size=16``)."""
        policy = BatchPolicy(**{**(policy or BatchPolicy()).__dict__, **options})
        # searches release the GIL in FAISS and NumPy: batches in flight can overlap
        self.executor = ThreadPoolExecutor(max_workers=policy.max_in_flight, thread_name_prefix="search")
        in_flight = None if metrics is None else (lambda: metrics.in_flight)
        self.queues = {rank: BatchQueue("search", lambda queries, rank=rank: _search_many(rank, queries),
                                        self.executor, policy=policy, metrics=metrics, split=split_list,
                                        in_flight=in_flight)
                       for rank in RANKS}

    async def start(self) -> None:
        for queue in self.queues.values():
            await queue.start()

    async def stop(self) -> None:
        for queue in self.queues.values():
            await queue.stop()
        self.executor.shutdown(wait=True, cancel_futures=True)

    async def search(self, index: Any, query: GaussianBatch, k: int, rank: str, modality: str | None = None,
                     calibrator: Calibrator | None = None, direction: str = "query_in_item",
                     filter: Any = None) -> list[Any]:
        """Top-``k`` hits of ``index`` for the single query in ``query`` (``modality`` and ``calibrator``:
        what rank=probability needs; ``direction``: for rank=inclusion; ``filter``: a checked filter the
        results must match)."""
        key = "" if filter is None else canonical(filter)
        logvar = None if query.logvar is None else query.logvar[0]
        (hits,) = await self.queues[rank].submit([_Query(index, query.mean[0], logvar, k, modality, calibrator,
                                                         direction, filter, key)])
        return hits


def respond(name: str, index: Any, hits: list[Any], query: GaussianBatch, rank: str, pair_logit: PairLogit,
            min_probability: float | None = None, model_id: str = "",
            reference: tuple[str | None, Any] | None = None, calibrator: Calibrator | None = None,
            query_modality: str | None = None, model_family: str | None = None) -> SearchResponse:
    """The API's answer for one query's hits: the model's pair probability for each and, with a
    calibrator and a text-image search, the calibrated probability that ``min_probability`` filters on.

    reference: (name, index) of the collection the query's uncertainty percentile compares
    against (default: the searched one). A deterministic model's query (logvar None) and hits
    have no uncertainty: those fields are None, and the probability uses S = 0.
    """
    deterministic = query.logvar is None
    reference_name, reference_index = (None, None) if deterministic else (
        reference if reference is not None else (name, index))
    query_uncertainty = None if deterministic else float(query.uncertainty[0])
    scorer = None
    if query_modality is not None:
        scorer = probability_scorer(calibrator, query_modality, index.info.modality, query_uncertainty)
    results = []
    for hit in hits:
        probability = None if scorer is None else float(scorer.probability(hit.cosine, hit.uncertainty))
        if min_probability is not None and (probability is None or probability < min_probability):
            continue
        results.append(SearchHit(
            id=hit.id, score=float(hit.score), csd=float(hit.csd), cosine=float(hit.cosine), probability=probability,
            pair_probability=float(match_probability(hit.cosine, query_uncertainty or 0.0, hit.uncertainty or 0.0,
                                                     pair_logit)),
            uncertainty=None if hit.uncertainty is None else float(hit.uncertainty),
            inclusion=None if hit.inclusion is None else float(hit.inclusion),
            metadata=dict(hit.metadata or {})))
    return SearchResponse(
        collection=name, rank=rank,
        query=QueryUncertainty(uncertainty=query_uncertainty, reference=reference_name,
                               percentile=percentile(reference_index, query_uncertainty)),
        results=results, model_id=model_id, calibrated=scorer is not None, model_family=model_family,
        deterministic=deterministic)
