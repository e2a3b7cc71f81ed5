"""Request and response models of the HTTP API (pydantic v2); the OpenAPI schema comes from here.

Limits that depend on the settings (text length, k, counts) are checked by ``Limits`` in
the routes; the bounds here are the fixed ones every deployment shares.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import File, UploadFile
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from .filter_schema import FILTER_HELP
from .scoring import INCLUSION_MEANING
from .settings import COLLECTION_PATTERN

Rank = Literal["csd", "cosine", "inclusion", "probability"]
Modality = Literal["text", "image"]

RANK_HELP = ("csd: closed-form sampled distance, lower is closer (equivalently, highest pair_probability); "
             "cosine: mean-vector similarity only, higher is closer; inclusion: highest inclusion first (see the "
             "inclusion field: for text and images, how far the image lies inside the text; 422 with code "
             "model_without_uncertainty when the model is deterministic: it needs variances); "
             "probability: highest calibrated probability that the text is true of the image first (needs the "
             "model's calibrator and a text query on images or an image query on texts; exact top k)")
# Why an uncertainty field can be null, said once for every schema that has one.
NO_UNCERTAINTY = ("null when the model is deterministic (a CLIP family model embeds inputs as points, without "
                  "variances, so there is no uncertainty to report)")
PROBABILITY_HELP = (
    "calibrated probability that the text is true of the image (the caption describes the picture, whether or "
    "not it was written for it), from both Gaussians (models.calibration; higher = more likely). null when the "
    "model has no calibrator (fit one with `prolip-retrieval calibrate`) or when query and item are of one "
    "modality (the calibrator is fitted on text-image pairs)")
PAIR_PROBABILITY_HELP = (
    "the model's own pair probability: sigmoid of its training logit (for ProLIP sigmoid(scale*(cos - "
    "(Sq+Sx)/2) + bias); PCME++ sigmoid(-a*CSD + shift); CLIP sigmoid(scale*cos + bias)). It says how likely "
    "this pair was *the* training pair, not whether the text is true of the image: general texts that truly "
    "match get values near 0. Ordered as CSD; not calibrated")
MIN_PROBABILITY_HELP = (
    "drop results whose calibrated `probability` is below this (e.g. 0.5: keep what is more likely true than "
    "not). Needs the model's calibrator and a text-image search; refused (409 not_calibrated) otherwise, since "
    "the raw pair_probability is no probability of a match")


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
    score: float = Field(description="the value the results are ordered by (see rank): CSD (lower first), cosine or "
                                     "inclusion (higher first), or for rank=probability the calibrated log-odds "
                                     "(higher first)")
    csd: float = Field(description="closed-form sampled distance to the query; lower is closer (for a "
                                   "deterministic model ||mu_q - mu_x||^2 = 2 - 2 cosine)")
    cosine: float = Field(description="cosine similarity of the means; higher is closer")
    probability: float | None = Field(description=PROBABILITY_HELP)
    pair_probability: float = Field(description=PAIR_PROBABILITY_HELP)
    uncertainty: float | None = Field(description=f"the item's own uncertainty S: higher = more general or "
                                                  f"ambiguous; {NO_UNCERTAINTY}")
    inclusion: float | None = Field(None, description="with rank=inclusion (else null): " + INCLUSION_MEANING)
    metadata: dict[str, Any] = Field(default_factory=dict)
    duplicates: list[str] = Field(default_factory=list, description=(
        "with collapse_duplicates: ids of the near-identical items folded into this result, best first (among the "
        "results fetched for this page)"))


class SearchResponse(BaseModel):
    collection: str
    rank: Rank
    query: QueryUncertainty
    results: list[SearchHit]
    model_id: str
    calibrated: bool = Field(description="whether results carry a calibrated `probability` (see there)")
    model_family: str | None = Field(None, description="prolip, pcmepp or clip")
    deterministic: bool = Field(False, description="true: the model embeds inputs as points (CLIP), so every "
                                                   "uncertainty field is null and rank=inclusion is unavailable")
    offset: int = Field(0, description="rank of the first result in the whole result list (0 = the best)")
    next_cursor: str | None = Field(None, description=(
        "pass as `cursor` (with the same search) for the next page; null when there is none (the list ended, or "
        "the next page would start at max_k)"))
    collapsed: int = Field(0, description="results hidden on this page as near-duplicates of the ones shown")
    matched: int | None = Field(None, description="items of the collection that match the filter; null without one")


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


# Request models an operation names only by $ref (its handler reads the body itself); the app adds
# them to the OpenAPI document's components.
REFERENCED_MODELS = (TextItemsRequest,)


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


class BrokenCollection(BaseModel):
    name: str
    reason: str = Field(description="why it cannot be opened, and how to recover it")


class CollectionsResponse(BaseModel):
    collections: list[CollectionSummary]
    broken: list[BrokenCollection] = Field(
        default_factory=list, description="collections whose data is on disk but that cannot be opened (each answers "
                                          "503 until repaired, e.g. with `prolip-retrieval collections rebuild`)")


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
IMAGE_MEDIA_TYPES = "image/png, image/jpeg, image/webp, image/gif, image/bmp, image/tiff, image/heic, image/heif"

# What GET .../items/{id}/image answers with: the image types the service decodes, each named
# (client generators skip a wildcard such as image/*), and application/octet-stream for bytes
# whose type cannot be told (generators read that one as a file of bytes).
ITEM_IMAGE_MEDIA_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp", "image/tiff",
                          "image/heic", "image/heif", "image/avif", "application/octet-stream")


# One or more uploaded images (FastAPI calls a list form field absent when no part is sent).
ImageFiles = Annotated[list[UploadFile], File(min_length=1, description="one or more images")]


def image_parts(*names: str) -> dict[str, Any]:
    """``openapi_extra`` declaring multipart parts ``names`` as images."""
    return {"requestBody": {"content": {"multipart/form-data": {
        "encoding": {name: {"contentType": IMAGE_MEDIA_TYPES} for name in names}}}}}


# --- rank, traverse

PromptFilter = Literal["none", "mean_std", "most_certain", "bprw"]
PROMPT_FILTER_HELP = (
    "how the prompts (templates) of a class make its embedding. none (default): the mean of all of them; "
    "mean_std: keep prompts with uncertainty <= mean + prompt_coeff*std of their class; most_certain: keep the "
    "prompt_coeff least uncertain; bprw: Bayesian prompt re-weighting (ProLIP's few-shot analysis): every "
    "prompt weighted by how well its Gaussian explains samples of the class's labelled example images "
    "(example_files/example_labels, example_ids/example_id_labels). A deterministic model has no uncertainty: "
    "mean_std and most_certain keep every prompt there")
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


def _implies(condition: dict[str, Any], consequence: dict[str, Any]) -> dict[str, Any]:
    """JSON Schema for "condition => consequence" (anyOf: not condition, or consequence)."""
    return {"anyOf": [{"not": condition}, consequence]}


_BPRW = {"required": ["prompt_filter"], "properties": {"prompt_filter": {"const": "bprw"}}}
_EXAMPLES = {"anyOf": [{"required": ["example_files"]}, {"required": ["example_ids"]}]}


def _rank_form_schema(schema: dict[str, Any]) -> None:
    schema["allOf"] = [
        {"oneOf": [{"required": ["query"]}, {"required": ["file"]}]},
        {"oneOf": [{"required": ["candidates"]}, {"required": ["candidate_files"]}, {"required": ["collection"]}]},
        {"not": {"required": ["templates", "candidate_files"]}},
        {"not": {"required": ["templates", "collection"]}},
        {"anyOf": [{"not": {"required": ["filter"]}}, {"required": ["collection"]}]},
        # few-shot examples come with their labels, only for prompt_filter=bprw (with templates), which needs them
        _implies({"required": ["example_files"]}, {"required": ["example_labels"]}),
        _implies({"required": ["example_labels"]}, {"required": ["example_files"]}),
        _implies({"required": ["example_ids"]}, {"required": ["example_id_labels"]}),
        _implies({"required": ["example_id_labels"]}, {"required": ["example_ids"]}),
        _implies(_EXAMPLES, {**_BPRW, "required": ["prompt_filter", "templates"]}),
        _implies(_BPRW, _EXAMPLES),
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
    collection: str | None = Field(None, pattern=COLLECTION_PATTERN, description=(
        "rank the items of this collection that match `filter` (all of them without one; at most max_k), instead "
        "of candidates sent with the request"))
    filter: str | None = Field(
        None, description=FILTER_HELP + " With `collection`; sent as JSON (a part of type application/json).",
        json_schema_extra={"x-filter": True})
    prompt_filter: PromptFilter = Field("none", description=PROMPT_FILTER_HELP)
    prompt_coeff: float = Field(0.0, ge=-10, le=100, description=(
        "mean_std: keep prompts with uncertainty <= mean + coeff*std of their class; "
        "most_certain: keep the coeff least uncertain"))
    example_files: Annotated[list[UploadFile], Field(min_length=1)] | None = Field(
        None, description="bprw: labelled example images (a few per class)")
    example_labels: Annotated[list[Text], Field(min_length=1)] | None = Field(
        None, description="bprw: the class of each example file, in order; each one of `candidates`")
    example_ids: Annotated[list[ItemId], Field(min_length=1)] | None = Field(
        None, description="bprw: ids of indexed images in `example_collection` to use as labelled examples")
    example_id_labels: Annotated[list[Text], Field(min_length=1)] | None = Field(
        None, description="bprw: the class of each example id, in order; each one of `candidates`")
    example_collection: str = Field("demo-images", pattern=COLLECTION_PATTERN,
                                    description="bprw: the image collection `example_ids` name items of")
    bprw_alpha: float = Field(2.0, ge=1, le=1000, description=(
        "bprw: Dirichlet concentration on the prompt weights (larger = closer to equal weights; the paper's "
        "few-shot setting: 2)"))
    bprw_samples: int = Field(20, ge=1, le=100, description="bprw: samples drawn from each example image's Gaussian")
    rank: Rank = Field("csd", description=RANK_HELP)

    @model_validator(mode="after")
    def _one_query_one_kind_of_candidates(self) -> RankForm:
        if (self.query is None) == (self.file is None):
            raise ValueError("send exactly one query: `query` (text) or `file` (image)")
        if sum(value is not None for value in (self.candidates, self.candidate_files, self.collection)) != 1:
            raise ValueError("send candidates one way: as texts (`candidates`), as images (`candidate_files`), or as "
                             "the items of a `collection`")
        if self.templates is not None and self.candidates is None:
            raise ValueError("`templates` apply to text candidates (class names)")
        if self.filter is not None and self.collection is None:
            raise ValueError("`filter` selects items of a `collection`: name one")
        for files, labels, names in ((self.example_files, self.example_labels, "example_files / example_labels"),
                                     (self.example_ids, self.example_id_labels, "example_ids / example_id_labels")):
            if (files is None) != (labels is None) or (files is not None and len(files) != len(labels)):
                raise ValueError(f"{names}: give one label per example")
            if labels is not None and self.candidates is not None and set(labels) - set(self.candidates):
                raise ValueError(f"{names}: labels {sorted(set(labels) - set(self.candidates))[:5]} are not among "
                                 "the candidates")
        has_examples = self.example_files is not None or self.example_ids is not None
        if has_examples != (self.prompt_filter == "bprw"):
            raise ValueError("prompt_filter=bprw needs labelled examples (example_files or example_ids), and "
                             "examples are only used by prompt_filter=bprw")
        if has_examples and self.templates is None:
            raise ValueError("prompt_filter=bprw re-weights prompt templates: send `templates`")
        return self


class RankedCandidate(BaseModel):
    index: int = Field(description="position of the candidate in the request (collection items: in id order)")
    label: str = Field(description="the candidate text, or the uploaded file's name, or a collection item's text "
                                   "or id")
    id: str | None = Field(None, description="with `collection`: the item's id")
    csd: float
    cosine: float
    probability: float | None = Field(description=PROBABILITY_HELP)
    pair_probability: float = Field(description=PAIR_PROBABILITY_HELP)
    class_probability: float = Field(description="softmax of the model's pair logits over all candidates (which "
                                                 "candidate, if exactly one is right)")
    inclusion: float | None = Field(description="null when the model is deterministic (no variances); otherwise "
                                                + INCLUSION_MEANING)
    uncertainty: float | None = Field(description=f"the candidate's uncertainty S; {NO_UNCERTAINTY}")
    prompts_kept: list[str] | None = Field(None, description="with templates: the prompts used for this class")
    prompt_weights: list[float] | None = Field(
        None, description="prompt_filter=bprw: the weight of each prompt of prompts_kept (they sum to 1)")
    examples: int | None = Field(None, description="prompt_filter=bprw: labelled examples of this class used "
                                                   "(none: the prompts keep equal weights)")


class RankResponse(BaseModel):
    query: UncertaintyInfo
    rank: Rank
    results: list[RankedCandidate]
    calibrated: bool = Field(description="whether results carry a calibrated `probability` (a calibrator, and "
                                         "query and candidates one text and one image modality)")


class TraversalStep(BaseModel):
    id: str
    text: str | None
    uncertainty: float
    probability: float | None = Field(description=PROBABILITY_HELP)
    pair_probability: float = Field(description=PAIR_PROBABILITY_HELP)
    inclusion: float = Field(description=INCLUSION_MEANING)
    metadata: dict[str, Any]


class TraverseResponse(BaseModel):
    collection: str
    method: str
    query: UncertaintyInfo
    captions: list[TraversalStep] = Field(description="from the most specific caption to the most inclusive")
    calibrated: bool = Field(description="whether captions carry a calibrated `probability`")


# --- jobs

class JobRequest(Strict):
    source: Text = Field(description="server-side folder, manifest or shard pattern inside an allowed root "
                              "(404 when nothing is there, 403 outside the roots)")
    collection: str = Field(pattern=COLLECTION_PATTERN)
    modality: Modality | None = Field(None, description="image or text; default: guessed from the source")
    sync: bool = Field(False, description=(
        "a folder source only: index new and changed files (size, mtime, SHA-256), delete the items whose files "
        "are gone, leave unchanged files untouched"))


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
    sync: bool = Field(False, description="a folder sync: total counts the new and changed files only")
    unchanged: int = Field(0, description="sync: files found as they were indexed, not encoded again")
    removed: int = Field(0, description="sync: items deleted because their files are gone")
    note: str | None = Field(None, description="why a running job is not moving, e.g. no encoder worker is alive")


class JobsResponse(BaseModel):
    jobs: list[JobStatus]
    warnings: list[str] = Field(default_factory=list, description="about the job history itself, e.g. that a "
                                                                  "damaged one was set aside at start-up")


# --- health

class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, str] | None = Field(
        None, description="component -> 'ok' or the reason it is not ready; when API keys are set, only for a "
                          "request with a valid key (without one the answer says up or down and nothing else)")


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error codes a route may answer with."""
    meaning = {400: "malformed request", 401: "missing or invalid API key", 403: "forbidden source",
               404: "unknown collection, item, job or job source", 409: "conflicting collection", 413: "too large",
               415: "unsupported content type", 422: "invalid input", 429: "rate limited or queue full",
               503: "not ready", 507: "disk full: writes refused, reads go on"}
    return {code: {"model": ErrorResponse, "description": meaning[code]} for code in codes}
