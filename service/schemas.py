"""Request and response models of the HTTP API (pydantic v2); the OpenAPI schema comes from here.

Limits that depend on the settings (text length, k, counts) are checked by ``Limits`` in
the routes; the bounds here are the fixed ones every deployment shares.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .settings import COLLECTION_PATTERN, MAX_K

Rank = Literal["csd", "cosine", "inclusion"]
Modality = Literal["text", "image"]

RANK_HELP = ("csd: closed-form sampled distance, lower is closer (equivalently, highest match probability); "
             "cosine: mean-vector similarity only; inclusion: items the query sits inside come first")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- errors

class ErrorInfo(BaseModel):
    code: str = Field(description="stable machine-readable code, e.g. unknown_collection, queue_full")
    message: str = Field(description="what went wrong and what to do")
    details: Any | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo


# --- uncertainty and search

class UncertaintyInfo(BaseModel):
    uncertainty: float = Field(description="sum of the variances, S = sum(sigma^2): larger = more general/ambiguous")
    percentile: float | None = Field(
        None, description="percentage of the collection's items with lower uncertainty (null without a collection)")


class SearchHit(BaseModel):
    id: str
    score: float = Field(description="the value the results are ordered by (see rank)")
    csd: float = Field(description="closed-form sampled distance to the query; lower is closer")
    cosine: float = Field(description="cosine similarity of the means")
    probability: float = Field(description="the model's match probability sigmoid(scale*(cos - (Sq+Sx)/2) + bias)")
    uncertainty: float = Field(description="the item's own uncertainty S")
    inclusion: float | None = Field(None, description="inclusion score when rank=inclusion")
    metadata: dict[str, Any] = Field(default_factory=dict)


class SearchResponse(BaseModel):
    collection: str
    rank: Rank
    query: UncertaintyInfo
    results: list[SearchHit]
    model_id: str


class TextSearchRequest(Strict):
    query: str = Field(min_length=1, description="the text to search with")
    collection: str = Field(pattern=COLLECTION_PATTERN, examples=["demo-images"])
    k: int = Field(10, ge=1, le=MAX_K, description="number of results (1..max_k)")
    rank: Rank = Field("csd", description=RANK_HELP)
    min_probability: float | None = Field(
        None, ge=0.0, le=1.0, description="drop results whose match probability is below this")


# --- uncertainty / embeddings without searching

class TextsRequest(Strict):
    texts: list[str] = Field(min_length=1, description="one or more texts")


class TextsUncertaintyRequest(TextsRequest):
    collection: str | None = Field(
        None, pattern=COLLECTION_PATTERN,
        description="collection for percentiles; default: the demo collection of this modality")


class UncertaintyItem(UncertaintyInfo):
    index: int


class UncertaintyResponse(BaseModel):
    collection: str | None = Field(description="the collection percentiles refer to")
    items: list[UncertaintyItem]


class EmbeddingItem(BaseModel):
    index: int
    mean: list[float] = Field(description="unit-norm mean vector [D]")
    logvar: list[float] = Field(description="log variances [D]")
    uncertainty: float


class EmbeddingResponse(BaseModel):
    model_id: str
    dim: int
    items: list[EmbeddingItem]


# --- collections

class TextItemIn(Strict):
    id: str | None = Field(None, max_length=128, description="item id; default: derived from the text")
    text: str = Field(min_length=1)
    metadata: dict[str, Any] | None = None


class TextItemsRequest(Strict):
    items: list[TextItemIn] = Field(min_length=1)


class AddItemsResponse(BaseModel):
    collection: str
    created: bool = Field(description="true when this request created the collection")
    ids: list[str]
    size: int


class ItemResponse(BaseModel):
    collection: str
    id: str
    modality: Modality
    uncertainty: float
    percentile: float | None
    metadata: dict[str, Any]
    image_url: str | None = None


class DeletedResponse(BaseModel):
    deleted: str


class CollectionSummary(BaseModel):
    name: str
    modality: Modality
    size: int
    dim: int
    model_id: str
    index: str = Field(description="index type, e.g. flat or hnsw")


class CollectionsResponse(BaseModel):
    collections: list[CollectionSummary]


class HistogramBin(BaseModel):
    low: float
    high: float
    count: int


class ItemBrief(BaseModel):
    id: str
    uncertainty: float
    metadata: dict[str, Any]


class CollectionStats(CollectionSummary):
    uncertainty_histogram: list[HistogramBin]
    most_certain: list[ItemBrief]
    most_uncertain: list[ItemBrief]
    stats: dict[str, Any] = Field(default_factory=dict, description="further index statistics")


# --- rank, traverse

class RankedCandidate(BaseModel):
    index: int = Field(description="position of the candidate in the request")
    label: str = Field(description="the candidate text, or the uploaded file's name")
    csd: float
    cosine: float
    probability: float = Field(description="match probability of query and candidate")
    class_probability: float = Field(description="softmax of the match logits over all candidates")
    inclusion: float = Field(description="inclusion margin of the query in the candidate (> 0: query inside)")
    uncertainty: float
    prompts_kept: list[str] | None = Field(None, description="with templates: the prompts used for this class")


class RankResponse(BaseModel):
    query: UncertaintyInfo
    rank: Rank
    results: list[RankedCandidate]


class TraversalStep(BaseModel):
    id: str
    text: str | None
    uncertainty: float
    probability: float
    inclusion: float = Field(description="inclusion margin of the image in the caption (> 0: image inside)")
    metadata: dict[str, Any]


class TraverseResponse(BaseModel):
    collection: str
    method: str
    query: UncertaintyInfo
    captions: list[TraversalStep] = Field(description="from the most specific caption to the most inclusive")


# --- jobs

class JobRequest(Strict):
    source: str = Field(min_length=1, description="server-side folder or file list inside an allowed root")
    collection: str = Field(pattern=COLLECTION_PATTERN)
    modality: Modality | None = Field(None, description="image or text; default: guessed from the source")


class JobRoots(BaseModel):
    roots: list[str] = Field(description="server-side folders indexing jobs may read from (empty: jobs are off)")


class JobFailure(BaseModel):
    item: str
    reason: str


class JobStatus(BaseModel):
    id: str
    state: str
    collection: str | None = None
    source: str | None = None
    done: int
    failed: int
    total: int | None
    rate: float | None = Field(None, description="items per second")
    eta_s: float | None = Field(None, description="seconds left at the current rate")
    failures: list[JobFailure] = Field(default_factory=list)
    error: str | None = None


class JobsResponse(BaseModel):
    jobs: list[JobStatus]


# --- health

class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, str] = Field(description="component -> 'ok' or the reason it is not ready")


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error codes a route may answer with."""
    meaning = {400: "malformed request", 401: "missing or invalid API key", 403: "forbidden source",
               404: "unknown collection, item or job", 409: "conflicting collection", 413: "too large",
               422: "invalid input", 429: "rate limited or queue full", 503: "not ready"}
    return {code: {"model": ErrorResponse, "description": meaning[code]} for code in codes}
