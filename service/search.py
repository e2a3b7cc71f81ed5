"""Searching a collection with encoded queries, and shaping what the API returns (no HTTP here).

``SearchBatcher`` batches single-query searches: concurrent requests against the same
collection and rank mode become one ``index.search`` call with many query rows, which
the index answers far more cheaply per query than one call each (one FAISS pass, one
metadata read). It runs on its own thread, so encoding the next queries and searching
the previous ones overlap.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.encoder import GaussianBatch
from models.gaussian import PairLogit

from .batching import BatchQueue, split_list
from .metrics import ServiceMetrics
from .schemas import QueryUncertainty, SearchHit, SearchResponse
from .scoring import match_probability

RANKS = ("csd", "cosine", "inclusion")


def percentile(index: Any, uncertainty: float | None) -> float | None:
    """Percentage of the collection's items with lower uncertainty; None for an empty collection, and
    without uncertainty (a deterministic model's query or collection)."""
    if index is None or uncertainty is None or getattr(index.info, "deterministic", False) or len(index) == 0:
        return None
    value = float(np.asarray(index.uncertainty_percentile(np.asarray([uncertainty], np.float64)))[0])
    return None if np.isnan(value) else value


@dataclass(frozen=True)
class _Query:
    index: Any
    mean: np.ndarray  # (D,)
    logvar: np.ndarray | None  # (D,); None from a deterministic model
    k: int


def _search_many(rank: str, queries: list[_Query]) -> list[list[Any]]:
    """One index.search per distinct index in the batch; each query gets its own top-k."""
    out: list[list[Any]] = [[] for _ in queries]
    by_index: dict[int, list[int]] = {}
    for position, query in enumerate(queries):
        by_index.setdefault(id(query.index), []).append(position)
    for positions in by_index.values():
        index = queries[positions[0]].index
        if len(index) == 0:
            continue
        k = max(queries[p].k for p in positions)
        means = np.stack([queries[p].mean for p in positions])  # (Q, D)
        # one index holds one model's embeddings: all its queries have log-variances, or none do
        logvars = None if queries[positions[0]].logvar is None else np.stack([queries[p].logvar for p in positions])
        for position, hits in zip(positions, index.search(means, logvars, k, rank=rank), strict=True):
            out[position] = hits[:queries[position].k]
    return out


class SearchBatcher:
    """Single-query searches, batched per rank mode (see the module docstring)."""

    def __init__(self, *, batching: bool = True, max_batch_size: int = 32, max_wait_s: float = 0.002,
                 max_queue: int = 256, metrics: ServiceMetrics | None = None):
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="search")
        self.queues = {rank: BatchQueue("search", lambda queries, rank=rank: _search_many(rank, queries),
                                        self.executor, max_batch_size=max_batch_size, max_wait_s=max_wait_s,
                                        max_queue=max_queue, batching=batching, metrics=metrics, split=split_list,
                                        in_flight=None if metrics is None else (lambda: metrics.in_flight))
                       for rank in RANKS}

    async def start(self) -> None:
        for queue in self.queues.values():
            await queue.start()

    async def stop(self) -> None:
        for queue in self.queues.values():
            await queue.stop()
        self.executor.shutdown(wait=True, cancel_futures=True)

    async def search(self, index: Any, query: GaussianBatch, k: int, rank: str) -> list[Any]:
        """Top-``k`` hits of ``index`` for the single query in ``query``."""
        logvar = None if query.logvar is None else query.logvar[0]
        (hits,) = await self.queues[rank].submit([_Query(index, query.mean[0], logvar, k)])
        return hits


def respond(name: str, index: Any, hits: list[Any], query: GaussianBatch, rank: str, pair_logit: PairLogit,
            min_probability: float | None = None, model_id: str = "",
            reference: tuple[str | None, Any] | None = None, model_family: str | None = None) -> SearchResponse:
    """The API's answer for one query's hits, with the model's match probability for each.

    reference: (name, index) of the collection the query's uncertainty percentile compares
    against (default: the searched one). A deterministic model's query (logvar None) and hits
    have no uncertainty: those fields are None, and the probability uses S = 0.
    """
    deterministic = query.logvar is None
    reference_name, reference_index = (None, None) if deterministic else (
        reference if reference is not None else (name, index))
    query_uncertainty = None if deterministic else float(query.uncertainty[0])
    results = []
    for hit in hits:
        probability = float(match_probability(hit.cosine, query_uncertainty or 0.0, hit.uncertainty or 0.0,
                                              pair_logit))
        if min_probability is not None and probability < min_probability:
            continue
        results.append(SearchHit(
            id=hit.id, score=float(hit.score), csd=float(hit.csd), cosine=float(hit.cosine), probability=probability,
            uncertainty=None if hit.uncertainty is None else float(hit.uncertainty),
            inclusion=None if hit.inclusion is None else float(hit.inclusion),
            metadata=dict(hit.metadata or {})))
    return SearchResponse(
        collection=name, rank=rank,
        query=QueryUncertainty(uncertainty=query_uncertainty, reference=reference_name,
                               percentile=percentile(reference_index, query_uncertainty)),
        results=results, model_id=model_id, model_family=model_family, deterministic=deterministic)
