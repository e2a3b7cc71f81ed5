"""POST /v1/search/*: ranked results with CSD, cosine and match probabilities, for five kinds of query.

text and image (an upload) are encoded by the model; item uses an indexed item's stored Gaussian
(more like this, or across modalities); embedding takes a Gaussian computed elsewhere; url fetches
an image through the indexing jobs' SSRF-guarded fetcher. All take the same options
(``SearchOptions``): k, offset or cursor, rank, min_probability, filter and duplicate collapsing;
``service.pages`` turns them into a page.
"""

from __future__ import annotations

import hashlib
import io
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, File, Form, UploadFile
from starlette.concurrency import run_in_threadpool

from indexer.duplicates import DEFAULT_THRESHOLD
from models.gaussian import GaussianBatch

from ..collection_info import find_item
from ..deps import Images, LimitsDep, Queries, State, authorized
from ..errors import Conflict, FetchFailed, InvalidInput, UnknownItem
from ..filter_schema import FILTER_HELP
from ..json_bodies import BoundedJsonRoute
from ..pages import answer, parse_filter, parse_filter_text
from ..schemas import MIN_PROBABILITY_HELP, RANK_HELP, Rank, SearchResponse, error_responses, image_parts
from ..search import check_probability_request
from ..search_requests import (
    COLLAPSE_HELP,
    CURSOR_HELP,
    DUPLICATE_HELP,
    OFFSET_HELP,
    EmbeddingSearchRequest,
    ItemSearchRequest,
    SearchOptions,
    TextSearchRequest,
    UrlSearchRequest,
)
from ..settings import COLLECTION_PATTERN, MAX_K

router = APIRouter(prefix="/v1/search", tags=["search"], dependencies=[Depends(authorized)],
                   responses=error_responses(401, 404, 409, 413, 422, 429, 503),
                   route_class=BoundedJsonRoute)

# The image form's `filter` part is JSON (a Filter), sent as a part of type application/json.
_IMAGE_FORM = image_parts("file")
_IMAGE_FORM["requestBody"]["content"]["multipart/form-data"]["encoding"]["filter"] = {
    "contentType": "application/json"}


@router.post("/text", response_model=SearchResponse, summary="Search a collection with a text")
async def search_text(body: TextSearchRequest, state: State, queries: Queries, limits: LimitsDep) -> SearchResponse:
    limits.text(body.query, "query")
    limits.k(body.k)
    _needs_uncertainty(queries, body.rank)
    parse_filter(body.filter)
    index = state.collection(body.collection)
    check_probability_request(queries.calibrator, "text", index, body.rank, body.min_probability)
    query = await queries.texts([body.query])
    return await answer(state, queries, name=body.collection, index=index, options=body, query=query,
                        query_key=("text", body.query), modality="text")


@router.post("/image", response_model=SearchResponse, openapi_extra=_IMAGE_FORM,
             summary="Search a collection with an uploaded image")
async def search_image(
    state: State, queries: Queries, limits: LimitsDep, images: Images,
    file: Annotated[UploadFile, File(description="the query image")],
    collection: Annotated[str, Form(pattern=COLLECTION_PATTERN, description="collection to search")],
    k: Annotated[int, Form(ge=1, le=MAX_K, description="number of results")] = 10,
    offset: Annotated[int, Form(ge=0, lt=MAX_K, description=OFFSET_HELP)] = 0,
    cursor: Annotated[str | None, Form(min_length=1, max_length=512, description=CURSOR_HELP)] = None,
    rank: Annotated[Rank, Form(description=RANK_HELP)] = "csd",
    min_probability: Annotated[float | None, Form(ge=0.0, le=1.0, description=MIN_PROBABILITY_HELP)] = None,
    filter: Annotated[str | None, Form(description=FILTER_HELP + " Sent as JSON (a part of type application/json).",
                                       json_schema_extra={"x-filter": True})] = None,
    collapse_duplicates: Annotated[bool, Form(description=COLLAPSE_HELP)] = False,
    duplicate_threshold: Annotated[float, Form(ge=0.5, le=1.0, description=DUPLICATE_HELP)] = DEFAULT_THRESHOLD,
) -> SearchResponse:
    limits.k(k)
    _needs_uncertainty(queries, rank)
    condition = parse_filter_text(filter)
    index = state.collection(collection)
    check_probability_request(queries.calibrator, "image", index, rank, min_probability)
    async with images.prepared([file], queries.image_size, ["file"]) as prepared:
        query = await queries.images(prepared)
    data = prepared[0].data
    options = SearchOptions.model_construct(
        collection=collection, k=k, offset=offset, cursor=cursor, rank=rank, min_probability=min_probability,
        filter=condition, collapse_duplicates=collapse_duplicates, duplicate_threshold=duplicate_threshold)
    return await answer(state, queries, name=collection, index=index, options=options, query=query,
                        query_key=("image", hashlib.sha256(data).hexdigest()), modality="image")


@router.post("/item", response_model=SearchResponse,
             summary="More like this: search with an indexed item's stored Gaussian (same or other modality)")
