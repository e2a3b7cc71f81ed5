"""Request and response models of the HTTP API (pydantic v2); the OpenAPI schema comes from here.

Limits that depend on the settings (text length, k, counts) are checked by ``Limits`` in
the routes; the bounds here are the fixed ones every deployment shares.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import File, UploadFile
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from .settings import COLLECTION_PATTERN, MAX_K

Rank = Literal["csd", "cosine", "inclusion"]
Modality = Literal["text", "image"]

RANK_HELP = ("csd: closed-form sampled distance, lower is closer (equivalently, highest match probability); "
             "cosine: mean-vector similarity only; inclusion: items the query sits inside come first (422 with "
             "code model_without_uncertainty when the model is deterministic: it needs variances)")
# Why an uncertainty field can be null, said once for every schema that has one.
NO_UNCERTAINTY = ("null when the model is deterministic (a CLIP family model embeds inputs as points, without "
                  "variances, so there is no uncertainty to report)")


# Exactly the characters ``str.isspace`` (and so ``str.strip``) treats as white space, spelled out:
# ``\s`` means a different set in each regex dialect the schema meets (ECMA-262 in clients,
# Rust's regex in pydantic, Python's re in test generators), an explicit class means one.
_SPACE = r"\t\n\x0b\x0c\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# A text holds a character that is not white space, and no NUL (the tokenizer's terminator).
TEXT_PATTERN = rf"^[{_SPACE}]*[^\x00{_SPACE}][^\x00]*$"
Text = Annotated[str, StringConstraints(min_length=1, pattern=TEXT_PATTERN)]
# 1-128 characters, no control character, '/' or '\\', and neither "." nor ".." (no lookahead:
# Rust's regex has none), the rule ``Limits.item_id`` applies.
_ID_CHAR = r"[^\x00-\x1f/\\]"
_ID_CHAR_NOT_DOT = r"[^\x00-\x1f/\\.]"
ITEM_ID_PATTERN = rf"^(?:{_ID_CHAR}{{3,128}}|{_ID_CHAR_NOT_DOT}{_ID_CHAR}?|\.{_ID_CHAR_NOT_DOT})$"
ItemId = Annotated[str, StringConstraints(pattern=ITEM_ID_PATTERN)]


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
    uncertainty: float | None = Field(
        description=f"sum of the variances, S = sum(sigma^2): larger = more general/ambiguous; {NO_UNCERTAINTY}")
    percentile: float | None = Field(
        None, description="percentage of the collection's items with lower uncertainty (null without a collection, "
                          "and when the model is deterministic)")


class QueryUncertainty(UncertaintyInfo):
    reference: str | None = Field(
        None, description="the collection the percentile compares against: the searched one when it holds the "
                          "query's modality, else the demo collection of that modality (text and image "
                          "uncertainties live on different scales); null when there is none")


class SearchHit(BaseModel):
    id: str
    score: float = Field(description="the value the results are ordered by (see rank)")
    csd: float = Field(description="closed-form sampled distance to the query; lower is closer (for a "
                                   "deterministic model ||mu_q - mu_x||^2 = 2 - 2 cosine)")
    cosine: float = Field(description="cosine similarity of the means")
    probability: float = Field(description="the model's match probability sigmoid(scale*(cos - (Sq+Sx)/2) + bias)")
    uncertainty: float | None = Field(description=f"the item's own uncertainty S; {NO_UNCERTAINTY}")
    inclusion: float | None = Field(None, description="inclusion score when rank=inclusion")
    metadata: dict[str, Any] = Field(default_factory=dict)


class SearchResponse(BaseModel):
    collection: str
    rank: Rank
    query: QueryUncertainty
    results: list[SearchHit]
    model_id: str
    model_family: str | None = Field(None, description="prolip, pcmepp or clip")
    deterministic: bool = Field(False, description="true: the model embeds inputs as points (CLIP), so every "
                                                   "uncertainty field is null and rank=inclusion is unavailable")


class TextSearchRequest(Strict):
    query: Text = Field(description="the text to search with")
    collection: str = Field(pattern=COLLECTION_PATTERN, examples=["demo-images"])
    k: int = Field(10, ge=1, le=MAX_K, description="number of results (1..max_k)")
    rank: Rank = Field("csd", description=RANK_HELP)
    min_probability: float | None = Field(
        None, ge=0.0, le=1.0, description="drop results whose match probability is below this")


# --- uncertainty / embeddings without searching

class TextsRequest(Strict):
    texts: list[Text] = Field(min_length=1, description="one or more texts")


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
    logvar: list[float] | None = Field(description=f"log variances [D]; {NO_UNCERTAINTY}")
    uncertainty: float | None = Field(description=f"sum of the variances S; {NO_UNCERTAINTY}")


class EmbeddingResponse(BaseModel):
    model_id: str
    model_family: str | None = Field(None, description="prolip, pcmepp or clip")
    dim: int
    items: list[EmbeddingItem]


# --- collections

class TextItemIn(Strict):
    id: ItemId | None = Field(None, description="item id; default: derived from the text")
    text: Text
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
    uncertainty: float | None = Field(description=f"the item's uncertainty S; {NO_UNCERTAINTY}")
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
    model_family: str | None = Field(
        description="the family of the model that embedded the items: prolip, pcmepp or clip (null for "
                    "collections created before families were recorded)")
    deterministic: bool = Field(
        description="true: the items are a deterministic model's points (CLIP), without uncertainty: the "
                    "histogram and the most certain/uncertain lists are empty")
    index: str = Field(description="index type, e.g. flat or hnsw")


class CollectionsResponse(BaseModel):
    collections: list[CollectionSummary]


class HistogramBin(BaseModel):
    low: float
    high: float
    count: int


class ItemBrief(BaseModel):
    id: str
    uncertainty: float | None = Field(description=f"the item's uncertainty S; {NO_UNCERTAINTY}")
    metadata: dict[str, Any]


class CollectionStats(CollectionSummary):
    uncertainty_histogram: list[HistogramBin]
    uncertainty_histogram_scale: Literal["linear", "log"] = Field(
        "linear", description="log: the bins are log-spaced, as the uncertainties span over two orders of magnitude")
    most_certain: list[ItemBrief]
    most_uncertain: list[ItemBrief]
    stats: dict[str, Any] = Field(default_factory=dict, description="further index statistics")


# --- uploads

# What an image part may be; clients (and test generators) see it as the parts' encoding.
IMAGE_MEDIA_TYPES = "image/png, image/jpeg, image/webp, image/gif, image/bmp, image/tiff"


# One or more uploaded images (FastAPI calls a list form field absent when no part is sent).
ImageFiles = Annotated[list[UploadFile], File(min_length=1, description="one or more images")]


def image_parts(*names: str) -> dict[str, Any]:
    """``openapi_extra`` declaring multipart parts ``names`` as images."""
    return {"requestBody": {"content": {"multipart/form-data": {
        "encoding": {name: {"contentType": IMAGE_MEDIA_TYPES} for name in names}}}}}


# --- rank, traverse

PromptFilter = Literal["none", "mean_std", "most_certain"]
# A prompt template: a text with a '{}' where the class name goes (no NUL, as every text).
TEMPLATE_PATTERN = r"^[^\x00]*\{\}[^\x00]*$"
Template = Annotated[str, StringConstraints(pattern=TEMPLATE_PATTERN)]

# What each published pattern means, for error messages (a regex is no explanation).
PATTERN_MEANINGS = {
    TEXT_PATTERN: "must hold a character that is not white space, and no NUL character",
    ITEM_ID_PATTERN: "must be 1-128 characters without '/', '\\' or control characters, and not '.' or '..'",
    TEMPLATE_PATTERN: "must contain '{}' where the class name goes (and no NUL character)",
    COLLECTION_PATTERN: "must be 1-64 letters, digits, '_' or '-'",
}


def absent_not_null(schema: dict[str, Any]) -> None:
    """Drop ``null`` from the optional fields of a form's schema: a form field is left out, never sent as
    null (there is no null in a form; a client or generator offered one would send the text "null")."""
    for field in schema.get("properties", {}).values():
        options = field.get("anyOf")
        if options and {"type": "null"} in options:
            rest = [option for option in options if option != {"type": "null"}]
            field.pop("anyOf")
            field.update(rest[0] if len(rest) == 1 else {"anyOf": rest})


def _rank_form_schema(schema: dict[str, Any]) -> None:
    schema["allOf"] = [
        {"oneOf": [{"required": ["query"]}, {"required": ["file"]}]},
        {"oneOf": [{"required": ["candidates"]}, {"required": ["candidate_files"]}]},
        {"not": {"required": ["templates", "candidate_files"]}},
    ]


class RankForm(BaseModel):
    """The multipart form of /v1/rank: one query (text or image) and candidates (texts or images).

    Which fields go together is part of the published schema (``allOf``/``oneOf`` below), so
    clients and generators see it; the validator says the same in words for a request that breaks it.
    """

    model_config = ConfigDict(json_schema_extra=_rank_form_schema)

    query: Text | None = Field(None, description="the query text (or upload `file`)")
    file: UploadFile | None = Field(None, description="the query image (or send `query`)")
    candidates: Annotated[list[Text], Field(min_length=1)] | None = Field(
        None, description="candidate texts (class names with `templates`), or send `candidate_files`")
    candidate_files: Annotated[list[UploadFile], Field(min_length=1)] | None = Field(
        None, description="candidate images, or send `candidates`")
    templates: Annotated[list[Template], Field(min_length=1)] | None = Field(
        None, description="prompt templates for text candidates, with '{}' for the class name, e.g. 'a photo of {}.'")
    prompt_filter: PromptFilter = Field("mean_std", description="how prompts of a class are filtered by their "
                                                                "uncertainty (a deterministic model has none: "
                                                                "every prompt is kept)")
    prompt_coeff: float = Field(0.0, ge=-10, le=100, description=(
        "mean_std: keep prompts with uncertainty <= mean + coeff*std of their class; "
        "most_certain: keep the coeff least uncertain"))
    rank: Rank = Field("csd", description=RANK_HELP)

    @model_validator(mode="after")
    def _one_query_one_kind_of_candidates(self) -> RankForm:
        if (self.query is None) == (self.file is None):
            raise ValueError("send exactly one query: `query` (text) or `file` (image)")
        if (self.candidates is None) == (self.candidate_files is None):
            raise ValueError("send candidates as texts (`candidates`) or as images (`candidate_files`), not both")
        if self.templates is not None and self.candidates is None:
            raise ValueError("`templates` apply to text candidates (class names)")
        return self


class RankedCandidate(BaseModel):
    index: int = Field(description="position of the candidate in the request")
    label: str = Field(description="the candidate text, or the uploaded file's name")
    csd: float
    cosine: float
    probability: float = Field(description="match probability of query and candidate")
    class_probability: float = Field(description="softmax of the match logits over all candidates")
    inclusion: float | None = Field(description="inclusion margin of the query in the candidate (> 0: query "
                                                f"inside); {NO_UNCERTAINTY}")
    uncertainty: float | None = Field(description=f"the candidate's uncertainty S; {NO_UNCERTAINTY}")
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
    source: Text = Field(description="server-side folder, manifest or shard pattern inside an allowed root "
                              "(404 when nothing is there, 403 outside the roots)")
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
               404: "unknown collection, item, job or job source", 409: "conflicting collection", 413: "too large",
               422: "invalid input", 429: "rate limited or queue full", 503: "not ready"}
    return {code: {"model": ErrorResponse, "description": meaning[code]} for code in codes}
