"""What the API answers, as ``TypedDict``s: the JSON documents the client returns, typed.

Each class mirrors the OpenAPI component of the same name (``/openapi.json``);
``tests/client/test_client.py`` checks that their keys are the document's properties.
"""

from __future__ import annotations

from typing import Any, TypedDict


class ErrorInfo(TypedDict):
    code: str
    message: str
    details: Any


class ErrorResponse(TypedDict):
    error: ErrorInfo


class UncertaintyInfo(TypedDict):
    uncertainty: float | None   # sum of the variances: larger = more general or ambiguous (None: a deterministic model)
    percentile: float | None    # percentage of the collection's items with lower uncertainty


class QueryUncertainty(UncertaintyInfo):
    reference: str | None


class SearchHit(TypedDict):
    id: str
    score: float
    csd: float                  # closed-form sampled distance; lower is closer
    cosine: float
    probability: float | None   # calibrated probability that the text is true of the image
    pair_probability: float
    uncertainty: float | None
    inclusion: float | None
    metadata: dict[str, Any]
    duplicates: list[str]       # collapse_duplicates: near-identical items folded into this one


class SearchResponse(TypedDict):
    collection: str
    rank: str
    query: QueryUncertainty
    results: list[SearchHit]
    model_id: str
    calibrated: bool
    model_family: str | None
    deterministic: bool
    offset: int                 # rank of the first result in the whole list
    next_cursor: str | None     # pass as cursor= for the next page
    collapsed: int
    matched: int | None         # items matching the filter


class UncertaintyItem(UncertaintyInfo):
    index: int


class UncertaintyResponse(TypedDict):
    collection: str | None
    items: list[UncertaintyItem]


class EmbeddingItem(TypedDict):
    index: int
    mean: list[float]
    logvar: list[float] | None
    uncertainty: float | None


class EmbeddingResponse(TypedDict):
    model_id: str
    model_family: str | None
    dim: int
    items: list[EmbeddingItem]


class RankedCandidate(TypedDict):
    index: int
    label: str
    csd: float
    cosine: float
    probability: float | None
    pair_probability: float
    class_probability: float
    inclusion: float | None
    uncertainty: float | None
    prompts_kept: list[str] | None
    prompt_weights: list[float] | None
    examples: int | None
    id: str | None              # candidates from a collection: the item's id


class RankResponse(TypedDict):
    query: UncertaintyInfo
    rank: str
    results: list[RankedCandidate]
    calibrated: bool


class TraversalStep(TypedDict):
    id: str
    text: str | None
    uncertainty: float
    probability: float | None
    pair_probability: float
    inclusion: float
    metadata: dict[str, Any]


class TraverseResponse(TypedDict):
    collection: str
    method: str
    query: UncertaintyInfo
    captions: list[TraversalStep]
    calibrated: bool


class CollectionSummary(TypedDict):
    name: str
    modality: str
    size: int
    dim: int
    model_id: str
    index: str
    model_family: str | None
    deterministic: bool


class BrokenCollection(TypedDict):
    name: str
    reason: str


class CollectionsResponse(TypedDict):
    collections: list[CollectionSummary]
    broken: list[BrokenCollection]


class HistogramBin(TypedDict):
    low: float
    high: float
    count: int


class ItemBrief(TypedDict):
    id: str
    uncertainty: float | None
    metadata: dict[str, Any]


class CollectionStats(CollectionSummary):
    uncertainty_histogram: list[HistogramBin]
    uncertainty_histogram_scale: str
    most_certain: list[ItemBrief]
    most_uncertain: list[ItemBrief]
    stats: dict[str, Any]


class AddItemsResponse(TypedDict):
    collection: str
    created: bool
    ids: list[str]
    size: int


class ItemResponse(TypedDict):
    collection: str
    id: str
    modality: str
    uncertainty: float | None
    percentile: float | None
    metadata: dict[str, Any]
    image_url: str | None


class DeletedResponse(TypedDict):
    deleted: str


class JobRoots(TypedDict):
    roots: list[str]


class JobFailure(TypedDict):
    item: str
    reason: str


class JobStatus(TypedDict):
    id: str
    state: str
    collection: str | None
    source: str | None
    done: int
    failed: int
    total: int | None
    rate: float | None
    eta_s: float | None
    failures: list[JobFailure]
    error: str | None
    sync: bool
    unchanged: int
    removed: int
    note: str | None


class JobsResponse(TypedDict):
    jobs: list[JobStatus]
    warnings: list[str]


class Health(TypedDict):
    status: str


class Readiness(TypedDict):
    ready: bool
    checks: dict[str, str] | None


class TextItem(TypedDict, total=False):
    """One text to add: ``text`` is required; ``id`` defaults to a hash of the text."""

    id: str
    text: str
    metadata: dict[str, Any]