async def search_item(body: ItemSearchRequest, state: State, queries: Queries) -> SearchResponse:
    state.limits.k(body.k)
    _needs_uncertainty(queries, body.rank)
    parse_filter(body.filter)
    source_name = body.item_collection or body.collection
    source = state.collection(source_name)
    index = state.collection(body.collection) if source_name != body.collection else source
    check_probability_request(queries.calibrator, source.info.modality, index, body.rank, body.min_probability)
    item = await run_in_threadpool(find_item, source, body.item_id)
    if item is None:
        raise UnknownItem(f"collection {source_name!r} has no item {body.item_id!r}")
    query = GaussianBatch(np.asarray(item.mean, np.float32)[None],
                          None if item.logvar is None else np.asarray(item.logvar, np.float32)[None])
    exclude = frozenset({body.item_id}) if body.exclude_self and source_name == body.collection else frozenset()
    return await answer(state, queries, name=body.collection, index=index, options=body, query=query,
                        query_key=("item", source_name, body.item_id), modality=source.info.modality,
                        exclude=exclude)


@router.post("/embedding", response_model=SearchResponse,
             summary="Search with a Gaussian embedding computed elsewhere (mean and log-variance)")
async def search_embedding(body: EmbeddingSearchRequest, state: State, queries: Queries) -> SearchResponse:
    if body.model_id is not None and body.model_id != queries.model_id:
        raise Conflict(f"the embedding comes from model {body.model_id!r} but this service runs "
                       f"{queries.model_id!r}; their embeddings are not comparable")
    state.limits.k(body.k)
    _needs_uncertainty(queries, body.rank)
    parse_filter(body.filter)
    index = state.collection(body.collection)
    check_probability_request(queries.calibrator, body.modality or index.info.modality, index, body.rank,
                              body.min_probability)
    query = _embedding(body.mean, body.logvar, index.dim, queries.deterministic)
    raw = query.mean.tobytes() + (b"" if query.logvar is None else query.logvar.tobytes())
    return await answer(state, queries, name=body.collection, index=index, options=body, query=query,
                        query_key=("embedding", hashlib.sha256(raw).hexdigest()),
                        modality=body.modality or index.info.modality)


def _embedding(mean: list[float], logvar: list[float] | None, dim: int, deterministic: bool) -> GaussianBatch:
    """A query Gaussian from JSON numbers: [D] each, D = the collection's dimension, unit-norm mean; a
    deterministic model's point has no logvar."""
    if deterministic and logvar is not None:
        raise InvalidInput("logvar: this service runs a deterministic model, whose embeddings are points; send the "
                           "mean alone")
    if not deterministic and logvar is None:
        raise InvalidInput("logvar: this service's model embeds Gaussians; send the log-variances with the mean")
    if len(mean) != dim or (logvar is not None and len(logvar) != dim):
        raise InvalidInput(f"mean and logvar must each have the collection's dimension {dim}, not {len(mean)} and "
                           f"{len(logvar or [])}")
    mean_array = np.asarray(mean, np.float64)
    norm = float(np.linalg.norm(mean_array))
    if abs(norm - 1.0) > 1e-2:
        raise InvalidInput(f"mean must be L2-normalised (norm 1 within 0.01), not norm {norm:.4f}")
    unit = (mean_array / norm).astype(np.float32)[None]
    if logvar is None:
        return GaussianBatch(unit, None)
    logvar_array = np.asarray(logvar, np.float64)
    if logvar_array.max() > 80:
        raise InvalidInput("logvar: values above 80 (variance e^80) overflow the sum of variances")
    return GaussianBatch(unit, logvar_array.astype(np.float32)[None])


def _needs_uncertainty(queries, rank: str) -> None:
    if rank == "inclusion":
        queries.require_uncertainty("rank=inclusion (the inclusion test)")


@router.post("/url", response_model=SearchResponse,
             summary="Search with an image at a URL, fetched like indexing jobs fetch (SSRF-guarded)")
async def search_url(body: UrlSearchRequest, state: State, queries: Queries, images: Images) -> SearchResponse:
    state.limits.k(body.k)
    _needs_uncertainty(queries, body.rank)
    parse_filter(body.filter)
    index = state.collection(body.collection)
    check_probability_request(queries.calibrator, "image", index, body.rank, body.min_probability)
    data = await run_in_threadpool(_fetch, body.url, state)
    # checked and decoded like an upload: the same pixel limits and decoding budget
    fetched = UploadFile(io.BytesIO(data), size=len(data), filename=body.url.rsplit("/", 1)[-1][:128] or "url")
    async with images.prepared([fetched], queries.image_size, ["url"]) as prepared:
        query = await queries.images(prepared)
    return await answer(state, queries, name=body.collection, index=index, options=body, query=query,
                        query_key=("url", body.url), modality="image")


def _fetch(url: str, state) -> bytes:
    """The body at ``url``, with the jobs' fetcher: public addresses only (unless allowed), the upload size cap."""
    from indexer.fetch import FetchError, FetchPolicy, fetch_all

    policy = FetchPolicy(timeout_s=state.settings.url_fetch_timeout_s, retries=1,
                         max_bytes=state.settings.max_upload_bytes, concurrency=1,
                         allow_private_networks=state.settings.allow_private_urls)
    (result,) = fetch_all([url], policy)
    if isinstance(result, FetchError):
        raise FetchFailed(f"could not fetch the image: {result.reason}")
    if not result:
        raise FetchFailed("could not fetch the image: the response was empty")
    return result
