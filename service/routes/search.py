"""POST /v1/search/text and /v1/search/image: ranked results with CSD, cosine and match probabilities."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, UploadFile
from starlette.concurrency import run_in_threadpool

from ..deps import Images, LimitsDep, Queries, State, authorized
from ..json_bodies import BoundedJsonRoute
from ..schemas import (
    MIN_PROBABILITY_HELP,
    RANK_HELP,
    Rank,
    SearchResponse,
    TextSearchRequest,
    error_responses,
    image_parts,
)
from ..scoring import inclusion_direction
from ..search import check_probability_request, respond
from ..settings import COLLECTION_PATTERN, MAX_K

router = APIRouter(prefix="/v1/search", tags=["search"], dependencies=[Depends(authorized)],
                   responses=error_responses(401, 404, 409, 413, 422, 429, 503),
                   route_class=BoundedJsonRoute)


@router.post("/text", response_model=SearchResponse, summary="Search a collection with a text")
async def search_text(body: TextSearchRequest, state: State, queries: Queries, limits: LimitsDep) -> SearchResponse:
    limits.text(body.query, "query")
    k = limits.k(body.k)
    if body.rank == "inclusion":
        queries.require_uncertainty("rank=inclusion (the inclusion test)")
    index = state.collection(body.collection)
    calibrator = queries.calibrator
    check_probability_request(calibrator, "text", index, body.rank, body.min_probability)
    query = await queries.texts([body.query])
    hits = await state.searches.search(index, query, k, body.rank, "text", calibrator,
                                       inclusion_direction("text", index.info.modality))
    reference = await run_in_threadpool(state.percentile_reference, "text", body.collection, index)
    return respond(body.collection, index, hits, query, body.rank, queries.pair_logit,
                   body.min_probability, queries.model_id, reference, calibrator, "text", queries.family)


@router.post("/image", response_model=SearchResponse, openapi_extra=image_parts("file"),
             summary="Search a collection with an uploaded image")
async def search_image(
    state: State, queries: Queries, limits: LimitsDep, images: Images,
    file: Annotated[UploadFile, File(description="the query image")],
    collection: Annotated[str, Form(pattern=COLLECTION_PATTERN, description="collection to search")],
    k: Annotated[int, Form(ge=1, le=MAX_K, description="number of results")] = 10,
    rank: Annotated[Rank, Form(description=RANK_HELP)] = "csd",
    min_probability: Annotated[float | None, Form(ge=0.0, le=1.0, description=MIN_PROBABILITY_HELP)] = None,
) -> SearchResponse:
    k = limits.k(k)
    if rank == "inclusion":
        queries.require_uncertainty("rank=inclusion (the inclusion test)")
    index = state.collection(collection)
    calibrator = queries.calibrator
    check_probability_request(calibrator, "image", index, rank, min_probability)
    async with images.prepared([file], queries.image_size, ["file"]) as prepared:
        query = await queries.images(prepared)
    hits = await state.searches.search(index, query, k, rank, "image", calibrator,
                                       inclusion_direction("image", index.info.modality))
    reference = await run_in_threadpool(state.percentile_reference, "image", collection, index)
    return respond(collection, index, hits, query, rank, queries.pair_logit, min_probability,
                   queries.model_id, reference, calibrator, "image", queries.family)
