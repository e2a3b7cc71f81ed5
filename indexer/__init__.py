"""Gaussian indexes: exact CSD and probability search through FAISS, durable persistence, uncertainty statistics.

Public API (stable; the HTTP service and the batch-indexing jobs code against it)::

    from indexer import Catalog, GaussianIndex, IndexSpec, Hit, Item, CorruptIndexError, UnknownCollectionError

    catalog = Catalog(data_dir, redis_url=None)     # many named collections under data_dir
    catalog = open_catalog(data_dir, milvus_uri=uri)  # the same contract over Milvus (indexer.milvus)
    idx = catalog.create(name, modality="image", dim=D, model_id="...", spec=IndexSpec(kind="auto"),
                         model_family=None, deterministic=False)
    idx = catalog.get(name)                         # UnknownCollectionError if absent
    catalog.list() -> list[CollectionInfo]; catalog.drop(name); catalog.rebuild(name)
    list_collections(data_dir) -> list[CollectionInfo]   # read-only, safe beside a running service
    catalog.unload(name, snapshot=True); catalog.close()

    idx.add(ids, mean[N, D], logvar[N, D] | None, metadata=None)   # upsert by id; durable when it returns
    idx.delete(ids) -> int                                   # durable when it returns
    idx.get(id) -> Item | None ; len(idx) ; id in idx
    idx.iter_items() -> Iterator[list[Item]]                 # every live item, in pages (export)
    idx.search(query_mean[Q, D], query_logvar[Q, D], k=10, rank="csd" | "cosine" | "inclusion" | "probability",
               exact=True, shortlist=None, inclusion_direction="query_in_item" | "item_in_query",
               nprobe=None, ef_search=None, refine=None,
               calibrator=None, query_modality=None) -> list[list[Hit]]   # the last two: rank="probability"
    idx.uncertainty_percentile(values) -> np.ndarray         # 0..100 among the collection's items
    idx.stats(bins=32) -> dict ; idx.extremes(n) -> (most_certain, most_uncertain)
    idx.snapshot(rebuild=False) ; idx.close()

Semantics worth knowing:

- CSD = ||mu_q - mu_x||^2 + S_q + S_x with S = sum of variances; lower is closer. Means must be
  L2-normalised (ProLIP's are); they are checked and renormalised. ``Hit.score`` is the value the
  rank mode orders by (CSD ascending; cosine and inclusion descending).
- ``rank="csd", exact=True`` is one FAISS inner-product search of [mu_q, 1] against stored
  [mu_x, -S_x/2]: exact top-k with a flat index, approximate recall with HNSW/IVF (candidates
  are always re-scored exactly). ``exact=False`` is the two-stage path (cosine shortlist, CSD re-rank).
- ``rank="probability"`` orders by a ``models.calibration.Calibrator``'s P(text true of image) for a
  ``query_modality`` query against the other modality's items (``Hit.score`` = its log-odds). It is
  exact with only a cosine search (``indexer.probability_rank``): for one query the calibrated logit
  is slope * cos + g(S_x) with slope > 0, so fetching items by cosine in growing rounds may stop once
  the k-th best logit reaches the bound at the smallest fetched cosine (the largest logit any unseen
  item could have, over the collection's S range). Exact top k with a flat index, the cosine
  search's recall with HNSW/IVF; past 10,000 candidates an exhaustive pass in bounded memory takes over.
- What any backend of this contract must provide for every rank mode: a top-n search by the inner
  product of [mu_q, 1] with stored [mu_x, -S_x/2] (CSD) and by mean cosine, each candidate's exact
  mean and S (re-scoring), the stored log-variances of candidates (inclusion), and the min and max S
  of the live items (probability; ``uncertainty_percentile``/``stats`` need all S).
- Deterministic collections (``create(..., deterministic=True)``; ``CollectionInfo.deterministic``)
  hold a deterministic model's points (CLIP): every ``logvar`` (items and queries) is None, and
  only None, with S = 0; the same paths serve them, so CSD = ||mu_q - mu_x||^2 = 2 - 2 cos and
  ranking by ``csd`` equals ranking by ``cosine``. What needs variances is not available:
  ``rank="inclusion"`` and ``uncertainty_percentile`` raise ``InvalidInputError``, ``extremes``
  returns two empty lists, ``Hit.uncertainty`` / ``Item.uncertainty`` / ``Item.logvar`` are None,
  ``stats()["uncertainty"]`` has the count only and the histogram is empty. collection.json
  records ``deterministic`` and ``model_family`` (absent in older collections: False and None);
  the stores keep an empty logvar per row. A backend implementing this contract must do the same.
- Every error a caller can cause is an ``InvalidInputError`` (a ``ValueError``); persisted state
  that fails verification raises ``CorruptIndexError`` (recover with ``Catalog.rebuild``).
- ``iter_items`` yields pages of live items (a few thousand each; memory bounded by one page) as
  they were when it started: an item written meanwhile is given at most once, never twice, so an
  export holds each id once. Another backend implements it the same way (pages of ``Item``).
- One process owns a collection at a time (``CollectionBusyError`` otherwise): workers in other
  processes must hand their embeddings to that process rather than open the collection.
- Storage design (source of truth, snapshots, replay): see ``indexer.gaussian_index``.
"""

from .catalog import Catalog, list_collections, open_catalog
from .config import MAX_K, MAX_QUERIES, MAX_SHORTLIST, IndexSpec
from .errors import (
    CollectionBusyError,
    CollectionExistsError,
    CorruptIndexError,
    DiskFullError,
    IndexClosedError,
    IndexerError,
    InvalidInputError,
    StoreError,
    UnknownCollectionError,
)
from .gaussian_index import DIRECTIONS, RANKS, GaussianIndex
from .types import CollectionInfo, Hit, Item

__all__ = [
    "DIRECTIONS",
    "MAX_K",
    "MAX_QUERIES",
    "MAX_SHORTLIST",
    "RANKS",
    "Catalog",
    "CollectionBusyError",
    "CollectionExistsError",
    "CollectionInfo",
    "CorruptIndexError",
    "DiskFullError",
    "GaussianIndex",
    "Hit",
    "IndexClosedError",
    "IndexSpec",
    "IndexerError",
    "InvalidInputError",
    "Item",
    "StoreError",
    "UnknownCollectionError",
    "list_collections",
    "open_catalog",
]
