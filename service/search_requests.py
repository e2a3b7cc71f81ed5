"""The request bodies of the JSON searches: what every search takes (``SearchOptions``) and each query kind.

Split from ``service.schemas`` (which holds the responses and the other requests); the OpenAPI
components are named after the classes, wherever they live.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, WithJsonSchema

from indexer.duplicates import DEFAULT_THRESHOLD

from .filter_schema import FILTER_HELP, REF
from .schemas import MIN_PROBABILITY_HELP, RANK_HELP, Modality, Rank, Strict, Text
from .settings import COLLECTION_PATTERN, MAX_K

# A filter in a JSON body: validated by indexer.filters (clear 422s); published as the Filter schema.
FilterJson = Annotated[dict[str, Any], WithJsonSchema({"$ref": REF + "Filter"})]
DUPLICATE_HELP = ("cosine of the means at or above which two items count as near-identical (collapse_duplicates); "
                  "higher = only closer copies are folded")
COLLAPSE_HELP = ("fold near-identical items (cosine of the means >= duplicate_threshold) into the best-ranked one; "
                 "each result lists the ids it stands for and `collapsed` counts them")
OFFSET_HELP = "results to skip: the page starts at this rank (0 = the best); offset + k must not exceed max_k"
CURSOR_HELP = ("next_cursor from the previous page of the same search, instead of offset; the page is shortened so "
               "that it ends by max_k")


class SearchOptions(Strict):
    """What every search takes besides its query."""

    collection: str = Field(pattern=COLLECTION_PATTERN, examples=["demo-images"], description="collection to search")
    k: int = Field(10, ge=1, le=MAX_K, description="number of results (1..max_k)")
    offset: int = Field(0, ge=0, lt=MAX_K, description=OFFSET_HELP)
    cursor: str | None = Field(None, min_length=1, max_length=512, description=CURSOR_HELP)
    rank: Rank = Field("csd", description=RANK_HELP)
    min_probability: float | None = Field(None, ge=0.0, le=1.0, description=MIN_PROBABILITY_HELP)
    filter: FilterJson | None = Field(None, description=FILTER_HELP)
    collapse_duplicates: bool = Field(False, description=COLLAPSE_HELP)
    duplicate_threshold: float = Field(DEFAULT_THRESHOLD, ge=0.5, le=1.0, description=DUPLICATE_HELP)


class TextSearchRequest(SearchOptions):
    query: Text = Field(description="the text to search with")


class ItemSearchRequest(SearchOptions):
    item_id: str = Field(min_length=1, max_length=256, description=(
        "id of an indexed item: its stored Gaussian (mean and log-variance) is the query"))
    item_collection: str | None = Field(None, pattern=COLLECTION_PATTERN, description=(
        "collection holding the item; default: `collection` (more like this, same modality); a collection of the "
        "other modality searches across (e.g. the captions of an image)"))
    exclude_self: bool = Field(True, description="leave the item itself out of the results")


FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class EmbeddingSearchRequest(SearchOptions):
    mean: list[FiniteFloat] = Field(min_length=1, max_length=4096, description=(
        "mean of the query Gaussian [D]: unit L2 norm (within 0.01), D = the collection's dimension"))
    logvar: list[FiniteFloat] | None = Field(None, min_length=1, max_length=4096, description=(
        "log-variances of the query Gaussian [D] (log sigma^2 per dimension); required by a model with "
        "uncertainty, absent for a deterministic model's point"))
    modality: Modality | None = Field(None, description=(
        "what the embedding encodes: picks the collection its uncertainty percentile is ranked in and the "
        "calibrated probability used (default: the searched collection's modality)"))
    model_id: str | None = Field(None, max_length=512, description=(
        "the model that made the embedding; when given it must be the service's (409 otherwise)"))


class UrlSearchRequest(SearchOptions):
    url: str = Field(max_length=2048, pattern=r"^https?://[^\x00-\x20/?#]+(?:[/?#][^\x00-\x20]*)?$", description=(
        "an http(s) URL of an image, fetched with the indexing jobs' fetcher and limits (public addresses only "
        "unless the service allows private ones; the upload size limit applies)"))
